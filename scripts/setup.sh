#!/bin/sh
# npm run setup: the Debian packages multi-rsh and its tests use, installed when missing (root, apt).
#   netcat-openbsd, openssh-client    the relay of -R openssh and -R exec ssh templates
#   rsh-server openbsd-inetd openssh-server rsh-client iproute2 procps   the testbed and live tests
#   pdsh pssh clustershell            the peers the benchmarks and tests compare with
set -eu
PKGS="netcat-openbsd openssh-client rsh-server openbsd-inetd openssh-server rsh-client iproute2 procps pdsh pssh clustershell"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "setup: every package is installed:$(printf ' %s' $PKGS)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get here; install:$missing" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup: needs root to install:$missing (sudo npm run setup)" >&2
  exit 1
fi
echo "setup: installing:$missing"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
# Debian starts system instances of inetd and sshd on install; the testbed starts its own.
systemctl disable --now openbsd-inetd ssh >/dev/null 2>&1 || true
