#!/usr/bin/env bash
# A/B of proxy builds on this noisy machine: the variants take turns, round after round, and
# the medians of req/s and of user and system CPU per request are compared. User time is the
# steadiest figure here; kernel time is mostly loopback TCP, which every build pays alike.
#
#   bench/ab.sh 5 plain target/release/hubspot-auth-proxy /tmp/other-build
#   bench/ab.sh 5 tls "env SOME_VAR=1 /tmp/build" /tmp/build
#   CONNS=256 CONF=/tmp/other.toml bench/ab.sh 3 plain /tmp/build
#
# Needs bench/out from a previous bench/run.sh (the upstream nginx config, its certificates and
# the proxy configs), and the same ports, so never while bench/run.sh runs.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=$1 setup=$2; shift 2
case "$setup" in
  plain) port=18083 admin=18093 conf=bench/out/proxy.toml ;;
  tls) port=18087 admin=18097 conf=bench/out/proxy-tls.toml ;;
  *) echo "setup is plain or tls" >&2; exit 2 ;;
esac
conf=${CONF:-$conf} conns=${CONNS:-32}
[ -f "$conf" ] || { echo "$conf is missing: run bench/run.sh once first" >&2; exit 1; }
out=$(mktemp)
nginx -c "$PWD/bench/out/upstream.conf" -g 'daemon off;' & upstream=$!
trap 'kill $upstream 2>/dev/null; rm -f "$out"' EXIT
sleep 1

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
for round in $(seq "$rounds"); do
  for i in $(seq 0 $(($# - 1))); do
    variants=("$@")
    ${variants[$i]} --log-level warn serve --config "$conf" > /dev/null 2>&1 & proxy=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$admin/readyz" && break; sleep 0.1; done
    url="http://127.0.0.1:$port/crm/v3/objects/contacts"
    wrk -t1 -c"$conns" -d1s "$url" > /dev/null
    read -r u0 s0 < <(ticks "$proxy")
    result=$(wrk -t1 -c"$conns" -d5s "$url")
    read -r u1 s1 < <(ticks "$proxy")
    kill "$proxy"; wait "$proxy" 2>/dev/null || true
    requests=$(awk '/requests in/ {print $1}' <<< "$result")
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$result")
    # Clock ticks are 10 ms: µs per request = ticks * 10,000 / requests.
    awk -v i="$i" -v rps="$rps" -v n="$requests" -v u=$((u1 - u0)) -v s=$((s1 - s0)) \
      'BEGIN { printf "%s %s %.2f %.2f\n", i, rps, u * 10000 / n, s * 10000 / n }' | tee -a "$out"
  done
done
python3 - "$out" "$@" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for i, name in enumerate(sys.argv[2:]):
    mine = [r for r in rows if r[0] == str(i)]
    med = lambda k: statistics.median(float(r[k]) for r in mine)
    print(f"{name:50s} req/s {med(1):8.0f}  user {med(2):5.1f}  sys {med(3):5.1f} µs/req")
PY
