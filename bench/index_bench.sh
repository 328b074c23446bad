#!/usr/bin/env bash
# The document index's figures (bench/INDEX.md): indexing speed with the
# built-in embedder, query latency at 10k and 100k chunks on one core, and
# recall@5 (the unit test's question set, and known-item recall on the
# generated corpus). Writes bench/results/index-DATE.txt.
#
#   bench/index_bench.sh
#
# Knobs (environment): BENCH_INDEX_SIZES ("10000 100000" chunks, about),
# BENCH_CPU (0: the core everything is pinned to, when taskset exists),
# BENCH_BUILD (build). Needs nothing beyond the build dependencies; the
# corpus is generated from text Debian ships (index_bench.c says how) in
# a temporary folder that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BENCH_BUILD:-build}
sizes=${BENCH_INDEX_SIZES:-"10000 100000"}
cpu=${BENCH_CPU:-0}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target scrim index_bench test_vindex \
  >/dev/null

pin=()
if command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
tmp=$(mktemp -d /tmp/scrim-index-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p bench/results
out="bench/results/index-$(date +%Y%m%d-%H%M%S).txt"

{
  echo "# scrim index bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), pinned to CPU $cpu: ${pin[*]:-no taskset}"
  echo "# load average before: $(cut -d" " -f1-3 /proc/loadavg) (other work on the machine inflates the tails)"
  echo "# SQLite $(pkg-config --modversion sqlite3), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?') + work tree"
  for n in $sizes; do
    echo
    echo "## about $n chunks"
    # ~710 bytes of generated text per chunk (measured: the chunker's
    # 1000-byte target less headings and short sections).
    "$build/index_bench" gen "$tmp/c$n" $((n * 710)) "$tmp/q$n.txt"
    t0=$(date +%s%N)
    "${pin[@]}" "$build/scrim" index add --db "$tmp/c$n.db" "$tmp/c$n"
    t1=$(date +%s%N)
    chunks=$("$build/scrim" index stats --db "$tmp/c$n.db" --json |
      sed -n 's/.*"chunks": \([0-9]*\).*/\1/p')
    echo "indexing, wall clock (walk, read, hash, chunk, embed, store, term counts, commit):" \
      "$chunks chunks in $(( (t1 - t0) / 1000000 )) ms =" \
      "$(( chunks * 1000000000 / (t1 - t0) )) chunks/s"
    "$build/scrim" index stats --db "$tmp/c$n.db" | sed 's/^/  /'
    # A second add with nothing changed: what an incremental run costs.
    t0=$(date +%s%N)
    "${pin[@]}" "$build/scrim" index add -q --db "$tmp/c$n.db" "$tmp/c$n"
    t1=$(date +%s%N)
    echo "second add, nothing changed: $(( (t1 - t0) / 1000000 )) ms"
    for mode in hybrid bm25 vector; do
      "${pin[@]}" "$build/index_bench" query "$tmp/c$n.db" "$tmp/q$n.txt" "$mode"
    done
    rm -rf "$tmp/c$n" "$tmp/c$n.db"*
  done
  echo
  echo "## question set (tests/unit/vindex/questions.tsv, tests/unit/test_vindex.c)"
  "$build/tests/unit/test_vindex" | grep -E '^(corpus|recall|  missed)'
} 2>&1 | tee "$out"
echo "written to $out"
