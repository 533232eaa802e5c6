#!/usr/bin/env bash
# Compiles the hostile sample: its Java service into build/classes and its native probe into
# build/probe. Needs a JDK 17+ and a C compiler (Debian: openjdk-17-jdk-headless, gcc).
# Idempotent: does nothing when the outputs are newer than the sources. FORCE=1 rebuilds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JAVAC=${JAVAC:-javac}
CC=${CC:-cc}
stamp="$here/build/.built"
for tool in "$JAVAC" "$CC"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "hostile build: '$tool' not found (Debian packages openjdk-17-jdk-headless, gcc)" >&2
    exit 1
  fi
done
if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] \
   && [ -z "$(find "$here/src" "$here/build.sh" -newer "$stamp" -print -quit)" ]; then
  echo "hostile: up to date ($here/build)"
  exit 0
fi
mkdir -p "$here/build"
rm -rf "$here/build/classes.tmp"
"$JAVAC" --release 17 -encoding UTF-8 -Xlint:all -d "$here/build/classes.tmp" \
  "$here/src/main/java/dev/kiln/samples/hostile/Hostile.java"
"$CC" -O2 -Wall -Wextra -Werror -o "$here/build/probe.tmp" "$here/src/main/c/probe.c"
rm -rf "$here/build/classes"
mv "$here/build/classes.tmp" "$here/build/classes"
mv "$here/build/probe.tmp" "$here/build/probe"
touch "$stamp"
echo "hostile: built into $here/build"
