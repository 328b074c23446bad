#!/usr/bin/env bash
# Valgrind run (RELIABILITY.md L5 "Valgrind run: 0 bytes definitely lost"):
# the release build of `scrim serve` under memcheck, a short mixed load,
# then SIGTERM and valgrind's summary.
#
#   bench/valgrind.sh                       # build/scrim, 300 requests
#   VG_REQUESTS=600 VG_WORKERS=4 bench/valgrind.sh
#   VG_JIT=1 VG_REQUESTS=1000 bench/valgrind.sh  # PCRE2's JIT on
#
# What runs (127.0.0.1 only, from a temporary directory, stopped on exit):
#   redis-server    private, no persistence; virtual keys and limits
#   fake provider   tests/fake_provider/provider.mjs, not recording
#   scrim           SCRIM_BIN (default build/scrim, the RelWithDebInfo build)
#                   under valgrind --leak-check=full
#                   --errors-for-leak-kinds=definite; keys from Redis
#                   (fail_mode closed), audit on, scrub on with rules/
# Load: VG_WORKERS clients send VG_REQUESTS base-URL chat requests, half
# streamed (SSE), half keep-alive and half on fresh connections, each prompt
# carrying an e-mail address and a card number that must come back restored;
# plus a few bad ones (wrong key, invalid JSON), GET /v1/models, and a
# streamed chat the client closes after its first bytes (1 in 25 each).
#
# PCRE2's JIT: by default the run sets SCRIM_PCRE2_JIT=0 (the interpreter).
# VG_JIT=1 keeps the JIT on. valgrind 3.19 runs JIT-compiled code correctly
# (its default --smc-check=all-non-file retranslates code written to
# anonymous memory), but memcheck then reports "Conditional jump or move
# depends on uninitialised value(s)" in the JIT code (frames `???`), by the
# thousand: the matchers' SIMD loads run past the end of the subject into
# the never-written capacity of its buffer (origin: buf_add), and memcheck
# cannot follow the masking. With VG_JIT=1 the script loads
# bench/valgrind-pcre2-jit.supp, which suppresses exactly those: Cond
# reports whose top frame is in code outside any file. VG_JIT_SUPP=0 runs
# without it. VG_EXTRA adds valgrind options (e.g. --track-origins=yes).
#
# Exit status 0 only when every request got its expected answer, scrim
# exited 0, valgrind counted 0 errors and 0 bytes definitely lost.
# The summary goes to bench/results/valgrind-DATE.txt (and stdout).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
VG_REQUESTS=${VG_REQUESTS:-300}
VG_WORKERS=${VG_WORKERS:-4}
SCRIM_BIN=${SCRIM_BIN:-$ROOT/build/scrim}
[ -x "$SCRIM_BIN" ] || { echo "no scrim at $SCRIM_BIN (build build first)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 2; }

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BENCH_DIR/results"
summary="$BENCH_DIR/results/valgrind-$stamp.txt"
work=$(mktemp -d /tmp/scrim-vg.XXXXXX)
pids=()
ok_exit=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$ok_exit" = 1 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_line() { # file pattern seconds
  for _ in $(seq 1 $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

echo "== valgrind: $VG_REQUESTS requests, $VG_WORKERS workers, $SCRIM_BIN (work dir $work)"

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

node "$ROOT/tests/fake_provider/provider.mjs" --port 0 --no-record >"$work/provider.log" 2>&1 &
pids+=($!)
wait_line "$work/provider.log" '^listening' 10
pport=$(sed -n 's/^listening \([0-9]*\).*/\1/p' "$work/provider.log" | head -1)

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

[redis]
url = redis://127.0.0.1:$rport
fail_mode = closed
timeout = 2s

[audit]
fsync = interval

[provider fake]
base_url = http://127.0.0.1:$pport/v1
api_key_env = VG_PROVIDER_KEY
auth_header = bearer
timeout = 60s

[route all]
prefix = /v1/
provider = fake
CONF
export VG_PROVIDER_KEY=sk-vg-provider-000
key=$("$SCRIM_BIN" keys create --name vg --rpm 100000 --tpm 100000000 --max-parallel 64 \
  -c "$work/scrim.conf" | sed -n 's/^key: //p')

vgcmd=(valgrind --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
       --track-fds=no --num-callers=30 --log-file="$work/valgrind.log")
if [ "${VG_JIT:-0}" = 1 ]; then
  unset SCRIM_PCRE2_JIT
  # Reports whose top frame is JIT-compiled code (no object): see the file.
  [ "${VG_JIT_SUPP:-1}" = 1 ] && vgcmd+=(--suppressions="$BENCH_DIR/valgrind-pcre2-jit.supp")
else
  export SCRIM_PCRE2_JIT=0
fi
# shellcheck disable=SC2206
[ -n "${VG_EXTRA:-}" ] && vgcmd+=($VG_EXTRA)
"${vgcmd[@]}" "$SCRIM_BIN" serve -c "$work/scrim.conf" >"$work/scrim.log" 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null || { echo "scrim did not start" >&2; cat "$work/scrim.log" "$work/valgrind.log" >&2; exit 1; }

t0=$(date +%s)
node --input-type=module - "$sport" "$key" "$VG_REQUESTS" "$VG_WORKERS" <<'JS' | tee "$work/load.log"
import http from 'node:http';
const [port, key, total, workers] = process.argv.slice(2).map((v, i) => (i === 1 ? v : Number(v)));
const EMAIL = 'maria.gonzalez@example.com', CARD = '4111 1111 1111 1111';
const keep = new http.Agent({ keepAlive: true, maxSockets: workers });
const counts = { sent: 0, ok: 0, stream: 0, bad_expected: 0, errors: 0, samples: [] };
function req(path, { method = 'POST', body, auth = key, agent = keep } = {}) {
  return new Promise((resolve) => {
    const r = http.request({ host: '127.0.0.1', port, path, method, agent,
      headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' } }, (res) => {
      let s = ''; res.setEncoding('utf8'); res.on('data', (d) => (s += d));
      res.on('end', () => resolve({ status: res.statusCode, body: s }));
      res.on('error', (e) => resolve({ status: -1, body: String(e) }));
    });
    r.setTimeout(60000, () => r.destroy(new Error('timeout')));
    r.on('error', (e) => resolve({ status: -1, body: String(e) }));
    if (body !== undefined) r.end(body); else r.end();
  });
}
function fail(why) { counts.errors++; if (counts.samples.length < 5) counts.samples.push(why); }
let next = 0;
async function worker() {
  for (;;) {
    const i = next++;
    if (i >= total) return;
    counts.sent++;
    const agent = i % 4 < 2 ? keep : false;
    if (i % 25 === 7) { // wrong key: 401
      const r = await req('/v1/chat/completions', { body: '{}', auth: 'sk-scrim-wrong', agent });
      r.status === 401 ? counts.bad_expected++ : fail(`bad key got ${r.status}`); continue;
    }
    if (i % 25 === 13) { // invalid JSON: 400
      const r = await req('/v1/chat/completions', { body: '{"model":', agent });
      r.status === 400 ? counts.bad_expected++ : fail(`bad json got ${r.status}`); continue;
    }
    if (i % 25 === 3) { // a streamed chat the client leaves after its first bytes: the abort path
      const ok = await new Promise((resolve) => {
        const body = JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: `vg abort ${i} ${EMAIL}` }] });
        const r = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent: false,
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json',
            'x-fake-chunks': '50', 'x-fake-chunk-delay-ms': '20' } }, (res) => {
          res.once('data', () => { r.destroy(); resolve(res.statusCode === 200); });
          res.on('error', () => {});
        });
        r.on('error', () => {});
        r.setTimeout(60000, () => { r.destroy(); resolve(false); });
        r.end(body);
      });
      ok ? counts.aborted = (counts.aborted || 0) + 1 : fail(`abort run ${i}: no 200 stream`); continue;
    }
    if (i % 25 === 19) {
      const r = await req('/v1/models', { method: 'GET', agent });
      r.status === 200 ? counts.ok++ : fail(`models got ${r.status}`); continue;
    }
    const stream = i % 2 === 1;
    const prompt = `vg ${i}: mail ${EMAIL}, card ${CARD}`;
    const r = await req('/v1/chat/completions', { agent, body: JSON.stringify({
      model: 'gpt-4o-mini', stream, messages: [{ role: 'user', content: prompt }] }) });
    if (r.status !== 200) { fail(`chat ${stream ? 'stream' : ''} got ${r.status} ${r.body.slice(0, 200)}`); continue; }
    let text = r.body;
    if (stream) {
      text = '';
      for (const line of r.body.split(/\r?\n/)) {
        if (!line.startsWith('data:')) continue;
        const d = line.slice(5).trim(); if (d === '[DONE]') continue;
        try { for (const c of JSON.parse(d).choices || []) if (c.delta && typeof c.delta.content === 'string') text += c.delta.content; } catch {}
      }
      if (!r.body.includes('[DONE]')) { fail('stream without [DONE]'); continue; }
    }
    if (!text.includes(EMAIL) || !text.includes(CARD)) { fail(`chat ${i} not restored: ${text.slice(0, 200)}`); continue; }
    counts.ok++; if (stream) counts.stream++;
  }
}
await Promise.all(Array.from({ length: workers }, worker));
keep.destroy();
console.log('VG_LOAD ' + JSON.stringify(counts));
JS
t1=$(date +%s)
load_line=$(sed -n 's/^VG_LOAD //p' "$work/load.log")
metrics=$(curl -fs "http://127.0.0.1:$aport/metrics" || true)

kill -TERM "$spid"
set +e
wait "$spid"
scrim_exit=$?
set -e
err_line=$(grep -E 'ERROR SUMMARY' "$work/valgrind.log" | tail -1 | sed 's/^==[0-9]*== //')
def_line=$(grep -E 'definitely lost:' "$work/valgrind.log" | tail -1 | sed 's/^==[0-9]*== //')
leak_block=$(sed -n '/LEAK SUMMARY/,/suppressed:/p' "$work/valgrind.log" | sed 's/^==[0-9]*== //')
[ -n "$def_line" ] || def_line="definitely lost: 0 bytes in 0 blocks (no leaks reported)"
nerr=$(echo "$err_line" | sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' | tr -d ,)
ndef=$(echo "$def_line" | sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' | tr -d ,)

{
  echo "scrim valgrind run, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "command: VG_REQUESTS=$VG_REQUESTS VG_WORKERS=$VG_WORKERS VG_JIT=${VG_JIT:-0}${VG_EXTRA:+ VG_EXTRA=\"$VG_EXTRA\"} bench/valgrind.sh (SCRIM_PCRE2_JIT=${SCRIM_PCRE2_JIT:-unset})"
  echo "valgrind: $(valgrind --version) $(printf '%s\n' "${vgcmd[@]:1}" | grep -v '^--log-file=' | sed "s|^--suppressions=$BENCH_DIR/|--suppressions=bench/|" | tr '\n' ' ')$SCRIM_BIN serve -c scrim.conf"
  echo "binary: $SCRIM_BIN ($("$SCRIM_BIN" version | head -1))"
  echo "load: $load_line ($((t1 - t0)) s)"
  echo "scrim: exit $scrim_exit"
  if [ "${SCRIM_PCRE2_JIT:-1}" = 0 ]; then echo "pcre2 jit: off (SCRIM_PCRE2_JIT=0)"
  elif grep -q 'JIT unavailable' "$work/scrim.log"; then echo "pcre2 jit: refused ($(grep -m1 'JIT unavailable' "$work/scrim.log"))"
  else echo "pcre2 jit: on (pcre2_jit_compile succeeded for every rule)"; fi
  echo "$err_line"
  if [ -n "$leak_block" ]; then echo "$leak_block"; else grep -E 'All heap blocks were freed|in use at exit' "$work/valgrind.log" | sed 's/^==[0-9]*== //'; fi
  echo "metrics at the end:"
  echo "$metrics" | grep -E '^scrim_(requests_total|errors_total)' | head -20 || true
  if [ "${nerr:-1}" != 0 ] || [ "${ndef:-1}" != 0 ]; then
    echo "valgrind report (first 150 lines of errors / definite leaks):"
    # (head closes the pipe early: not a failure of the run)
    grep -vE '^==[0-9]+== *$' "$work/valgrind.log" | sed -n '/Invalid\|uninitialised\|definitely lost in/,+25p' | head -150 || true
  fi
} | tee "$summary"

errors=$(echo "$load_line" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).errors)}catch{console.log(-1)}})')
if [ "$errors" = 0 ] && [ "$scrim_exit" = 0 ] && [ "${nerr:-1}" = 0 ] && [ "${ndef:-1}" = 0 ]; then
  ok_exit=1
  echo "valgrind run passed"
else
  echo "valgrind run FAILED (see $summary; logs in $work)"
  exit 1
fi
