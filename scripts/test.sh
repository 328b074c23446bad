#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs dependencies, builds scrim
# twice (release with -Werror, and ASan+UBSan), runs clang-tidy over
# src/*.c (0 warnings, as one test), runs the unit tests on
# both, then the integration suite (real sockets, real TLS, the official
# SDKs, a fake provider on loopback) against the sanitizer build, so a
# leak or an undefined behaviour fails the run. Also: a second release
# build elsewhere must be byte-identical, the Debian package (cpack) must
# hold the binary, configuration, rules and unit, and every libFuzzer
# target runs for SCRIM_FUZZ_SECONDS (default 60: a minute per target
# on every change).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

SCRIM_TEST_DEPS=1 ./scripts/deps.sh

echo "== build (release, -Werror)"
# compile_commands.json is for clang-tidy; it does not change the binary.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCRIM_WERROR=ON \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "== build (ASan + UBSan, -Werror)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSCRIM_WERROR=ON \
  -DSCRIM_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

passed=0
failed=0
# Adds a suite's counts: name, exit status, passed, failed.
count() {
  local p=${3:-0} f=${4:-0}
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$2" -eq 0 ]; then echo "ok: $1 ($p passed)"; else echo "FAILED: $1 ($f failed)"; fi
}
ctest_counts() { # log -> "passed failed" from ctest's summary line
  sed -n 's/.* tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\2 \1/p' "$1" |
    awk '{print $1 - $2, $2}'
}

echo "== clang-tidy (src/*.c, 0 warnings; .clang-tidy says which checks)"
# One file per process: clang-tidy 14 misreports va_list use when it is
# given several files at once (see .clang-tidy). About 1.5 min on 2 cores.
set +e
ls src/*.c | xargs -P"$(nproc)" -n1 clang-tidy-14 -p build --quiet \
  --warnings-as-errors='*' >/tmp/scrim-tidy.log 2>&1
st=$?
grep -E '(warning|error): ' /tmp/scrim-tidy.log | sed 's/^/    /'
if [ "$st" -eq 0 ]; then count "clang-tidy" 0 1 0; else count "clang-tidy" 1 0 1; fi
set -e

echo "== unit tests"
set +e
for b in build build-asan; do
  (cd "$b" && ctest --output-on-failure) 2>&1 | tee "/tmp/scrim-ctest-$b.log"
  st=${PIPESTATUS[0]}
  read -r p f < <(ctest_counts "/tmp/scrim-ctest-$b.log")
  count "unit tests ($b)" "$st" "${p:-0}" "${f:-0}"
done
set -e

echo "== systemd unit (exposure at most 1.5)"
set +e
if command -v systemd-analyze >/dev/null; then
  systemd-analyze security --offline=true --threshold=15 systemd/scrim.service \
    | tail -1
  count "systemd-analyze security" "${PIPESTATUS[0]}" 1 0
fi
set -e

echo "== verifiable build (a second release build elsewhere is byte-identical)"
set +e
commit=$(./build/scrim version | sed -n '1s/.*(commit \(.*\))$/\1/p')
vdir=$(mktemp -d /tmp/scrim-verify.XXXXXX)
mkdir -p "$vdir/src-copy"
tar --exclude='./build*' --exclude='./.git' --exclude='./state' \
  --exclude='./tests/node_modules' --exclude='./bench/node_modules' \
  -cf - . | tar -xf - -C "$vdir/src-copy"
(cd "$vdir/src-copy" &&
  SCRIM_COMMIT="$commit" cmake -S . -B out/elsewhere \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCRIM_WERROR=ON >/dev/null &&
  cmake --build out/elsewhere -j"$(nproc)" --target scrim >/dev/null)
if cmp build/scrim "$vdir/src-copy/out/elsewhere/scrim"; then
  count "verifiable build (commit $commit)" 0 1 0
else
  count "verifiable build: the binaries differ" 1 0 1
fi
rm -rf "$vdir"
set -e

echo "== Debian package (cpack -G DEB: contents, conffiles, Depends, unit)"
set +e
rm -f build/scrim_*.deb
(cd build && cpack -G DEB >/tmp/scrim-cpack.log 2>&1)
deb=$(ls build/scrim_*.deb 2>/dev/null | head -1)
bad=0
if [ -z "$deb" ]; then
  echo "no .deb (see /tmp/scrim-cpack.log)"; bad=1
else
  dpkg-deb -c "$deb" | awk '{print $6}' >/tmp/scrim-deb-files
  for f in ./usr/bin/scrim ./usr/lib/systemd/system/scrim.service \
    ./etc/scrim/scrim.conf ./etc/scrim/rules/contact.rules \
    ./etc/logrotate.d/scrim ./usr/share/doc/scrim/docs/deploy.md; do
    grep -qx "$f" /tmp/scrim-deb-files || { echo "missing from the .deb: $f"; bad=1; }
  done
  dpkg-deb -I "$deb" conffiles | grep -qx /etc/scrim/scrim.conf ||
    { echo "scrim.conf is not a conffile"; bad=1; }
  dpkg-deb -f "$deb" Depends | grep -q 'libpcre2-8-0' ||
    { echo "Depends lacks the shared libraries (dpkg-shlibdeps)"; bad=1; }
  dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/lib/systemd/system/scrim.service |
    grep -qx 'ExecStart=/usr/bin/scrim serve -c /etc/scrim/scrim.conf' ||
    { echo "the packaged unit does not run /usr/bin/scrim"; bad=1; }
  dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/bin/scrim | cmp -s - build/scrim ||
    { echo "the packaged binary differs from build/scrim"; bad=1; }
fi
count "Debian package ${deb##*/}" "$bad" $((1 - bad)) "$bad"
set -e

echo "== fuzzing (${SCRIM_FUZZ_SECONDS:-60} s per target)"
set +e
./scripts/fuzz.sh "${SCRIM_FUZZ_SECONDS:-60}" 2>&1 | tee /tmp/scrim-fuzz.log
st=${PIPESTATUS[0]}
read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' \
  /tmp/scrim-fuzz.log | tail -1)
count "fuzz targets" "$st" "${p:-0}" "${f:-0}"
set -e

echo "== integration tests"
(cd tests && npm ci --no-audit --no-fund --loglevel=error)
set +e
SCRIM_BIN="$root/build-asan/scrim" node --test --test-concurrency=2 \
  tests/integration/ 2>&1 | tee /tmp/scrim-integration.log
st=${PIPESTATUS[0]}
p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' /tmp/scrim-integration.log | tail -1)
f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' /tmp/scrim-integration.log | tail -1)
count "integration tests (sanitizer build)" "$st" "${p:-0}" "${f:-0}"
set -e

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
