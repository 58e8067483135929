#!/usr/bin/env python3
"""Prints line coverage per file from `cargo llvm-cov report --json --summary-only` (stdin)
and fails when the whole is under the floor or a file that must be fully covered is not.

Usage: cargo llvm-cov report --json --summary-only ... | scripts/coverage-check.py
"""
import json
import os
import sys

FLOOR = 85.0
# Identity and admin authentication: every line is exercised by a test.
MUST_BE_FULL = [
    "control-plane/src/identity.rs",
    "control-plane/src/jwt.rs",
    "control-plane/src/http/auth.rs",
    "filter/src/client_ip.rs",
]


def main() -> int:
    report = json.load(sys.stdin)
    data = report["data"][0]
    root = os.getcwd() + "/"
    rows = []
    for f in data["files"]:
        name = f["filename"].removeprefix(root)
        lines = f["summary"]["lines"]
        rows.append((name, lines["covered"], lines["count"], lines["percent"]))
    width = max(len(r[0]) for r in rows)
    print(f"{'file':<{width}}  lines   covered")
    for name, covered, count, percent in sorted(rows):
        print(f"{name:<{width}}  {count:>5}  {percent:6.2f}%")
    total = data["totals"]["lines"]
    print(f"{'TOTAL':<{width}}  {total['count']:>5}  {total['percent']:6.2f}%")

    failures = []
    if total["percent"] < FLOOR:
        failures.append(f"line coverage {total['percent']:.2f}% is under {FLOOR}%")
    by_name = {r[0]: r for r in rows}
    for name in MUST_BE_FULL:
        row = by_name.get(name)
        if row is None:
            failures.append(f"{name}: not in the coverage report")
        elif row[1] != row[2]:
            failures.append(f"{name}: {row[2] - row[1]} line(s) not covered (must be 100%)")
    for failure in failures:
        print(f"coverage: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
