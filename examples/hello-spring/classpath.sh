# Sourced by build.sh and bin/hello-spring (bash). Not executable on its own.
#
# The exact Debian jars hello-spring compiles and runs against, each with the Debian package
# that installs it, so a missing jar can be reported as "apt-get install <package>".
# Unversioned names (the symlinks Debian maintains) so a point update of a package keeps working.

HELLO_SPRING_JAR_DIR=${HELLO_SPRING_JAR_DIR:-/usr/share/java}

HELLO_SPRING_JARS=(
  "spring3-core.jar           libspring-core-java"
  "spring3-beans.jar          libspring-beans-java"
  "spring3-context.jar        libspring-context-java"
  "spring3-expression.jar     libspring-expression-java"
  "spring3-aop.jar            libspring-aop-java"
  "spring3-jdbc.jar           libspring-jdbc-java"
  "spring3-transaction.jar    libspring-transaction-java"
  "spring3-web.jar            libspring-web-java"
  "spring3-web.servlet.jar    libspring-web-servlet-java"
  "commons-logging.jar        libcommons-logging-java"
  "jetty9-server.jar          libjetty9-java"
  "jetty9-servlet.jar         libjetty9-java"
  "jetty9-security.jar        libjetty9-java"
  "jetty9-http.jar            libjetty9-java"
  "jetty9-io.jar              libjetty9-java"
  "jetty9-util.jar            libjetty9-java"
  "servlet-api.jar            libservlet-api-java"
  "jackson-core.jar           libjackson2-core-java"
  "jackson-databind.jar       libjackson2-databind-java"
  "jackson-annotations.jar    libjackson2-annotations-java"
  "h2.jar                     libh2-java"
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
