#!/usr/bin/env bash
# Installs the Debian 12 packages scrim builds, runs and is tested with.
# Safe to run again; uses sudo when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

pkgs=(
  build-essential cmake pkg-config ca-certificates curl openssl
  libevent-dev libssl-dev libcurl4-openssl-dev libjansson-dev libsystemd-dev
  libpcre2-dev libhiredis-dev libsqlite3-dev
  # PDF text for `scrim index add` (optional at build time: CMake finds it).
  libpoppler-glib-dev
)
if [ "${SCRIM_TEST_DEPS:-0}" = 1 ]; then
  # The test suite: a real Redis, Chromium to look at the status page,
  # clang and its fuzzer runtime for the libFuzzer targets, clang-tidy
  # for the static checks (.clang-tidy), libfaketime to move scrim's
  # clock while it runs (clock.test.mjs), slowhttptest for slowloris,
  # slow body and slow read attacks (slowhttp.test.mjs,
  # bench/slowhttp.sh).
  pkgs+=(redis-server chromium clang-14 libclang-rt-14-dev llvm-14
    clang-tidy-14 faketime slowhttptest)
fi

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

# Node.js runs the integration tests (the official OpenAI and Anthropic
# SDKs). Keep a Node that is already there (e.g. from NodeSource); its npm
# and Debian's npm package conflict.
if [ "${SCRIM_TEST_DEPS:-0}" = 1 ] && ! command -v node >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
