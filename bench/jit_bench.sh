#!/usr/bin/env bash
# jit_bench.sh - what MemoryDenyWriteExecute=yes would cost: `scrim scrub`
# on fixed ~10 MB corpora with PCRE2's JIT, with the interpreter
# (SCRIM_PCRE2_JIT=0), and under the kernel's write-xor-execute policy
# (prctl PR_SET_MDWE, Linux 6.3+: the JIT is refused and scrim falls back
# to the interpreter by itself). The figures are in docs/deploy.md.
#
#   bench/jit_bench.sh            # about a minute
#
# Corpora: tests/corpus/generate.mjs --prose (fixed seed, same bytes on
# every machine): prose with no personal data, with a value about every
# 2 KB (as bench/scrub_quality.sh), and dense (a value every ~256 bytes).
# Before timing, the hits (`--explain`: rule, type, offsets) of the three
# modes are compared and must be identical. Then each mode runs BENCH_RUNS
# times per corpus, modes interleaved so that noise from other processes
# spreads over all of them; the median wall and CPU (user + sys) times are
# shown, and the start-up alone (an empty input: loading and compiling the
# rules) separately. On a shared machine the CPU times are the figures to
# trust: wall times grow with whatever else runs.
#
# Environment (all optional):
#   SCRIM_BIN=PATH        the binary (default build/scrim)
#   SCRIM_RULES_DIR=DIR   the rule packs (default rules/)
#   BENCH_MB=10           size of each corpus
#   BENCH_RUNS=3          timed runs per corpus and mode (the median counts)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bin=${SCRIM_BIN:-$root/build/scrim}
rules=${SCRIM_RULES_DIR:-$root/rules}
mb=${BENCH_MB:-10}
runs=${BENCH_RUNS:-3}
[ -x "$bin" ] || { echo "jit_bench.sh: no binary at $bin (cmake --build build)" >&2; exit 2; }
command -v node >/dev/null || { echo "jit_bench.sh: node is required" >&2; exit 2; }

tmp=$(mktemp -d /tmp/scrim-jit.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Runs a command under PR_SET_MDWE (PR_MDWE_REFUSE_EXEC_GAIN), which
# execve keeps: no mapping may become writable and executable.
cc -O2 -o "$tmp/mdwe" -x c - <<'EOF'
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (argc < 2 || prctl(65 /* PR_SET_MDWE */, 1, 0, 0, 0) != 0) {
		perror("prctl(PR_SET_MDWE)");
		return 126;
	}
	execv(argv[1], argv + 1);
	perror("execv");
	return 127;
}
EOF
modes=(jit interpreter mdwe)
if ! "$tmp/mdwe" /bin/true 2>/dev/null; then
  echo "note: this kernel has no PR_SET_MDWE (Linux 6.3+); skipping that mode"
  modes=(jit interpreter)
fi

# scrub MODE [ARGS...] < input: scrim scrub in that mode.
scrub() {
  local mode=$1
  shift
  case $mode in
    jit) "$bin" scrub --rules "$rules" "$@" ;;
    interpreter) SCRIM_PCRE2_JIT=0 "$bin" scrub --rules "$rules" "$@" ;;
    mdwe) "$tmp/mdwe" "$bin" scrub --rules "$rules" "$@" ;;
  esac
}

echo "scrim: $("$bin" version | head -1)"
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "corpora: $mb MB each; $runs runs per corpus and mode; medians"

corpora=(clean pii2k pii256)
declare -A every=([clean]=0 [pii2k]=2048 [pii256]=256)
declare -A label=([clean]="prose, no personal data" [pii2k]="prose + a value per ~2 KB"
  [pii256]="prose + a value per ~256 B")
for c in "${corpora[@]}"; do
  node tests/corpus/generate.mjs --prose "$mb" --pii-every "${every[$c]}" \
    --out "$tmp/$c.txt" >/dev/null
done
: >"$tmp/empty.txt"

echo
echo "== same hits in every mode"
for c in "${corpora[@]}"; do
  ref=""
  for m in "${modes[@]}"; do
    scrub "$m" --explain <"$tmp/$c.txt" 2>"$tmp/hits" >/dev/null
    sum=$({ grep -v 'JIT unavailable' "$tmp/hits" || true; } | sha256sum | cut -c1-16)
    [ -z "$ref" ] && ref=$sum
    if [ "$sum" != "$ref" ]; then
      echo "jit_bench.sh: $c: the hits under $m differ from the JIT's" >&2
      exit 1
    fi
  done
  echo "$c: $({ grep -vc 'JIT unavailable' "$tmp/hits" || true; }) hits, identical in ${modes[*]}"
done

# time_run MODE FILE: prints "wall_ms cpu_ms" of one run.
time_run() {
  local t out
  TIMEFORMAT='%3R %3U %3S'
  t=$( { time scrub "$1" <"$2" >/dev/null 2>"$tmp/err"; } 2>&1 ) || {
    echo "jit_bench.sh: scrim scrub failed ($1, $2): $(cat "$tmp/err")" >&2
    exit 1
  }
  out=$(awk '{ printf "%d %d", $1 * 1000, ($2 + $3) * 1000 }' <<<"$t")
  echo "$out"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo
printf '%-28s %-12s %9s %9s %8s %8s %8s\n' corpus mode 'wall ms' 'CPU ms' 'MB/s' 'wall/JIT' 'CPU/JIT'
for c in empty "${corpora[@]}"; do
  f=$tmp/$c.txt
  declare -A wall=() cpu=()
  for ((i = 0; i < runs; i++)); do
    for m in "${modes[@]}"; do
      read -r w u < <(time_run "$m" "$f")
      wall[$m]+="$w "
      cpu[$m]+="$u "
    done
  done
  bytes=$(stat -c %s "$f")
  base=""
  ubase=""
  for m in "${modes[@]}"; do
    w=$(tr ' ' '\n' <<<"${wall[$m]}" | grep . | median)
    u=$(tr ' ' '\n' <<<"${cpu[$m]}" | grep . | median)
    [ -z "$base" ] && base=$w
    [ -z "$ubase" ] && ubase=$u
    name=${label[$c]:-"start-up only (empty input)"}
    awk -v c="$name" -v m="$m" -v w="$w" -v u="$u" -v b="$bytes" -v base="$base" \
      -v ubase="$ubase" \
      'BEGIN { mbs = (b > 0 && w > 0) ? b / 1048576 / (w / 1000) : 0;
               printf "%-28s %-12s %9d %9d %8s %7.2fx %7.2fx\n", c, m, w, u,
                 (b > 0 ? sprintf("%.1f", mbs) : "-"), (base > 0 ? w / base : 0),
                 (ubase > 0 ? u / ubase : 0) }'
  done
  echo "  runs (wall ms): $(for m in "${modes[@]}"; do printf '%s: %s ' "$m" "${wall[$m]}"; done)"
  echo "  runs (CPU ms):  $(for m in "${modes[@]}"; do printf '%s: %s ' "$m" "${cpu[$m]}"; done)"
  unset wall cpu
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
