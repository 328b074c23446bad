#!/usr/bin/env bash
# Audit log latency (issue 6, "Figures"): added latency through the
# gateway with the audit log on against off, at a fixed 1,000 requests/s.
#
#   bench/audit_latency.sh          # as root on Debian 12; about 4 minutes
#
# Base-URL mode: the client POSTs a 4,096-byte chat body to scrim over
# plain HTTP; scrim (scrub = on, the shipped rules) forwards it to a fake
# provider, nginx answering a fixed chat.completion after reading the
# whole request. Two scrim processes run side by side, identical but for
# `[audit] mode`: `on` (the default: fsync = interval, 1 s, the log in a
# state_dir under /var/tmp, on disk) and `off`. bench/proxy/rate.mjs sends
# an open-loop fixed rate over a keep-alive pool; direct (to nginx),
# audit-off and audit-on take turns, in a rotating order, for
# BENCH_ROUNDS rounds.
#
# Environment (all optional):
#   BENCH_RATE=1000       requests per second
#   BENCH_DURATION=20     seconds measured per run
#   BENCH_WARMUP=2        seconds sent before, not measured
#   BENCH_ROUNDS=3        interleaved rounds
#   BENCH_PIN=1           scrim on CPU 1, client + provider on CPU 0
#   BENCH_NICE=0          nice value for everything the benchmark runs (e.g.
#                         -10, as root: the same for all three targets, so
#                         that other people's builds disturb them less)
#   BENCH_NO_BUILD=1      use build/scrim as it is
#   SCRIM_BIN=PATH        benchmark this binary instead
#
# Everything listens on free ports of 127.0.0.1 and is stopped on exit.
# Writes bench/results/audit-latency-DATE.txt (summary, then raw lines).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PB=$BENCH_DIR/proxy
RATE=${BENCH_RATE:-1000}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-3}
PIN=${BENCH_PIN:-1}
NICE=${BENCH_NICE:-0}
SCRIM=${SCRIM_BIN:-$ROOT/build/scrim}

log() { printf '[audit-latency] %s\n' "$*" >&2; }
die() { printf '[audit-latency] error: %s\n' "$*" >&2; exit 1; }

PIDS=()
TMP='' STATE=''
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
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ $rc -ne 0 ]]; then log "logs kept in $TMP and $STATE"; else rm -rf "$TMP" "$STATE"; fi
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

wait_port() { # $1 port, $2 name, $3 pid
  local i
  for ((i = 0; i < 200; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited at start; logs in $TMP"
    sleep 0.1
  done
  die "$2 did not come up on 127.0.0.1:$1; logs in $TMP"
}

free_ports() {
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

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
[[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]] || need+=(libnginx-mod-http-echo)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v node >/dev/null 2>&1 || need+=(nodejs)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${need[*]}"
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
  }
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

TMP=$(mktemp -d /tmp/scrim-audit-latency.XXXXXX)
# the audit log goes to disk (/var/tmp), never to a tmpfs where fsync is free
STATE=$(mktemp -d /var/tmp/scrim-audit-latency.XXXXXX)
read -r P_PROV P_ON P_ON_A P_OFF P_OFF_A <<<"$(free_ports 5)"
RESULTS_DIR=$BENCH_DIR/results
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/audit-latency-$(date +%Y%m%d-%H%M%S).txt
RAW=$TMP/raw.jsonl
: >"$RAW"

# ------------------------------------------------------------- provider

COMPLETION='{"id":"chatcmpl-auditbench00000000000000000000","object":"chat.completion","created":1732233600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The package stage failed first: the upload of the second artifact stalled at sixty percent and the mirror dropped the connection. Retry the upload against another mirror, then check the mirror logs around 01:10 for connection limits.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":930,"completion_tokens":48,"total_tokens":978,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_auditbench"}'
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
    listen 127.0.0.1:$P_PROV;
    location = /__bench/status { stub_status; }
    location / {
      default_type application/json;
      echo_read_request_body;
      echo -n '$COMPLETION';
    }
  }
}
EOF
log "starting the provider (nginx) on 127.0.0.1:$P_PROV"
"${ON_CPU0[@]}" nginx -p "$TMP/provider" -c "$TMP/provider/nginx.conf" -g 'daemon off;' \
  >"$TMP/provider/stdout.log" 2>&1 &
PIDS+=($!)
wait_port "$P_PROV" "provider nginx" "$!"

# ------------------------------------------------------------ two scrims

"$SCRIM" keys generate bench >"$TMP/key.txt"
CLIENT_KEY=$(sed -n 's/^key: //p' "$TMP/key.txt")
KEY_LINE=$(grep '^bench = ' "$TMP/key.txt")
[[ -n "$CLIENT_KEY" && -n "$KEY_LINE" ]] || die "scrim keys generate printed no key"
export BENCH_PROVIDER_KEY=sk-bench-provider-key
# 32 random bytes, as hex: scrim refuses a secret file holding a NUL byte
# ("Invalid argument"), which raw `head -c 32 /dev/urandom` has 12% of the time
openssl rand -hex 32 >"$TMP/scrub.secret"
chmod 600 "$TMP/scrub.secret"

declare -A PORT_OF
start_scrim() { # $1 name, $2 port, $3 admin port, $4 audit mode
  mkdir -p "$STATE/$1" "$TMP/$1"
  cat >"$TMP/$1/scrim.conf" <<EOF
[gateway]
listen = 127.0.0.1:$2
admin_listen = 127.0.0.1:$3
auth = keys
log_level = warn
drain_timeout = 1s
rules_dir = $ROOT/rules
scrub = on
scrub_secret_file = $TMP/scrub.secret
state_dir = $STATE/$1

[audit]
mode = $4
fsync = interval
fsync_interval = 1s

[keys]
$KEY_LINE

[provider fake]
base_url = http://127.0.0.1:$P_PROV/v1
api_key_env = BENCH_PROVIDER_KEY
auth_header = bearer
connect_timeout = 2s
timeout = 60s

[route all]
prefix = /v1/
provider = fake
EOF
  "$SCRIM" check -c "$TMP/$1/scrim.conf" >"$TMP/$1/check.log" 2>&1 || die "scrim check failed: $TMP/$1/check.log"
  "${ON_CPU1[@]}" "$SCRIM" serve -c "$TMP/$1/scrim.conf" >"$TMP/$1/stdout.log" 2>"$TMP/$1/stderr.log" &
  PIDS+=($!)
  wait_port "$2" "$1" "$!"
  PORT_OF[$1]=$2
}
log "starting scrim with [audit] mode = on (:$P_ON) and mode = off (:$P_OFF), state under $STATE"
start_scrim audit-on "$P_ON" "$P_ON_A" on
start_scrim audit-off "$P_OFF" "$P_OFF_A" off
PORT_OF[direct]=$P_PROV

audit_lines() { # records in $1's audit log (0 if none)
  if [[ -f "$STATE/$1/audit.jsonl" ]]; then wc -l <"$STATE/$1/audit.jsonl"; else echo 0; fi
}

# each path: one request, the provider's completion back
for t in direct audit-off audit-on; do
  out=$(node "$PB/load.mjs" --target "127.0.0.1:${PORT_OF[$t]}" --key "$CLIENT_KEY" --check) ||
    die "$t: no answer"
  node -e 'const r = JSON.parse(process.argv[1]); if (r.status !== 200 || !r.body.includes("chatcmpl-auditbench")) process.exit(1)' "$out" ||
    die "$t does not bring the provider's completion back: $(head -c 300 <<<"$out")"
done
sleep 1.5 # one fsync interval
on0=$(audit_lines audit-on) off0=$(audit_lines audit-off)
[[ "$on0" -ge 1 ]] || die "audit-on wrote no audit record for the check request"
[[ "$off0" -eq 0 ]] || die "audit-off wrote $off0 audit records"

# ---------------------------------------------------------------- the runs

TARGETS=(direct audit-off audit-on)
log "fixed rate $RATE req/s, ${DURATION}s per run (+${WARMUP}s), $ROUNDS interleaved rounds"
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < 3; k++)); do
    t=${TARGETS[$(((k + r) % 3))]}
    a0=$(audit_lines "$t")
    m0=$(machine_ticks) o0=$(our_ticks) w0=$(date +%s%N)
    line=$("${ON_CPU0[@]}" node "$PB/rate.mjs" --target "127.0.0.1:${PORT_OF[$t]}" --key "$CLIENT_KEY" \
      --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" | sed -n 's/^RATE //p')
    m1=$(machine_ticks) o1=$(our_ticks) w1=$(date +%s%N)
    [[ -n "$line" ]] || die "rate.mjs printed nothing for $t"
    sleep 1.2 # let the interval fsync write the last batch before counting
    a1=$(audit_lines "$t")
    other=$(node -e '
      const [line, m, o, w] = process.argv.slice(1); const r = JSON.parse(line);
      console.log(Math.max(0, Math.round((+m - +o - r.client_cpu_total_ms / 10) / (+w / 1e9))));' \
      "$line" $((m1 - m0)) $((o1 - o0)) $((w1 - w0)))
    echo "{\"kind\":\"rate\",\"target\":\"$t\",\"round\":$r,\"other_pct\":$other,\"audit_records\":$((a1 - a0)),\"r\":$line}" >>"$RAW"
    log "  $t round $r: $(node -e 'const r = JSON.parse(process.argv[1]); console.log(`${r.sent_rps} req/s sent, p50 ${(r.p50_us / 1000).toFixed(3)} ms, p99 ${(r.p99_us / 1000).toFixed(3)} ms, p99.9 ${(r.p999_us / 1000).toFixed(3)} ms, late ${r.late_pct}%, errors ${r.errors}, non-2xx ${r.non2xx}`)' "$line"), audit records +$((a1 - a0)), other ${other}%"
  done
done

# ------------------------------------------------------------------ report

verify=$("$SCRIM" audit verify -c "$TMP/audit-on/scrim.conf" "$STATE/audit-on/audit.jsonl" 2>&1 | head -1) || true
records=$(curl -s "http://127.0.0.1:$P_ON_A/metrics" | grep -E '^scrim_audit_(records_total|healthy)' | tr '\n' ' ')
{
  echo "# scrim audit latency benchmark, $(date '+%Y-%m-%d %H:%M:%S %z')"
  echo
  echo "command: bench/audit_latency.sh  (BENCH_RATE=$RATE BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS BENCH_PIN=$PIN BENCH_NICE=$NICE)"
  echo "scrim: $("$SCRIM" version 2>&1 | tr '\n' ' ')"
  echo "       work tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    git -C "$ROOT" diff --quiet HEAD -- src rules CMakeLists.txt 2>/dev/null || echo ' + uncommitted changes in src/, rules/ or CMakeLists.txt')"
  echo "machine: $(nproc) cpus ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr); audit log on $(df -T "$STATE" | awk 'NR == 2 {print $2}')"
  echo "cpu pinning: $([[ $PIN == 1 ]] && echo 'scrim on CPU 1; the client and the provider on CPU 0' || echo off)"
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "audit-on's log after the run: $(audit_lines audit-on) records; scrim audit verify: $verify"
  echo "audit-off's log after the run: $(audit_lines audit-off) records"
  echo "audit-on /metrics: $records"
  echo
  node "$PB/summarize.mjs" audit "$RAW"
  echo
  echo "# raw results (one JSON line per run)"
  echo
  cat "$RAW"
} >"$OUT"

sed -n '/^## summary/,/^# raw results/p' "$OUT" | sed '$d'
log "results: ${OUT#"$ROOT"/}"
