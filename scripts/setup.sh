#!/usr/bin/env bash
# Installs what scrim needs and builds it into ./build (warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCRIM_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
echo "built: $(pwd)/build/scrim"
# The local CA for HTTPS proxy mode, once (scrim ca show says how to trust it).
if [ ! -f state/ca.key ]; then
  ./build/scrim ca init -c conf/scrim.conf
fi
