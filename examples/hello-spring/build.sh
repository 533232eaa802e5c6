#!/usr/bin/env bash
# Compiles hello-spring into build/ (classes + resources) against Debian's jars in /usr/share/java.
# Idempotent: does nothing when the compiled output is newer than every source and resource.
#   JAVAC   the javac to use (default: javac on PATH; JDK 17 is what Debian bookworm has)
#   FORCE=1 rebuild even when up to date
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=classpath.sh
. "$here/classpath.sh"

JAVAC=${JAVAC:-javac}
src="$here/src/main/java"
res="$here/src/main/resources"
out="$here/build/classes"
stamp="$here/build/.built"

if ! command -v "$JAVAC" >/dev/null 2>&1; then
  echo "hello-spring build: '$JAVAC' not found (Debian package openjdk-17-jdk-headless)" >&2
  exit 1
fi
cp=$(hello_spring_jar_classpath) || exit 1

if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] \
   && [ -z "$(find "$src" "$res" "$here/classpath.sh" "$here/build.sh" -newer "$stamp" -print -quit)" ]; then
  echo "hello-spring: up to date ($out)"
  exit 0
fi

tmp="$here/build/classes.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
find "$src" -name '*.java' | LC_ALL=C sort >"$here/build/sources.txt"
# --release 8: class files that Spring 4.3's bundled ASM can read when it scans the classpath.
# -parameters: Spring binds @PathVariable/@RequestParam and constructor arguments by name.
"$JAVAC" --release 8 -parameters -encoding UTF-8 -Xlint:all,-options,-path,-serial \
  -cp "$cp" -d "$tmp" @"$here/build/sources.txt"
cp -R "$res/." "$tmp/"
rm -rf "$out"
mv "$tmp" "$out"
touch "$stamp"
echo "hello-spring: built $(find "$out" -name '*.class' | wc -l) classes into $out"
