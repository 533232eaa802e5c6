#!/usr/bin/env bash
# Builds the kiln Docker image (docker/Dockerfile) without pulling anything: the image is
# `FROM scratch` plus one root filesystem assembled here from what `make setup` installed on this
# host: kiln with the Swift runtime libraries it links, kiln-shim (static), CRIU 4.2.1 (/usr/local/sbin)
# and runc with their shared-library closures, Debian's JDK 17 runtime (+ jcmd, which kiln uses to
# compact a JVM before the dump), bash/coreutils/sed for the sample's launcher, zstd for
# `--compress`, tini as PID 1, and the Spring sample (its compiled classes and the Debian jars on
# its classpath) under /opt/kiln/examples/hello-spring.
#
#   scripts/docker-image.sh [--tag TAG] [--bin-dir DIR] [--context DIR] [--no-build]
#     --tag TAG      image tag (default kiln:<git describe>, or kiln:dev outside a git checkout)
#     --bin-dir DIR  take kiln and kiln-shim from DIR instead of a release build (.build/release)
#     --context DIR  assemble the build context in DIR and keep it (default: a temporary directory)
#     --no-build     assemble the context only; do not run docker build
#   DOCKER         the docker CLI (default /usr/bin/docker, Debian's; $DOCKER_HOST picks the daemon)
#
# Reproducible: files keep the mtimes of their installed packages, the archive is sorted with
# numeric root ownership, so the same inputs give the same rootfs.tar (and docker's layer cache
# hits). Needs root (it reads root-only files of installed packages) and `make setup` first.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKER=${DOCKER:-/usr/bin/docker}
tag=""
bin_dir=""
context=""
build=1

log() { printf '\033[1mdocker-image:\033[0m %s\n' "$*" >&2; }
die() { printf 'docker-image: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --context) context=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "must run as root (it copies files of installed packages, some root-only)"
if [ -z "$tag" ]; then
  version=$(git -C "$here" describe --tags --always --dirty 2>/dev/null || echo dev)
  tag="kiln:$version"
fi

JDK=/usr/lib/jvm/java-17-openjdk-amd64
CRIU=${KILN_CRIU:-/usr/local/sbin/criu}
RUNC=$(command -v runc || echo /usr/sbin/runc)
TINI=/usr/bin/tini-static
SAMPLE=examples/hello-spring
# Whole packages: the JDK 17 runtime, and what the sample's launcher script (bash, readlink,
# dirname, sed) and kiln run (zstd for --compress; iptables-restore, which kiln does not call
# since it runs CRIU with `network-lock skip`, but a custom CRIU configuration might; tar and
# gzip, which CRIU runs to save and restore the content of a tmpfs such as the sandbox's /tmp).
# mount: docker/kiln-entrypoint remounts the cgroup hierarchies writable. Their libraries come
# along through ldd below.
PACKAGES=(openjdk-17-jre-headless bash coreutils sed tar gzip zstd mount libc6 iptables)

[ -x "$CRIU" ] && "$CRIU" --version | grep -q 'Version: 4\.2' || die "no CRIU 4.2 at $CRIU: run 'make setup'"
[ -x "$RUNC" ] || die "runc is not installed: run 'make setup'"
[ -x "$JDK/bin/java" ] && [ -x "$JDK/bin/jcmd" ] || die "no JDK 17 at $JDK: run 'make setup'"
[ -x "$TINI" ] || die "no $TINI (Debian package tini, installed with docker.io): run 'make setup'"
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || die "Debian package $p is missing: run 'make setup'"
done

if [ -z "$bin_dir" ]; then
  log "release build of kiln and kiln-shim"
  # One invocation for both products: each `swift build` spends ~25 s planning even when nothing changed.
  (cd "$here" && swift build -c release >&2)
  bin_dir="$here/.build/release"
fi
[ -x "$bin_dir/kiln" ] && [ -x "$bin_dir/kiln-shim" ] || die "no kiln and kiln-shim in $bin_dir"
"$here/$SAMPLE/build.sh" >&2

if [ -z "$context" ]; then
  context=$(mktemp -d /var/tmp/kiln-docker-context.XXXXXX)
  trap 'rm -rf "$context"' EXIT
fi
mkdir -p "$context"
root="$context/rootfs"
rm -rf "$root" "$context/rootfs.tar"
mkdir -p "$root"

# Every path as it is really stored on this merged-/usr system: /bin/x is /usr/bin/x.
canonical() { sed -E 's#^/(bin|sbin|lib|lib64|lib32|libx32)/#/usr/\1/#'; }

lists="$context/lists"
mkdir -p "$lists"
# Package files, without documentation, manuals and translations (nothing here reads them).
for p in "${PACKAGES[@]}"; do dpkg -L "$p"; done | canonical \
  | grep -vE '^/usr/share/(doc|man|info|locale|lintian|bash-completion|bug)/|/gconv/' >"$lists/packages"
{
  echo "$JDK/bin/jcmd"
  # The sample's jars: the unversioned names its classpath uses and the files they point at.
  # shellcheck source=../examples/hello-spring/classpath.sh
  (. "$here/$SAMPLE/classpath.sh" && hello_spring_jar_classpath) | tr ':' '\n' | while read -r jar; do
    echo "$jar"
    readlink -f "$jar"
  done
  echo "$RUNC"
} >"$lists/extra"
# Copy regular files and symlinks only (directories come with them, without their other content).
sort -u "$lists/packages" "$lists/extra" | while read -r path; do
  [ -f "$path" ] || [ -L "$path" ] && printf '%s\n' "${path#/}"
done >"$lists/files"
tar -C / --no-recursion -cf - -T "$lists/files" | tar -C "$root" -xf -

install -p -D -m 0755 "$bin_dir/kiln" "$root/usr/local/bin/kiln"
# Symbols only serve a debugger here (Swift's runtime metadata is not in the symbol table).
strip --strip-unneeded "$root/usr/local/bin/kiln"
touch -r "$bin_dir/kiln" "$root/usr/local/bin/kiln"
install -p -D -m 0755 "$bin_dir/kiln-shim" "$root/usr/local/bin/kiln-shim"
# kiln's CRaC agent (make samples builds it), where kiln looks for it when installed.
"$here/agent/build.sh" >/dev/null
install -p -D -m 0644 "$here/agent/build/kiln-crac-agent.jar" "$root/usr/local/lib/kiln/kiln-crac-agent.jar"
install -p -D -m 0755 "$CRIU" "$root/usr/local/sbin/criu"
install -p -D -m 0755 "$TINI" "$root/usr/bin/tini"
install -p -D -m 0755 "$here/docker/kiln-entrypoint" "$root/usr/local/bin/kiln-entrypoint"

# Shared libraries: everything any ELF file in the root links (the Swift runtime from the
# toolchain, CRIU's gnutls/protobuf-c/nftables..., the JDK's), at the path ldd resolves on this
# host, so RUNPATHs like kiln's /opt/swift/usr/lib/swift/linux find them in the image too.
find "$root" -type f \( -perm -u+x -o -name '*.so*' \) \
  | while read -r file; do if [ "$(head -c 4 "$file")" = $'\x7fELF' ]; then ldd "$file" 2>/dev/null || true; fi; done \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | grep -v "^$root/" | sort -u >"$lists/libraries"
while read -r lib; do
  for path in "$lib" "$(readlink -f "$lib")"; do
    path=$(printf '%s\n' "$path" | canonical)
    [ -e "$root$path" ] || [ -L "$root$path" ] || printf '%s\n' "${path#/}"
  done
done <"$lists/libraries" | sort -u >"$lists/library-files"
tar -C / --no-recursion -cf - -T "$lists/library-files" | tar -C "$root" -xf -

# Debian's merged-/usr layout, Java through /etc/alternatives as on the host (kiln's sandbox binds
# the image's /usr and /etc/alternatives, /etc/java-17-openjdk), and a minimal /etc.
for name in bin sbin lib lib64; do ln -sfn "usr/$name" "$root/$name"; done
mkdir -p "$root/etc/alternatives" "$root/etc/ssl" "$root"/{tmp,var/tmp,run,proc,sys,dev,var/lib/kiln,opt/kiln/examples}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/var/lib/kiln"
for tool in java jcmd; do
  ln -sfn "$JDK/bin/$tool" "$root/etc/alternatives/$tool"
  ln -sfn "/etc/alternatives/$tool" "$root/usr/bin/$tool"
done
for tool in iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save; do
  ln -sfn "/usr/sbin/${tool/tables/tables-nft}" "$root/etc/alternatives/$tool"
  ln -sfn "/etc/alternatives/$tool" "$root/usr/sbin/$tool"
done
ln -sfn bash "$root/usr/bin/sh"
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
: >"$root/etc/hosts"; : >"$root/etc/resolv.conf"; : >"$root/etc/hostname"

# The Spring sample: its launcher, classpath list and compiled classes (not its sources).
sample="$root/opt/kiln/$SAMPLE"
mkdir -p "$sample/build"
cp -a "$here/$SAMPLE/bin" "$here/$SAMPLE/classpath.sh" "$sample/"
cp -a "$here/$SAMPLE/build/classes" "$sample/build/"

# Fixed mtimes for what this script made (directories, symlinks, generated /etc), so the archive
# depends on the inputs only.
find "$root" -newer "$lists/files" \( -type d -o -type l -o -path "$root/etc/*" \) -exec touch -h -d @0 {} +
tar -C "$root" --sort=name --owner=0 --group=0 --numeric-owner --format=gnu -cf "$context/rootfs.tar" .
cp "$here/docker/Dockerfile" "$context/Dockerfile"
rm -rf "$root" "$lists"
log "context in $context: rootfs.tar $(du -m "$context/rootfs.tar" | cut -f1) MiB"

if [ "$build" = 1 ]; then
  log "docker build -t $tag"
  "$DOCKER" build -t "$tag" "$context" >&2
  log "built $tag ($("$DOCKER" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MiB", $1/1048576}'))"
fi
echo "$tag"
