#!/usr/bin/env bash
# Changes one tier's limits live through the control plane's admin API: reads the running
# configuration, edits the tier, and PUTs the whole document back. Every replica (sharing
# one Redis) applies it within moments; no restart, no dropped request.
#
#   RATE_LIMIT_ADMIN_API_KEY=my-admin-key examples/set-tier.sh free 80        # 80 per window
#   RATE_LIMIT_ADMIN_API_KEY=my-admin-key examples/set-tier.sh free 200 120   # 200 per 120 s
#
# Environment:
#   RATE_LIMIT_ADMIN_API_KEY  the control plane's admin key (required; run-stack.sh passes
#                             yours on when you export it before starting the stack)
#   CONTROL_PLANE_URL         control plane base URL (default http://127.0.0.1:8080)
#
# Needs curl and python3 (for the JSON). Exit status 0 when applied; 1 when refused (the
# control plane's message names the offending field, e.g. an endpoint rule at or above the new
# budget, which could never bind) or on any error. A tier of several windows (`limits`) is
# left alone: change its windows with the admin API directly. The change is a read-modify-write of the whole document, sent with
# `If-Match` (the version read): if the configuration changed in between (another admin, a file
# change), the control plane refuses it (412) and nothing changes; run the script again.
set -euo pipefail

usage() {
  echo "usage: RATE_LIMIT_ADMIN_API_KEY=... $0 TIER REQUESTS_PER_WINDOW [WINDOW_SECONDS]" >&2
  exit 1
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
tier=$1 limit=$2 window=${3:-}
base=${CONTROL_PLANE_URL:-http://127.0.0.1:8080}
key=${RATE_LIMIT_ADMIN_API_KEY:-}
if [ -z "$key" ]; then
  echo "set RATE_LIMIT_ADMIN_API_KEY to the control plane's admin key" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
url="$base/api/v1/rate-limit/config"

# The key travels in a header file, not on the command line (visible in `ps`).
printf 'X-API-Key: %s\n' "$key" >"$tmp/auth"

status=$(curl -sS --noproxy '*' -D "$tmp/headers" -o "$tmp/current.json" -w '%{http_code}' \
  -H @"$tmp/auth" "$url")
if [ "$status" != 200 ]; then
  echo "GET $url answered $status:" >&2
  cat "$tmp/current.json" >&2
  echo >&2
  exit 1
fi

python3 - "$tmp/current.json" "$tmp/new.json" "$tier" "$limit" "$window" <<'PY'
import json, sys
current, new, tier, limit, window = sys.argv[1:]
doc = json.load(open(current))
config = doc["config"]
names = [t["name"] for t in config["tiers"]]
if tier not in names:
    sys.exit(f"no tier {tier!r} in the running configuration (tiers: {', '.join(names)})")
t = config["tiers"][names.index(tier)]
if "limits" in t:
    windows = ", ".join("%d per %d s" % (w["limit"], w["window_seconds"]) for w in t["limits"])
    sys.exit(f"tier {tier!r} has several windows ({windows}); this script sets one: change "
             "its limits with the admin API (docs/CONFIGURATION.md, \"Several windows\")")
before = (t.get("requests_per_window", "unlimited"), t.get("window_size_seconds", 60))
try:
    t["requests_per_window"] = int(limit)
    if window:
        t["window_size_seconds"] = int(window)
except ValueError:
    sys.exit("REQUESTS_PER_WINDOW and WINDOW_SECONDS must be integers")
t.pop("unlimited", None)
after = (t["requests_per_window"], t.get("window_size_seconds", 60))
print(f"tier {tier}: {before[0]} per {before[1]} s -> {after[0]} per {after[1]} s "
      f"(running version {doc.get('version')})")
json.dump(config, open(new, "w"))
PY

# The version read, as its ETag ("7"): the PUT applies only if it is still the newest.
etag=$(awk 'tolower($1) == "etag:" { print $2 }' "$tmp/headers" | tr -d '\r')
if_match=()
if [ -n "$etag" ]; then
  if_match=(-H "If-Match: $etag")
fi
status=$(curl -sS --noproxy '*' -o "$tmp/answer.json" -w '%{http_code}' -X PUT \
  -H @"$tmp/auth" ${if_match[@]+"${if_match[@]}"} -H 'content-type: application/json' \
  --data-binary @"$tmp/new.json" "$url")
python3 - "$status" "$tmp/answer.json" <<'PY'
import json, sys
status, answer = sys.argv[1], open(sys.argv[2]).read()
try:
    body = json.loads(answer)
except ValueError:
    body = None
if status == "200" and body:
    print("applied: version %s (%s)" % (body.get("version"), body.get("updated_at")))
    sys.exit(0)
error = (body or {}).get("error") if isinstance(body, dict) else None
if status == "412":
    sys.exit("not applied: the configuration changed while this ran; run it again")
if error:
    sys.exit("refused (%s): %s: %s" % (status, error.get("field") or error.get("code"), error.get("message")))
sys.exit("refused (%s): %s" % (status, answer))
PY
