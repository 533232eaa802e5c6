#!/usr/bin/env bash
# Builds an OCI image layout holding examples/hello-jdk on a small JVM runtime of its own, for
# the `kiln bake --image` tests (no registry is reachable, so the test makes its image).
#   make-hello-image.sh OUT_DIR     OUT_DIR/ gets an OCI layout with tag "1"; done if it exists
# The layer: a jlink'ed runtime (java.base, jdk.httpserver, and jdk.jcmd for kiln's compaction;
# with its class-data archive, like the host's JDK) in /usr/lib/jvm/kiln-jre, the
# glibc/zlib libraries it loads (found with ldd) at their usual paths, the merged-/usr symlinks,
# and hello-jdk's classes in /srv/hello. The config: Entrypoint (java with its flags), Cmd (the
# main class), Env, WorkingDir and one exposed port, like an image a Dockerfile would make.
set -euo pipefail

out=${1:?usage: make-hello-image.sh OUT_DIR}
[ -f "$out/oci-layout" ] && exit 0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
classes="$root/examples/hello-jdk/build/classes"
"$root/examples/hello-jdk/build.sh" >/dev/null
for tool in umoci jlink ldd; do command -v "$tool" >/dev/null || { echo "make-hello-image: $tool is missing" >&2; exit 1; }; done

work=$(mktemp -d "${out%/}.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:1"
umoci unpack --image "$work/layout:1" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"

mkdir -p "$rootfs/usr/lib/jvm" "$rootfs/usr/bin" "$rootfs/usr/lib64" "$rootfs/srv/hello" "$rootfs/etc" "$rootfs/tmp"
for link in bin lib lib64; do ln -s "usr/$link" "$rootfs/$link"; done
jlink --add-modules java.base,jdk.httpserver,jdk.unsupported,jdk.jcmd --strip-debug --no-header-files --no-man-pages --generate-cds-archive \
  --output "$rootfs/usr/lib/jvm/kiln-jre" >"$work/jlink.log" 2>&1 || { cat "$work/jlink.log" >&2; exit 1; }
jre="$rootfs/usr/lib/jvm/kiln-jre"
# Every shared library the runtime's binaries load, and the dynamic loader, at their host paths
# (canonical /usr paths: /lib is a symlink into /usr on Debian, as in the image).
find "$jre" -type f \( -name '*.so' -o -path '*/bin/*' \) -print0 | xargs -0 ldd 2>/dev/null \
  | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\/.*ld-linux/ {print $1}' | grep -v "^$rootfs" | sort -u | while read -r lib; do
    real=$(readlink -f "$lib")
    dest="$rootfs$(readlink -f "$(dirname "$lib")")/$(basename "$lib")"
    mkdir -p "$(dirname "$dest")"
    cp -L "$real" "$dest"
  done
cp -r "$classes" "$rootfs/srv/hello/classes"
printf 'root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
echo 'kiln test image' >"$rootfs/etc/kiln-test-image"
umoci repack --image "$work/layout:1" "$work/bundle" >/dev/null

umoci config --image "$work/layout:1" --os linux --architecture amd64 \
  --config.entrypoint /usr/lib/jvm/kiln-jre/bin/java --config.entrypoint -XX:-UsePerfData \
  --config.entrypoint -cp --config.entrypoint /srv/hello/classes \
  --config.cmd dev.kiln.samples.hello.HelloJdk \
  --config.env PATH=/usr/lib/jvm/kiln-jre/bin:/usr/bin:/bin --config.env HELLO_IMAGE_GREETING=from-the-image \
  --config.workingdir /srv/hello --config.exposedports 8080/tcp
umoci gc --layout "$work/layout"
# Another run may have built it meanwhile: then its copy stays.
mv -T "$work/layout" "$out" 2>/dev/null || [ -f "$out/oci-layout" ]
