#!/usr/bin/env bash
# The audit writer's figures (bench/AUDIT.md): records/s sustained with
# each fsync policy, audit_write's cost to the loop at 1,000 records/s,
# and verify's speed. Each row runs BENCH_AUDIT_ROUNDS times; the median
# is kept. Files go to a temporary directory under /var/tmp (a real disk,
# not tmpfs, or fsync means nothing).
#
#   bench/audit.sh                  # about three minutes
#   BENCH_AUDIT_ROUNDS=5 bench/audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${BENCH_AUDIT_ROUNDS:-3}

cmake -S . -B build -DSCRIM_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)" --target audit_bench >/dev/null

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

row() { # label, audit_bench arguments...
  local label=$1 w p50 p99 v
  shift
  local out=() ; for _ in $(seq "$rounds"); do out+=("$(./build/audit_bench "$@")"); done
  w=$(printf '%s\n' "${out[@]}" | sed -n 's/^writer: \([0-9]*\) records.*/\1/p' | median)
  p50=$(printf '%s\n' "${out[@]}" | sed -n 's/.* p50 \([0-9.]*\) us.*/\1/p' | median)
  p99=$(printf '%s\n' "${out[@]}" | sed -n 's/.* p99 \([0-9.]*\) us.*/\1/p' | median)
  v=$(printf '%s\n' "${out[@]}" | sed -n 's/^verify: \([0-9]*\) records.*/\1/p' | median)
  printf '| %-34s | %9s | %12s | %12s | %9s |\n' "$label" "$w" "$p50" "$p99" "$v"
}

echo "$(nproc) CPUs, $(uname -r), $(df -T /var/tmp | awk 'NR==2 {print $2}') on /var/tmp; median of $rounds"
echo
echo "| run                                | records/s | write p50 µs | write p99 µs | verify/s |"
echo "|------------------------------------|----------:|-------------:|-------------:|----------:|"
row "fsync=never, as fast as possible" --fsync never --records 200000
row "fsync=interval (1 s), max" --fsync interval --records 200000
row "fsync=always, max" --fsync always --records 200000
row "fsync=always, 8 KiB scrubbed body" --fsync always --records 50000 --body 8192
row "fsync=interval at 1,000/s" --fsync interval --records 10000 --rate 1000
row "fsync=always at 1,000/s" --fsync always --records 10000 --rate 1000
