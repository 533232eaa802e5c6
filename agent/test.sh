#!/usr/bin/env bash
# Tests kiln's CRaC agent with the real org.crac 1.5.0 jar: JVMs with the agent, driven through the
# real file + signal protocol (test/src/Driver.java), on JDK 17 and (when installed) Temurin 25,
# then real CRIU round trips (test/criu-roundtrip.sh; woken by signal, then through the wake FIFO)
# when /usr/local/sbin/criu is there.
# Last line: "N passed, M failed"; exit status 1 on any failure.
#   CRAC_JAR  default /var/cache/kiln-setup/spring-boot-3/lib/crac-1.5.0.jar
#   JDKS      JDK homes to test on (default: JDK 17, plus Temurin 25 if present)
#   BENCH=1   also print the signal -> restore.done figures
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CRAC_JAR=${CRAC_JAR:-/var/cache/kiln-setup/spring-boot-3/lib/crac-1.5.0.jar}
export CRAC_JAR
J17=/usr/lib/jvm/java-17-openjdk-amd64
J25=/usr/lib/jvm/temurin-25-jdk-amd64
JDKS=${JDKS:-$J17 $([ -x $J25/bin/java ] && echo $J25)}

"$here/build.sh" || { echo "0 passed, 1 failed"; exit 1; }
work=$(mktemp -d /tmp/kiln-agent-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
classes="$work/classes"
mkdir -p "$classes"
$J17/bin/javac --release 17 -encoding UTF-8 -cp "$CRAC_JAR:$here/build/kiln-crac-agent.jar" -d "$classes" "$here"/test/src/*.java \
  || { echo "0 passed, 1 failed"; exit 1; }
# the app sees org.crac and its own classes; dev.kiln.crac comes from the agent jar (system class path)
cp_app="$classes:$CRAC_JAR"
# a launcher that runs the app from a child class loader, as Spring Boot's executable jars do
mkdir -p "$work/launcher"
$J17/bin/javac --release 17 -d "$work/launcher" "$here"/test/launcher/*.java || { echo "0 passed, 1 failed"; exit 1; }
# A real Spring Framework context, when the Spring Boot 3 jars are there (make setup extracts them
# next to crac-1.5.0.jar; SPRING_LIB to point elsewhere).
SPRING_LIB=${SPRING_LIB:-$(dirname "$CRAC_JAR")}
spring_cp=""
scenarios="order order-child weak fail block app identity io-stacks trim"
if ls "$SPRING_LIB"/spring-context-6*.jar >/dev/null 2>&1; then
  spring_jars=$(ls "$SPRING_LIB"/spring-{core,beans,context,aop,expression,jcl}-6*.jar "$SPRING_LIB"/micrometer-{observation,commons}-*.jar 2>/dev/null | tr '\n' ':')
  mkdir -p "$work/spring-classes"
  if $J17/bin/javac --release 17 -encoding UTF-8 -cp "$spring_jars$CRAC_JAR" -d "$work/spring-classes" "$here"/test/spring/*.java; then
    spring_cp="$work/spring-classes:$spring_jars$CRAC_JAR"
    scenarios="$scenarios spring"
  else
    echo "FAIL spring test does not compile"; total_fail_compile=1
  fi
else
  echo "spring scenario: skipped (no spring-context-6*.jar in $SPRING_LIB)"
fi

total_pass=0; total_fail=${total_fail_compile:-0}
tally() { # reads a test log, adds its "N passed, M failed"
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  if [ -z "$line" ]; then total_fail=$((total_fail + 1)); return; fi
  total_pass=$((total_pass + $(echo "$line" | awk '{print $1}')))
  total_fail=$((total_fail + $(echo "$line" | awk '{print $3}')))
}
for jdk in $JDKS; do
  v=$("$jdk/bin/java" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  "$J17/bin/java" -cp "$classes" -Dtest.java="$jdk/bin/java" -Dtest.agent="$here/build/kiln-crac-agent.jar" \
    -Dtest.cp="$cp_app" -Dtest.spring.cp="$spring_cp" -Dtest.launcher="$work/launcher" -Dtest.work="$work/jdk$v" -Dtest.tag="jdk$v " Driver $scenarios | tee "$work/log-$v"
  tally "$work/log-$v"
  if [ "${BENCH:-0}" = 1 ]; then
    "$J17/bin/java" -cp "$classes" -Dtest.java="$jdk/bin/java" -Dtest.agent="$here/build/kiln-crac-agent.jar" \
      -Dtest.cp="$cp_app" -Dtest.work="$work/bench$v" Driver bench 10 30
  fi
done
if [ -x /usr/local/sbin/criu ]; then
  for jdk in $JDKS; do
    echo "== CRIU round trip on $jdk"
    for wake in signal fifo; do
      WAKE=$wake JAVA=$jdk/bin/java "$here/test/criu-roundtrip.sh" "$classes" "$cp_app" "$work/criu" | tee "$work/log-criu"
      tally "$work/log-criu"
    done
  done
else
  echo "criu round trip: skipped (/usr/local/sbin/criu not installed)"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
