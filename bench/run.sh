#!/usr/bin/env bash
# scrim's benchmark: throughput, latency and memory of scrim against a plain
# nginx reverse proxy and the Portkey gateway, all in front of the same fast
# fake provider on loopback. Everything is measured in one run, so the
# ratios compare numbers taken a minute apart on the same machine.
#
#   bench/run.sh                    # as root on Debian 12; about 4-5 minutes
#   BENCH_REF=HEAD bench/run.sh     # benchmark a commit, not the work tree
#
# Environment (all optional):
#   BENCH_DURATION=5         seconds per wrk measurement
#   BENCH_WARMUP=1           seconds of unrecorded load before each one
#   BENCH_ROUNDS=2           measurements per target and connection count,
#                            interleaved; the summary keeps, for each, the
#                            median by req/s of those during which other
#                            processes took the least CPU (within 2 points);
#                            with 2 or more it also gives the ratios taken
#                            within each round, and their medians
#   BENCH_RETRIES=4          extra measurements, in all, for rows during
#                            which other processes took > 15% of a CPU
#                            (Portkey's excepted)
#   BENCH_CONNECTIONS="1 16 32"  wrk connection counts
#   BENCH_STREAMS=1000       concurrent streams for the memory test
#   BENCH_SCRUB="on off noaudit"  scrim configurations to measure, when the
#                            build knows `scrub`: on = the default
#                            configuration (target "scrim"), off = the bare
#                            proxy (target "scrim-noscrub"), noaudit = the
#                            default with the audit log off (target
#                            "scrim-noaudit"): the last two show what
#                            scrubbing and the audit log each add
#   BENCH_PIN=1              pin the proxy under test to CPU 1 and wrk + the
#                            provider to CPU 0 (0: let the scheduler decide)
#   BENCH_PORTKEY=1          0 skips Portkey (and its npm install)
#   BENCH_REF=REF            build scrim from git REF (git archive, in the
#                            temporary directory) and benchmark that
#   BENCH_NO_BUILD=1         use build/scrim as it is (default: cmake --build)
#   SCRIM_BIN=PATH           benchmark this binary instead of build/scrim
#   BENCH_RULES_DIR=DIR      rules_dir for scrim (default: rules/ of the
#                            tree benchmarked)
#   BENCH_PII=1              the body carries an e-mail address and a phone
#                            number (bench/chat.lua), so scrim replaces and
#                            restores in every request (default: none)
#
# It installs what it lacks (nginx-light, wrk via apt-get; the pinned Portkey
# gateway via npm into bench/node_modules), starts everything on free
# loopback ports from a temporary directory, stops everything it started on
# exit, prints a summary and writes it with the raw results to
# bench/results/DATE.txt. Only 127.0.0.1 is ever a target.

set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-2}
RETRIES=${BENCH_RETRIES:-4}
NOISY=15 # % of one CPU taken by other processes that makes a row suspect
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16 32"}
STREAMS=${BENCH_STREAMS:-1000}
SCRUB_MODES=${BENCH_SCRUB:-"on off noaudit"}
PIN=${BENCH_PIN:-1}
WITH_PORTKEY=${BENCH_PORTKEY:-1}
REF=${BENCH_REF:-}
SCRIM=${SCRIM_BIN:-$ROOT/build/scrim}
RULES_DIR=${BENCH_RULES_DIR:-$ROOT/rules}
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------- processes

PIDS=()
TMP=
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ $rc -ne 0 ]]; then
      log "logs kept in $TMP" # for whoever reads the error
    else
      rm -rf "$TMP"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Command prefixes that pin to CPU 0 / CPU 1 when pinning is on. Arrays, not
# a function, so that `"${ON_CPU1[@]}" cmd &` leaves $! = cmd's own pid
# (taskset execs), which cleanup can signal.
ON_CPU0=() ON_CPU1=()
set_pinning() {
  if [[ "$PIN" == 1 ]]; then ON_CPU0=(taskset -c 0) ON_CPU1=(taskset -c 1); else ON_CPU0=() ON_CPU1=(); fi
}

# stop one process we started, wait for it, and forget it (its pid may be
# reused by someone else's process before cleanup runs)
stop() {
  local p keep=()
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# wait until http://127.0.0.1:$1$2 answers (any status), or fail
wait_http() {
  local port=$1 path=${2:-/} name=${3:-server} i
  for ((i = 0; i < 150; i++)); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port$path"; then return 0; fi
    sleep 0.1
  done
  die "$name did not come up on 127.0.0.1:$port"
}

# N distinct free loopback ports (all held open at once, then released)
free_ports() {
  node -e '
    const net = require("node:net");
    const n = Number(process.argv[1]); const held = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      s.listen(0, "127.0.0.1", () => {
        held.push(s);
        if (held.length === n) {
          console.log(held.map((x) => x.address().port).join(" "));
          held.forEach((x) => x.close());
        }
      });
    }' "$1"
}

# VmRSS and VmHWM of process $1 (named $2), in kB, into RSS and HWM
RSS=0 HWM=0
read_mem() {
  local status
  status=$(cat "/proc/$1/status" 2>/dev/null) || die "$2 (pid $1) is gone; logs in $TMP"
  RSS=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
  HWM=$(awk '/^VmHWM:/ {print $2}' <<<"$status")
}

# CPU time, in ticks (1/100 s), for telling how much of the machine other
# processes took during a measurement: the machine's user + system time
# (+ steal), ours (everything in PIDS and their children, plus the reaped
# children of this shell, wrk among them), and the difference. irq and
# softirq time are left out on both sides: loopback TCP spends much of its
# time there and the kernel charges it to no process.
# Sets SNAP_M (the machine) and SNAP_O (ours). Call it directly, never in
# $(...): `times` must run in this shell to see its children.
SNAP_M=0 SNAP_O=0 SNAP_T=0
snap_ticks() {
  local p q t kids sum=0
  SNAP_T=$EPOCHREALTIME
  SNAP_M=$(awk '/^cpu / {print $2 + $3 + $4 + $9}' /proc/stat)
  for p in "${PIDS[@]}"; do
    kids=$(pgrep -P "$p" 2>/dev/null || true)
    for q in $p $kids; do
      t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$q/stat" 2>/dev/null) || continue
      sum=$((sum + ${t:-0}))
    done
  done
  # this shell's reaped children (user, system): `times`' second line
  times >"$TMP/times.txt"
  t=$(awk 'NR == 2 {
    n = split($0, f, " "); s = 0
    for (i = 1; i <= n; i++) { split(f[i], a, "m"); s += a[1] * 60 + a[2] }
    printf "%d", s * 100 }' "$TMP/times.txt")
  SNAP_O=$((sum + t))
}

# ----------------------------------------------------------- dependencies

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null
  }
fi
if [[ "$(nproc)" -lt 2 ]]; then PIN=0; fi
set_pinning

PORTKEY_JS=$BENCH_DIR/node_modules/@portkey-ai/gateway/build/start-server.js
if [[ "$WITH_PORTKEY" == 1 ]]; then
  want=$(node -p 'require(process.argv[1]).dependencies["@portkey-ai/gateway"]' "$BENCH_DIR/package.json")
  have=$(node -p 'try { require(process.argv[1]).version } catch { "" }' \
    "$BENCH_DIR/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null || true)
  if [[ ! -f "$PORTKEY_JS" || "$have" != "$want" ]]; then
    log "npm ci (Portkey gateway $want) into bench/node_modules"
    (cd "$BENCH_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi

TMP=$(mktemp -d /tmp/scrim-bench.XXXXXX)

if [[ -n "$REF" ]]; then
  log "building scrim from $REF (git archive into $TMP/src)"
  mkdir -p "$TMP/src"
  git -C "$ROOT" archive "$REF" | tar -x -C "$TMP/src"
  if ! { cmake -S "$TMP/src" -B "$TMP/src/build" -DSCRIM_WERROR=ON &&
    cmake --build "$TMP/src/build" -j2 --target scrim; } >"$TMP/build.log" 2>&1; then
    die "building $REF failed: see $TMP/build.log"
  fi
  SCRIM=$TMP/src/build/scrim
  RULES_DIR=${BENCH_RULES_DIR:-$TMP/src/rules}
  SCRIM_DESC="built from $REF = $(git -C "$ROOT" rev-parse --short "$REF")"
elif [[ -n "${SCRIM_BIN:-}" ]]; then
  SCRIM_DESC="$SCRIM_BIN (SCRIM_BIN); work tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
else
  if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
    log "building scrim (cmake --build build)"
    if [[ ! -f "$ROOT/build/CMakeCache.txt" ]]; then
      cmake -S "$ROOT" -B "$ROOT/build" -DSCRIM_WERROR=ON >"$TMP/build.log" 2>&1 ||
        die "cmake failed: see $TMP/build.log"
    fi
    cmake --build "$ROOT/build" -j2 >>"$TMP/build.log" 2>&1 || die "the build failed: see $TMP/build.log"
  fi
  SCRIM_DESC="build/scrim from the work tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    git -C "$ROOT" diff --quiet HEAD -- src CMakeLists.txt rules 2>/dev/null &&
      [[ -z "$(git -C "$ROOT" ls-files --others --exclude-standard -- src rules 2>/dev/null)" ]] ||
      echo ' + uncommitted changes in src/, rules/ or CMakeLists.txt')"
fi
[[ -x "$SCRIM" ]] || die "no scrim binary at $SCRIM"

# 1000 streams need ~2 fds each in scrim and in the client.
if ! ulimit -n 65536 2>/dev/null; then
  # above the hard limit: root may raise it, anyone may go up to it
  if ulimit -Hn 65536 2>/dev/null; then ulimit -n 65536; else ulimit -n "$(ulimit -Hn)"; fi
fi
if [[ $(ulimit -n) -lt $((STREAMS * 2 + 200)) ]]; then
  die "ulimit -n is $(ulimit -n); $STREAMS streams need $((STREAMS * 2 + 200))"
fi

mkdir -p "$TMP/nginx-prov" "$TMP/nginx-proxy"
read -r P_PROV P_NGINX P_PORTKEY P_S1 P_S1A P_S2 P_S2A P_S3 P_S3A P_MEM P_MEM_ADMIN <<<"$(free_ports 11)"

# ------------------------------------------------------------- the results

RESULTS_DIR=$BENCH_DIR/results
mkdir -p "$RESULTS_DIR"
day=$(date +%Y-%m-%d)
OUT=$RESULTS_DIR/$day.txt
n=2
while [[ -e "$OUT" ]]; do OUT=$RESULTS_DIR/$day-$n.txt; n=$((n + 1)); done
HEAD_TXT=$TMP/head.txt RAW=$TMP/raw.txt
: >"$RAW"
raw() { printf '%s\n' "$*" >>"$RAW"; }

{
  echo "# scrim benchmark, $(date '+%Y-%m-%d %H:%M:%S %z')"
  echo
  echo "command: bench/run.sh  (BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS BENCH_RETRIES=$RETRIES" \
    "BENCH_CONNECTIONS=\"$CONNECTIONS\" BENCH_STREAMS=$STREAMS BENCH_SCRUB=\"$SCRUB_MODES\"" \
    "BENCH_PIN=$PIN BENCH_PORTKEY=$WITH_PORTKEY${REF:+ BENCH_REF=$REF})"
  echo "scrim: $SCRIM_DESC"
  echo "       $("$SCRIM" version 2>&1 | tr '\n' ' ')"
  echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')   wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')   node: $(node --version)"
  if [[ "$WITH_PORTKEY" == 1 ]]; then
    echo "portkey: @portkey-ai/gateway $(node -p 'require(process.argv[1]).version' "$BENCH_DIR/node_modules/@portkey-ai/gateway/package.json")," \
      "@hono/node-server $(node -p 'require(process.argv[1]).version' "$BENCH_DIR/node_modules/@hono/node-server/package.json")," \
      "NODE_ENV=production --headless"
  fi
  echo "machine: $(nproc) cpus ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr)"
  echo "cpu pinning: $([[ $PIN == 1 ]] && echo 'the proxy under test on CPU 1; wrk, the provider and the streaming client on CPU 0' || echo off)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "other processes using > 5% of a CPU at start (top, 1 s):"
  top -b -n 2 -d 1 -w 200 | awk '/^top -/ {frame++} frame == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 5 {
    printf "  pid %s  %s%%  ", $1, $9; for (i = 12; i <= NF; i++) printf "%s ", $i; print ""}' |
    head -5 | cut -c1-100 | grep . || echo "  (none)"
} >"$HEAD_TXT"

# ---------------------------------------------------------- the provider

# A fixed, realistic OpenAI chat.completion; nginx answers it to any method.
COMPLETION='{"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion","created":1732233600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Check the job log for the two failed runs first: both stopped after batch 31 with a connection reset from the warehouse, so look at the warehouse side (idle timeouts, connection limits) around 02:00 before changing the export job itself.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":912,"completion_tokens":52,"total_tokens":964,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_0ba0d124f1"}'

nginx_conf() { # $1: prefix dir; the server blocks follow on stdin
  cat <<EOF
worker_processes 1;
pid $1/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/client_body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_max_body_size 8m;
  client_body_buffer_size 64k;
EOF
  cat
  echo "}"
}

nginx_conf "$TMP/nginx-prov" >"$TMP/nginx-prov/nginx.conf" <<EOF
  server {
    listen 127.0.0.1:$P_PROV;
    location = /__bench/status { stub_status; }
    location / {
      default_type application/json;
      add_header x-request-id req_bench always;
      add_header openai-processing-ms 1 always;
      return 200 '$COMPLETION';
    }
  }
EOF

nginx_conf "$TMP/nginx-proxy" >"$TMP/nginx-proxy/nginx.conf" <<EOF
  upstream provider {
    server 127.0.0.1:$P_PROV;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    location / {
      proxy_pass http://provider;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-bench-provider-key";
    }
  }
EOF

provider_count() { # requests the provider has served, this one included
  curl -s "http://127.0.0.1:$P_PROV/__bench/status" | awk 'NR == 3 {print $3}'
}

log "starting the provider (nginx) on 127.0.0.1:$P_PROV"
"${ON_CPU0[@]}" nginx -p "$TMP/nginx-prov" -c "$TMP/nginx-prov/nginx.conf" -e "$TMP/nginx-prov/error.log" \
  -g 'daemon off;' >"$TMP/nginx-prov/stdout.log" 2>&1 &
PIDS+=($!)
wait_http "$P_PROV" /__bench/status "provider nginx"

# ------------------------------------------------------------ the proxies

log "starting nginx (reverse proxy) on 127.0.0.1:$P_NGINX"
"${ON_CPU1[@]}" nginx -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy/nginx.conf" -e "$TMP/nginx-proxy/error.log" \
  -g 'daemon off;' >"$TMP/nginx-proxy/stdout.log" 2>&1 &
PIDS+=($!)
NGINX_MASTER=$!
wait_http "$P_NGINX" / "nginx proxy"

"$SCRIM" keys generate bench >"$TMP/key.txt"
CLIENT_KEY=$(sed -n 's/^key: //p' "$TMP/key.txt")
KEY_LINE=$(grep '^bench = ' "$TMP/key.txt")
[[ -n "$CLIENT_KEY" && -n "$KEY_LINE" ]] || die "scrim keys generate printed no key"
export BENCH_PROVIDER_KEY=sk-bench-provider-key

# $1 listen port, $2 admin port, $3 provider base_url, $4 provider auth
# (bearer|none), $5 scrub (on|off, or "" for a build without scrubbing),
# $6 a name for its state_dir, $7 "off" to turn the audit log off
scrim_conf() {
  cat <<EOF
[gateway]
listen = 127.0.0.1:$1
admin_listen = 127.0.0.1:$2
auth = keys
max_connections = $((STREAMS + 1000))
drain_timeout = 1s
log_level = warn
EOF
  if [[ -n "$5" ]]; then printf 'rules_dir = %s\nscrub = %s\n' "$RULES_DIR" "$5"; fi
  if [[ -n "$5" && -n "$SECRET_FILE" ]]; then printf 'scrub_secret_file = %s\n' "$SECRET_FILE"; fi
  # a state_dir per instance: what scrim keeps there (CA, audit log) is
  # locked by the process that uses it
  if [[ -n "$OPT_STATE_DIR" ]]; then
    mkdir -p "$TMP/state-$6"
    printf 'state_dir = %s\n' "$TMP/state-$6"
  fi
  cat <<EOF

[keys]
$KEY_LINE

[provider fake]
base_url = $3
EOF
  if [[ "$4" == bearer ]]; then
    printf 'api_key_env = BENCH_PROVIDER_KEY\nauth_header = bearer\n'
  else
    printf 'auth_header = none\n'
  fi
  cat <<EOF
connect_timeout = 2s
timeout = 5m

[route all]
prefix = /v1/
provider = fake
EOF
  # base-URL mode only: no HTTPS proxy mode on the same port
  if [[ -n "$OPT_PROXY_OFF" ]]; then printf '\n[proxy]\nmode = off\n'; fi
  if [[ "${7:-}" == off ]]; then printf '\n[audit]\nmode = off\n'; fi
}

# Settings a deployment would have, each dropped when this build does not
# know it yet: a scrub secret (else scrim warns at start), a state_dir of
# our own (no CA there: nothing to intercept) and proxy mode off.
SECRET_FILE=$TMP/scrub.secret
head -c 32 /dev/urandom >"$SECRET_FILE"
chmod 600 "$SECRET_FILE"
OPT_STATE_DIR=1 OPT_PROXY_OFF=1
# check a configuration with scrub $1, dropping the optional settings this
# build refuses; the status of the last `scrim check`, its output in probe.out
probe_conf() {
  local _
  for _ in 1 2 3 4; do
    scrim_conf "$P_S1" "$P_S1A" "http://127.0.0.1:$P_PROV/v1" bearer "$1" probe >"$TMP/probe.conf"
    "$SCRIM" check -c "$TMP/probe.conf" >"$TMP/probe.out" 2>&1 && return 0
    if grep -q "unknown key 'scrub_secret_file'" "$TMP/probe.out"; then SECRET_FILE=
    elif grep -q "unknown key 'state_dir'" "$TMP/probe.out"; then OPT_STATE_DIR=
    elif grep -q "unknown section \[proxy\]\|unknown key 'mode'" "$TMP/probe.out"; then OPT_PROXY_OFF=
    else return 1
    fi
  done
  return 1
}
# Does this build scrub? Then measure the default configuration (scrub on)
# and the bare proxy (scrub off); an older build: one configuration.
if probe_conf on; then
  SCRUB_KNOWN=1
elif grep -q "unknown key 'rules_dir'\|unknown key 'scrub'" "$TMP/probe.out" && probe_conf ""; then
  SCRUB_KNOWN=0
else
  cat "$TMP/probe.out" >&2
  die "scrim check refuses the benchmark's configuration ($TMP/probe.conf), see above"
fi

declare -A SCRUB_OF AUDIT_OF PORT_OF ADMIN_OF PID_OF
SCRIMS=()
if [[ $SCRUB_KNOWN == 1 ]]; then
  for m in $SCRUB_MODES; do
    case $m in
    on) SCRIMS+=(scrim) SCRUB_OF[scrim]=on ;;
    off) SCRIMS+=(scrim-noscrub) SCRUB_OF[scrim-noscrub]=off ;;
    noaudit) SCRIMS+=(scrim-noaudit) SCRUB_OF[scrim-noaudit]=on AUDIT_OF[scrim-noaudit]=off ;;
    *) die "BENCH_SCRUB: 'on', 'off' and/or 'noaudit', not '$m'" ;;
    esac
  done
else
  SCRIMS=(scrim) SCRUB_OF[scrim]=""
fi
((${#SCRIMS[@]})) || die "BENCH_SCRUB selects no scrim configuration"
ports=("$P_S1" "$P_S1A" "$P_S2" "$P_S2A" "$P_S3" "$P_S3A")
i=0
for s in "${SCRIMS[@]}"; do
  PORT_OF[$s]=${ports[$i]} ADMIN_OF[$s]=${ports[$((i + 1))]}
  i=$((i + 2))
  scrim_conf "${PORT_OF[$s]}" "${ADMIN_OF[$s]}" "http://127.0.0.1:$P_PROV/v1" bearer "${SCRUB_OF[$s]}" "$s" "${AUDIT_OF[$s]:-}" >"$TMP/$s.conf"
  "$SCRIM" check -c "$TMP/$s.conf" >/dev/null || die "scrim check failed on $TMP/$s.conf"
  log "starting $s on 127.0.0.1:${PORT_OF[$s]}${SCRUB_OF[$s]:+ (scrub = ${SCRUB_OF[$s]})}${AUDIT_OF[$s]:+ (audit = ${AUDIT_OF[$s]})}"
  "${ON_CPU1[@]}" "$SCRIM" serve -c "$TMP/$s.conf" >"$TMP/$s.stdout" 2>"$TMP/$s.stderr" &
  PIDS+=($!)
  PID_OF[$s]=$!
  wait_http "${ADMIN_OF[$s]}" /healthz "$s"
done

PORTKEY_HEADERS="x-portkey-provider: openai|x-portkey-custom-host: http://127.0.0.1:$P_PROV/v1"
start_portkey() { # $1: log name
  NODE_ENV=production "${ON_CPU1[@]}" node -r "$BENCH_DIR/loopback-only.cjs" "$PORTKEY_JS" \
    --port="$P_PORTKEY" --headless >"$TMP/$1.stdout" 2>"$TMP/$1.stderr" &
  PIDS+=($!)
  PORTKEY_PID=$!
  wait_http "$P_PORTKEY" / portkey
}
if [[ "$WITH_PORTKEY" == 1 ]]; then
  log "starting the Portkey gateway on 127.0.0.1:$P_PORTKEY"
  start_portkey portkey
fi

# ------------------------------------------- check that each path is real

SMALL_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}]}'
# $1 name, $2 port; extra curl args follow. Fails the run unless the answer
# is the provider's completion and the provider counted exactly one request.
verify() {
  local name=$1 port=$2 before after code body
  shift 2
  before=$(provider_count)
  body=$TMP/verify-$name.json
  code=$(curl -s -o "$body" -w '%{http_code}' --max-time 10 \
    "http://127.0.0.1:$port/v1/chat/completions" \
    -H "Authorization: Bearer $CLIENT_KEY" -H 'Content-Type: application/json' \
    "$@" -d "$SMALL_BODY") || code=000
  after=$(provider_count)
  if [[ "$code" != 200 ]] || ! grep -q chatcmpl-bench0000 "$body" || [[ $((after - before)) -ne 2 ]]; then
    die "$name does not reach the provider: status $code, provider requests +$((after - before - 1)); body: $(head -c 300 "$body")"
  fi
  raw "verify $name: 200 with the provider's completion; the provider counted +1 request"
}
raw "## checks"
verify direct "$P_PROV"
verify nginx "$P_NGINX"
for s in "${SCRIMS[@]}"; do verify "$s" "${PORT_OF[$s]}"; done
if [[ "$WITH_PORTKEY" == 1 ]]; then
  verify portkey "$P_PORTKEY" -H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://127.0.0.1:$P_PROV/v1"
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT_OF[${SCRIMS[0]}]}/v1/chat/completions" \
  -H 'Authorization: Bearer sk-scrim-wrong' -H 'Content-Type: application/json' -d "$SMALL_BODY")
raw "verify ${SCRIMS[0]} refuses a wrong client key: $code"
[[ "$code" == 401 ]] || die "scrim answered $code to a wrong client key"

# ------------------------------------------------------- throughput, latency

declare -A RPS P50 P99 NON2XX ERRS OTHER ROUND ALL
TARGETS=(direct nginx "${SCRIMS[@]}")
if [[ "$WITH_PORTKEY" == 1 ]]; then TARGETS+=(portkey); fi

port_of() {
  case $1 in
  direct) echo "$P_PROV" ;;
  nginx) echo "$P_NGINX" ;;
  portkey) echo "$P_PORTKEY" ;;
  *) echo "${PORT_OF[$1]}" ;;
  esac
}

# the value of KEY=... in chat.lua's result line $line
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }

# $1 target, $2 connections, $3 seconds; prints wrk's output
run_wrk() {
  local target=$1 c=$2 secs=$3 threads=2 headers=""
  ((c < 2)) && threads=1
  [[ $target == portkey ]] && headers=$PORTKEY_HEADERS
  BENCH_KEY=$CLIENT_KEY BENCH_HEADERS=$headers "${ON_CPU0[@]}" \
    wrk -t"$threads" -c"$c" -d"${secs}s" --timeout 10s --latency \
    -s "$BENCH_DIR/chat.lua" "http://127.0.0.1:$(port_of "$target")"
}

raw ""
raw "## wrk: POST /v1/chat/completions, 4096-byte JSON body, ${DURATION}s each after ${WARMUP}s warm-up, $ROUNDS round(s)"
raw "(per target and connection count the summary keeps, of the rounds in which other processes took the least CPU (within 2 points), the median by req/s;"
raw " rounds x1.. are retries of rows that other processes disturbed;"
raw " non-2xx answers and socket errors are counted over all rounds)"
total=$(($(wc -w <<<"$CONNECTIONS") * ${#TARGETS[@]} * ROUNDS * (DURATION + WARMUP)))
log "load: ${#TARGETS[@]} targets x connections {$CONNECTIONS} x $ROUNDS round(s), ${DURATION}s each (about ${total}s)"
# one measurement of target $1 at $2 connections, called round $3; keeps it
# when other processes took less CPU than during the one kept so far
measure() {
  local t=$1 c=$2 round=$3 m0 o0 t0 out other line
  if ((WARMUP > 0)); then run_wrk "$t" "$c" "$WARMUP" >/dev/null; fi
  snap_ticks
  m0=$SNAP_M o0=$SNAP_O t0=$SNAP_T
  out=$(run_wrk "$t" "$c" "$DURATION")
  snap_ticks
  # other processes' CPU during the run, in % of one CPU
  other=$(awk -v m=$((SNAP_M - m0)) -v o=$((SNAP_O - o0)) -v t0="$t0" -v t1="$SNAP_T" \
    'BEGIN {v = (m - o) / (t1 - t0); if (v < 0) v = 0; printf "%.0f", v}')
  line=$(grep '^BENCH rps=' <<<"$out" || true)
  raw ""
  raw "### $t, $c connection(s), round $round"
  raw "$out"
  raw "other processes' CPU during this run: $other% of one CPU"
  [[ -n "$line" ]] || die "no result line from wrk for $t at $c connections"
  NON2XX[$t,$c]=$((${NON2XX[$t,$c]:-0} + $(get non2xx)))
  ERRS[$t,$c]=$((${ERRS[$t,$c]:-0} + $(get errors)))
  ALL[$t,$c]="${ALL[$t,$c]:-} $other:$(get rps):$(get p50_us):$(get p99_us):$round"
  if [[ -z "${OTHER[$t,$c]:-}" ]] || ((other < OTHER[$t,$c])); then
    OTHER[$t,$c]=$other
  fi
  log "$(printf '%-13s c=%-3s %-3s %8.0f req/s  p50 %6d us  p99 %6d us  non-2xx %s  errors %s  other CPU %s%%' \
    "$t" "$c" "$round" "$(get rps)" "$(get p50_us)" "$(get p99_us)" "$(get non2xx)" "$(get errors)" "$other")"
}

retries=$RETRIES
for c in $CONNECTIONS; do
  for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do measure "$t" "$c" "r$round"; done
  done
  # a few more tries, in all, for rows that other processes disturbed (not
  # Portkey's: they are an order of magnitude away, noise or not)
  for t in "${TARGETS[@]}"; do
    if [[ $t != portkey ]] && ((retries > 0 && OTHER[$t,$c] > NOISY)); then
      retries=$((retries - 1))
      measure "$t" "$c" "x$((RETRIES - retries))"
    fi
  done
done
# Per row, of the rounds within 2 points of the least disturbed one, the
# median by req/s (the lower middle of an even count): a first round on a
# fresh process, or one lucky round, does not decide the row.
for c in $CONNECTIONS; do
  for t in "${TARGETS[@]}"; do
    read -r ROUND[$t,$c] RPS[$t,$c] P50[$t,$c] P99[$t,$c] < <(tr ' ' '\n' <<<"${ALL[$t,$c]}" |
      awk -F: -v lo="${OTHER[$t,$c]}" 'NF == 5 && $1 <= lo + 2 {print $2, $3, $4, $5}' |
      sort -n | awk '{v[NR] = $0} END {split(v[int((NR + 1) / 2)], f, " "); print f[4], f[1], f[2], f[3]}')
  done
done
if ((ROUNDS > 1 || RETRIES > 0)); then
  raw ""
  raw "rounds kept (of the least disturbed, the median by req/s):"
  for c in $CONNECTIONS; do
    for t in "${TARGETS[@]}"; do raw "  $t, $c connection(s): ${ROUND[$t,$c]} (other CPU ${OTHER[$t,$c]}%)"; done
  done
fi

raw ""
raw "## after the load"
declare -A ERRLINES
for s in "${SCRIMS[@]}"; do
  read_mem "${PID_OF[$s]}" "$s"
  ERRLINES[$s]=$(wc -l <"$TMP/$s.stderr")
  raw "$s: VmRSS $RSS kB, VmHWM $HWM kB; stderr (log_level = warn): ${ERRLINES[$s]} lines"
  head -20 "$TMP/$s.stderr" | sed 's/^/  /' >>"$RAW"
done
for pid in $(pgrep -P "$NGINX_MASTER" || true); do
  read_mem "$pid" "nginx worker"
  raw "nginx proxy worker: VmRSS $RSS kB, VmHWM $HWM kB"
done
PK_LOAD_RSS=""
if [[ "$WITH_PORTKEY" == 1 ]]; then
  read_mem "$PORTKEY_PID" portkey
  raw "portkey: VmRSS $RSS kB, VmHWM $HWM kB; stderr: $(wc -l <"$TMP/portkey.stderr") lines"
  head -5 "$TMP/portkey.stderr" | cut -c1-200 | sed 's/^/  /' >>"$RAW"
  PK_LOAD_RSS=$RSS
  stop "$PORTKEY_PID"
fi
# the load instances are done: free the CPU and memory for the next part
for s in "${SCRIMS[@]}"; do stop "${PID_OF[$s]}"; done

# ----------------------------------------------------------------- memory

FAKE_JS=$ROOT/tests/fake_provider/provider.mjs
[[ -f "$FAKE_JS" ]] || die "no $FAKE_JS"
"${ON_CPU0[@]}" node "$FAKE_JS" --port 0 --no-record >"$TMP/fake.stdout" 2>"$TMP/fake.stderr" &
PIDS+=($!)
P_FAKE=
for ((i = 0; i < 100; i++)); do
  P_FAKE=$(sed -n 's/^listening //p' "$TMP/fake.stdout")
  [[ -n "$P_FAKE" ]] && break
  sleep 0.1
done
[[ -n "$P_FAKE" ]] || die "the fake provider did not start"

jget() { # $1 json file, $2 key
  node -e 'const o = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const v = o[process.argv[2]]; console.log(v === undefined || v === null ? "?" : String(v))' "$1" "$2" 2>/dev/null || echo "?"
}

declare -A M_START M_IDLE M_OPEN M_PEAK M_DONE M_FDS
raw ""
raw "## memory: idle after start and 6 requests; then $STREAMS concurrent streams (50 chunks, 200 ms apart) through a fresh process"

# $1 name, $2 pid, $3 port; extra streams.mjs and curl header args follow
mem_test() {
  local name=$1 pid=$2 port=$3 i json
  shift 3
  local hdr=() a
  for a in "$@"; do hdr+=(-H "$a"); done
  read_mem "$pid" "$name"
  M_START[$name]=$RSS
  for i in 1 2 3 4 5; do
    curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/v1/chat/completions" "${hdr[@]}" \
      -H "Authorization: Bearer $CLIENT_KEY" -H 'Content-Type: application/json' -d "$SMALL_BODY"
  done
  curl -s -o /dev/null --max-time 10 "http://127.0.0.1:$port/v1/chat/completions" "${hdr[@]}" \
    -H "Authorization: Bearer $CLIENT_KEY" -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"ping"}]}'
  sleep 0.3
  read_mem "$pid" "$name"
  M_IDLE[$name]=$RSS
  raw "$name: right after start VmRSS ${M_START[$name]} kB; idle after 6 requests VmRSS $RSS kB, VmHWM $HWM kB"
  json=$TMP/streams-$name.json
  local sargs=() h
  for h in "$@"; do sargs+=(--header "$h"); done
  "${ON_CPU0[@]}" node "$BENCH_DIR/streams.mjs" --url "http://127.0.0.1:$port/v1/chat/completions" \
    --key "$CLIENT_KEY" --pid "$pid" --n "$STREAMS" --chunks 50 --delay-ms 200 "${sargs[@]}" \
    >"$json" 2>"$TMP/streams-$name.stderr" || true
  raw "$name streams: $(cat "$json")"
  sed 's/^/  /' "$TMP/streams-$name.stderr" >>"$RAW"
  M_OPEN[$name]=$(jget "$json" rss_kb_open)
  M_PEAK[$name]=$(jget "$json" hwm_kb_end)
  M_DONE[$name]=$(jget "$json" "done")
  M_FDS[$name]=$(jget "$json" fds_open)
  kill -0 "$pid" 2>/dev/null || die "$name exited during the streams; logs in $TMP"
}

for s in "${SCRIMS[@]}"; do
  log "memory: a fresh $s, idle, then $STREAMS concurrent slow streams"
  scrim_conf "$P_MEM" "$P_MEM_ADMIN" "http://127.0.0.1:$P_FAKE/v1" none "${SCRUB_OF[$s]}" "mem-$s" "${AUDIT_OF[$s]:-}" >"$TMP/mem-$s.conf"
  "${ON_CPU1[@]}" "$SCRIM" serve -c "$TMP/mem-$s.conf" >"$TMP/mem-$s.stdout" 2>"$TMP/mem-$s.stderr" &
  PIDS+=($!)
  pid=$!
  wait_http "$P_MEM_ADMIN" /healthz "$s (memory)"
  mem_test "$s" "$pid" "$P_MEM"
  raw "$s (memory) stderr: $(wc -l <"$TMP/mem-$s.stderr") lines"
  head -20 "$TMP/mem-$s.stderr" | sed 's/^/  /' >>"$RAW"
  stop "$pid"
done

if [[ "$WITH_PORTKEY" == 1 ]]; then
  log "memory: a fresh Portkey, idle, then $STREAMS concurrent slow streams"
  start_portkey portkey-mem
  mem_test portkey "$PORTKEY_PID" "$P_PORTKEY" "x-portkey-provider: openai" \
    "x-portkey-custom-host: http://127.0.0.1:$P_FAKE/v1" \
    "x-portkey-forward-headers: x-fake-chunks,x-fake-chunk-delay-ms"
  stop "$PORTKEY_PID"
fi

# ----------------------------------------------------------------- summary

ms() { awk -v u="$1" 'BEGIN {printf "%.3f", u / 1000}'; }
mb() { awk -v k="$1" 'BEGIN {if (k ~ /^[0-9]+$/) printf "%.1f MB", k / 1024; else printf "?"}'; }

# one line per target: met / not met, for scrim variant $1 at $2 connections
verdicts() {
  local s=$1 c=$2
  awk -v sr="${RPS[$s,$c]}" -v nr="${RPS[nginx,$c]}" \
    -v s50=$((P50[$s,$c] - P50[direct,$c])) -v n50=$((P50[nginx,$c] - P50[direct,$c])) \
    -v s99=$((P99[$s,$c] - P99[direct,$c])) -v n99=$((P99[nginx,$c] - P99[direct,$c])) \
    -v idle="${M_IDLE[$s]}" '
    function verdict(ok) { return ok ? "MET    " : "NOT MET" }
    function lat(what, s, n,    v, r) {
      v = (n > 0) ? s / n : -1
      r = (v >= 0) ? sprintf("%.2fx", v) : "n/a, nginx added <= 0"
      printf "  added latency %s <= 1.5x nginx  %s  scrim +%.3f ms, nginx +%.3f ms (%s)\n",
        what, verdict(v >= 0 && v <= 1.5), s / 1000, n / 1000, r
    }
    BEGIN {
      lat("p50", s50, n50)
      lat("p99", s99, n99)
      printf "  throughput >= 70%% of nginx      %s  scrim %.0f req/s, nginx %.0f req/s (%.0f%%)\n",
        verdict(sr / nr >= 0.70), sr, nr, 100 * sr / nr
      printf "  idle RSS <= 16 MB               %s  %d kB (%.1f MB)\n",
        verdict(idle <= 16384), idle, idle / 1024
    }'
}

# $1 target, $2 connections: per round rN, the ratios to that round's nginx
# (added latency: both minus that round's direct), then their medians.
paired() {
  local e
  {
    for e in ${ALL[$1,$2]:-}; do echo "t ${e//:/ }"; done
    for e in ${ALL[nginx,$2]:-}; do echo "n ${e//:/ }"; done
    for e in ${ALL[direct,$2]:-}; do echo "d ${e//:/ }"; done
  } | awk -v t="$1" -v c="$2" '
  $6 ~ /^r/ { rps[$1, $6] = $3; p50[$1, $6] = $4; p99[$1, $6] = $5; seen[$6] = 1 }
  function med(a, n,   i, j, x) {
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    m = 0
    for (r in seen) { m++; rr[m] = r }
    for (i = 2; i <= m; i++) {
      x = rr[i]
      for (j = i - 1; j >= 1 && substr(rr[j], 2) + 0 > substr(x, 2) + 0; j--) rr[j + 1] = rr[j]
      rr[j + 1] = x
    }
    n = 0; list = ""
    for (k = 1; k <= m; k++) {
      r = rr[k]
      if (!(("t", r) in rps) || !(("n", r) in rps) || !(("d", r) in rps)) continue
      n50 = p50["n", r] - p50["d", r]; n99 = p99["n", r] - p99["d", r]
      if (n50 <= 0 || n99 <= 0 || rps["n", r] <= 0) continue
      n++
      a[n] = rps["t", r] / rps["n", r]
      b[n] = (p50["t", r] - p50["d", r]) / n50
      q[n] = (p99["t", r] - p99["d", r]) / n99
      list = list sprintf(" %s %.2f/%.2f/%.2f", r, a[n], b[n], q[n])
    }
    if (n == 0) { printf "%-13s %5s %8s %10s %10s\n", t, c, "n/a", "n/a", "n/a"; exit }
    printf "%-13s %5s %8.3f %10.2f %10.2f %s\n", t, c, med(a, n), med(b, n), med(q, n), list
  }'
}

summary() {
  local c t s tc
  echo "## summary"
  echo
  echo "Throughput and latency: wrk, POST of a 4 KB chat completion, ${DURATION}s per row"
  echo "(of $ROUNDS round(s) and retries, of those least disturbed by other processes the median)."
  echo "Latency in ms; +p50/+p99 (added) = the proxy's minus direct's at the same"
  echo "connection count. other = CPU used by processes outside the benchmark during"
  echo "the row, in % of one CPU (noise: a busy machine inflates p99 first)."
  echo
  printf '%-13s %5s %9s %8s %8s %9s %9s %7s %6s %6s\n' \
    target conns req/s p50 p99 "+p50" "+p99" non-2xx errors other
  for c in $CONNECTIONS; do
    for t in "${TARGETS[@]}"; do
      local a50="" a99=""
      if [[ $t != direct ]]; then
        a50=$(ms $((P50[$t,$c] - P50[direct,$c])))
        a99=$(ms $((P99[$t,$c] - P99[direct,$c])))
      fi
      printf '%-13s %5s %9.0f %8s %8s %9s %9s %7s %6s %5s%%\n' "$t" "$c" "${RPS[$t,$c]}" \
        "$(ms "${P50[$t,$c]}")" "$(ms "${P99[$t,$c]}")" "$a50" "$a99" "${NON2XX[$t,$c]}" "${ERRS[$t,$c]}" \
        "${OTHER[$t,$c]}"
    done
  done
  echo
  echo "Ratios to nginx (req/s: higher is better, target >= 0.70; added latency: lower is better, target <= 1.5)"
  echo
  printf '%-13s %5s %8s %10s %10s\n' target conns req/s "+p50" "+p99"
  for t in "${SCRIMS[@]}" $([[ "$WITH_PORTKEY" == 1 ]] && echo portkey); do
    for c in $CONNECTIONS; do
      awk -v sr="${RPS[$t,$c]}" -v nr="${RPS[nginx,$c]}" \
        -v s50=$((P50[$t,$c] - P50[direct,$c])) -v n50=$((P50[nginx,$c] - P50[direct,$c])) \
        -v s99=$((P99[$t,$c] - P99[direct,$c])) -v n99=$((P99[nginx,$c] - P99[direct,$c])) \
        -v t="$t" -v c="$c" 'BEGIN {
          r50 = (n50 > 0) ? sprintf("%.2f", s50 / n50) : "n/a"
          r99 = (n99 > 0) ? sprintf("%.2f", s99 / n99) : "n/a"
          printf "%-13s %5s %8.3f %10s %10s\n", t, c, sr / nr, r50, r99
        }'
    done
  done
  if ((ROUNDS > 1)); then
    echo
    echo "The same ratios taken within each round (the round's own nginx and direct,"
    echo "measured in the same minute), then the median over rounds r1..r$ROUNDS: a drift"
    echo "of the machine between rounds moves all three rows of a round together."
    echo
    printf '%-13s %5s %8s %10s %10s  %s\n' target conns req/s "+p50" "+p99" "per round (req/s/+p50/+p99)"
    for t in "${SCRIMS[@]}" $([[ "$WITH_PORTKEY" == 1 ]] && echo portkey); do
      for c in $CONNECTIONS; do
        paired "$t" "$c"
      done
    done
  fi
  echo
  echo "Memory: a fresh process each; idle = after start and 6 requests; then $STREAMS"
  echo "concurrent streams held open (50 chunks, 200 ms apart, ~10 s each)."
  echo
  printf '%-13s %10s %10s %14s %14s %8s %10s\n' target start idle "all streaming" "peak (HWM)" fds "[DONE]"
  for t in "${SCRIMS[@]}" $([[ "$WITH_PORTKEY" == 1 ]] && echo portkey); do
    printf '%-13s %10s %10s %14s %14s %8s %10s\n' "$t" "$(mb "${M_START[$t]}")" "$(mb "${M_IDLE[$t]}")" \
      "$(mb "${M_OPEN[$t]}")" "$(mb "${M_PEAK[$t]}")" "${M_FDS[$t]}" "${M_DONE[$t]}/$STREAMS"
  done
  if [[ -n "$PK_LOAD_RSS" ]]; then echo "(portkey after the wrk load: VmRSS $(mb "$PK_LOAD_RSS"))"; fi
  echo
  # The issue asks for its figures at 1 and 32 connections and measured
  # nginx itself at 16: every connection count measured gets its verdicts.
  for tc in $CONNECTIONS; do
    echo "Targets from the issue, at $tc connection(s):"
    for s in "${SCRIMS[@]}"; do
      echo
      echo "$s$([[ -n "${SCRUB_OF[$s]}" ]] && echo " (scrub = ${SCRUB_OF[$s]})")$([[ -n "${AUDIT_OF[$s]:-}" ]] && echo " (audit = ${AUDIT_OF[$s]})"):"
      verdicts "$s" "$tc"
    done
    echo
  done
  local warned=0
  for c in $CONNECTIONS; do
    for t in "${TARGETS[@]}"; do
      if [[ "${NON2XX[$t,$c]}" != 0 || "${ERRS[$t,$c]}" != 0 ]]; then
        ((warned++)) || echo
        echo "WARNING: $t at $c connections: ${NON2XX[$t,$c]} non-2xx answers, ${ERRS[$t,$c]} socket errors"
      fi
    done
  done
  for c in $CONNECTIONS; do
    for t in "${TARGETS[@]}"; do
      if ((OTHER[$t,$c] > NOISY)); then
        ((warned++)) || echo
        echo "NOISE: other processes took ${OTHER[$t,$c]}% of a CPU while $t ran at $c connections"
      fi
    done
  done
  for s in "${SCRIMS[@]}" $([[ "$WITH_PORTKEY" == 1 ]] && echo portkey); do
    if [[ "${M_DONE[$s]}" != "$STREAMS" ]]; then
      ((warned++)) || echo
      echo "WARNING: only ${M_DONE[$s]}/$STREAMS streams through $s ended with [DONE]"
    fi
  done
  for s in "${SCRIMS[@]}"; do
    if [[ "${ERRLINES[$s]}" != 0 ]]; then
      ((warned++)) || echo
      echo "NOTE: $s wrote ${ERRLINES[$s]} lines to stderr under load (see the raw results)"
    fi
  done
  return 0
}

summary >"$TMP/summary.txt"
raw ""
raw "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
{
  cat "$HEAD_TXT"
  echo
  cat "$TMP/summary.txt"
  echo
  echo "# raw results"
  echo
  cat "$RAW"
} >"$OUT"

echo
cat "$TMP/summary.txt"
echo
log "results: ${OUT#"$ROOT"/}"
