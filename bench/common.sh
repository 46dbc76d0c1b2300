# Shared by bench/run.sh and bench/soak.sh: tools, the nginx upstream, and the proxy under test.
# Source it after setting OUT (a scratch directory under bench/).

UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
# The same upstream over TLS, offering h2 in ALPN like HubSpot's edge (bench/run.sh only).
UPSTREAM_TLS_PORT=${UPSTREAM_TLS_PORT:-18091}
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
for port in "$UPSTREAM_PORT" "$UPSTREAM_TLS_PORT" "$PROXY_PORT" "$ADMIN_PORT" ${EXTRA_PORTS:-}; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (a leftover bench process?); stop it first" >&2
    exit 1
  fi
done

rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --locked --quiet

# A throwaway CA and a certificate for 127.0.0.1 / localhost signed by it, in $OUT: the TLS
# upstream serves it, and every forwarder trusts only that CA for it.
make_certs() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench throwaway CA" \
    -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$OUT/upstream.key" -out "$OUT/upstream.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$OUT/upstream.ext"
  openssl x509 -req -in "$OUT/upstream.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial \
    -days 2 -extfile "$OUT/upstream.ext" -out "$OUT/upstream.pem" 2>/dev/null
}

# An upstream that answers a small JSON body, and 401 unless the bearer is one of ours: plain
# HTTP/1.1 on UPSTREAM_PORT, TLS with h2 (and http/1.1) on UPSTREAM_TLS_PORT. Only /h2-check/
# is logged, with the protocol each request came in on (logging every request would cost the
# upstream CPU and fill the disk).
start_upstream() {
  [ -f "$OUT/upstream.pem" ] || make_certs
  cat > "$OUT/upstream.conf" <<CONF
worker_processes 1;
error_log $PWD/$OUT/upstream-error.log warn;
pid $PWD/$OUT/upstream.pid;
events { worker_connections 4096; }
http {
  access_log off;
  log_format protocol '\$server_port \$server_protocol \$status \$request_uri';
  map \$http_authorization \$bearer_ok { "Bearer $TOKEN_A" 1; "Bearer $TOKEN_B" 1; default 0; }
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    listen 127.0.0.1:$UPSTREAM_TLS_PORT ssl http2;
    ssl_certificate $PWD/$OUT/upstream.pem;
    ssl_certificate_key $PWD/$OUT/upstream.key;
    location /h2-check/ {
      access_log $PWD/$OUT/upstream-access.log protocol;
      default_type application/json;
      if (\$bearer_ok = 0) { return 401 '{"status":"error","category":"INVALID_AUTHENTICATION"}'; }
      return 200 '{"results":[]}';
    }
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

# hubspot-auth-proxy with one static token read from $OUT/token; sets PROXY_PID. Without
# arguments: the plain upstream on PROXY_PORT; else NAME LISTEN_PORT ADMIN_PORT BASE_URL, with
# the bench CA trusted for an https BASE_URL.
start_proxy() {
  local name=${1:-proxy} port=${2:-$PROXY_PORT} admin=${3:-$ADMIN_PORT}
  local base=${4:-http://127.0.0.1:$UPSTREAM_PORT} ca=""
  [[ "$base" == https://* ]] && ca="ca_file = \"$PWD/$OUT/ca.pem\""
  printf %s "$TOKEN_A" > "$OUT/token"
  cat > "$OUT/$name.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
[upstream]
base_url = "$base"
$ca
[[accounts]]
name = "main"
token = { file = "$PWD/$OUT/token" }
[accounts.rate_limit]
per_ten_seconds = 0
CONF
  "$BIN" --log-level warn serve --config "$OUT/$name.toml" 2>"$OUT/$name.log" & PROXY_PID=$!; pids+=($PROXY_PID)
}

wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$@" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

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
# RSS once freed memory has gone back to the OS (the allocator purges on a 10 s decay): waits
# out the decay, then polls every 2 s, up to 40 s, until two readings agree within 1 %.
rss_settled_kib() {
  local last now
  sleep 12
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
# CPU ticks (user + system, 1/CLK_TCK s) of the PIDs and their children, summed: /proc/PID/stat
# counts every thread of a process; nginx's workers are the children of its master.
cpu_ticks() {
  local p children=()
  for p in "$@"; do children+=($(pgrep -P "$p" || true)); done
  for p in "$@" "${children[@]}"; do cat "/proc/$p/stat" 2>/dev/null || true; done \
    | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
fd_count() { ls "/proc/$PROXY_PID/fd" | wc -l; }
reloads() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^hubspot_proxy_token_reloads_total.*success/ {print $2}'; }
