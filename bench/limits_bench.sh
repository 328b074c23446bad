#!/usr/bin/env bash
# What usage limits in Redis add to a request. One scrim, one run, two
# client keys: a config key ([keys], no limits, no Redis) and a virtual key
# (`scrim keys create`, checked and reserved in Redis on every request, with
# rpm and tpm so high they never bite). wrk (bench/chat.lua: a 4 KB
# non-streaming chat body) measures both through the same scrim, in front of
# nginx answering a fixed chat.completion (with usage, so every virtual-key
# request is settled), interleaved round by round. The difference between
# the two is the price of the limits: the check's EVALSHA round trip on the
# request path, and the settle's EVALSHA (sent once the answer is written)
# plus reading usage off the answer.
#
#   bench/limits_bench.sh                 # about 1 minute
#   LIMITS_BENCH_ROUNDS=5 bench/limits_bench.sh
#
# The round-trip floor is measured too, before and after the runs:
# `redis-benchmark -c 1 -n 20000 -t ping` (PING_MBULK, p50) to the same
# Redis from each CPU, so the same-CPU and cross-CPU wake-ups show apart.
#
# It also checks, with `INFO commandstats` over every measurement and with
# MONITOR over a few single requests, that a virtual-key request costs Redis
# exactly two EVALSHA (check + reserve, then the settle) and no EVAL, and a
# config-key request nothing.
#
# Environment (all optional):
#   LIMITS_BENCH_DURATION=5      seconds per wrk measurement
#   LIMITS_BENCH_WARMUP=1        seconds of unrecorded load before each
#   LIMITS_BENCH_ROUNDS=3        measurements per key and connection count
#                                (the summary takes the median)
#   LIMITS_BENCH_CONNECTIONS="1 16"
#   LIMITS_BENCH_PIN=1           scrim on CPU 1; wrk, nginx and Redis on CPU 0
#   LIMITS_BENCH_REDIS_CPU=0     with pinning, the CPU Redis runs on: 1 puts
#                                it beside scrim, so a check's round trip
#                                wakes no other CPU (but Redis and scrim
#                                then share one)
#   LIMITS_BENCH_REDIS_TIMEOUT=50ms   [redis] timeout (the default config's)
#   LIMITS_BENCH_WRITE=1         append the summary to bench/README.md under
#                                "## Limits" (bench/LIMITS.md if there is no
#                                README); 0: print only
#   SCRIM_BIN=PATH               the scrim to measure (default build/scrim)
#
# Needs wrk, nginx, redis-server, redis-cli, curl and node (for free ports).
# Everything listens on 127.0.0.1 only, from a temporary directory, and is
# stopped on exit.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DURATION=${LIMITS_BENCH_DURATION:-5}
WARMUP=${LIMITS_BENCH_WARMUP:-1}
ROUNDS=${LIMITS_BENCH_ROUNDS:-3}
CONNECTIONS=${LIMITS_BENCH_CONNECTIONS:-"1 16"}
PIN=${LIMITS_BENCH_PIN:-1}
REDIS_CPU=${LIMITS_BENCH_REDIS_CPU:-0}
REDIS_TIMEOUT=${LIMITS_BENCH_REDIS_TIMEOUT:-50ms}
WRITE=${LIMITS_BENCH_WRITE:-1}
SCRIM=${SCRIM_BIN:-$ROOT/build/scrim}

say() { printf '[limits-bench] %s\n' "$*" >&2; }
die() { printf '[limits-bench] error: %s\n' "$*" >&2; exit 1; }

for tool in wrk nginx redis-server redis-cli curl node taskset; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
[[ -x "$SCRIM" ]] || die "no scrim at $SCRIM (build it: cmake --build build)"
if [[ "$(nproc)" -lt 2 ]]; then PIN=0; fi
[[ "$REDIS_CPU" =~ ^[01]$ ]] || die "LIMITS_BENCH_REDIS_CPU must be 0 or 1"
CPU_A=() CPU_B=() CPU_R=()
if [[ "$PIN" == 1 ]]; then CPU_A=(taskset -c 0) CPU_B=(taskset -c 1) CPU_R=(taskset -c "$REDIS_CPU"); fi

# ------------------------------------------------------------ processes

TMP=$(mktemp -d /tmp/scrim-limits-bench.XXXXXX)
STARTED=()
finish() {
  local rc=$? p
  trap - EXIT
  for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $rc -eq 0 ]]; then rm -rf "$TMP"; else say "logs kept in $TMP"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ports() { # N free loopback ports, distinct
  node -e '
    const net = require("node:net");
    const want = Number(process.argv[1]);
    const open = [];
    const next = () => {
      if (open.length === want) {
        console.log(open.map((s) => s.address().port).join(" "));
        for (const s of open) s.close();
        return;
      }
      const s = net.createServer();
      s.listen(0, "127.0.0.1", () => { open.push(s); next(); });
    };
    next();' "$1"
}

wait_for() { # port path what
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  die "$3 is not answering on 127.0.0.1:$1"
}

read -r P_NGINX P_REDIS P_SCRIM P_ADMIN <<<"$(ports 4)"

# ------------------------------------------------------------ the provider

# A fixed chat.completion with usage (what the settle reads).
ANSWER='{"id":"chatcmpl-limitsbench0000000000000","object":"chat.completion","created":1732233600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The export job stopped after batch 31 both times with a connection reset from the warehouse; check the warehouse idle timeout and its connection limit around 02:00 first.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":912,"completion_tokens":41,"total_tokens":953},"system_fingerprint":"fp_limitsbench"}'
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_requests 10000000;
  client_max_body_size 4m;
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$P_NGINX;
    location / {
      default_type application/json;
      return 200 '$ANSWER';
    }
  }
}
EOF
"${CPU_A[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >"$TMP/nginx/out.log" 2>&1 &
STARTED+=($!)
wait_for "$P_NGINX" / "nginx"

# ------------------------------------------------------------ Redis

"${CPU_R[@]}" redis-server --port "$P_REDIS" --bind 127.0.0.1 --dir "$TMP" --save '' --appendonly no \
  --logfile "$TMP/redis.log" &
STARTED+=($!)
REDIS_PID=$!
rcli() { redis-cli -h 127.0.0.1 -p "$P_REDIS" "$@"; }
for ((i = 0; i < 100; i++)); do [[ "$(rcli PING 2>/dev/null)" == PONG ]] && break; sleep 0.05; done
[[ "$(rcli PING 2>/dev/null)" == PONG ]] || die "redis-server did not start"

# ------------------------------------------------------------ scrim

"$SCRIM" keys generate bench >"$TMP/config-key.txt"
CONFIG_KEY=$(sed -n 's/^key: //p' "$TMP/config-key.txt")
KEY_LINE=$(grep '^bench = ' "$TMP/config-key.txt")
export LIMITS_BENCH_PROVIDER_KEY=sk-limits-bench-provider
mkdir -p "$TMP/state"
cat >"$TMP/scrim.conf" <<EOF
[gateway]
listen = 127.0.0.1:$P_SCRIM
admin_listen = 127.0.0.1:$P_ADMIN
auth = keys
log_level = warn
drain_timeout = 1s
rules_dir = $ROOT/rules
state_dir = $TMP/state

[proxy]
mode = off

[audit]
mode = off

[redis]
url = redis://127.0.0.1:$P_REDIS
fail_mode = closed
timeout = $REDIS_TIMEOUT

[prices]
gpt-4o-mini* = 0.15 0.60

[keys]
$KEY_LINE

[provider fake]
base_url = http://127.0.0.1:$P_NGINX/v1
api_key_env = LIMITS_BENCH_PROVIDER_KEY
auth_header = bearer
connect_timeout = 2s
timeout = 60s

[route all]
prefix = /v1/
provider = fake
EOF
"$SCRIM" check -c "$TMP/scrim.conf" >"$TMP/check.log" 2>&1 || die "scrim check failed: $(cat "$TMP/check.log")"
"$SCRIM" keys create -c "$TMP/scrim.conf" --name bench-virtual --rpm 1000000000 --tpm 1000000000000 \
  >"$TMP/virtual-key.txt" || die "scrim keys create failed"
VIRTUAL_KEY=$(sed -n 's/^key: //p' "$TMP/virtual-key.txt")
VIRTUAL_ID=$(sed -n 's/^id: *//p' "$TMP/virtual-key.txt")
[[ -n "$CONFIG_KEY" && -n "$VIRTUAL_KEY" ]] || die "no keys"

"${CPU_B[@]}" "$SCRIM" serve -c "$TMP/scrim.conf" >"$TMP/scrim.log" 2>&1 &
STARTED+=($!)
SCRIM_PID=$!
wait_for "$P_ADMIN" /healthz "scrim"

# One request with each key: both answered by the provider; only the
# virtual one carries x-ratelimit headers (it went through Redis).
probe() { # key -> headers file
  curl -s -D "$TMP/probe.h" -o "$TMP/probe.b" -w '%{http_code}' -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/json' --data '{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"probe"}]}' \
    "http://127.0.0.1:$P_SCRIM/v1/chat/completions"
}
[[ "$(probe "$CONFIG_KEY")" == 200 ]] || die "config key: $(cat "$TMP/probe.b")"
grep -qi '^x-ratelimit-limit-requests' "$TMP/probe.h" && die "a config key answer carries x-ratelimit headers"
[[ "$(probe "$VIRTUAL_KEY")" == 200 ]] || die "virtual key: $(cat "$TMP/probe.b")"
grep -qi '^x-ratelimit-limit-requests: 1000000000' "$TMP/probe.h" || die "the virtual key answer has no x-ratelimit headers"
grep -q chatcmpl-limitsbench "$TMP/probe.b" || die "the answer is not the provider's"

# ------------------------------------------------------------ MONITOR

# Every command Redis runs for 5 requests with each key, one at a time.
# MONITOR lists the script's own commands too, as [N lua]; the client's
# are [N 127.0.0.1:PORT].
monitor_count() { # key -> "client-commands-by-name" for 5 requests
  local key=$1 mpid
  # redis-cli itself, not the rcli function: $! must be its pid, or it
  # would go on monitoring (and slowing Redis down) through the measurements
  redis-cli -h 127.0.0.1 -p "$P_REDIS" MONITOR >"$TMP/monitor.txt" 2>/dev/null &
  mpid=$!
  sleep 0.3
  for _ in 1 2 3 4 5; do probe "$key" >/dev/null; done
  sleep 0.3
  kill "$mpid" 2>/dev/null || true
  wait "$mpid" 2>/dev/null || true
  # the client's own commands (not MONITOR itself, not the script's)
  grep -v ' lua\]' "$TMP/monitor.txt" | grep -v '"MONITOR"' | sed -n 's/^[0-9.]* \[[^]]*\] "\([A-Za-z]*\)".*/\1/p' |
    sort | uniq -c | awk '{printf "%s%s x%d", sep, $2, $1; sep=", "} END {if (!NR) printf "none"}'
}
MON_CONFIG=$(monitor_count "$CONFIG_KEY")
MON_VIRTUAL=$(monitor_count "$VIRTUAL_KEY")
MON_LUA=$(grep -c ' lua\]' "$TMP/monitor.txt" || true)
for ((i = 0; i < 50; i++)); do
  [[ "$(rcli CLIENT LIST | grep -c " flags=[A-Za-z]*O" || true)" == 0 ]] && break
  sleep 0.1
done
[[ "$(rcli CLIENT LIST | grep -c " flags=[A-Za-z]*O" || true)" == 0 ]] || die "a MONITOR client is still connected"
say "MONITOR, 5 config-key requests: $MON_CONFIG"
say "MONITOR, 5 virtual-key requests: $MON_VIRTUAL (and $MON_LUA commands run inside the scripts)"

# ------------------------------------------------------------ measuring

cmdstat() { # name -> "calls usec"
  rcli INFO commandstats | tr -d '\r' |
    awk -F'[:,=]' -v n="cmdstat_$1" '$1 == n {print $3, $5; found=1} END {if (!found) print 0, 0}'
}

# CPU ticks: the machine's busy time and ours (scrim, nginx, redis, and this
# shell's finished children, wrk among them), to tell how much of the
# machine other processes took during a measurement. irq and softirq time
# are left out of both: loopback traffic is charged there, to no process.
# our_ticks sets OURS; call it directly, not in $(...), or `times` sees the
# subshell's children instead of this shell's.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $9}' /proc/stat; }
OURS=0
our_ticks() {
  local sum=0 p q t kids
  for p in "${STARTED[@]}"; do
    kids=$(pgrep -P "$p" 2>/dev/null || true)
    for q in $p $kids; do
      t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$q/stat" 2>/dev/null) || continue
      sum=$((sum + ${t:-0}))
    done
  done
  times >"$TMP/times.txt"
  t=$(awk 'NR == 2 {s = 0; for (i = 1; i <= NF; i++) {split($i, a, "m"); s += a[1] * 60 + a[2]} printf "%d", s * 100}' "$TMP/times.txt")
  OURS=$((sum + t))
}

# scrim's own account of the limits stage (check sent -> verdict back),
# from /metrics: "sum count" of scrim_limits_duration_seconds.
limits_stage() {
  curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" |
    awk '$1 ~ /^scrim_limits_duration_seconds_sum([{]|$)/ {s += $2} $1 ~ /^scrim_limits_duration_seconds_count([{]|$)/ {c += $2}
      END {printf "%s %s\n", s + 0, c + 0}'
}

proc_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

RAW=$TMP/raw.txt
: >"$RAW"
run_wrk() { # key conns seconds -> BENCH line
  local threads=1
  [[ "$2" -gt 1 ]] && threads=2
  BENCH_KEY=$1 "${CPU_A[@]}" wrk -t"$threads" -c"$2" -d"${3}s" --latency -s "$BENCH_DIR/chat.lua" \
    "http://127.0.0.1:$P_SCRIM/v1/chat/completions" 2>&1 | grep '^BENCH rps=' || echo "BENCH failed"
}

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

measure() { # label key conns
  local label=$1 key=$2 conns=$3 line b0 o0 b1 o1 es0 es1 ev0 ev1 req other ls0 lc0 ls1 lc1 stage s0 s1 r0 r1
  run_wrk "$key" "$conns" "$WARMUP" >/dev/null
  read -r es0 _ <<<"$(cmdstat evalsha)"
  read -r ev0 _ <<<"$(cmdstat eval)"
  read -r ls0 lc0 <<<"$(limits_stage)"
  s0=$(proc_ticks "$SCRIM_PID") r0=$(proc_ticks "$REDIS_PID")
  b0=$(busy_ticks)
  our_ticks
  o0=$OURS
  line=$(run_wrk "$key" "$conns" "$DURATION")
  b1=$(busy_ticks)
  our_ticks
  o1=$OURS
  read -r es1 _ <<<"$(cmdstat evalsha)"
  read -r ev1 _ <<<"$(cmdstat eval)"
  read -r ls1 lc1 <<<"$(limits_stage)"
  s1=$(proc_ticks "$SCRIM_PID") r1=$(proc_ticks "$REDIS_PID")
  stage=$(awk -v s="$ls0" -v S="$ls1" -v c="$lc0" -v C="$lc1" 'BEGIN {if (C > c) printf "%d", (S - s) / (C - c) * 1e6; else print 0}')
  [[ "$line" == "BENCH failed" ]] && die "wrk failed ($label, $conns connections)"
  req=$(field "$line" requests)
  # Non-2xx answers (503 limits_unavailable when Redis misses the timeout on
  # a busy machine) are kept and reported: they are part of what a user gets.
  [[ "$(field "$line" non2xx)" == 0 && "$(field "$line" errors)" == 0 ]] ||
    say "NOTE: non-2xx answers or socket errors ($label, $conns connections): $line"
  other=$(awk -v m=$((b1 - b0)) -v o=$((o1 - o0)) -v d="$DURATION" 'BEGIN {x = (m - o) / d; if (x < 0) x = 0; printf "%d", x}')
  # (requests of the warm-up and of the probes are outside the window)
  printf '%s conns=%s %s evalsha=%d eval=%d limits_stage_us=%s scrim_cpu_us=%s redis_cpu_us=%s other_cpu=%s%%\n' \
    "$label" "$conns" "${line#BENCH }" $((es1 - es0)) $((ev1 - ev0)) "$stage" \
    "$(awk -v t=$((s1 - s0)) -v r="$req" 'BEGIN {printf "%d", t * 10000 / r}')" \
    "$(awk -v t=$((r1 - r0)) -v r="$req" 'BEGIN {printf "%d", t * 10000 / r}')" "$other" >>"$RAW"
  say "$label c=$conns: $(field "$line" rps) req/s, p50 $(field "$line" p50_us) us, p99 $(field "$line" p99_us) us," \
    "EVALSHA/request $(awk -v a=$((es1 - es0)) -v r="$req" 'BEGIN {printf "%.3f", a / r}')," \
    "EVAL/request $(awk -v a=$((ev1 - ev0)) -v r="$req" 'BEGIN {printf "%.3f", a / r}'), limits stage ${stage} us, other processes ${other}% of a CPU"
}

# p50 of a PING round trip, in µs, from a client pinned to CPU $1: what
# any Redis call costs before Redis does anything.
rtt_floor() {
  command -v redis-benchmark >/dev/null 2>&1 || { echo -; return; }
  taskset -c "$1" redis-benchmark -h 127.0.0.1 -p "$P_REDIS" -c 1 -n 20000 -t ping --csv 2>/dev/null |
    awk -F'"' '$2 == "PING_MBULK" {printf "%d", $10 * 1000 + 0.5; f = 1} END {if (!f) print "-"}'
}
RTT0_BEFORE=$(rtt_floor 0) RTT1_BEFORE=$(rtt_floor 1)
say "round-trip floor (PING p50) to Redis on CPU $REDIS_CPU: from CPU 0 ${RTT0_BEFORE} us, from CPU 1 ${RTT1_BEFORE} us"

say "measuring: ${DURATION}s per run, ${ROUNDS} rounds, connections $CONNECTIONS, pinning $([[ $PIN == 1 ]] && echo on || echo off)"
for conns in $CONNECTIONS; do
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then
      measure config "$CONFIG_KEY" "$conns"
      measure virtual "$VIRTUAL_KEY" "$conns"
    else
      measure virtual "$VIRTUAL_KEY" "$conns"
      measure config "$CONFIG_KEY" "$conns"
    fi
  done
done
kill -0 "$SCRIM_PID" 2>/dev/null || die "scrim died: $(tail -5 "$TMP/scrim.log")"
RTT0_AFTER=$(rtt_floor 0) RTT1_AFTER=$(rtt_floor 1)
USAGE=$("$SCRIM" keys usage "$VIRTUAL_ID" -c "$TMP/scrim.conf" | sed -n 's/^ *in flight: *//p')
rcli INFO commandstats | tr -d '\r' | grep '^cmdstat' >"$TMP/commandstats.txt" || true
ES_USEC=$(cmdstat evalsha | awk '{if ($1) printf "%.1f", $2 / $1; else print "-"}')
EV_USEC=$(cmdstat eval | awk '{if ($1) printf "%.1f", $2 / $1; else print "-"}')
# Both scripts' time per virtual-key request, which runs two (the check
# and the settle, MONITOR above): the settle was an EVAL, and is an
# EVALSHA too since it stopped sending its text.
RQ_USEC=$(awk -v es="$(cmdstat evalsha)" -v ev="$(cmdstat eval)" \
  'BEGIN {split(es, a, " "); split(ev, b, " "); n = a[1] + b[1]; if (n) printf "%.1f", (a[2] + b[2]) / n * 2; else print "-"}')

# ------------------------------------------------------------ summary

median_of() { # label conns field
  awk -v l="$1" -v c="conns=$2" -v f="$3" '$1 == l && $2 == c {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) { v = kv[2]; sub(/%$/, "", v); print v } } }' "$RAW" |
    sort -n | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "-"}'
}
per_request() { # label conns what
  awk -v l="$1" -v c="conns=$2" -v w="$3" '$1 == l && $2 == c {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); x[kv[1]] = kv[2] } n += x[w]; r += x["requests"] }
    END {if (r) printf "%.3f", n / r; else print "-"}' "$RAW"
}

SUMMARY=$TMP/summary.md
{
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') with \`bench/limits_bench.sh\` (${DURATION} s per measurement after ${WARMUP} s of warm-up," \
    "$ROUNDS rounds interleaved, medians shown): $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))," \
    "$(redis-server --version | awk '{print $1, $3}'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), nginx $(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')," \
    "scrim $("$SCRIM" version 2>&1 | head -1) at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '(src/ with uncommitted changes)');" \
    "$([[ $PIN == 1 ]] && echo "scrim pinned to CPU 1, wrk + nginx to CPU 0, Redis to CPU $REDIS_CPU" || echo 'no CPU pinning'); [redis] timeout $REDIS_TIMEOUT;" \
    "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| conns | key | req/s | p50 µs | p99 µs | non-2xx | EVALSHA / req | EVAL / req | limits stage, mean µs | scrim CPU µs / req | Redis CPU µs / req | other procs, % CPU |"
  echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for conns in $CONNECTIONS; do
    for label in config virtual; do
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$conns" "$label" "$(median_of "$label" "$conns" rps)" \
        "$(median_of "$label" "$conns" p50_us)" "$(median_of "$label" "$conns" p99_us)" \
        "$(awk -v l="$label" -v c="conns=$conns" '$1 == l && $2 == c {for (i = 3; i <= NF; i++) {split($i, kv, "="); if (kv[1] == "non2xx") n += kv[2]}} END {print n + 0}' "$RAW")" \
        "$(per_request "$label" "$conns" evalsha)" "$(per_request "$label" "$conns" eval)" \
        "$(median_of "$label" "$conns" limits_stage_us | sed 's/^0$/-/')" "$(median_of "$label" "$conns" scrim_cpu_us)" \
        "$(median_of "$label" "$conns" redis_cpu_us)" "$(median_of "$label" "$conns" other_cpu)"
    done
  done
  echo
  for conns in $CONNECTIONS; do
    awk -v c="$conns" -v a50="$(median_of config "$conns" p50_us)" -v b50="$(median_of virtual "$conns" p50_us)" \
      -v a99="$(median_of config "$conns" p99_us)" -v b99="$(median_of virtual "$conns" p99_us)" \
      -v ar="$(median_of config "$conns" rps)" -v br="$(median_of virtual "$conns" rps)" 'BEGIN {
        printf "- %s connection%s: the virtual key adds **%+d µs at p50** and %+d µs at p99; throughput %+.1f%%.\n",
          c, (c == 1 ? "" : "s"), b50 - a50, b99 - a99, (br - ar) / ar * 100 }'
  done
  echo "- Redis calls: over every measured run, $(per_request virtual "${CONNECTIONS%% *}" evalsha) EVALSHA and" \
    "$(per_request virtual "${CONNECTIONS%% *}" eval) EVAL per virtual-key request at ${CONNECTIONS%% *} connection(s)" \
    "($(per_request virtual "${CONNECTIONS##* }" evalsha) and $(per_request virtual "${CONNECTIONS##* }" eval) at ${CONNECTIONS##* })," \
    "none for the config key. MONITOR over 5 single requests: config key: $MON_CONFIG; virtual key: $MON_VIRTUAL" \
    "(the check script and the settle, plus $MON_LUA commands inside them). Redis spent $ES_USEC µs per EVALSHA and $EV_USEC µs per EVAL, $RQ_USEC µs per virtual-key request" \
    "(\`INFO commandstats\`). In flight after the run: ${USAGE:-?}."
  echo "- Round-trip floor, \`redis-benchmark -c 1 -n 20000 -t ping\` (PING_MBULK p50) to this Redis$([[ $PIN == 1 ]] && echo " on CPU $REDIS_CPU"):" \
    "from CPU 0 ${RTT0_BEFORE} µs before the runs and ${RTT0_AFTER} µs after; from CPU 1$([[ $PIN == 1 ]] && echo " (scrim's)") ${RTT1_BEFORE} µs and ${RTT1_AFTER} µs."
  awk -v a="$(median_of config "${CONNECTIONS%% *}" p50_us)" -v b="$(median_of virtual "${CONNECTIONS%% *}" p50_us)" \
    -v c="${CONNECTIONS%% *}" 'BEGIN {
      printf "- Target, at most 100 µs added at p50 on loopback: %s at %s connection(s) in this run (%+d µs).\n",
        (b - a <= 100 ? "met" : "**not met**"), c, b - a }'
} >"$SUMMARY"

echo
cat "$SUMMARY"
echo
echo "raw:"
cat "$RAW"
echo
echo "Redis INFO commandstats at the end (the scripts' own commands included):"
cat "$TMP/commandstats.txt"

if [[ "$WRITE" == 1 ]]; then
  if [[ -f "$BENCH_DIR/README.md" ]]; then DEST=$BENCH_DIR/README.md; else DEST=$BENCH_DIR/LIMITS.md; fi
  {
    if ! grep -q '^## Limits$' "$DEST" 2>/dev/null; then
      printf '\n## Limits\n\n'
      echo "\`bench/limits_bench.sh\` measures what a virtual key (limits checked and reserved in Redis, settled with the"
      echo "answer's usage) adds to a request, against a config key, through the same scrim in one run. Each run below"
      echo "is appended by the script."
      echo
    fi
    echo "### $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    cat "$SUMMARY"
    echo
  } >>"$DEST"
  say "appended to $DEST"
fi
