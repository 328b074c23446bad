#!/usr/bin/env bash
# HTTPS interception benchmark (issue 4, "Figures"): scrim in proxy mode
# (CONNECT + TLS termination with its local CA + re-encryption to the
# provider, scrubbing on as shipped) against mitmproxy and Squid with
# ssl-bump doing the same interception, all in front of one fake HTTPS
# provider on loopback, plus a direct-to-provider baseline; then leaf
# certificate mint time and the cost of a handshake with a cached
# certificate. Everything is measured in one run, interleaved, because the
# machine is shared and noisy: compare the ratios, not the absolute numbers.
#
#   bench/proxy_bench.sh            # as root on Debian 12; about 5 minutes
#
# Environment (all optional):
#   BENCH_DURATION=5            seconds per load measurement
#   BENCH_WARMUP=1              seconds of unrecorded load before each
#   BENCH_ROUNDS=3              interleaved rounds per connection count
#   BENCH_CONNECTIONS="1 16"    client connection counts
#   BENCH_HANDSHAKES=40         fresh names per contender for the handshake
#                               figures (each: one fresh + two cached)
#   BENCH_PIN=1                 proxies on CPU 1, client + provider on CPU 0
#   BENCH_NICE=0                nice value for everything the benchmark runs
#                               (e.g. -10, as root: the same for every
#                               contender, so that other people's builds
#                               disturb the measurements less)
#   BENCH_NO_BUILD=1            use build/scrim as it is
#   SCRIM_BIN=PATH              benchmark this binary instead
#   BENCH_PROVIDER_PORT=443     where the fake provider listens (see below)
#
# What runs (all on 127.0.0.1 only, from a temporary directory, stopped on
# exit; a failed run keeps its logs there and says where):
#   provider   nginx, worker_processes 1, TLS with a certificate for
#              api.openai.com from a test CA made here with openssl, on
#              127.0.0.1:443; it reads the whole request body (echo module)
#              and answers a fixed chat.completion
#   scrim      proxy mode, intercept api.openai.com and *.mint.test, auth =
#              keys, scrub = on with rules/, audit on, [provider openai]
#              base_url = https://api.openai.com/v1 with ca_file = the test
#              CA, resolve = api.openai.com:443:127.0.0.1:443
#   mitmproxy  mitmdump, upstream verified with ssl_verify_upstream_trusted_ca
#              = the test CA; bench/proxy/mitm_route.py sends api.openai.com
#              to 127.0.0.1:443 (TLS still checked against the name)
#   squid      squid-openssl, ssl_bump bump all, generated certificates,
#              tls_outgoing_options cafile = the test CA, hosts_file mapping
#              api.openai.com to 127.0.0.1, server_pconn_for_nonretriable
#              allow all (else Squid opens a new upstream TLS connection for
#              every POST)
#   client     bench/proxy/load.mjs: N keep-alive connections, each one
#              CONNECT + TLS handshake with the proxy's CA, then back-to-back
#              POSTs of a 4,096-byte chat body; bench/proxy/handshake.mjs
#              for the handshake figures
#
# Why port 443: Squid's hosts_file changes the address but not the port, so
# the provider sits where api.openai.com's would, for all three proxies.
#
# Writes bench/results/proxy-DATE.txt (summary, then raw lines).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PB=$BENCH_DIR/proxy
DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16"}
HANDSHAKES=${BENCH_HANDSHAKES:-40}
PIN=${BENCH_PIN:-1}
NICE=${BENCH_NICE:-0}
SCRIM=${SCRIM_BIN:-$ROOT/build/scrim}
P_PROV=${BENCH_PROVIDER_PORT:-443}

log() { printf '[proxy-bench] %s\n' "$*" >&2; }
die() { printf '[proxy-bench] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------- processes

PIDS=()
TMP=
POLICY_RC_ADDED=
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$POLICY_RC_ADDED" ]]; then rm -f /usr/sbin/policy-rc.d; fi
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ $rc -ne 0 ]]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Command prefixes (arrays, so that `"${ON_CPU1[@]}" cmd &` leaves $! =
# cmd's own pid: nice and taskset exec).
ON_CPU0=() ON_CPU1=()
if [[ "$PIN" == 1 && "$(nproc)" -ge 2 ]]; then ON_CPU0=(taskset -c 0) ON_CPU1=(taskset -c 1); else PIN=0; fi
if [[ "$NICE" != 0 ]]; then
  [[ "$NICE" -ge 0 || $(id -u) == 0 ]] || die "BENCH_NICE=$NICE needs root"
  ON_CPU0=(nice -n "$NICE" "${ON_CPU0[@]}") ON_CPU1=(nice -n "$NICE" "${ON_CPU1[@]}")
fi

# stop one process we started and forget it
stop() {
  local p keep=()
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

wait_port() { # $1 port, $2 name, $3 pid: until something listens on 127.0.0.1:$1
  local i
  for ((i = 0; i < 200; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited at start; logs in $TMP"
    sleep 0.1
  done
  die "$2 did not come up on 127.0.0.1:$1; logs in $TMP"
}

free_ports() { # N distinct free loopback ports
  node -e '
    const net = require("node:net"); const n = +process.argv[1]; const held = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      s.listen(0, "127.0.0.1", () => {
        held.push(s);
        if (held.length === n) { console.log(held.map((x) => x.address().port).join(" ")); held.forEach((x) => x.close()); }
      });
    }' "$1"
}

# CPU ticks of the whole machine (user+nice+system+steal; irq/softirq are
# left out: loopback traffic spends much there, charged to no process) and
# of everything we started (and their children)
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $9}' /proc/stat; }
our_ticks() {
  local p q sum=0 t
  for p in "${PIDS[@]}"; do
    for q in $p $(pgrep -P "$p" 2>/dev/null || true); do
      t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$q/stat" 2>/dev/null) || continue
      sum=$((sum + ${t:-0}))
    done
  done
  echo "$sum"
}

# ----------------------------------------------------------- dependencies

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
[[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]] || need+=(libnginx-mod-http-echo)
command -v mitmdump >/dev/null 2>&1 || need+=(mitmproxy)
[[ -x /usr/lib/squid/security_file_certgen ]] || need+=(squid-openssl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v node >/dev/null 2>&1 || need+=(nodejs)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${need[*]}"
  log "installing ${need[*]}"
  # Squid's and nginx's packages start their system services on install
  # (Squid on *:3128); keep them from it.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_ADDED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
  }
  if [[ -n "$POLICY_RC_ADDED" ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_ADDED=; fi
fi

if [[ -z "${SCRIM_BIN:-}" && "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  log "building scrim (cmake --build build)"
  if [[ ! -f "$ROOT/build/CMakeCache.txt" ]]; then
    cmake -S "$ROOT" -B "$ROOT/build" -DSCRIM_WERROR=ON >/dev/null || die "cmake failed"
  fi
  cmake --build "$ROOT/build" -j2 --target scrim >/dev/null || die "the build failed"
fi
[[ -x "$SCRIM" ]] || die "no scrim binary at $SCRIM"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/scrim-proxy-bench.XXXXXX)
chmod 755 "$TMP" # Squid drops to the proxy user and must read its files
read -r P_STUB P_SCRIM P_SCRIM_A P_MITM P_SQUID P_CHK1 P_CHK1A P_CHK2 P_CHK3 <<<"$(free_ports 9)"
if (exec 3<>"/dev/tcp/127.0.0.1/$P_PROV") 2>/dev/null; then
  die "127.0.0.1:$P_PROV is taken; the fake provider needs it (BENCH_PROVIDER_PORT, see the head of this script)"
fi

RESULTS_DIR=$BENCH_DIR/results
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/proxy-$(date +%Y%m%d-%H%M%S).txt
RAW=$TMP/raw.jsonl
: >"$RAW"

# ------------------------------------------------------------------ PKI

# $1 file prefix, $2 common name: a CA (ECDSA P-256, 30 days)
make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" \
    -days 30 -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign >/dev/null 2>&1 || die "openssl: CA $2"
}
log "making the test PKI"
make_ca "$TMP/testca" "scrim bench provider CA"  # signs the fake provider's certificate
make_ca "$TMP/rogueca" "scrim bench rogue CA"    # trusted by nobody: the verification check
make_ca "$TMP/squidca" "scrim bench Squid CA"    # Squid's interception CA
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/provider.key" \
  -out "$TMP/provider.csr" -subj /CN=api.openai.com >/dev/null 2>&1
printf 'subjectAltName=DNS:api.openai.com\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$TMP/leaf.ext"
openssl x509 -req -in "$TMP/provider.csr" -CA "$TMP/testca.pem" -CAkey "$TMP/testca.key" -CAcreateserial \
  -days 30 -extfile "$TMP/leaf.ext" -out "$TMP/provider.pem" >/dev/null 2>&1 || die "openssl: provider certificate"
chmod 644 "$TMP"/*.pem "$TMP/squidca.key"

# ------------------------------------------------------------- provider

# A fixed, realistic chat.completion (no single quotes, no $: it sits in
# an nginx string).
COMPLETION='{"id":"chatcmpl-proxybench000000000000000000","object":"chat.completion","created":1732233600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The package stage failed first: the upload of the second artifact stalled at sixty percent and the mirror dropped the connection. The signing warning before it is harmless, since the step continued. Retry the upload against another mirror, then check the mirror logs around 01:10 for connection limits.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":930,"completion_tokens":61,"total_tokens":991,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_proxybench"}'
mkdir -p "$TMP/provider"
cat >"$TMP/provider/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
worker_processes 1;
pid $TMP/provider/nginx.pid;
error_log $TMP/provider/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $TMP/provider/body;
  proxy_temp_path $TMP/provider/proxy;
  fastcgi_temp_path $TMP/provider/fastcgi;
  uwsgi_temp_path $TMP/provider/uwsgi;
  scgi_temp_path $TMP/provider/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_max_body_size 8m;
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$P_STUB;
    location / { stub_status; }
  }
  server {
    listen 127.0.0.1:$P_PROV ssl;
    server_name api.openai.com;
    ssl_certificate $TMP/provider.pem;
    ssl_certificate_key $TMP/provider.key;
    location / {
      default_type application/json;
      # read the whole request, as a real provider does, then answer
      echo_read_request_body;
      echo -n '$COMPLETION';
    }
  }
}
EOF
provider_count() { curl -s "http://127.0.0.1:$P_STUB/" | awk 'NR == 3 {print $3}'; }

log "starting the provider (nginx, TLS) on 127.0.0.1:$P_PROV"
"${ON_CPU0[@]}" nginx -p "$TMP/provider" -c "$TMP/provider/nginx.conf" -g 'daemon off;' \
  >"$TMP/provider/stdout.log" 2>&1 &
PIDS+=($!)
wait_port "$P_STUB" "provider nginx" "$!"
wait_port "$P_PROV" "provider nginx" "$!"

# ------------------------------------------------------------- the proxies

"$SCRIM" keys generate bench >"$TMP/key.txt"
CLIENT_KEY=$(sed -n 's/^key: //p' "$TMP/key.txt")
KEY_LINE=$(grep '^bench = ' "$TMP/key.txt")
[[ -n "$CLIENT_KEY" && -n "$KEY_LINE" ]] || die "scrim keys generate printed no key"
export BENCH_PROVIDER_KEY=sk-bench-provider-key
# 32 random bytes, as hex: scrim refuses a secret file holding a NUL byte
# ("Invalid argument"), which raw `head -c 32 /dev/urandom` has 12% of the time
openssl rand -hex 32 >"$TMP/scrub.secret"
chmod 600 "$TMP/scrub.secret"

# $1 listen port, $2 admin port, $3 state dir, $4 ca_file for the provider
scrim_conf() {
  cat <<EOF
[gateway]
listen = 127.0.0.1:$1
admin_listen = 127.0.0.1:$2
auth = keys
log_level = warn
drain_timeout = 1s
rules_dir = $ROOT/rules
scrub = on
scrub_secret_file = $TMP/scrub.secret
state_dir = $3

[proxy]
mode = on
intercept = api.openai.com *.mint.test
default = deny
auth = keys
client_keys = replace
resolve = api.openai.com:443:127.0.0.1:$P_PROV

[keys]
$KEY_LINE

[provider openai]
base_url = https://api.openai.com/v1
api_key_env = BENCH_PROVIDER_KEY
auth_header = bearer
ca_file = $4
connect_timeout = 2s
timeout = 60s

[route openai]
prefix = /v1/
provider = openai
EOF
}

start_scrim() { # $1 name, $2 port, $3 admin port, $4 ca_file
  mkdir -p "$TMP/$1"
  "$SCRIM" ca init --dir "$TMP/$1" >/dev/null
  scrim_conf "$2" "$3" "$TMP/$1" "$4" >"$TMP/$1/scrim.conf"
  "$SCRIM" check -c "$TMP/$1/scrim.conf" >"$TMP/$1/check.log" 2>&1 || die "scrim check failed: $TMP/$1/check.log"
  "${ON_CPU1[@]}" "$SCRIM" serve -c "$TMP/$1/scrim.conf" >"$TMP/$1/stdout.log" 2>"$TMP/$1/stderr.log" &
  PIDS+=($!)
  LAST_PID=$!
  wait_port "$2" "$1" "$LAST_PID"
}

start_mitm() { # $1 name, $2 port, $3 upstream CA
  mkdir -p "$TMP/$1"
  "${ON_CPU1[@]}" mitmdump -q --listen-host 127.0.0.1 --listen-port "$2" \
    --set confdir="$TMP/$1" --set ssl_verify_upstream_trusted_ca="$3" \
    --set connection_strategy=lazy \
    -s "$PB/mitm_route.py" --set bench_route="api.openai.com:443=127.0.0.1:$P_PROV" \
    >"$TMP/$1/stdout.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
  wait_port "$2" "$1" "$LAST_PID"
}

start_squid() { # $1 name, $2 port, $3 upstream CA
  local d=$TMP/$1
  mkdir -p "$d"
  /usr/lib/squid/security_file_certgen -c -s "$d/ssl_db" -M 16MB >/dev/null
  echo "127.0.0.1 api.openai.com" >"$d/hosts"
  cat >"$d/squid.conf" <<EOF
http_port 127.0.0.1:$2 ssl-bump tls-cert=$TMP/squidca.pem tls-key=$TMP/squidca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s $d/ssl_db -M 16MB
sslcrtd_children 5 startup=1 idle=1
ssl_bump bump all
tls_outgoing_options cafile=$3
acl localhost_src src 127.0.0.1/32
http_access allow localhost_src
http_access deny all
hosts_file $d/hosts
dns_nameservers 127.0.0.1
server_pconn_for_nonretriable allow all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log $d/cache.log
pid_filename $d/squid.pid
coredump_dir $d
cache_effective_user proxy
pinger_enable off
shutdown_lifetime 1 seconds
EOF
  chown -R proxy:proxy "$d"
  "${ON_CPU1[@]}" squid -N -f "$d/squid.conf" >"$d/stdout.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
  wait_port "$2" "$1" "$LAST_PID"
}

# ------------------------------------------------------------- the checks

LOAD=(node "$PB/load.mjs")
declare -A LOAD_ARGS
LOAD_ARGS[direct]="--target 127.0.0.1:$P_PROV --tls --sni api.openai.com --ca $TMP/testca.pem"
scrim_args() { echo "--target 127.0.0.1:$1 --connect api.openai.com:443 --proxy-key $CLIENT_KEY --tls --sni api.openai.com --ca $2"; }
other_args() { echo "--target 127.0.0.1:$1 --connect api.openai.com:443 --tls --sni api.openai.com --ca $2"; }

# $1 name, then load.mjs arguments: one request; prints "status bytes"
one_request() {
  local name=$1 out
  shift
  out=$(node "$PB/load.mjs" "$@" --key "$CLIENT_KEY" --check 2>&1) || { echo "000 $(tr '\n' ' ' <<<"$out" | head -c 300)"; return 0; }
  node -e 'const r = JSON.parse(process.argv[1]); console.log(r.status, r.body.includes("chatcmpl-proxybench") ? "completion" : JSON.stringify(r.body.slice(0, 200)))' "$out"
}

# Each path must bring the provider's completion back, with the provider
# counting exactly one more request.
verify_path() { # $1 name, then load.mjs arguments
  local name=$1 before after res
  shift
  before=$(provider_count)
  res=$(one_request "$name" "$@")
  after=$(provider_count)
  # the stub_status request itself counts one
  if [[ "$res" != "200 completion" || $((after - before)) -ne 2 ]]; then
    die "$name does not reach the provider: $res; provider requests +$((after - before - 1)); logs in $TMP"
  fi
  echo "check: $name -> 200 with the provider's completion; the provider counted +1 request" >>"$TMP/checks.txt"
}

# Each proxy told to trust another CA must refuse the provider's certificate.
refuse_check() { # $1 name, $2 pid to stop afterwards, then load.mjs arguments
  local name=$1 pid=$2 before after res
  shift 2
  before=$(provider_count)
  res=$(one_request "$name" "$@")
  after=$(provider_count)
  stop "$pid"
  if [[ "$res" == "200 completion" ]]; then
    die "$name accepted the provider's certificate while trusting only another CA; logs in $TMP"
  fi
  echo "check: $name trusting only a rogue CA -> ${res%% *} (not the completion; provider requests +$((after - before - 1)))" >>"$TMP/checks.txt"
}

: >"$TMP/checks.txt"
log "verification: each proxy trusting a rogue CA must refuse the provider"
start_scrim scrim-rogue "$P_CHK1" "$P_CHK1A" "$TMP/rogueca.pem"
# (the load.mjs arguments are split on purpose: the paths have no spaces)
# shellcheck disable=SC2046
refuse_check scrim "$LAST_PID" $(scrim_args "$P_CHK1" "$TMP/scrim-rogue/ca.pem")
start_mitm mitm-rogue "$P_CHK2" "$TMP/rogueca.pem"
# shellcheck disable=SC2046
refuse_check mitmproxy "$LAST_PID" $(other_args "$P_CHK2" "$TMP/mitm-rogue/mitmproxy-ca-cert.pem")
start_squid squid-rogue "$P_CHK3" "$TMP/rogueca.pem"
# shellcheck disable=SC2046
refuse_check squid "$LAST_PID" $(other_args "$P_CHK3" "$TMP/squidca.pem")

log "starting scrim (127.0.0.1:$P_SCRIM), mitmproxy (:$P_MITM), squid (:$P_SQUID)"
start_scrim scrim "$P_SCRIM" "$P_SCRIM_A" "$TMP/testca.pem"
start_mitm mitm "$P_MITM" "$TMP/testca.pem"
start_squid squid "$P_SQUID" "$TMP/testca.pem"
LOAD_ARGS[scrim]=$(scrim_args "$P_SCRIM" "$TMP/scrim/ca.pem")
LOAD_ARGS[mitmproxy]=$(other_args "$P_MITM" "$TMP/mitm/mitmproxy-ca-cert.pem")
LOAD_ARGS[squid]=$(other_args "$P_SQUID" "$TMP/squidca.pem")
TARGETS=(direct scrim mitmproxy squid)
for t in "${TARGETS[@]}"; do verify_path "$t" ${LOAD_ARGS[$t]}; done
# scrim must really scrub inside the tunnel: an e-mail address in the
# prompt does not reach the provider (x-scrim-redactions counts it)
red=$(node -e '
  import("'"$PB"'/common.mjs").then(async (c) => {
    const fs = await import("node:fs");
    const a = process.argv.slice(1);
    const { sock } = await c.openConnection({ target: { host: "127.0.0.1", port: +a[0] }, connect: "api.openai.com:443",
      proxyAuth: "Basic " + Buffer.from("u:" + a[1]).toString("base64"),
      tls: { servername: "api.openai.com", ca: fs.readFileSync(a[2], "utf8") } });
    const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Mail jane.roe@example.com the log" }] });
    const p = new c.ResponseParser();
    sock.on("data", (d) => { const r = p.feed(d); if (r.length) { console.log(r[0].status, r[0].headers["x-scrim-redactions"]); sock.destroy(); } });
    sock.write(c.requestBytes({ path: "/v1/chat/completions", host: "api.openai.com",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + a[1] }, body }));
  });' "$P_SCRIM" "$CLIENT_KEY" "$TMP/scrim/ca.pem")
[[ "$red" == "200 1" ]] || die "scrim did not report one redaction for an e-mail address inside the tunnel ($red)"
echo "check: scrim inside the tunnel: a prompt with an e-mail address -> 200, x-scrim-redactions: 1" >>"$TMP/checks.txt"

# ------------------------------------------------------- throughput, latency

log "load: connections $CONNECTIONS, $ROUNDS interleaved rounds, ${DURATION}s each (+${WARMUP}s warm-up)"
nt=${#TARGETS[@]}
for c in $CONNECTIONS; do
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < nt; k++)); do
      t=${TARGETS[$(((k + r + c) % nt))]}
      m0=$(machine_ticks) o0=$(our_ticks) w0=$(date +%s%N)
      line=$("${ON_CPU0[@]}" "${LOAD[@]}" ${LOAD_ARGS[$t]} --key "$CLIENT_KEY" \
        --connections "$c" --duration "$DURATION" --warmup "$WARMUP" | sed -n 's/^LOAD //p')
      m1=$(machine_ticks) o1=$(our_ticks) w1=$(date +%s%N)
      [[ -n "$line" ]] || die "load.mjs printed nothing for $t"
      # CPU that processes outside the benchmark took, in % of one CPU:
      # the machine's ticks minus ours minus the client's own
      other=$(node -e '
        const [line, m, o, w] = process.argv.slice(1); const r = JSON.parse(line);
        const ticks = +m - +o - r.client_cpu_total_ms / 10; const secs = +w / 1e9;
        console.log(Math.max(0, Math.round(ticks / secs)));' "$line" $((m1 - m0)) $((o1 - o0)) $((w1 - w0)))
      echo "{\"kind\":\"load\",\"target\":\"$t\",\"conns\":$c,\"round\":$r,\"other_pct\":$other,\"r\":$line}" >>"$RAW"
      log "  $t c=$c round $r: $(node -e 'const r = JSON.parse(process.argv[1]); console.log(`${r.rps} req/s, p50 ${(r.p50_us / 1000).toFixed(2)} ms, p99 ${(r.p99_us / 1000).toFixed(2)} ms, errors ${r.errors}, non-2xx ${r.non2xx}, client ${r.client_cpu_pct}% cpu`)' "$line"), other ${other}%"
    done
  done
done

# ------------------------------------------------------------- handshakes

log "handshakes: $HANDSHAKES fresh names per proxy, each then twice from the cache"
cat >"$TMP/spec.json" <<EOF
[{"name": "scrim", "target": "127.0.0.1:$P_SCRIM", "ca": "$TMP/scrim/ca.pem", "proxyKey": "$CLIENT_KEY"},
 {"name": "mitmproxy", "target": "127.0.0.1:$P_MITM", "ca": "$TMP/mitm/mitmproxy-ca-cert.pem"},
 {"name": "squid", "target": "127.0.0.1:$P_SQUID", "ca": "$TMP/squidca.pem"},
 {"name": "direct", "target": "127.0.0.1:$P_PROV", "ca": "$TMP/testca.pem", "direct": true, "sni": "api.openai.com"}]
EOF
m0=$(machine_ticks) o0=$(our_ticks) w0=$(date +%s%N)
"${ON_CPU0[@]}" node "$PB/handshake.mjs" --spec "$TMP/spec.json" --count "$HANDSHAKES" --tag "r$$x$RANDOM" |
  sed -n 's/^HANDSHAKE //p' | while read -r line; do echo "{\"kind\":\"handshake\",\"r\":$line}"; done >>"$RAW"
m1=$(machine_ticks) o1=$(our_ticks) w1=$(date +%s%N)
echo "{\"kind\":\"handshake_noise\",\"other_pct\":$(((m1 - m0 - (o1 - o0)) * 1000000000 / (w1 - w0)))}" >>"$RAW"
cache_line=$(curl -s "http://127.0.0.1:$P_SCRIM_A/metrics" | grep '^scrim_cert_cache_total' | tr '\n' ' ')
echo "scrim /metrics after the run: $cache_line" >>"$TMP/checks.txt"
stderr_lines=$(wc -l <"$TMP/scrim/stderr.log")
echo "scrim wrote $stderr_lines lines to stderr (log_level = warn)" >>"$TMP/checks.txt"

# ------------------------------------------------------------------ report

{
  echo "# scrim HTTPS interception benchmark, $(date '+%Y-%m-%d %H:%M:%S %z')"
  echo
  echo "command: bench/proxy_bench.sh  (BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS" \
    "BENCH_CONNECTIONS=\"$CONNECTIONS\" BENCH_HANDSHAKES=$HANDSHAKES BENCH_PIN=$PIN BENCH_NICE=$NICE)"
  echo "scrim: $("$SCRIM" version 2>&1 | tr '\n' ' ')"
  echo "       work tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    git -C "$ROOT" diff --quiet HEAD -- src rules CMakeLists.txt 2>/dev/null || echo ' + uncommitted changes in src/, rules/ or CMakeLists.txt')"
  echo "mitmproxy: $(mitmdump --version 2>/dev/null | awk '/^Mitmproxy/ {print $2}')   squid: $(squid -v | awk '/Version/ {print $4; exit}')" \
    "  nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')   node: $(node --version)   $(openssl version)"
  echo "machine: $(nproc) cpus ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr)"
  echo "cpu pinning: $([[ $PIN == 1 ]] && echo 'each proxy on CPU 1; the client and the provider on CPU 0' || echo off)"
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  cat "$TMP/checks.txt"
  echo
  node "$PB/summarize.mjs" proxy "$RAW"
  echo
  echo "# raw results (one JSON line per measurement)"
  echo
  cat "$RAW"
} >"$OUT"

sed -n '/^## summary/,/^# raw results/p' "$OUT" | sed '$d'
log "results: ${OUT#"$ROOT"/}"
