#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs dependencies, builds scrim
# twice (release with -Werror, and ASan+UBSan), runs the unit tests on
# both, then the integration suite (real sockets, real TLS, the official
# SDKs, a fake provider on loopback) against the sanitizer build, so a
# leak or an undefined behaviour fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

SCRIM_TEST_DEPS=1 ./scripts/deps.sh

echo "== build (release, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCRIM_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "== build (ASan + UBSan, -Werror)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSCRIM_WERROR=ON \
  -DSCRIM_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

passed=0
failed=0
count() { # name, status
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1";
  else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

echo "== unit tests"
set +e
(cd build && ctest --output-on-failure); count "unit tests (release)" $?
(cd build-asan && ctest --output-on-failure); count "unit tests (sanitizers)" $?
set -e

echo "== integration tests"
(cd tests && npm ci --no-audit --no-fund --loglevel=error)
set +e
SCRIM_BIN="$root/build-asan/scrim" node --test --test-concurrency=2 \
  tests/integration/ 2>&1 | tee /tmp/scrim-integration.log
count "integration tests (sanitizer build)" "${PIPESTATUS[0]}"
set -e

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
