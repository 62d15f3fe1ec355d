#!/usr/bin/env bash
# Debian packages the tests use: Fashion-MNIST's IDX files. Installed only when missing;
# needs root (CI runs as root). Without them the Fashion-MNIST tests are skipped, with a reason.
set -euo pipefail
if [ -d /usr/share/datasets/fashion-mnist ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "note: dataset-fashion-mnist is not installed and this is not root; Fashion-MNIST tests will be skipped" >&2
fi
