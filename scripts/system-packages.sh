#!/usr/bin/env bash
# Debian packages the tests use: Fashion-MNIST's IDX files, and Chromium with its driver for
# the report's browser test. Installed only when missing; needs root (CI runs as root).
# Without them the tests that need them are skipped, with a reason.
set -euo pipefail
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "note: ${missing[*]} not installed and this is not root; the tests that need them will be skipped" >&2
fi
