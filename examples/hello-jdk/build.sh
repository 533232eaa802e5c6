#!/usr/bin/env bash
# Compiles hello-jdk into build/classes. No dependencies beyond a JDK 17+.
# Idempotent: does nothing when the classes are newer than the sources.
#   JAVAC   the javac to use (default: javac on PATH)
#   FORCE=1 rebuild even when up to date
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JAVAC=${JAVAC:-javac}
src="$here/src/main/java"
out="$here/build/classes"
stamp="$here/build/.built"

if ! command -v "$JAVAC" >/dev/null 2>&1; then
  echo "hello-jdk build: '$JAVAC' not found (Debian package openjdk-17-jdk-headless)" >&2
  exit 1
fi
if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] \
   && [ -z "$(find "$src" "$here/build.sh" -newer "$stamp" -print -quit)" ]; then
  echo "hello-jdk: up to date ($out)"
  exit 0
fi

tmp="$here/build/classes.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
find "$src" -name '*.java' | LC_ALL=C sort >"$here/build/sources.txt"
"$JAVAC" --release 17 -encoding UTF-8 -Xlint:all -d "$tmp" @"$here/build/sources.txt"
rm -rf "$out"
mv "$tmp" "$out"
touch "$stamp"
echo "hello-jdk: built into $out"
