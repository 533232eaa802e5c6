#!/usr/bin/env bash
# Installs what the benchmark needs on top of `make setup`: podman, docker.io and matplotlib, all
# from Debian bookworm. Run by `make bench`; idempotent (does nothing when they are present).
#
# Never upgrades an installed package. Plain `apt-get install --no-upgrade podman` would: apt's
# Upgrade-By-Source-Package policy upgrades login and passwd along with the new libsubid4 (same
# source package, shadow) although nothing requires it, and python3-matplotlib drags libbrotli1
# the same way. So apt runs with that policy off, and the install is first simulated and refused
# if apt still plans to upgrade anything.
#
# No service is started by the install: dockerd and containerd are started (and stopped) by the
# benchmark itself, with their own state directories.
set -euo pipefail

PACKAGES=(
  podman        # method 6 (pulls conmon, containernetworking-plugins, golang-github-containers-common)
  docker.io     # method 7 (pulls containerd, tini)
  python3-matplotlib  # the plots (Debian's, for /usr/bin/python3)
  iproute2 util-linux iptables  # ss, ip, unshare, iptables (normally present already)
)
APT_OPTS=(-y -qq --no-install-recommends --no-upgrade -o APT::Get::Upgrade-By-Source-Package=false)

log() { printf '\033[1mbench setup:\033[0m %s\n' "$*" >&2; }
die() { printf 'bench setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root: try 'sudo make bench'"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "podman, docker.io, python3-matplotlib: present"
  exit 0
fi

log "apt-get update"
apt-get update -qq

plan=$(DEBIAN_FRONTEND=noninteractive apt-get install -s "${APT_OPTS[@]}" "${missing[@]}" 2>&1) \
  || die "apt cannot install ${missing[*]}: $(echo "$plan" | tail -5)"
# "Inst NAME [INSTALLED-VERSION] (NEW-VERSION ...)": an upgrade of something already installed.
upgrades=$(echo "$plan" | grep -E '^Inst [^ ]+ \[' || true)
if [ -n "$upgrades" ]; then
  die "installing ${missing[*]} would upgrade installed packages, which setup never does:
$upgrades"
fi

# Keep maintainer scripts from starting dockerd/containerd now (policy-rc.d 101 = "not allowed").
# An existing policy-rc.d is left as it is.
created_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { [ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT

log "installing ${#missing[@]} packages: ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" "${missing[@]}" >/dev/null

/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || die "python3-matplotlib installed but /usr/bin/python3 cannot import it"
log "done"
