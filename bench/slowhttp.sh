#!/usr/bin/env bash
# Ordinary traffic's latency while slowhttptest attacks scrim's gateway
# port (RELIABILITY.md §8 L4: "`slowhttptest` slowloris, slow POST, slow
# read: normal-traffic p99 ≤ 2× baseline"). One run measures everything:
#
#   baseline     wrk alone
#   slowloris    wrk while slowhttptest -H holds SLOW_CONNS connections
#                (a header line every 5 s, never the end of the head)
#   slow POST    wrk while slowhttptest -B sends 8 KiB bodies a few
#                bytes every 5 s, with a valid key
#   slow read    wrk while slowhttptest -X asks GET /v1/models 10 times
#                per connection (pipelined, valid key) and reads 32 bytes
#                a second through a window of 1-64 bytes
#   baseline 2   wrk alone again, to see how much the machine drifted
#
#   bench/slowhttp.sh                      # build/scrim, about 2.5 minutes
#   SLOW_CONNS=3000 SLOW_SECONDS=20 bench/slowhttp.sh
#
# Ordinary traffic: wrk -t1 -c WRK_CONNS (4) -d SLOW_SECONDS (15) with
# bench/chat.lua (4 KB non-streamed chat bodies, keep-alive), latency from
# its p50/p99. Each attack (SLOW_CONNS connections, 1500, opened at
# SLOW_RATE a second, by default spread over the attack's length) starts
# 4 s before wrk and lasts 8 s beyond it; the next phase waits until scrim
# has no client connection left. scrim: the release build (SCRIM_BIN, default
# build/scrim) with the default configuration (header_timeout and
# body_timeout 10 s, body_min_rate 4k, send_timeout 60 s), a [keys] key,
# audit on, scrub on with rules/; the fake provider without recording.
# Everything on 127.0.0.1, stopped on exit. Not pinned to CPUs: on a
# shared machine read the load average printed with each row.
#
# slowhttptest cannot send a header of one's choosing; its Cookie value
# (-j) goes into the request as is, so "a=b\r\nAuthorization: Bearer K"
# adds the key.
#
# The summary goes to bench/results/slowhttp-DATE.txt (and stdout). Exit 1
# if wrk saw errors or non-2xx answers; the p99 ratio is reported, not
# enforced (a noisy neighbour can move it either way).

set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
SCRIM=${SCRIM_BIN:-$ROOT/build/scrim}
SECONDS_=${SLOW_SECONDS:-15}
CONNS=${SLOW_CONNS:-1500}
# Opened over the whole measurement (slowhttptest does not replace the
# connections scrim drops), so the attack is at full height throughout.
RATE=${SLOW_RATE:-$(((CONNS + SECONDS_ + 7) / (SECONDS_ + 8)))}
WRK_CONNS=${WRK_CONNS:-4}
[ -x "$SCRIM" ] || { echo "no scrim at $SCRIM (build build first)" >&2; exit 2; }
for c in wrk slowhttptest node; do
  command -v "$c" >/dev/null || { echo "$c not installed" >&2; exit 2; }
done

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BENCH_DIR/results"
summary="$BENCH_DIR/results/slowhttp-$stamp.txt"
work=$(mktemp -d /tmp/scrim-slowhttp.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_line() { # file pattern seconds
  for _ in $(seq 1 $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

node "$ROOT/tests/fake_provider/provider.mjs" --port 0 --no-record >"$work/provider.log" 2>&1 &
pids+=($!)
wait_line "$work/provider.log" '^listening' 10
pport=$(sed -n 's/^listening \([0-9]*\).*/\1/p' "$work/provider.log" | head -1)

"$SCRIM" keys generate bench >"$work/key.txt"
key=$(sed -n 's/^key: //p' "$work/key.txt")
keyline=$(grep '^bench = ' "$work/key.txt")
sport=$(free_port)
aport=$(free_port)
mkdir -p "$work/state"
cat >"$work/scrim.conf" <<CONF
[gateway]
listen = 127.0.0.1:$sport
admin_listen = 127.0.0.1:$aport
auth = keys
log_level = warn
rules_dir = $ROOT/rules
state_dir = $work/state

[keys]
$keyline

[provider fake]
base_url = http://127.0.0.1:$pport/v1
api_key_env = SLOW_PROVIDER_KEY
auth_header = bearer

[route all]
prefix = /v1/
provider = fake
CONF
export SLOW_PROVIDER_KEY=sk-slowhttp-provider-000
"$SCRIM" serve -c "$work/scrim.conf" >"$work/scrim.log" 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null || { echo "scrim did not start" >&2; cat "$work/scrim.log" >&2; exit 1; }

# Accepted connections on the gateway port (scrim's side).
clients() {
  ss -Htn state established "( sport = :$sport )" 2>/dev/null | wc -l
}
wait_drained() {
  for _ in $(seq 1 300); do [ "$(clients)" -eq 0 ] && return 0; sleep 0.2; done
  echo "warning: $(clients) client connections still open" >&2
}

export BENCH_KEY=$key
wrk_run() { # name -> one summary line
  local out
  out=$(wrk -t1 -c"$WRK_CONNS" -d"${SECONDS_}s" --latency -s "$BENCH_DIR/chat.lua" "http://127.0.0.1:$sport" 2>&1)
  echo "$out" >"$work/wrk-$1.txt"
  echo "$out" | sed -n 's/^BENCH \(rps=.*\)/\1/p' | head -1
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

auth_cookie=$'a=b\r\nAuthorization: Bearer '"$key"
declare -A attack=(
  [slowloris]="-H -i 5 -x 16 -u http://127.0.0.1:$sport/v1/chat/completions"
  [slow_post]="-B -i 5 -x 8 -s 8192 -f application/json -u http://127.0.0.1:$sport/v1/chat/completions"
  [slow_read]="-X -k 10 -n 1 -w 1 -y 64 -z 32 -u http://127.0.0.1:$sport/v1/models"
)

rows=()
peak=0
sample_peak() { # background: highest client-connection count while $1 exists
  local m=0 n
  while kill -0 "$1" 2>/dev/null; do
    n=$(clients); [ "$n" -gt "$m" ] && m=$n
    echo "$m" >"$work/peak"
    sleep 0.5
  done
}
phase() { # name [attack]
  local name=$1 mode=${2:-} apid=0 spid_=0 line load
  peak=0
  if [ -n "$mode" ]; then
    local extra=()
    [ "$mode" != slowloris ] && extra=(-j "$auth_cookie")
    # shellcheck disable=SC2086
    slowhttptest ${attack[$mode]} "${extra[@]}" -c "$CONNS" -r "$RATE" -l $((SECONDS_ + 12)) -p 10 \
      >"$work/slowhttptest-$mode.txt" 2>&1 &
    apid=$!
    pids+=($apid)
    echo 0 >"$work/peak"
    sample_peak "$apid" &
    spid_=$!
    sleep 4
  fi
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  line=$(wrk_run "$name")
  if [ "$apid" != 0 ]; then
    wait "$apid" 2>/dev/null || true
    wait "$spid_" 2>/dev/null || true
    peak=$(cat "$work/peak")
  fi
  kill -0 "$spid" 2>/dev/null || { echo "scrim died during $name" >&2; cat "$work/scrim.log" >&2; exit 1; }
  wait_drained
  rows+=("$name|$line|$peak|$load")
  echo "  $name: $line (client connections at peak: $peak; load $load)"
}

echo "== slowhttp: $CONNS attack connections at $RATE/s, wrk -c$WRK_CONNS ${SECONDS_}s, $SCRIM"
phase baseline
phase slowloris slowloris
phase slow_post slow_post
phase slow_read slow_read
phase baseline_2

base_p99=$(field "$(echo "${rows[0]}" | cut -d'|' -f2)" p99_us)
bad=0
{
  echo "scrim slowhttp run, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "command: SLOW_CONNS=$CONNS SLOW_RATE=$RATE SLOW_SECONDS=$SECONDS_ WRK_CONNS=$WRK_CONNS bench/slowhttp.sh"
  echo "binary: $SCRIM ($("$SCRIM" version | head -1)); $(slowhttptest -h 2>&1 | sed -n 's/.*\(version [0-9.]*\).*/slowhttptest \1/p' | head -1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(nproc) CPUs"
  printf '%-10s %8s %9s %9s %9s %10s %8s %7s  %s\n' phase rps p50_ms p99_ms max_ms p99/base non2xx peak load
  for r in "${rows[@]}"; do
    IFS='|' read -r name line pk load <<<"$r"
    p50=$(field "$line" p50_us); p99=$(field "$line" p99_us); mx=$(field "$line" max_us)
    n2=$(field "$line" non2xx); er=$(field "$line" errors)
    [ "${n2:-1}" = 0 ] && [ "${er:-1}" = 0 ] || bad=1
    printf '%-10s %8s %9.2f %9.2f %9.2f %9.2fx %8s %7s  %s\n' "$name" "$(field "$line" rps)" \
      "$(echo "$p50 / 1000" | bc -l)" "$(echo "$p99 / 1000" | bc -l)" "$(echo "$mx / 1000" | bc -l)" \
      "$(echo "$p99 / $base_p99" | bc -l)" "${n2:-?}/${er:-?}" "$pk" "$load"
  done
  echo "(non2xx = non-2xx answers / socket errors seen by wrk; peak = scrim's client connections at the attack's height, wrk's included; load = 1/5/15 min load average when wrk started)"
  for m in slowloris slow_post slow_read; do
    echo "slowhttptest $m, last status:"
    sed 's/\x1b\[[0-9;]*m//g' "$work/slowhttptest-$m.txt" | grep -E '^(closed|pending|connected|error|service available|Exit status):?' | tail -6 | sed 's/^/  /'
  done
  echo "scrim log (warnings and errors), last lines:"
  tail -5 "$work/scrim.log" | sed 's/^/  /'
} | tee "$summary"
kill -TERM "$spid"; wait "$spid" 2>/dev/null || true
[ "$bad" = 0 ] || { echo "wrk saw errors or non-2xx answers" >&2; exit 1; }
