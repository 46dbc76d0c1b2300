# Shared by bench/run.sh and bench/soak.sh: tools, the nginx upstream, and the proxy under test.
# Source it after setting OUT (a scratch directory under bench/).

UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
PROXY_PORT=${PROXY_PORT:-18083}
ADMIN_PORT=${ADMIN_PORT:-18093}
TOKEN_A=pat-na1-bench-aaaa
TOKEN_B=pat-na1-bench-bbbb
BIN=target/release/hubspot-auth-proxy

need() { command -v "$1" >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need wrk wrk
ulimit -n 65536 2>/dev/null || true

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# A leftover proxy or nginx from an interrupted run would answer in place of the ones started here.
for port in "$UPSTREAM_PORT" "$PROXY_PORT" "$ADMIN_PORT" ${NGINX_PORT:-} ${FLOOR_PORT:-}; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (a leftover bench process?); stop it first" >&2
    exit 1
  fi
done

rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --locked --quiet

# An upstream that answers a small JSON body, and 401 unless the bearer is one of ours.
start_upstream() {
  cat > "$OUT/upstream.conf" <<CONF
worker_processes 1;
error_log $PWD/$OUT/upstream-error.log warn;
pid $PWD/$OUT/upstream.pid;
events { worker_connections 4096; }
http {
  access_log off;
  map \$http_authorization \$bearer_ok { "Bearer $TOKEN_A" 1; "Bearer $TOKEN_B" 1; default 0; }
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    keepalive_requests 1000000;
    location / {
      default_type application/json;
      if (\$bearer_ok = 0) { return 401 '{"status":"error","category":"INVALID_AUTHENTICATION"}'; }
      return 200 '{"results":[{"id":"101","properties":{"email":"ada@example.com"}}]}';
    }
  }
}
CONF
  nginx -c "$PWD/$OUT/upstream.conf" -g 'daemon off;' & pids+=($!)
}

# hubspot-auth-proxy with one static token read from $OUT/token; sets PROXY_PID.
start_proxy() {
  printf %s "$TOKEN_A" > "$OUT/token"
  cat > "$OUT/proxy.toml" <<CONF
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[upstream]
base_url = "http://127.0.0.1:$UPSTREAM_PORT"
[[accounts]]
name = "main"
token = { file = "$PWD/$OUT/token" }
[accounts.rate_limit]
per_ten_seconds = 0
CONF
  "$BIN" --log-level warn serve --config "$OUT/proxy.toml" 2>"$OUT/proxy.log" & PROXY_PID=$!; pids+=($PROXY_PID)
}

wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# Swaps the token file between the two accepted tokens every $1 seconds, with SIGHUP if $2 = hup.
start_swapper() {
  ( i=0; while true; do
      if (( i % 2 )); then t=$TOKEN_A; else t=$TOKEN_B; fi
      printf %s "$t" > "$OUT/token.tmp" && mv "$OUT/token.tmp" "$OUT/token"
      [ "${2:-}" = hup ] && kill -HUP "$PROXY_PID"
      i=$((i+1)); sleep "$1"
    done ) & SWAPPER=$!; pids+=($SWAPPER)
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status"; }
# RSS once freed memory has gone back to the OS (the allocator purges on a 10 s decay): polls
# every 2 s, up to 40 s, until two readings agree within 1 %.
rss_settled_kib() {
  local last now
  last=$(rss_kib)
  for _ in $(seq 20); do
    sleep 2; now=$(rss_kib)
    (( now * 100 >= last * 99 && now * 100 <= last * 101 )) && break
    last=$now
  done
  echo "$now"
}
# Runs "${@:2}" with its output in file $1; prints the highest RSS sampled (every 0.2 s) meanwhile.
rss_peak_kib() {
  local file=$1; shift
  "$@" > "$file" & local job=$! peak=0 now
  while kill -0 "$job" 2>/dev/null; do now=$(rss_kib); (( now > peak )) && peak=$now; sleep 0.2; done
  wait "$job" || true
  echo "$peak"
}
fd_count() { ls "/proc/$PROXY_PID/fd" | wc -l; }
reloads() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^hubspot_proxy_token_reloads_total.*success/ {print $2}'; }
