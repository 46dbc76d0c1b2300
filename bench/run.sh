#!/usr/bin/env bash
# Side-by-side load benchmark on loopback: hubspot-auth-proxy against nginx, HAProxy and Caddy
# doing the same job, the featureless floor, and the upstream directly.
#
#   bench/run.sh                       # about 17 minutes after the release build; writes the load section of bench/results.md
#   ROUNDS=1 DURATION=2 LAT_DURATION=1 bench/run.sh   # a smoke run (figures meaningless)
#
# Upstream: nginx answering a small JSON body, only for the right bearer (401 otherwise), both
# plain HTTP/1.1 and TLS offering h2 in ALPN (HubSpot's shape), with a throwaway CA.
# Peers, each injecting the bearer and setting Host, with pooled upstream connections:
#   nginx (h1 upstream, also over TLS: nginx's proxy module has no h2 upstream), HAProxy (h1
#   backend, and `alpn h2` over TLS), Caddy (h1, and h2 over TLS: Go's transport negotiates it).
# Floors: bench/floor.rs, a forwarder with no features (plaintext only), and bench/hyper_floor.rs,
# the same job with no features on this project's own stack (hyper, tokio, rustls), both setups.
# Ours: the release binary with one static token (shaping off: the peers do none either), one
# instance per setup.
# Measured: req/s, p50/p99 at 32 and 256 connections in alternating rounds (medians), CPU per
# request of each forwarder and of the upstream from /proc, sequential latency on one keep-alive
# connection, memory with 1,000 idle keep-alive connections for every forwarder, that ours speaks
# h2 to the TLS upstream, a 1,000-busy-connection run and token swaps (SIGHUP every 100 ms).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
LAT_DURATION=${LAT_DURATION:-3}
IDLE_CONNS=${IDLE_CONNS:-1000}
OUT=bench/out
NGINX_PORT=18082 NGINX_TLS_PORT=18092
FLOOR_PORT=18084 HYPER_PORT=18088 HYPER_TLS_PORT=18098
HAPROXY_PORT=18085 HAPROXY_TLS_PORT=18095
CADDY_PORT=18086 CADDY_TLS_PORT=18096
PROXY_TLS_PORT=18087 ADMIN_TLS_PORT=18097
EXTRA_PORTS="$NGINX_PORT $NGINX_TLS_PORT $FLOOR_PORT $HYPER_PORT $HYPER_TLS_PORT $HAPROXY_PORT $HAPROXY_TLS_PORT $CADDY_PORT $CADDY_TLS_PORT $PROXY_TLS_PORT $ADMIN_TLS_PORT"
source bench/common.sh
need haproxy haproxy
need caddy caddy

PATH_=/crm/v3/objects/contacts
PLAIN_UP=127.0.0.1:$UPSTREAM_PORT
TLS_UP=127.0.0.1:$UPSTREAM_TLS_PORT

cat > "$OUT/nginx-proxy.conf" <<CONF
worker_processes auto;
error_log $PWD/$OUT/nginx-proxy-error.log warn;
pid $PWD/$OUT/nginx-proxy.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  upstream plain { server $PLAIN_UP; keepalive 256; keepalive_requests 1000000; }
  upstream tls { server $TLS_UP; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://plain;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $PLAIN_UP;
      proxy_set_header Authorization "Bearer $TOKEN_A";
    }
  }
  server {
    listen 127.0.0.1:$NGINX_TLS_PORT;
    location / {
      proxy_pass https://tls;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $TLS_UP;
      proxy_set_header Authorization "Bearer $TOKEN_A";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $PWD/$OUT/ca.pem;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }
  }
}
CONF

cat > "$OUT/haproxy.cfg" <<CONF
global
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 60s
  timeout http-keep-alive 120s
  http-reuse always
frontend plain
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend plain
frontend tls
  bind 127.0.0.1:$HAPROXY_TLS_PORT
  default_backend tls
backend plain
  http-request set-header Host $PLAIN_UP
  http-request set-header Authorization "Bearer $TOKEN_A"
  server upstream $PLAIN_UP
backend tls
  http-request set-header Host $TLS_UP
  http-request set-header Authorization "Bearer $TOKEN_A"
  server upstream $TLS_UP ssl verify required ca-file $PWD/$OUT/ca.pem verifyhost localhost sni str(localhost) alpn h2
CONF

cat > "$OUT/Caddyfile" <<CONF
{
  admin off
  auto_https off
  storage file_system $PWD/$OUT/caddy-data
}
http://127.0.0.1:$CADDY_PORT {
  bind 127.0.0.1
  reverse_proxy $PLAIN_UP {
    header_up Host $PLAIN_UP
    header_up Authorization "Bearer $TOKEN_A"
    transport http {
      keepalive 120s
      keepalive_idle_conns 256
    }
  }
}
http://127.0.0.1:$CADDY_TLS_PORT {
  bind 127.0.0.1
  reverse_proxy https://$TLS_UP {
    header_up Host $TLS_UP
    header_up Authorization "Bearer $TOKEN_A"
    transport http {
      tls_trusted_ca_certs $PWD/$OUT/ca.pem
      tls_server_name localhost
      keepalive 120s
      keepalive_idle_conns 256
    }
  }
}
CONF

start_upstream; UPSTREAM_PID=${pids[-1]}
nginx -c "$PWD/$OUT/nginx-proxy.conf" -g 'daemon off;' & NGINX_PID=$!; pids+=($!)
haproxy -db -f "$OUT/haproxy.cfg" 2>"$OUT/haproxy.log" & HAPROXY_PID=$!; pids+=($!)
XDG_CONFIG_HOME="$PWD/$OUT/caddy-config" XDG_DATA_HOME="$PWD/$OUT/caddy-data" \
  caddy run --adapter caddyfile --config "$OUT/Caddyfile" 2>"$OUT/caddy.log" & CADDY_PID=$!; pids+=($!)
cargo build --release --locked --quiet --example floor --example hyper_floor
target/release/examples/floor "127.0.0.1:$FLOOR_PORT" "$PLAIN_UP" "$TOKEN_A" & FLOOR_PID=$!; pids+=($!)
target/release/examples/hyper_floor "127.0.0.1:$HYPER_PORT" "http://$PLAIN_UP" "$TOKEN_A" & HYPER_PID=$!; pids+=($!)
target/release/examples/hyper_floor "127.0.0.1:$HYPER_TLS_PORT" "https://$TLS_UP" "$TOKEN_A" "$OUT/ca.pem" & HYPER_TLS_PID=$!; pids+=($!)
start_proxy proxy-tls "$PROXY_TLS_PORT" "$ADMIN_TLS_PORT" "https://$TLS_UP"; PROXY_TLS_PID=$PROXY_PID
start_proxy   # last: PROXY_PID, ADMIN_PORT and the token swapper are the plaintext instance's

declare -A PORT=([plain,nginx]=$NGINX_PORT [plain,haproxy]=$HAPROXY_PORT [plain,caddy]=$CADDY_PORT
  [plain,floor]=$FLOOR_PORT [plain,hyper]=$HYPER_PORT [plain,ours]=$PROXY_PORT
  [tls,nginx]=$NGINX_TLS_PORT [tls,haproxy]=$HAPROXY_TLS_PORT [tls,caddy]=$CADDY_TLS_PORT
  [tls,hyper]=$HYPER_TLS_PORT [tls,ours]=$PROXY_TLS_PORT)
declare -A PID=([nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [caddy]=$CADDY_PID [floor]=$FLOOR_PID
  [plain,hyper]=$HYPER_PID [tls,hyper]=$HYPER_TLS_PID [plain,ours]=$PROXY_PID [tls,ours]=$PROXY_TLS_PID)
pid_of() { echo "${PID[$1,$2]:-${PID[$2]:-}}"; } # setup target
url_of() { # setup target
  case "$1,$2" in
    plain,direct) echo "http://$PLAIN_UP$PATH_" ;;
    tls,direct) echo "https://$TLS_UP$PATH_" ;;
    *) echo "http://127.0.0.1:${PORT[$1,$2]}$PATH_" ;;
  esac
}

wait_for "http://$PLAIN_UP/"
wait_for "https://$TLS_UP/" --cacert "$OUT/ca.pem"
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz"
wait_for "http://127.0.0.1:$ADMIN_TLS_PORT/readyz"
# Every forwarder must really authenticate: the upstream refuses requests without the bearer.
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$PLAIN_UP$PATH_")" = 401 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$OUT/ca.pem" "https://$TLS_UP$PATH_")" = 401 ]
for key in "${!PORT[@]}"; do
  wait_for "http://127.0.0.1:${PORT[$key]}/"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$(url_of "${key%,*}" "${key#*,}")")
  [ "$code" = 200 ] || { echo "$key answered $code, not 200" >&2; exit 1; }
done
echo "{\"what\": \"params\", \"duration\": $DURATION}" > "$OUT/extra.jsonl"

# Memory first, on fresh processes: idle, with IDLE_CONNS idle keep-alive connections, after.
# The hyper floor is measured in its TLS setup, where every client connection shares its worker's
# one h2 connection: its figure is then hyper's server connection alone.
for key in plain,ours tls,ours plain,nginx plain,haproxy plain,caddy plain,floor tls,hyper; do
  setup=${key%,*} target=${key#*,}
  result=$(python3 bench/idle.py "${PORT[$key]}" "$IDLE_CONNS" $(pid_of "$setup" "$target"))
  echo "memory $key: $result" >&2
  echo "{\"what\": \"idle\", \"setup\": \"$setup\", \"target\": \"$target\", ${result#\{}" >> "$OUT/extra.jsonl"
done

# One wrk run, appended to runs.jsonl with the CPU ticks of the forwarder and of the upstream.
# Clients send a bearer of their own: the forwarders must replace it; the direct run sends the
# real one, so that the ceiling is a 200 like the others.
load() { # setup target conns round duration
  local setup=$1 target=$2 c=$3 round=$4 duration=$5 bearer=client-supplied fwd=() f0="" f1=""
  local file="$OUT/wrk-$setup-$target-c$c-r$round.txt" u0 u1 base=${setup#latency-}
  base=${base%-1000}
  [ "$target" = direct ] && bearer=$TOKEN_A || fwd=($(pid_of "$base" "$target"))
  ((${#fwd[@]})) && f0=$(cpu_ticks "${fwd[@]}")
  u0=$(cpu_ticks "$UPSTREAM_PID")
  wrk -t1 -c"$c" -d"${duration}s" --latency -H "Authorization: Bearer $bearer" \
    "$(url_of "$base" "$target")" > "$file" 2>&1 || true
  ((${#fwd[@]})) && f1=$(cpu_ticks "${fwd[@]}")
  u1=$(cpu_ticks "$UPSTREAM_PID")
  python3 bench/report.py wrk "$file" "$setup" "$target" "$c" "$round" \
    "${f0:+$((f1 - f0))}" "$((u1 - u0))" | tee -a "$OUT/runs.jsonl" >&2
}

for setup in plain tls; do
  targets="direct nginx haproxy caddy hyper ours"; [ "$setup" = plain ] && targets+=" floor"
  for c in 32 256; do
    for round in $(seq "$ROUNDS"); do
      for target in $targets; do load "$setup" "$target" "$c" "$round" "$DURATION"; done
    done
  done
  for round in $(seq "$ROUNDS"); do
    for target in $targets; do load "latency-$setup" "$target" 1 "$round" "$LAT_DURATION"; done
  done
done

# h2 to the TLS upstream: the connections each forwarder holds to it, and the protocol the
# upstream logged for requests it forwarded.
for target in ours nginx haproxy caddy; do
  for i in $(seq 20); do curl -s -o /dev/null "http://127.0.0.1:${PORT[tls,$target]}/h2-check/$target/$i"; done
  family=$(pid_of tls "$target"); family+=" $(pgrep -P "$family" | tr '\n' ' ' || true)"
  conns=0
  for p in $family; do
    n=$(ss -tnpH state established "( dport = :$UPSTREAM_TLS_PORT )" | grep -c "pid=$p," || true)
    conns=$((conns + n))
  done
  protocols=$(awk -v t="/h2-check/$target/" 'index($4, t) == 1 { print $2 " " $3 }' "$OUT/upstream-access.log" \
    | sort | uniq -c | awk '{ printf "%s%s x%s (status %s)", sep, $2, $1, $3; sep = ", " }')
  echo "h2 check $target: $conns upstream connections, $protocols" >&2
  echo "{\"what\": \"h2-check\", \"target\": \"$target\", \"connections\": $conns, \"protocols\": \"$protocols\"}" >> "$OUT/extra.jsonl"
done
if ! grep -q "/h2-check/ours/.*" "$OUT/upstream-access.log" || grep "/h2-check/ours/" "$OUT/upstream-access.log" | grep -qv "HTTP/2.0 200"; then
  echo "hubspot-auth-proxy did not speak h2 (with 200s) to the TLS upstream; see $OUT/upstream-access.log" >&2
  exit 1
fi

RSS_LOADED=$(rss_kib)
# 1,000 busy keep-alive connections: every request answered, the peak while they are open, and
# what stays resident once they have closed.
RSS_1000_PEAK=$(rss_peak_kib /dev/null load plain-1000 ours 1000 1 "$DURATION")
R1000=$(grep '"plain-1000"' "$OUT/runs.jsonl" | tail -1)
RSS_1000=$(rss_settled_kib)

# Token swaps every 100 ms (file rewrite + SIGHUP), against the static case measured just before.
# One pair is at the mercy of this shared machine's ±5 % noise: alternate pairs, take medians.
swap_load() { # name round
  local file="$OUT/wrk-swap-$1-r$2.txt"
  wrk -t1 -c32 -d"${DURATION}s" --latency -H "Authorization: Bearer client-supplied" \
    "http://127.0.0.1:$PROXY_PORT$PATH_" > "$file" 2>&1 || true
  python3 bench/report.py wrk "$file" swap "$1" 32 "$2" "" 0 | tee -a "$OUT/swap.jsonl" >&2
}
for round in $(seq "$ROUNDS"); do
  swap_load static "$round"
  start_swapper 0.1 hup
  swap_load swapping "$round"
  kill "$SWAPPER"
done
echo "{\"what\": \"ours\", \"rss_loaded\": $RSS_LOADED, \"rss_1000_peak\": $RSS_1000_PEAK, \"rss_1000\": $RSS_1000, \"reloads\": ${RELOADS:-$(reloads)}, \"r1000\": $R1000}" >> "$OUT/extra.jsonl"

python3 bench/report.py report "$OUT" | tee /dev/stderr | python3 bench/section.py load
