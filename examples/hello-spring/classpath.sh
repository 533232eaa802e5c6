# Sourced by build.sh and bin/hello-spring (bash). Not executable on its own.
#
# The exact Debian jars hello-spring compiles and runs against, each with the Debian package
# that installs it, so a missing jar can be reported as "apt-get install <package>".
# Unversioned names (the symlinks Debian maintains) so a point update of a package keeps working.

HELLO_SPRING_JAR_DIR=${HELLO_SPRING_JAR_DIR:-/usr/share/java}

HELLO_SPRING_JARS=(
  # Spring Framework 4.3
  "spring3-core.jar           libspring-core-java"
  "spring3-beans.jar          libspring-beans-java"
  "spring3-context.jar        libspring-context-java"
  "spring3-expression.jar     libspring-expression-java"
  "spring3-aop.jar            libspring-aop-java"
  "spring3-jdbc.jar           libspring-jdbc-java"
  "spring3-transaction.jar    libspring-transaction-java"
  "spring3-web.jar            libspring-web-java"
  "spring3-web.servlet.jar    libspring-web-servlet-java"
  # embedded Jetty 9.4
  "jetty9-server.jar          libjetty9-java"
  "jetty9-servlet.jar         libjetty9-java"
  "jetty9-security.jar        libjetty9-java"
  "jetty9-http.jar            libjetty9-java"
  "jetty9-io.jar              libjetty9-java"
  "jetty9-util.jar            libjetty9-java"
  "servlet-api.jar            libservlet-api-java"
  # JSON
  "jackson-core.jar           libjackson2-core-java"
  "jackson-databind.jar       libjackson2-databind-java"
  "jackson-annotations.jar    libjackson2-annotations-java"
  # database, pool, cache
  "h2.jar                     libh2-java"
  "HikariCP.jar               libhikaricp-java"
  "caffeine.jar               libcaffeine-java"
  # Bean Validation 1.1: Hibernate Validator, with Tomcat's EL for message interpolation
  "hibernate-validator.jar    libhibernate-validator-java"
  "geronimo-validation-1.1-spec.jar  libgeronimo-validation-1.1-spec-java"
  "jboss-logging.jar          libjboss-logging-java"
  "classmate.jar              libclassmate-java"
  "tomcat9-el-api.jar         libtomcat9-java"
  "tomcat9-jasper-el.jar      libtomcat9-java"
  # configuration (application.yml)
  "snakeyaml.jar              libyaml-snake-java"
  # logging: SLF4J + Logback; commons-logging (Spring) and java.util.logging bridged to it
  "slf4j-api.jar              libslf4j-java"
  "jcl-over-slf4j.jar         libslf4j-java"
  "jul-to-slf4j.jar           libslf4j-java"
  "logback-classic.jar        liblogback-java"
  "logback-core.jar           liblogback-java"
  # metrics (GET /metrics): registry, JVM gauges, JSON, log-event counters
  "metrics-core.jar           libdropwizard-metrics-java"
  "metrics-jvm.jar            libdropwizard-metrics-java"
  "metrics-json.jar           libdropwizard-metrics-java"
  "metrics-logback.jar        libdropwizard-metrics-java"
)

# hello_spring_jar_classpath: prints the jars joined with ':' on stdout; on a missing jar prints
# an error naming the Debian packages to install on stderr and returns 1.
hello_spring_jar_classpath() {
  local entry jar pkg cp="" missing_pkgs=()
  for entry in "${HELLO_SPRING_JARS[@]}"; do
    read -r jar pkg <<<"$entry"
    if [ -f "$HELLO_SPRING_JAR_DIR/$jar" ]; then
      cp="${cp:+$cp:}$HELLO_SPRING_JAR_DIR/$jar"
    else
      echo "hello-spring: missing $HELLO_SPRING_JAR_DIR/$jar (Debian package $pkg)" >&2
      case " ${missing_pkgs[*]-} " in *" $pkg "*) ;; *) missing_pkgs+=("$pkg") ;; esac
    fi
  done
  if [ ${#missing_pkgs[@]} -gt 0 ]; then
    echo "hello-spring: install with: apt-get install -y --no-upgrade ${missing_pkgs[*]}" >&2
    return 1
  fi
  printf '%s\n' "$cp"
}
