#!/usr/bin/env python3
"""Picks the corpus files the repository keeps, for `scripts/fuzz.sh --cmin`.

    select_corpus.py BUDGET TARGET=CONTROL_FILE [TARGET=CONTROL_FILE...]

Each CONTROL_FILE is a libFuzzer merge control file written with `-set_cover_merge=1
-merge_control_file=F`: every input of the target with all the coverage features it reached
(a plain `-merge=1` file lists only what each input added first). Every file named `seed-*`
or `regression-*` is kept. The rest of the BUDGET (files in total, over all targets) goes
greedily to the input, of any target, that covers the most code its target's kept files do
not cover yet (ties: the most new features, then the smaller file); it stops early when no
input adds anything. Prints `TARGET<TAB>PATH` per kept file.

Features of libFuzzer's inline 8-bit counters are `edge * 8 + hit-count bucket`, so an edge
is a feature divided by 8.
"""

import heapq
import os
import sys


def read_control(path: str) -> tuple[list[str], dict[int, set[int]]]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    count = int(lines[0])
    paths = lines[2 : 2 + count]
    features: dict[int, set[int]] = {}
    for line in lines[2 + count :]:
        if line.startswith("FT "):
            index, *values = line[3:].split()
            features[int(index)] = {int(x) for x in values}
    return paths, features


def pinned(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith("seed-") or name.startswith("regression-")


def main() -> None:
    budget = int(sys.argv[1])
    targets = {}
    for arg in sys.argv[2:]:
        name, control = arg.split("=", 1)
        targets[name] = read_control(control)

    edges = {name: set() for name in targets}
    reached = {name: set() for name in targets}
    chosen: list[tuple[str, str]] = []
    for name, (paths, features) in targets.items():
        for i, path in enumerate(paths):
            if pinned(path):
                chosen.append((name, path))
                reached[name] |= features.get(i, set())
                edges[name] |= {f >> 3 for f in features.get(i, set())}

    def gain(name: str, i: int) -> tuple[int, int, int]:
        paths, features = targets[name]
        feats = features[i]
        new_edges = len({f >> 3 for f in feats} - edges[name])
        return (new_edges, len(feats - reached[name]), -os.path.getsize(paths[i]))

    # Lazy greedy: gains only shrink as files are kept, so a stale gain is an upper bound.
    heap = []
    for name, (paths, features) in targets.items():
        for i in features:
            if not pinned(paths[i]):
                heapq.heappush(heap, (tuple(-g for g in gain(name, i)), name, i))
    while len(chosen) < budget and heap:
        _, name, i = heapq.heappop(heap)
        current = gain(name, i)
        if current[:2] == (0, 0):
            continue
        if heap and tuple(-g for g in current) > heap[0][0]:
            heapq.heappush(heap, (tuple(-g for g in current), name, i))
            continue
        paths, features = targets[name]
        reached[name] |= features[i]
        edges[name] |= {f >> 3 for f in features[i]}
        chosen.append((name, paths[i]))
    for name, path in chosen:
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
