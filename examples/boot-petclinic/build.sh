#!/usr/bin/env bash
# Builds boot-petclinic into build/app.jar: a Spring Boot executable jar run with `java -jar`.
# The framework jars and Spring Boot's launcher classes come from scripts/spring-boot-jars.sh (run
# by `make setup`), PostgreSQL's JDBC driver from Debian (libpostgresql-jdbc-java).
# Idempotent: does nothing when app.jar is newer than every source, this script and the jars.
#   JAVAC   the javac to use (default: javac on PATH; JDK 17 is what Debian bookworm has)
#   JAR     the jar tool (default: jar next to that javac)
#   FORCE=1 rebuild even when up to date
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
boot="${KILN_SETUP_CACHE:-/var/cache/kiln-setup}/spring-boot-3"
pgjar=/usr/share/java/postgresql.jar
src="$here/src/main/java"
res="$here/src/main/resources"
out="$here/build"
app="$out/app.jar"
main_class=dev.kiln.samples.boot.BootPetclinicApplication

die() { echo "boot-petclinic build: $*" >&2; exit 1; }

[ -f "$boot/.complete" ] && [ -d "$boot/lib" ] && [ -d "$boot/loader/org/springframework/boot/loader" ] \
  || die "the Spring Boot 3.5 jars are missing from $boot: run 'make setup' (scripts/spring-boot-jars.sh) first"
[ -f "$pgjar" ] || die "$pgjar is missing: run 'make setup' (Debian package libpostgresql-jdbc-java)"
JAVAC=${JAVAC:-javac}
command -v "$JAVAC" >/dev/null 2>&1 || die "'$JAVAC' not found (Debian package openjdk-17-jdk-headless)"
JAR=${JAR:-$(dirname "$(readlink -f "$(command -v "$JAVAC")")")/jar}
[ -x "$JAR" ] || die "jar tool '$JAR' not found"

if [ "${FORCE:-0}" != 1 ] && [ -f "$app" ] \
   && [ -z "$(find "$src" "$res" "$here/build.sh" "$boot/.complete" "$pgjar" -newer "$app" -print -quit)" ]; then
  echo "boot-petclinic: up to date ($app)"
  exit 0
fi

mkdir -p "$out"
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/BOOT-INF/classes" "$stage/BOOT-INF/lib" "$stage/META-INF/services"

find "$src" -name '*.java' | LC_ALL=C sort >"$out/sources.txt"
# -proc:none: no annotation processing (none is needed). -parameters: Spring binds
# @RequestParam/@PathVariable and constructor arguments by their names. --release 17: Spring Boot
# 3's baseline; the jar runs on JDK 17 and later.
"$JAVAC" -proc:none -parameters --release 17 -encoding UTF-8 -Xlint:all,-options,-path,-serial,-processing \
  -cp "$boot/lib/*" -d "$stage/BOOT-INF/classes" @"$out/sources.txt"
cp -R "$res/." "$stage/BOOT-INF/classes/"

# The framework jars, unmodified, plus Debian's PostgreSQL driver (a symlink there: copy the file).
cp "$boot"/lib/*.jar "$stage/BOOT-INF/lib/"
cp -L "$pgjar" "$stage/BOOT-INF/lib/postgresql.jar"
# Spring Boot's launcher at the root of the jar, and its nested-jar file system provider.
cp -R "$boot/loader/org" "$stage/"
echo org.springframework.boot.loader.nio.file.NestedFileSystemProvider \
  >"$stage/META-INF/services/java.nio.file.spi.FileSystemProvider"
# The classpath in a fixed order (Boot's classpath.idx format), rather than the zip's entry order.
(cd "$stage" && find BOOT-INF/lib -name '*.jar' | LC_ALL=C sort | sed 's/.*/- "&"/') >"$stage/BOOT-INF/classpath.idx"

boot_version=$(sed -n 's/^spring-boot-\([0-9][0-9.]*\)\.jar$/\1/p' "$boot/.complete")
cat >"$out/MANIFEST.MF" <<MANIFEST
Manifest-Version: 1.0
Main-Class: org.springframework.boot.loader.launch.JarLauncher
Start-Class: $main_class
Spring-Boot-Version: $boot_version
Spring-Boot-Classes: BOOT-INF/classes/
Spring-Boot-Lib: BOOT-INF/lib/
Spring-Boot-Classpath-Index: BOOT-INF/classpath.idx
Implementation-Title: boot-petclinic
MANIFEST

# --no-compress: every entry STORED. The launcher requires it for the nested jars in BOOT-INF/lib/
# (it reads them in place, without inflating); for classes it only costs some size.
# Directories are added whole, so the zip has an entry for every directory (BOOT-INF/,
# BOOT-INF/classes/, each package): without them the launcher cannot find the start class.
# --date: fixed entry times, so the same inputs give the same jar.
rm -f "$app.tmp"
"$JAR" --create --no-compress --date=2000-01-01T00:00:00Z --file "$app.tmp" --manifest "$out/MANIFEST.MF" \
  -C "$stage" META-INF/services -C "$stage" org -C "$stage" BOOT-INF
mv "$app.tmp" "$app"
rm -rf "$stage"
echo "boot-petclinic: built $app ($(du -h "$app" | cut -f1), Spring Boot $boot_version)"
