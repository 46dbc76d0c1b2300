#!/usr/bin/env bash
# Soak: steady load for 10 minutes with the token file swapped every second (picked up by the
# file watcher, no SIGHUP). Samples RSS and open fds every 30 s; writes bench/soak-results.md.
#
#   bench/soak.sh                  # 10 minutes
#   SOAK_SECS=120 bench/soak.sh    # a shorter look
#
# Pass: zero non-2xx and socket errors, RSS and fds flat within 10 % after warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECS=${SOAK_SECS:-600}
WARMUP_SECS=60
SAMPLE_SECS=30
OUT=bench/out-soak
RESULTS=bench/soak-results.md
source bench/common.sh

start_upstream
start_proxy
wait_for "http://127.0.0.1:$UPSTREAM_PORT/"
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz"
start_swapper 1

wrk -t1 -c32 -d"${SOAK_SECS}s" --latency -H 'Authorization: Bearer client-supplied' \
  "http://127.0.0.1:$PROXY_PORT/crm/v3/objects/contacts" > "$OUT/wrk.txt" 2>&1 & WRK=$!
echo "seconds,rss_kib,fds" > "$OUT/samples.csv"
# Sample only while the load runs: the last sample must not catch wrk closing its connections.
for ((t = 0; t < SOAK_SECS; t += SAMPLE_SECS)); do
  echo "$t,$(rss_kib),$(fd_count)" >> "$OUT/samples.csv"
  sleep "$SAMPLE_SECS"
done
wait "$WRK" || true
RELOADS=$(reloads)

python3 - "$OUT" "$RESULTS" "$SOAK_SECS" "$WARMUP_SECS" "$RELOADS" <<'PY'
import csv, re, sys, datetime
out, results, secs, warmup, reloads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = [r for r in csv.DictReader(open(f"{out}/samples.csv")) if int(r["seconds"]) >= warmup]
wrk = open(f"{out}/wrk.txt").read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
total = int(re.search(r"(\d+) requests in", wrk).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)) else 0
errors = sum(map(int, m.groups())) if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)) else 0
def spread(key):
    vals = [int(r[key]) for r in rows]
    return min(vals), max(vals), 100.0 * (max(vals) - min(vals)) / max(min(vals), 1)
rss = spread("rss_kib"); fds = spread("fds")
text = f"""# Soak results

Measured {datetime.date.today()} with `bench/soak.sh`: {secs} s of wrk (1 thread, 32 connections)
through hubspot-auth-proxy, the token file swapped every second (file watcher, no SIGHUP).
Samples every 30 s; the first {warmup} s are warm-up.

| figure | value | target |
|---|---|---|
| requests | {total} ({rps:.0f}/s) | |
| non-2xx / socket errors | {non2xx} / {errors} | 0 / 0 |
| token reloads seen in metrics | {reloads} | about one per second |
| RSS after warm-up, min-max | {rss[0]/1024:.1f}-{rss[1]/1024:.1f} MiB ({rss[2]:.1f} % spread) | flat within 10 % |
| open fds after warm-up, min-max | {fds[0]}-{fds[1]} ({fds[2]:.1f} % spread) | flat within 10 % |
"""
open(results, "w").write(text)
print(text)
PY
