#!/usr/bin/env bash
# The document index's figures (bench/INDEX.md): indexing speed with the
# built-in embedder, query latency at 10k and 100k chunks on one core, and
# recall@5 (the unit test's question set, and known-item recall on the
# generated corpus), each for a plain index and for an encrypted one
# ([index] encrypt_key_file) of the same corpus. Writes
# bench/results/index-DATE.txt.
#
#   bench/index_bench.sh
#   BENCH_INDEX_SIZES=10000 BENCH_INDEX_CRYPT="no yes" bench/index_bench.sh
#
# Knobs (environment): BENCH_INDEX_SIZES ("10000 100000" chunks, about),
# BENCH_INDEX_CRYPT ("no yes": plain, encrypted, or both), BENCH_CPU (0:
# the core everything is pinned to, when taskset exists), BENCH_BUILD
# (build). Needs nothing beyond the build dependencies; the corpus is
# generated from text Debian ships (index_bench.c says how) in a
# temporary folder that is removed on exit, with the key.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BENCH_BUILD:-build}
sizes=${BENCH_INDEX_SIZES:-"10000 100000"}
cpu=${BENCH_CPU:-0}
crypts=${BENCH_INDEX_CRYPT:-"no yes"}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target scrim index_bench test_vindex \
  >/dev/null

pin=()
if command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
tmp=$(mktemp -d /tmp/scrim-index-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p bench/results
out="bench/results/index-$(date +%Y%m%d-%H%M%S).txt"
# The encrypted runs: a key and a configuration that names it.
(umask 077; head -c 32 /dev/urandom >"$tmp/index.key")
printf '[gateway]\nstate_dir = %s/state\n[index]\nencrypt_key_file = %s/index.key\n' \
  "$tmp" "$tmp" >"$tmp/crypt.conf"

{
  echo "# scrim index bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), pinned to CPU $cpu: ${pin[*]:-no taskset}"
  echo "# load average before: $(cut -d" " -f1-3 /proc/loadavg) (other work on the machine inflates the tails)"
  echo "# SQLite $(pkg-config --modversion sqlite3), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?') + work tree"
  for n in $sizes; do
    # ~710 bytes of generated text per chunk (measured: the chunker's
    # 1000-byte target less headings and short sections).
    "$build/index_bench" gen "$tmp/c$n" $((n * 710)) "$tmp/q$n.txt"
    for crypt in $crypts; do
      db="$tmp/c$n-$crypt.db"
      cfg=() key=()
      if [ "$crypt" = yes ]; then
        cfg=(-c "$tmp/crypt.conf") key=("$tmp/index.key")
      fi
      echo
      echo "## about $n chunks, encrypted: $crypt"
      t0=$(date +%s%N)
      "${pin[@]}" "$build/scrim" index add "${cfg[@]}" --db "$db" "$tmp/c$n" 2>&1 |
        grep -v 'warning: '
      t1=$(date +%s%N)
      chunks=$("$build/scrim" index stats "${cfg[@]}" --db "$db" --json 2>/dev/null |
        sed -n 's/.*"chunks": \([0-9]*\).*/\1/p')
      echo "indexing, wall clock (walk, read, hash, chunk, embed, store, term counts, commit):" \
        "$chunks chunks in $(( (t1 - t0) / 1000000 )) ms =" \
        "$(( chunks * 1000000000 / (t1 - t0) )) chunks/s"
      "$build/scrim" index stats "${cfg[@]}" --db "$db" 2>/dev/null | sed 's/^/  /'
      # A second add with nothing changed: what an incremental run costs.
      t0=$(date +%s%N)
      "${pin[@]}" "$build/scrim" index add -q "${cfg[@]}" --db "$db" "$tmp/c$n" 2>&1 |
        grep -v 'warning: ' || true
      t1=$(date +%s%N)
      echo "second add, nothing changed: $(( (t1 - t0) / 1000000 )) ms"
      for mode in hybrid bm25 vector; do
        "${pin[@]}" "$build/index_bench" query "$db" "$tmp/q$n.txt" "$mode" "${key[@]}"
      done
      rm -rf "$db"*
    done
    rm -rf "$tmp/c$n"
  done
  echo
  echo "## question set (tests/unit/vindex/questions.tsv, tests/unit/test_vindex.c)"
  "$build/tests/unit/test_vindex" | grep -E '^(corpus|recall|  missed|encrypted)'
} 2>&1 | tee "$out"
echo "written to $out"
