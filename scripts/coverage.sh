#!/usr/bin/env bash
# Line and branch coverage of the L1 modules (RELIABILITY.md section 8):
# builds into build-cov with SCRIM_COVERAGE, runs the unit tests, then
# asks gcov for each module's summary. Plain gcov (part of gcc), so no
# extra package. Usage: scripts/coverage.sh [module.c ...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bdir=$root/build-cov
mods=("$@")
if [ ${#mods[@]} -eq 0 ]; then
  mods=(http.c scrub.c validators.c restore.c rules.c auditchain.c)
fi

cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Debug -DSCRIM_COVERAGE=ON \
  -DSCRIM_WERROR=ON >/dev/null
cmake --build "$bdir" -j2 >/dev/null
# Counts from an earlier run would add up; start from zero.
find "$bdir" -name '*.gcda' -delete
(cd "$bdir" && ctest --output-on-failure -j2 >/dev/null) || {
  echo "coverage: unit tests failed" >&2; exit 1; }

objdir=$bdir/CMakeFiles/scrim_core.dir/src
# The objects name their sources "src/x.c" (-ffile-prefix-map), so gcov
# runs where src/ resolves; the annotated x.c.gcov files (branch by
# branch: "never executed", "taken 0%") are left in build-cov/gcov.
gdir=$bdir/gcov
rm -rf "$gdir"; mkdir -p "$gdir"; ln -s "$root/src" "$gdir/src"
printf '%-16s %8s %9s %8s\n' module lines branches 'taken'
for m in "${mods[@]}"; do
  # gcov -b prints "Lines executed:P% of N" and "Taken at least once:P%
  # of N" for the file (taken: the branch went that way at least once).
  out=$(cd "$gdir" && gcov -b -o "$objdir" "$objdir/$m.gcda" 2>/dev/null |
    awk -v f="src/$m" '$0 == "File '"'"'" f "'"'"'" {on=1; next}
      on && /^Lines executed/ {l=$0} on && /^Taken at least once/ {b=$0; exit}
      END {print l; print b}')
  lines=$(sed -n 1p <<<"$out" | sed -E 's/.*:([0-9.]+)% of ([0-9]+)/\1/')
  brs=$(sed -n 2p <<<"$out" | sed -E 's/.*:([0-9.]+)% of ([0-9]+)/\1 \2/')
  printf '%-16s %7s%% %8s%% %8s\n' "$m" "$lines" "${brs% *}" "${brs#* }"
done
