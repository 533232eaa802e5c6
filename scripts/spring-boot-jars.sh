#!/usr/bin/env bash
# Fetches genuine Spring Boot 3.5 framework jars for examples/boot-petclinic without Maven Central.
#
# PyPI is reachable here and one wheel, atoti-server 0.9.16, carries a Spring Boot 3.5.16 executable
# jar (server.jar) whose BOOT-INF/lib/ holds the unmodified open-source framework jars. This script
# downloads that wheel (cached, sha256-verified), takes out of server.jar ONLY the framework jars on
# the allow-list below and Spring Boot's launcher classes (org/springframework/boot/loader/**), and
# deletes everything else it unpacked. The vendor's own classes and jars (non-commercial licence)
# are never extracted to a classpath, never committed, never put in an image.
#
# Result, in ${KILN_SETUP_CACHE:-/var/cache/kiln-setup}/spring-boot-3/:
#   lib/      the allowed framework jars, unmodified
#   loader/   org/springframework/boot/loader/** (what `java -jar` needs to start a Boot jar)
#   .complete the list of what was extracted; present only once everything is in place
# Idempotent: a complete cache is left alone; the wheel stays cached so a re-run is offline.
set -euo pipefail

CACHE=${KILN_SETUP_CACHE:-/var/cache/kiln-setup}
WHEEL_NAME=atoti-server
WHEEL_VERSION=0.9.16
WHEEL_FILE=atoti_server-0.9.16-py3-none-any.whl
WHEEL_SHA256=0c6bdb206b66506ced6f5926d09e379c3f80af4080a8af6baa994416364354c3
SERVER_JAR=_atoti_server/__resources__/server.jar
OUT="$CACHE/spring-boot-3"

# Allow-list: one shell pattern per jar, each must match exactly one jar in server.jar's
# BOOT-INF/lib/. Licences (from each jar's pom/manifest): Apache-2.0 for Spring Boot, Spring
# Framework, Tomcat, Jackson, SnakeYAML, Micrometer, HikariCP; EPL-1.0/LGPL-2.1 Logback; MIT SLF4J;
# MPL-2.0/EPL-1.0 H2; BSD-2-Clause org.crac; EPL-2.0/GPL-2.0+CPE jakarta.annotation (needed by
# Tomcat embed, as in spring-boot-starter-tomcat); CC0/BSD-2-Clause HdrHistogram and CC0
# LatencyUtils (micrometer-core's dependencies). Nothing else is taken: no Spring Security (it
# would lock every endpoint), no spring-tx/webflux/websocket, no Hibernate, no vendor jars.
ALLOW=(
  'spring-boot-3.5.16.jar'
  'spring-boot-autoconfigure-3.5.16.jar'
  'spring-boot-actuator-3.5.16.jar'
  'spring-boot-actuator-autoconfigure-3.5.16.jar'
  'spring-core-6.2.*.jar'
  'spring-jcl-6.2.*.jar'
  'spring-beans-6.2.*.jar'
  'spring-context-6.2.*.jar'
  'spring-aop-6.2.*.jar'
  'spring-expression-6.2.*.jar'
  'spring-web-6.2.*.jar'
  'spring-webmvc-6.2.*.jar'
  'tomcat-embed-core-10.1.*.jar'
  'tomcat-embed-el-10.1.*.jar'
  'tomcat-embed-websocket-10.1.*.jar'
  'jakarta.annotation-api-2.*.jar'
  'jackson-core-2.*.jar'
  'jackson-databind-2.*.jar'
  'jackson-annotations-2.*.jar'
  'jackson-datatype-jdk8-2.*.jar'
  'jackson-datatype-jsr310-2.*.jar'
  'jackson-module-parameter-names-2.*.jar'
  'snakeyaml-2.*.jar'
  'logback-classic-1.5.*.jar'
  'logback-core-1.5.*.jar'
  'slf4j-api-2.*.jar'
  'jul-to-slf4j-2.*.jar'
  'micrometer-core-1.15.*.jar'
  'micrometer-commons-1.15.*.jar'
  'micrometer-observation-1.15.*.jar'
  'micrometer-jakarta9-1.15.*.jar'
  'HdrHistogram-2.*.jar'
  'LatencyUtils-2.*.jar'
  'HikariCP-6.*.jar'
  'h2-2.1.214.jar'
  'crac-1.5.0.jar'
)

log() { printf '\033[1mspring-boot-jars:\033[0m %s\n' "$*" >&2; }
die() { printf 'spring-boot-jars: error: %s\n' "$*" >&2; exit 1; }

if [ -f "$OUT/.complete" ] && [ -d "$OUT/lib" ] && [ -d "$OUT/loader/org/springframework/boot/loader" ] \
   && [ "$(sed -n 1p "$OUT/.complete")" = "$WHEEL_FILE $WHEEL_SHA256" ]; then
  log "Spring Boot 3.5 jars: present in $OUT ($(find "$OUT/lib" -name '*.jar' | wc -l) jars)"
  exit 0
fi

for tool in unzip sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install unzip coreutils)"
done

mkdir -p "$CACHE"
wheel="$CACHE/$WHEEL_FILE"
if [ ! -f "$wheel" ] || ! echo "$WHEEL_SHA256  $wheel" | sha256sum -c --status; then
  rm -f "$wheel"
  # pip: the first of python3 -m pip, pip3, pip that exists. --no-cache-dir: the wheel is cached
  # here already, no second 140 MB copy in ~/.cache/pip.
  pip_cmd=()
  if python3 -m pip --version >/dev/null 2>&1; then pip_cmd=(python3 -m pip)
  elif command -v pip3 >/dev/null 2>&1; then pip_cmd=(pip3)
  elif command -v pip >/dev/null 2>&1; then pip_cmd=(pip)
  else die "no pip found: install it with 'apt-get install python3-pip' and run 'make setup' again"
  fi
  log "downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI (140 MB; it carries the Spring Boot 3.5 jars)"
  dl=$(mktemp -d "$CACHE/wheel.XXXXXX")
  if ! "${pip_cmd[@]}" download --no-deps --no-cache-dir --only-binary=:all: --ignore-requires-python \
       --disable-pip-version-check -q -d "$dl" "$WHEEL_NAME==$WHEEL_VERSION" >&2; then
    rm -rf "$dl"
    die "'${pip_cmd[*]} download $WHEEL_NAME==$WHEEL_VERSION' failed: PyPI must be reachable (check the proxy / PIP_INDEX_URL settings), or put $WHEEL_FILE into $CACHE by hand and run 'make setup' again"
  fi
  [ -f "$dl/$WHEEL_FILE" ] || { ls "$dl" >&2; rm -rf "$dl"; die "pip did not produce $WHEEL_FILE"; }
  mv "$dl/$WHEEL_FILE" "$wheel"
  rm -rf "$dl"
fi
echo "$WHEEL_SHA256  $wheel" | sha256sum -c --status \
  || { rm -f "$wheel"; die "$WHEEL_FILE does not match its expected sha256 ($WHEEL_SHA256): deleted; run 'make setup' again"; }
log "$WHEEL_FILE verified (sha256 $WHEEL_SHA256)"

work=$(mktemp -d "$CACHE/spring-boot-3.XXXXXX")
trap 'rm -rf "$work"' EXIT
# server.jar only, out of the wheel; the wheel's other content is never unpacked.
unzip -q -o "$wheel" "$SERVER_JAR" -d "$work/wheel" || die "no $SERVER_JAR in $WHEEL_FILE"
server="$work/wheel/$SERVER_JAR"

mapfile -t libs < <(unzip -Z1 "$server" | sed -n 's|^BOOT-INF/lib/\([^/][^/]*\.jar\)$|\1|p')
selected=()
for pattern in "${ALLOW[@]}"; do
  matches=()
  for jar in "${libs[@]}"; do
    # shellcheck disable=SC2053  # $pattern is a glob on purpose
    [[ $jar == $pattern ]] && matches+=("$jar")
  done
  [ ${#matches[@]} = 1 ] || die "allow-list pattern '$pattern' matched ${#matches[@]} jars in server.jar (${matches[*]:-none}): expected exactly one"
  selected+=("${matches[0]}")
done

mkdir -p "$work/out/lib" "$work/out/loader"
unzip -q -j -o "$server" "${selected[@]/#/BOOT-INF/lib/}" -d "$work/out/lib"
unzip -q -o "$server" 'org/springframework/boot/loader/*' -d "$work/out/loader"
n_loader=$(find "$work/out/loader" -name '*.class' | wc -l)
[ "$n_loader" -gt 50 ] || die "only $n_loader loader classes found in server.jar"
# The rest of what was unpacked (server.jar itself) goes now; only the wheel stays cached.
rm -rf "$work/wheel"
{ echo "$WHEEL_FILE $WHEEL_SHA256"; printf '%s\n' "${selected[@]}"; } >"$work/out/.complete"

rm -rf "$OUT"
mv "$work/out" "$OUT"
log "Spring Boot 3.5 jars: ${#selected[@]} framework jars and $n_loader loader classes in $OUT"
