#!/usr/bin/env bash
# Soak (issue 8): SOAK_SECONDS (default 600) of mixed traffic through one
# scrim built with ASan + UBSan (LeakSanitizer on), sampling its resident
# memory and open file descriptors every SOAK_SAMPLE seconds, then a
# verdict on whether memory stayed flat after warm-up, the sanitizers'
# report at exit and the error counts.
#
#   bench/soak.sh                       # build-asan/scrim, 10 minutes
#   SOAK_SECONDS=120 bench/soak.sh      # shorter
#
# Traffic (bench/soak_load.mjs, SOAK_WORKERS clients, SOAK_PAUSE_MS between
# a client's requests, so the load stays moderate on a shared machine):
# base-URL chat streamed and not, Anthropic messages, /v1/models, HTTPS
# proxy mode (CONNECT + interception with scrim's local CA, keep-alive
# tunnels and fresh ones), a virtual key with rpm 60 that gets 429s. Every
# prompt carries personal data that must come back restored.
#
# Bad traffic: SOAK_BAD_PCT (default 10) percent of the requests, picked
# with a PRNG seeded by SOAK_SEED (default 1): malformed heads (bad request
# line, CL+TE, NUL in a header, obs-fold, a 20 KiB header), a body that is
# not JSON, a body over the 8 MiB cap, unknown and revoked virtual keys,
# clients that abort mid-request and mid-stream, and slow clients left to
# header_timeout (one at a time). Each must get its expected status or a
# close (soak_load.mjs lists them); anything else is an error. The summary
# has the counts per kind.
#
# What runs (127.0.0.1 only, from a temporary directory, stopped on exit):
#   redis-server    private, no persistence; virtual keys and limits
#   fake providers  tests/fake_provider/provider.mjs, not recording: one
#                   plain (base URL), one plain for the Anthropic route, one
#                   HTTPS with a certificate for api.openai.com from a test
#                   CA made here (the intercepted host, via [proxy] resolve)
#   scrim           SCRIM_BIN (default build-asan/scrim): keys from Redis
#                   (fail_mode closed, timeout 200 ms), audit on (fsync
#                   interval), proxy mode intercepting api.openai.com,
#                   scrub on with rules/, log_level warn
#
# ASAN_OPTIONS defaults to LeakSanitizer on and a 32 MiB quarantine (see
# below), UBSAN_OPTIONS to halting on the first report.
#
# Verdict: the samples of the first third are warm-up. Memory is "flat"
# when the mean RSS of the last third is at most SOAK_MAX_GROWTH_PCT
# (default 5) percent above the mean of the middle third. The slope of a
# least-squares line over the last two thirds is reported too (KiB/min).
# Open fds are compared the same way (at most +10), and once more when
# the load has stopped: no client connection may remain open, and the fds
# may exceed those before the load only by the upstream connections
# libcurl keeps for reuse.
#
# Writes bench/results/soak-DATE.csv (t_s,rss_kib,fds) and soak-DATE.txt
# (the summary; also printed). Exit status 0 only when memory is flat, no
# request failed, the sanitizers said nothing and scrim exited 0.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_SAMPLE=${SOAK_SAMPLE:-5}
SOAK_WORKERS=${SOAK_WORKERS:-4}
SOAK_PAUSE_MS=${SOAK_PAUSE_MS:-20}
SOAK_MAX_GROWTH_PCT=${SOAK_MAX_GROWTH_PCT:-5}
SOAK_BAD_PCT=${SOAK_BAD_PCT:-10}
SOAK_SEED=${SOAK_SEED:-1}
SCRIM_BIN=${SCRIM_BIN:-$ROOT/build-asan/scrim}
[ -x "$SCRIM_BIN" ] || { echo "no scrim at $SCRIM_BIN (build build-asan first)" >&2; exit 2; }

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BENCH_DIR/results"
csv="$BENCH_DIR/results/soak-$stamp.csv"
summary="$BENCH_DIR/results/soak-$stamp.txt"
work=$(mktemp -d /tmp/scrim-soak.XXXXXX)
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

echo "== soak: $SOAK_SECONDS s, $SOAK_WORKERS workers, $SCRIM_BIN (work dir $work)"

# ---- Redis
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

# ---- test PKI for the intercepted host, and the fake providers
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -keyout "$work/testca.key" -out "$work/testca.pem" -subj '/CN=soak test CA' \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/openai.key" -out "$work/openai.csr" -subj '/CN=api.openai.com' >/dev/null 2>&1
printf 'subjectAltName=DNS:api.openai.com\nextendedKeyUsage=serverAuth\n' >"$work/openai.ext"
openssl x509 -req -in "$work/openai.csr" -CA "$work/testca.pem" -CAkey "$work/testca.key" \
  -CAcreateserial -days 7 -sha256 -extfile "$work/openai.ext" -out "$work/openai.pem" >/dev/null 2>&1
provider() { # name [tls args...]; started here, not in a subshell, so cleanup sees its pid
  local name=$1; shift
  node "$ROOT/tests/fake_provider/provider.mjs" --port 0 --no-record "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_line "$work/$name.log" '^listening' 10
}
port_of() { sed -n 's/^listening \([0-9]*\).*/\1/p' "$work/$1.log" | head -1; }
provider plain
provider anthropic
provider tls --tls-cert "$work/openai.pem" --tls-key "$work/openai.key"
pplain=$(port_of plain)
panth=$(port_of anthropic)
ptls=$(port_of tls)

# ---- scrim
sport=$(free_port)
aport=$(free_port)
mkdir -p "$work/state"
"$SCRIM_BIN" ca init --dir "$work/state" >/dev/null
cat >"$work/scrim.conf" <<EOF
[gateway]
listen = 127.0.0.1:$sport
admin_listen = 127.0.0.1:$aport
auth = keys
log_level = warn
rules_dir = $ROOT/rules
state_dir = $work/state
max_connections = 2000

[proxy]
mode = on
intercept = api.openai.com
default = deny
auth = keys
resolve = api.openai.com:443:127.0.0.1:$ptls

[redis]
url = redis://127.0.0.1:$rport
fail_mode = closed
timeout = 200ms

[audit]
fsync = interval

[provider openai]
base_url = https://api.openai.com/v1
api_key_env = SOAK_PROVIDER_KEY
auth_header = bearer
ca_file = $work/testca.pem
timeout = 60s

[provider fake]
base_url = http://127.0.0.1:$pplain/v1
api_key_env = SOAK_PROVIDER_KEY
auth_header = bearer
timeout = 60s

[provider fakeanthropic]
base_url = http://127.0.0.1:$panth
api_key_env = SOAK_PROVIDER_KEY
auth_header = x-api-key
header = anthropic-version: 2023-06-01
timeout = 60s

[route anthropic]
prefix = /anthropic/
provider = fakeanthropic

[route all]
prefix = /v1/
provider = fake
EOF
export SOAK_PROVIDER_KEY=sk-soak-provider-000
key=$("$SCRIM_BIN" keys create --name soak --rpm 100000 --tpm 100000000 --max-parallel 64 \
  -c "$work/scrim.conf" | sed -n 's/^key: //p')
limited=$("$SCRIM_BIN" keys create --name soak-limited --rpm 60 -c "$work/scrim.conf" | sed -n 's/^key: //p')
"$SCRIM_BIN" keys create --name soak-revoked -c "$work/scrim.conf" >"$work/revoked.key"
revoked=$(sed -n 's/^key: //p' "$work/revoked.key")
"$SCRIM_BIN" keys revoke "$(sed -n 's/^id: *//p' "$work/revoked.key")" -c "$work/scrim.conf" >/dev/null
rm -f "$work/revoked.key"
# A 32 MiB quarantine instead of ASan's 256 MiB: freed memory held for
# use-after-free checks would otherwise fill RSS within seconds and hide
# a slow growth under a quarter of a gigabyte that never moves.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23:quarantine_size_mb=32}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$SCRIM_BIN" serve -c "$work/scrim.conf" >"$work/scrim.log" 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null || { echo "scrim did not start" >&2; cat "$work/scrim.log" >&2; exit 1; }

# ---- sample RSS and fds while the load runs
echo "t_s,rss_kib,fds" >"$csv"
(
  t0=$(date +%s)
  while kill -0 "$spid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$spid/status" 2>/dev/null || echo "")
    fds=$(ls "/proc/$spid/fd" 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$(( $(date +%s) - t0 )),$rss,$fds" >>"$csv"
    sleep "$SOAK_SAMPLE"
  done
) &
sampler=$!
pids+=($sampler)

# fds before any traffic, and what they are (listeners, Redis, audit, ...)
fds_before=$(ls "/proc/$spid/fd" | wc -l)
node "$BENCH_DIR/soak_load.mjs" --scrim "127.0.0.1:$sport" --key "$key" --limited-key "$limited" \
  --revoked-key "$revoked" --ca "$work/state/ca.pem" --seconds "$SOAK_SECONDS" --workers "$SOAK_WORKERS" \
  --pause-ms "$SOAK_PAUSE_MS" --bad-pct "$SOAK_BAD_PCT" --seed "$SOAK_SEED" | tee "$work/load.log"
load_line=$(sed -n 's/^SOAK_LOAD //p' "$work/load.log")
sleep "$SOAK_SAMPLE" # one sample after the load, idle
kill "$sampler" 2>/dev/null || true
# fds idle after the load: every client connection must be gone; what
# remains above the baseline should be upstream connections that libcurl
# keeps for reuse (to the providers' ports), not client sockets.
fds_after=$(ls "/proc/$spid/fd" | wc -l)
ss -tanp 2>/dev/null | grep "pid=$spid," >"$work/fds-after.txt" || true
fds_client=$(awk -v p=":$sport" '$1 == "ESTAB" && substr($4, length($4) - length(p) + 1) == p' "$work/fds-after.txt" | wc -l)
fds_upstream=$(awk -v a=":$pplain" -v b=":$panth" -v c=":$ptls" '$1 == "ESTAB" { n = split($5, x, ":"); q = ":" x[n]; if (q == a || q == b || q == c) k++ } END { print k + 0 }' "$work/fds-after.txt")
if [ "$fds_client" = 0 ] && [ "$fds_after" -le $((fds_before + fds_upstream)) ]; then fds_ok=yes; else fds_ok=NO; fi

# ---- stop scrim: SIGTERM drains; LeakSanitizer reports at exit
metrics=$(curl -fs "http://127.0.0.1:$aport/metrics" || true)
kill -TERM "$spid"
set +e
wait "$spid"
scrim_exit=$?
set -e
san=$(grep -cE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$work/scrim.log" || true)
scrim_errors=$(grep -c ' error ' "$work/scrim.log" || true)
audit_verify=$("$SCRIM_BIN" audit verify --key "$work/state/audit.key" "$work/state/audit.jsonl" 2>&1 | head -3 || true)
audit_records=$(grep -c '"type":"request"' "$work/state/audit.jsonl" || true)

# ---- verdict
verdict=$(awk -F, -v maxg="$SOAK_MAX_GROWTH_PCT" '
  BEGIN { n = 0 }
  NR > 1 { t[n] = $1; r[n] = $2; f[n] = $3; n++ }
  END {
    if (n < 6) { print "VERDICT: too few samples (" n ")"; exit }
    a = int(n / 3); b = int(2 * n / 3)
    for (i = a; i < b; i++) { mr += r[i]; mf += f[i] } mr /= (b - a); mf /= (b - a)
    for (i = b; i < n; i++) { lr += r[i]; lf += f[i] } lr /= (n - b); lf /= (n - b)
    for (i = a; i < n; i++) { sx += t[i]; sy += r[i]; k++ }
    mx = sx / k; my = sy / k
    for (i = a; i < n; i++) { num += (t[i] - mx) * (r[i] - my); den += (t[i] - mx) ^ 2 }
    slope = den > 0 ? num / den * 60 : 0
    g = (lr - mr) / mr * 100
    flat = (g <= maxg && lf - mf <= 10) ? "flat" : "GROWING"
    min = r[0]; max = r[0]; for (i = 0; i < n; i++) { if (r[i] < min) min = r[i]; if (r[i] > max) max = r[i] }
    printf "VERDICT: %s: RSS mean %.1f MiB in the middle third, %.1f MiB in the last third (%+.1f%%, limit +%s%%); slope over the last two thirds %+.0f KiB/min; fds %.0f -> %.0f; RSS min %.1f max %.1f MiB over %d samples (first at %ds, last at %ds)\n", flat, mr / 1024, lr / 1024, g, maxg, slope, mf, lf, min / 1024, max / 1024, n, t[0], t[n-1]
  }' "$csv")

{
  echo "scrim soak, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "command: SOAK_SECONDS=$SOAK_SECONDS SOAK_WORKERS=$SOAK_WORKERS SOAK_PAUSE_MS=$SOAK_PAUSE_MS SOAK_BAD_PCT=$SOAK_BAD_PCT SOAK_SEED=$SOAK_SEED bench/soak.sh"
  echo "binary: $SCRIM_BIN ($("$SCRIM_BIN" version | head -1))"
  echo "ASAN_OPTIONS=$ASAN_OPTIONS"
  echo "$verdict"
  echo "fds: $fds_before before the load, $fds_after idle after it ($fds_client client connection(s) still open, $fds_upstream kept upstream connection(s) to the providers); back to baseline: $fds_ok"
  echo "load: $load_line"
  echo "$load_line" | node -e '
    let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
      let j; try { j = JSON.parse(s); } catch { console.log("traffic: no load summary"); return; }
      const good = j.total;
      console.log(`traffic: ${good} good requests (${j.ok} ok, ${j.limited429} expected 429), ${j.badTotal} bad (${(100 * j.badTotal / Math.max(1, good + j.badTotal)).toFixed(1)}%), ${j.errors} error(s)`);
      for (const [k, v] of Object.entries(j.byKind)) console.log(`  good ${k.padEnd(17)} ok ${v.ok}, 429 ${v.limited429}, errors ${v.errors}`);
      for (const [k, v] of Object.entries(j.bad || {})) console.log(`  bad  ${k.padEnd(17)} sent ${v.sent}, as expected ${v.expected}, unexpected ${v.unexpected}; outcomes ${JSON.stringify(v.outcomes)}`);
      for (const e of j.errorSamples) console.log(`  error: ${e}`);
    });'
  echo "scrim: exit $scrim_exit, $san sanitizer report(s), $scrim_errors error line(s) in its log"
  echo "audit: $audit_records request records; verify: $audit_verify"
  echo "metrics at the end:"
  echo "$metrics" | grep -E '^scrim_(requests_total|errors_total|audit_dropped_total|connections|open_connections)' | head -40 || true
  echo "csv: $csv"
  if [ "$san" != 0 ]; then
    echo "sanitizer output:"
    grep -A30 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$work/scrim.log" | head -80
  fi
} | tee "$summary"

errors=$(echo "$load_line" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).errors)}catch{console.log(-1)}})')
if [[ "$verdict" == "VERDICT: flat"* ]] && [ "$fds_ok" = yes ] && [ "$errors" = 0 ] && [ "$san" = 0 ] && [ "$scrim_exit" = 0 ]; then
  ok_exit=1
  echo "soak passed"
else
  echo "soak FAILED (see $summary)"
  exit 1
fi
