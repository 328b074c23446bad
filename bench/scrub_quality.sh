#!/usr/bin/env bash
# scrub_quality.sh - how well and how fast the rule packs scrub: the figures
# for bench/README.md.
#
#   bench/scrub_quality.sh            # about half a minute
#
# 1. Quality: generates the labelled corpus (tests/corpus/generate.mjs, fixed
#    seed) and prints the per-type table of tests/corpus/score.mjs: recall
#    (a value counts only when one entity covers it whole), the share of
#    negative lines with any entity, and the share of unlabelled bytes left
#    untouched; then the same summary on the held-out templates, which were
#    never used to tune the rules.
# 2. Speed: `scrim scrub --rules rules < FILE > /dev/null` on ~50 MB of
#    prose with one labelled value about every 2 KB, and on the same amount
#    of prose without personal data; best of 3, in MB/s (MB = 2^20 bytes)
#    of wall-clock time, and per second of the process's CPU time (user +
#    system), which a busy shared machine disturbs less.
#
# Environment (all optional):
#   SCRIM_BIN=PATH         the binary (default build/scrim, built if needed)
#   SCRIM_RULES_DIR=DIR    the rule packs (default rules/)
#   BENCH_MB=50            size of each throughput file
#   BENCH_RUNS=3           timed runs per file (the best counts)
#   BENCH_SEED=N           corpus seed (default: generate.mjs's)
#   BENCH_KEEP=DIR         keep the generated files in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bin=${SCRIM_BIN:-$root/build/scrim}
rules=${SCRIM_RULES_DIR:-$root/rules}
mb=${BENCH_MB:-50}
runs=${BENCH_RUNS:-3}
seed_args=()
[ -n "${BENCH_SEED:-}" ] && seed_args=(--seed "$BENCH_SEED")

command -v node >/dev/null || { echo "scrub_quality.sh: node is required" >&2; exit 2; }

if [ -z "${SCRIM_BIN:-}" ]; then
  # Build when there is no binary or the sources are newer (incremental).
  if [ ! -x "$bin" ] || [ -n "$(find src CMakeLists.txt -newer "$bin" -print -quit 2>/dev/null)" ]; then
    echo "== build"
    if ! { [ -f build/CMakeCache.txt ] || cmake -S . -B build -DSCRIM_WERROR=ON >/dev/null; } ||
       ! cmake --build build -j"$(nproc)" >/tmp/scrub_quality.build.$$ 2>&1; then
      if [ -x "$bin" ]; then
        echo "warning: the build failed (tail below); measuring the existing $bin" >&2
        tail -5 /tmp/scrub_quality.build.$$ >&2
      else
        cat /tmp/scrub_quality.build.$$ >&2
        rm -f /tmp/scrub_quality.build.$$
        exit 2
      fi
    fi
    rm -f /tmp/scrub_quality.build.$$
  fi
fi
[ -x "$bin" ] || { echo "scrub_quality.sh: no binary at $bin" >&2; exit 2; }

if [ -n "${BENCH_KEEP:-}" ]; then
  tmp=$BENCH_KEEP
  mkdir -p "$tmp"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
fi

echo "== rules"
"$bin" scrub --help >/dev/null
echo "$(grep -h '^\[rule ' "$rules"/*.rules | wc -l) rules in $rules"

echo
echo "== quality: labelled corpus (tests/corpus)"
node tests/corpus/generate.mjs "${seed_args[@]}" --out "$tmp/corpus.jsonl"
node tests/corpus/score.mjs --corpus "$tmp/corpus.jsonl" --bin "$bin" --rules "$rules" \
  --json "$tmp/quality.json"

echo
echo "== quality: held-out templates (written apart from the main ones)"
node tests/corpus/generate.mjs "${seed_args[@]}" --holdout --out "$tmp/holdout.jsonl"
node tests/corpus/score.mjs --corpus "$tmp/holdout.jsonl" --bin "$bin" --rules "$rules" \
  --json "$tmp/holdout.json" | sed -n '/^ALL/,/^unlabelled/p'

echo
echo "== speed: scrim scrub --rules rules < FILE > /dev/null (best of $runs)"
node tests/corpus/generate.mjs "${seed_args[@]}" --prose "$mb" --pii-every 2048 --out "$tmp/pii.txt"
node tests/corpus/generate.mjs "${seed_args[@]}" --prose "$mb" --pii-every 0 --out "$tmp/clean.txt"

# best_ms FILE: the fastest of $runs runs, in milliseconds, twice: wall
# clock, and CPU time (user + system) of the process, which another
# engineer's load on a shared machine disturbs less; fails when scrim does.
best_ms() {
  local best=0 bestcpu=0 ms cpu i line TIMEFORMAT='%R %U %S'
  for ((i = 0; i < runs; i++)); do
    if ! line=$({ time "$bin" scrub --rules "$rules" <"$1" >/dev/null 2>"$tmp/err"; } 2>&1); then
      echo "scrub_quality.sh: scrim scrub failed on $1: $(cat "$tmp/err")" >&2
      return 1
    fi
    read -r ms cpu <<<"$(awk '{ printf "%d %d\n", $1 * 1000 + 0.5, ($2 + $3) * 1000 + 0.5 }' <<<"$line")"
    if [ "$best" -eq 0 ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
    if [ "$bestcpu" -eq 0 ] || [ "$cpu" -lt "$bestcpu" ]; then bestcpu=$cpu; fi
  done
  echo "$best $bestcpu"
}

# How much of the planted data came out as placeholders (one untimed run).
hits=$("$bin" scrub --rules "$rules" <"$tmp/pii.txt" | grep -oE '<[A-Z][A-Z0-9_]*_[0-9a-f]{6,}>|\[[A-Z][A-Z0-9_]*\]' | wc -l)

printf '%-34s %8s %8s %8s %8s %10s\n' file MB 'wall ms' 'MB/s' 'CPU ms' 'MB/CPU-s'
for f in pii clean; do
  bytes=$(stat -c %s "$tmp/$f.txt")
  read -r ms cpu <<<"$(best_ms "$tmp/$f.txt")"
  label=$([ "$f" = pii ] && echo "prose + 1 value per ~2 KB" || echo "prose, no personal data")
  awk -v l="$label" -v b="$bytes" -v ms="$ms" -v cpu="$cpu" \
    'BEGIN { mb = b / 1048576; printf "%-34s %8.1f %8d %8.1f %8d %10.1f\n", l, mb, ms, (ms > 0 ? mb / (ms / 1000) : 0), cpu, (cpu > 0 ? mb / (cpu / 1000) : 0) }'
done
echo "placeholders written for the prose with personal data: $hits"
