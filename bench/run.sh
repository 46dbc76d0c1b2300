#!/usr/bin/env bash
# Side-by-side load benchmark: hubspot-auth-proxy vs nginx doing the same job, on loopback.
#
#   bench/run.sh            # about 8 minutes; writes the load section of bench/results.md
#   ROUNDS=1 DURATION=5 bench/run.sh   # a quick look
#
# Upstream: nginx answering a small JSON body, only for the right bearer (401 otherwise).
# Competitor: nginx as a reverse proxy with a keep-alive upstream pool, Authorization and Host set.
# Floor: bench/floor.rs, a forwarder with no features: what any proxy can reach on this machine.
# Ours: the release binary with one static token (shaping off: nginx does none either).
# Load: wrk, 1 thread, 32 and 256 connections, alternating rounds. Also the direct-to-upstream
# ceiling, RSS idle / after load / after 1,000 keep-alive connections, and a run with the token
# file rewritten and SIGHUP'd every 100 ms.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
OUT=bench/out
NGINX_PORT=18082
FLOOR_PORT=18084
source bench/common.sh

cat > "$OUT/nginx-proxy.conf" <<CONF
worker_processes auto;
error_log $PWD/$OUT/nginx-proxy-error.log warn;
pid $PWD/$OUT/nginx-proxy.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream hubspot { server 127.0.0.1:$UPSTREAM_PORT; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://hubspot;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:$UPSTREAM_PORT;
      proxy_set_header Authorization "Bearer $TOKEN_A";
    }
  }
}
CONF

start_upstream
nginx -c "$PWD/$OUT/nginx-proxy.conf" -g 'daemon off;' & pids+=($!)
start_proxy
cargo build --release --locked --quiet --example floor
target/release/examples/floor "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UPSTREAM_PORT" "$TOKEN_A" & pids+=($!)
wait_for "http://127.0.0.1:$UPSTREAM_PORT/"
wait_for "http://127.0.0.1:$NGINX_PORT/"
wait_for "http://127.0.0.1:$FLOOR_PORT/"
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz"
# Every forwarder must really authenticate: the upstream refuses requests without the bearer.
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$UPSTREAM_PORT/crm/v3/objects/contacts")" = 401 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/crm/v3/objects/contacts")" = 200 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/crm/v3/objects/contacts")" = 200 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FLOOR_PORT/crm/v3/objects/contacts")" = 200 ]

RSS_IDLE=$(rss_kib)

# One wrk run: prints "rps p50_ms p99_ms non2xx errors". Clients send a bearer of their own:
# both proxies must replace it; the direct run sends the real one.
load() { # name url connections [bearer]
  local file="$OUT/wrk-$1-c$3-$RANDOM.txt"
  wrk -t1 -c"$3" -d"${DURATION}s" --latency -H "Authorization: Bearer ${4:-client-supplied}" "$2" > "$file" 2>&1 || true
  python3 - "$file" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
if "Requests/sec" not in t or "99%" not in t:
    sys.stderr.write(f"wrk failed, see {sys.argv[1]}:\n{t}\n")
    print("0 0 0 0 1")
    sys.exit(0)
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); n = float(m.group(1))
    return n / 1000 if m.group(2) == "us" else n * 1000 if m.group(2) == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", t)) else 0
errs = sum(int(x) for x in m.groups()) if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)) else 0
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {non2xx} {errs}")
PY
}

# The direct run authenticates with the token too, so the ceiling is a 200 like the others.
DIRECT="http://127.0.0.1:$UPSTREAM_PORT/crm/v3/objects/contacts"
declare -A R
for c in 32 256; do
  for round in $(seq "$ROUNDS"); do
    R[direct,$c,$round]=$(load direct "$DIRECT" "$c" "$TOKEN_A")
    R[nginx,$c,$round]=$(load nginx "http://127.0.0.1:$NGINX_PORT/crm/v3/objects/contacts" "$c")
    R[proxy,$c,$round]=$(load proxy "http://127.0.0.1:$PROXY_PORT/crm/v3/objects/contacts" "$c")
    R[floor,$c,$round]=$(load floor "http://127.0.0.1:$FLOOR_PORT/crm/v3/objects/contacts" "$c")
    echo "c=$c round $round: direct ${R[direct,$c,$round]} | nginx ${R[nginx,$c,$round]} | proxy ${R[proxy,$c,$round]} | floor ${R[floor,$c,$round]}" >&2
  done
done
RSS_LOADED=$(rss_kib)

# 1,000 keep-alive connections held open under load: the peak while they are open, and what
# stays resident once they have closed.
RSS_1000_PEAK=$(rss_peak_kib "$OUT/r1000" load proxy1000 "http://127.0.0.1:$PROXY_PORT/crm/v3/objects/contacts" 1000)
R1000=$(cat "$OUT/r1000")
RSS_1000=$(rss_settled_kib)

# Token swaps every 100 ms (file rewrite + SIGHUP), against the static case measured just before.
# One pair is at the mercy of this shared machine's ±5 % noise: alternate pairs, take medians.
STATIC_SWAPCMP=""; SWAP=""
for round in $(seq "$ROUNDS"); do
  static_run=$(load proxy "http://127.0.0.1:$PROXY_PORT/crm/v3/objects/contacts" 32)
  start_swapper 0.1 hup
  swap_run=$(load proxy-swap "http://127.0.0.1:$PROXY_PORT/crm/v3/objects/contacts" 32)
  kill "$SWAPPER"
  STATIC_SWAPCMP+="$static_run;"; SWAP+="$swap_run;"
  echo "token swap round $round: static $static_run | swapping $swap_run" >&2
done
RELOADS=$(reloads)

(python3 - "$ROUNDS" "$RSS_IDLE" "$RSS_LOADED" "$RSS_1000" "$R1000" "$STATIC_SWAPCMP" "$SWAP" "$RELOADS" "$DURATION" "$RSS_1000_PEAK" <<PY
import statistics, sys, platform, subprocess, datetime
rounds, rss_idle, rss_loaded, rss_1000, r1000, static_cmp, swap, reloads, duration, rss_1000_peak = sys.argv[1:]
rounds = int(rounds)
runs = {}
$(for k in "${!R[@]}"; do echo "runs['$k'] = '${R[$k]}'.split()"; done)
def agg(name, c, i):
    vals = [float(runs[f"{name},{c},{r}"][i]) for r in range(1, rounds + 1)]
    return statistics.median(vals)
def total(name, c, i):
    return sum(int(runs[f"{name},{c},{r}"][i]) for r in range(1, rounds + 1))
lines = []
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines.append(f"## Load benchmark\n\nMeasured {datetime.date.today()} on {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, with \`bench/run.sh\` "
             f"({rounds} alternating rounds of {duration} s each, wrk 1 thread; medians shown).\n")
lines.append("| target | conns | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
lines.append("|---|---|---|---|---|---|---|")
for c in (32, 256):
    for name, label in (("direct", "upstream directly (ceiling)"), ("nginx", "nginx reverse proxy"), ("proxy", "hubspot-auth-proxy"), ("floor", "featureless forwarder (floor)")):
        lines.append(f"| {label} | {c} | {agg(name,c,0):.0f} | {agg(name,c,1):.3f} | {agg(name,c,2):.3f} | {total(name,c,3)} | {total(name,c,4)} |")
lines.append("\n| ratio (hubspot-auth-proxy / nginx) | 32 conns | 256 conns | target |")
lines.append("|---|---|---|---|")
lines.append(f"| requests/s | {agg('proxy',32,0)/agg('nginx',32,0):.2f} | {agg('proxy',256,0)/agg('nginx',256,0):.2f} | >= 1.25 |")
lines.append(f"| p99 latency | {agg('proxy',32,2)/agg('nginx',32,2):.2f} | {agg('proxy',256,2)/agg('nginx',256,2):.2f} | <= 1.00 at 32 |")
lines.append("\n| what this machine allows (requests/s) | 32 conns | 256 conns |")
lines.append("|---|---|---|")
lines.append(f"| featureless forwarder / nginx: the most any proxy reaches here | {agg('floor',32,0)/agg('nginx',32,0):.2f} | {agg('floor',256,0)/agg('nginx',256,0):.2f} |")
lines.append(f"| hubspot-auth-proxy / featureless forwarder | {agg('proxy',32,0)/agg('floor',32,0):.2f} | {agg('proxy',256,0)/agg('floor',256,0):.2f} |")
r1000 = r1000.split()
def pairs(joined):
    return [run.split() for run in joined.split(";") if run.strip()]
def median_rps(runs):
    return statistics.median(float(run[0]) for run in runs)
st, sw = pairs(static_cmp), pairs(swap)
st_rps, sw_rps = median_rps(st), median_rps(sw)
sw_non2xx, sw_errors = sum(int(r[3]) for r in sw), sum(int(r[4]) for r in sw)
lines.append("\n| hubspot-auth-proxy | value | target |")
lines.append("|---|---|---|")
lines.append(f"| RSS idle | {int(rss_idle)/1024:.1f} MiB | |")
lines.append(f"| RSS after the 32/256-connection rounds | {int(rss_loaded)/1024:.1f} MiB | |")
lines.append(f"| RSS after 1,000 keep-alive connections (settled once they closed) | {int(rss_1000)/1024:.1f} MiB | <= 20 MiB |")
lines.append(f"| RSS peak while the 1,000 connections were open and loaded | {int(rss_1000_peak)/1024:.1f} MiB | |")
lines.append(f"| 1,000 connections: req/s, p99, non-2xx, errors | {float(r1000[0]):.0f}, {float(r1000[2]):.1f} ms, {r1000[3]}, {r1000[4]} | zero non-2xx |")
lines.append(f"| token swapped every 100 ms: req/s vs static (32 conns, medians of {rounds} alternating pairs) | {sw_rps:.0f} vs {st_rps:.0f} ({100*sw_rps/st_rps:.1f}%) | >= 95% |")
lines.append(f"| token swap runs: non-2xx, socket errors, reloads done | {sw_non2xx}, {sw_errors}, {reloads} | zero failures |")
text = "\n".join(lines) + "\n"
print(text)
PY
) | tee /dev/stderr | python3 bench/section.py load
