#!/usr/bin/env bash
# Builds the libFuzzer drivers (tests/fuzz) with clang-14 and ASan+UBSan in
# build-fuzz, then runs each one for SECONDS (default 60) on a copy of its
# committed seed corpus, so the repository's corpus is never modified.
# Prints one line per target and "N passed, N failed"; exits non-zero when
# a target crashes, leaks, times out (-timeout=1) or runs out of memory.
# A target's log, its grown corpus and any crash input are kept under
# build-fuzz/fuzz-run/TARGET/.
#
#   scripts/fuzz.sh [SECONDS]           every target
#   FUZZ_TARGETS="fuzz_chunked" scripts/fuzz.sh 10
#   build-fuzz/fuzz_chunked CRASH_FILE  replay one input
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-60}
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
targets=${FUZZ_TARGETS:-fuzz_http_head fuzz_chunked fuzz_json_scrub \
fuzz_rule_loader fuzz_config fuzz_sse_restore fuzz_audit_verify}

# --- toolchain: clang-14 and its libFuzzer runtime -----------------------
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
have_fuzzer_rt() {
  compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a" \
    >/dev/null
}
if ! command -v clang-14 >/dev/null || ! have_fuzzer_rt; then
  echo "== installing clang-14 and libclang-rt-14-dev"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends clang-14 \
    libclang-rt-14-dev llvm-14 >/dev/null
fi
if ! command -v cmake >/dev/null ||
  ! pkg-config --exists libevent_core jansson libpcre2-8 hiredis libcurl; then
  ./scripts/deps.sh
fi
# Symbolised stacks in the reports.
if [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

# --- build ----------------------------------------------------------------
echo "== build (clang-14, libFuzzer + ASan + UBSan) in build-fuzz"
mkdir -p build-fuzz
if ! { CC=clang-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSCRIM_FUZZ=ON && cmake --build build-fuzz --target fuzz -j"$(nproc)"; } \
  >"$root/build-fuzz/build.log" 2>&1; then
  cat "$root/build-fuzz/build.log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# --- run --------------------------------------------------------------------
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

run_dir="$root/build-fuzz/fuzz-run"
passed=0
failed=0
summary=""

# Extra libFuzzer flags per target: dictionaries; heads may grow past the
# 8k/16k caps the driver sets, from the start (no slow length ramp-up).
extra_flags() {
  local d="$root/tests/fuzz"
  case $1 in
    fuzz_http_head) echo "-dict=$d/http.dict -max_len=32768 -len_control=0" ;;
    fuzz_chunked) echo "-dict=$d/http.dict" ;;
    fuzz_rule_loader) echo "-dict=$d/rules.dict" ;;
    fuzz_config) echo "-dict=$d/config.dict" ;;
    *) echo "" ;;
  esac
}

# What stopped a failed run, from its log.
failure_kind() {
  local log=$1
  if grep -q "ORACLE FAILED" "$log"; then echo "oracle"
  elif grep -q "ERROR: libFuzzer: timeout" "$log"; then echo "timeout"
  elif grep -q "ERROR: LeakSanitizer" "$log"; then echo "leak"
  elif grep -q "out-of-memory" "$log"; then echo "out of memory"
  elif grep -q "runtime error:" "$log"; then echo "undefined behaviour"
  elif grep -q "ERROR: AddressSanitizer" "$log"; then echo "crash"
  elif grep -q "ERROR: libFuzzer: deadly signal" "$log"; then echo "crash"
  else echo "exit status"
  fi
}

for t in $targets; do
  bin="$root/build-fuzz/$t"
  seeds="$root/tests/fuzz/corpus/$t"
  dir="$run_dir/$t"
  if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
    echo "FAILED: $t (no driver or no corpus)"
    failed=$((failed + 1))
    summary+="{\"target\":\"$t\",\"ok\":false,\"reason\":\"missing\"},"
    continue
  fi
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
  cp -r "$seeds/." "$dir/corpus/"
  read -r -a flags <<<"$(extra_flags "$t")"
  set +e
  # Drivers that write files do so under TMPDIR; a crash leaves them here.
  TMPDIR="$dir/tmp" "$bin" -max_total_time="$seconds" -timeout=1 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
    "${flags[@]}" "$dir/corpus" </dev/null >"$dir/log" 2>&1
  st=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | sed 's/cov: //')
  if [ "$st" -eq 0 ]; then
    echo "ok: $t (${seconds}s, ${runs:-?} runs, cov ${cov:-?})"
    passed=$((passed + 1))
    summary+="{\"target\":\"$t\",\"ok\":true,\"runs\":${runs:-0},\"cov\":${cov:-0}},"
  else
    kind=$(failure_kind "$dir/log")
    art=$(find "$dir/artifacts" -type f | head -1)
    echo "FAILED: $t ($kind, exit $st) input: ${art:-none} log: $dir/log"
    grep -m1 -E "ORACLE FAILED|SUMMARY:|runtime error:|ERROR: libFuzzer" \
      "$dir/log" | sed 's/^/    /' || true
    failed=$((failed + 1))
    summary+="{\"target\":\"$t\",\"ok\":false,\"reason\":\"$kind\",\"input\":\"${art:-}\"},"
  fi
done

printf '{"seconds_per_target":%s,"passed":%d,"failed":%d,"targets":[%s]}\n' \
  "$seconds" "$passed" "$failed" "${summary%,}" >"$run_dir/summary.json"
echo "summary: $run_dir/summary.json"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
