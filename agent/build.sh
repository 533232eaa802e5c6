#!/usr/bin/env bash
# Builds kiln's CRaC backend + Java agent into build/kiln-crac-agent.jar (javac --release 17).
# Idempotent: does nothing when the jar is newer than every source.
#   JAVAC     the javac to use (default: JDK 17's, else javac on PATH)
#   CRAC_JAR  the real org.crac 1.5.0 jar, checked to be there (the tests compile against it)
#             default /var/cache/kiln-setup/spring-boot-3/lib/crac-1.5.0.jar
#   FORCE=1   rebuild even when up to date
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JAVAC=${JAVAC:-}
if [ -z "$JAVAC" ]; then
  if [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/javac ]; then JAVAC=/usr/lib/jvm/java-17-openjdk-amd64/bin/javac; else JAVAC=javac; fi
fi
JAR=${JAR:-$(dirname "$(command -v "$JAVAC" 2>/dev/null || echo /usr/bin/javac)")/jar}
[ -x "$JAR" ] || JAR=jar
CRAC_JAR=${CRAC_JAR:-/var/cache/kiln-setup/spring-boot-3/lib/crac-1.5.0.jar}
src="$here/src"
out="$here/build"
jarfile="$out/kiln-crac-agent.jar"

if ! command -v "$JAVAC" >/dev/null 2>&1; then
  echo "kiln-crac-agent build: '$JAVAC' not found (Debian package openjdk-17-jdk-headless)" >&2
  exit 1
fi
if [ ! -f "$CRAC_JAR" ]; then
  echo "kiln-crac-agent build: org.crac jar not found at $CRAC_JAR (set CRAC_JAR)" >&2
  exit 1
fi

if [ "${FORCE:-0}" != 1 ] && [ -f "$jarfile" ] \
   && [ -z "$(find "$src" "$here/build.sh" -newer "$jarfile" -print -quit)" ]; then
  echo "kiln-crac-agent: up to date ($jarfile)"
  exit 0
fi

tmp="$out/classes.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
find "$src" -name '*.java' | LC_ALL=C sort >"$out/sources.txt"
# sun.misc.Signal (module jdk.unsupported) is the signal API on JDK 17 and 25; -Xlint would warn.
# -XDstringConcat=inline: plain StringBuilder code instead of invokedynamic call sites, each of
# which would be bootstrapped on first use, i.e. in a restored copy on the restore path.
"$JAVAC" --release 17 -encoding UTF-8 -XDstringConcat=inline -Xlint:all,-options -cp "$CRAC_JAR" -d "$tmp" @"$out/sources.txt"
cat >"$out/MANIFEST.MF" <<MF
Premain-Class: dev.kiln.crac.Agent
Agent-Class: dev.kiln.crac.Agent
Can-Redefine-Classes: false
Can-Retransform-Classes: true
MF
rm -f "$jarfile.tmp"
"$JAR" --create --file "$jarfile.tmp" --manifest "$out/MANIFEST.MF" -C "$tmp" .
mv "$jarfile.tmp" "$jarfile"
rm -rf "$tmp"
echo "kiln-crac-agent: built $jarfile"
