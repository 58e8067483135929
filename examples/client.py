#!/usr/bin/env python3
"""A well-behaved API client: honours Retry-After and the X-RateLimit-* headers.

It sends N requests through Envoy and never hammers a full budget:
  - on 429 (or 503) it waits the Retry-After seconds and retries the same request;
  - when X-RateLimit-Remaining reaches 0 it waits until X-RateLimit-Reset before sending
    the next request, so it is usually not throttled at all.

Python 3 standard library only. Against the local stack (bash scripts/run-stack.sh) or the
compose demo (docker compose up):

  python3 examples/client.py -n 120
  python3 examples/client.py -n 20 --api-key demo-premium-key-0001
  python3 examples/client.py --url http://127.0.0.1:10000/api/v1/health -n 150

Exit status: 0 when every request was answered, 1 on connection errors or too many retries,
2 when the server asks to wait longer than --max-wait.
"""

import argparse
import os
import sys
import time
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:10000/api/v1/request"


def send(opener, url, api_key, timeout):
    """One GET; returns (status, headers) for any HTTP answer, 4xx/5xx included."""
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            return response.status, response.headers
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, err.headers


def header_int(headers, name):
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def describe(status, headers):
    remaining = headers.get("X-RateLimit-Remaining")
    limit = headers.get("X-RateLimit-Limit")
    tier = headers.get("X-RateLimit-Tier")
    if remaining is None:
        return f"{status} (no rate-limit headers)"
    return f"{status} remaining={remaining}/{limit} tier={tier}"


def main():
    parser = argparse.ArgumentParser(
        description="Send requests, honouring Retry-After and X-RateLimit-* headers.")
    parser.add_argument("--url", default=os.environ.get("DEMO_URL", DEFAULT_URL),
                        help=f"URL to GET (default {DEFAULT_URL}, or $DEMO_URL)")
    parser.add_argument("-n", "--requests", type=int, default=10,
                        help="requests to get answered (default 10)")
    parser.add_argument("--api-key", help="sent as X-API-Key")
    parser.add_argument("--max-wait", type=float, default=120.0,
                        help="give up when told to wait longer than this many seconds")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="retries of one request after 429/503 (default 5)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    args = parser.parse_args()

    # Talk to the URL directly, whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    answered = throttled = 0
    waited = 0.0

    def wait(seconds, why):
        nonlocal waited
        if seconds > args.max_wait:
            print(f"asked to wait {seconds:.0f} s ({why}), more than --max-wait "
                  f"{args.max_wait:.0f} s: giving up", file=sys.stderr)
            sys.exit(2)
        print(f"  waiting {seconds:.1f} s ({why})", flush=True)
        time.sleep(seconds)
        waited += seconds

    for i in range(1, args.requests + 1):
        for attempt in range(args.max_retries + 1):
            try:
                status, headers = send(opener, args.url, args.api_key, args.timeout)
            except (urllib.error.URLError, OSError) as err:
                print(f"request {i}: cannot reach {args.url}: {err}", file=sys.stderr)
                return 1
            print(f"request {i}: {describe(status, headers)}", flush=True)
            if status in (429, 503) and attempt < args.max_retries:
                if status == 429:
                    throttled += 1
                retry_after = header_int(headers, "Retry-After")
                wait(max(retry_after or 1, 1), f"{status}, Retry-After: {retry_after}")
                continue
            if status in (429, 503):
                print(f"request {i}: still {status} after {args.max_retries} retries",
                      file=sys.stderr)
                return 1
            answered += 1
            break
        # Pace ourselves: an exhausted budget comes back at X-RateLimit-Reset.
        remaining = header_int(headers, "X-RateLimit-Remaining")
        reset = header_int(headers, "X-RateLimit-Reset")
        if i < args.requests and remaining == 0 and reset is not None:
            pause = reset - time.time()
            if pause > 0:
                wait(pause, "budget used up; X-RateLimit-Reset")

    print(f"done: {answered} requests answered, {throttled} throttled (429) and retried, "
          f"waited {waited:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
