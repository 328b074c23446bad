#!/usr/bin/env bash
# What scrubbing adds to a request through the gateway (issue 3): the
# audit record's us_scrub (the scrub stage's own time, in microseconds) of
# every request of a one-connection wrk run with bench/chat.lua (a 4,096-
# byte chat body whose log lines are full of numbers and times) through
# `scrim serve` with the default configuration and rules, scrim pinned to
# CPU 1, wrk and the provider to CPU 0.
#
#   bench/scrub_latency.sh                 # build/scrim, 10 s
#   BENCH_DURATION=20 SCRIM_BIN=... bench/scrub_latency.sh
#
# The provider is nginx answering a fixed completion on loopback. Prints
# the count and p50/p90/p99/mean of us_scrub, and the same run's req/s.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
SCRIM=${SCRIM_BIN:-$ROOT/build/scrim}
DURATION=${BENCH_DURATION:-10}
RULES=${BENCH_RULES_DIR:-$ROOT/rules}

die() { printf 'scrub_latency.sh: %s\n' "$*" >&2; exit 1; }
[[ -x "$SCRIM" ]] || die "no scrim at $SCRIM (cmake --build build first)"
for c in nginx wrk taskset node; do
  command -v "$c" >/dev/null || die "$c is needed (apt-get install nginx-light wrk util-linux nodejs)"
done

TMP=$(mktemp -d /tmp/scrim-scrub-latency.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

read -r P_PROV P_GW P_ADM <<<"$(node -e '
  const net = require("node:net"); const held = [];
  for (let i = 0; i < 3; i++) { const s = net.createServer(); s.listen(0, "127.0.0.1", () => {
    held.push(s); if (held.length === 3) { console.log(held.map((x) => x.address().port).join(" ")); held.forEach((x) => x.close()); } }); }')"

COMPLETION=$(sed -n "s/^COMPLETION='\(.*\)'$/\1/p" "$BENCH_DIR/run.sh")
[[ -n "$COMPLETION" ]] || die "no COMPLETION in bench/run.sh"
mkdir -p "$TMP/prov"
cat >"$TMP/prov/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/prov/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/prov/cb; proxy_temp_path $TMP/prov/p;
  fastcgi_temp_path $TMP/prov/f; uwsgi_temp_path $TMP/prov/u; scgi_temp_path $TMP/prov/s;
  client_max_body_size 8m; client_body_buffer_size 64k;
  server { listen 127.0.0.1:$P_PROV; location / { default_type application/json;
    return 200 '$COMPLETION'; } }
}
EOF
taskset -c 0 nginx -p "$TMP/prov" -c "$TMP/prov/nginx.conf" -e "$TMP/prov/err.log" \
  -g 'daemon off;' &
PIDS+=($!)

"$SCRIM" keys generate bench >"$TMP/key.txt"
KEY=$(sed -n 's/^key: //p' "$TMP/key.txt")
mkdir -p "$TMP/state"
cat >"$TMP/scrim.conf" <<EOF
[gateway]
listen = 127.0.0.1:$P_GW
admin_listen = 127.0.0.1:$P_ADM
auth = keys
log_level = warn
rules_dir = $RULES
state_dir = $TMP/state
[keys]
$(grep '^bench = ' "$TMP/key.txt")
[provider fake]
base_url = http://127.0.0.1:$P_PROV/v1
api_key_env = BENCH_PROVIDER_KEY
auth_header = bearer
[route all]
prefix = /v1/
provider = fake
[proxy]
mode = off
EOF
export BENCH_PROVIDER_KEY=sk-bench-provider-key
taskset -c 1 "$SCRIM" serve -c "$TMP/scrim.conf" 2>"$TMP/scrim.err" &
PIDS+=($!)
for _ in $(seq 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$P_ADM/healthz" && break
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$P_ADM/healthz" || die "scrim did not start: $(cat "$TMP/scrim.err")"

# One second of warm-up, then the measured run; only its records count.
BENCH_KEY=$KEY taskset -c 0 wrk -t1 -c1 -d1s -s "$BENCH_DIR/chat.lua" \
  "http://127.0.0.1:$P_GW/v1/chat/completions" >/dev/null
sleep 0.5
skip=$(wc -l <"$TMP/state/audit.jsonl")
BENCH_KEY=$KEY taskset -c 0 wrk -t1 -c1 -d"${DURATION}s" -s "$BENCH_DIR/chat.lua" \
  "http://127.0.0.1:$P_GW/v1/chat/completions" >"$TMP/wrk.out"
sleep 0.5
rps=$(sed -n 's/^Requests\/sec: *//p' "$TMP/wrk.out")

echo "scrim $("$SCRIM" version | head -1), rules $RULES, $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
tail -n +"$((skip + 1))" "$TMP/state/audit.jsonl" | node -e '
  const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
  const v = [];
  for (const l of lines) { const r = JSON.parse(l); if (r.type === "request" && r.status === 200) v.push(r.us_scrub); }
  v.sort((a, b) => a - b);
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  console.log(`requests ${v.length}, us_scrub p50 ${q(0.5)} p90 ${q(0.9)} p99 ${q(0.99)} mean ${mean.toFixed(1)} (microseconds)`);'
echo "req/s (one connection, the whole request): $rps"
