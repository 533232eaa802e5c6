#!/usr/bin/env bash
# Tests kiln's CRIU patches 0001 and 0003 (--mmap-page-images) and 0002 (--tmpfs-inline) with real
# processes, real dumps and restores.
#
#   patches/criu/test.sh [CRIU]      as root; CRIU defaults to `criu` on PATH
#
# A C program (memtest.c) with known memory (patterned, zero, untouched and MADV_DONTNEED'd pages,
# a read-only and an rwx region, a malloc heap, a sparse region of 20,480 one-page runs) and a JVM
# (MemHog.java, 300 MiB of known byte arrays) are dumped once each and restored with and without the
# option; the restored processes check their own memory (and copy-on-write, fork, mremap, malloc_trim
# + calloc, GCs). A runc container with an empty tmpfs and a /tmp written before the checkpoint is
# and a /run tree without regular files is checkpointed and restored with and without
# --tmpfs-inline (runc 1.1's --criu option).
# Prints `N passed, M failed`; exits non-zero if anything failed.
# Needs gcc, runc, jq and a JDK (JAVA_HOME, or /usr/lib/jvm/java-17-openjdk-amd64). Leaves nothing behind.
set -uo pipefail

criu=${1:-$(command -v criu || true)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
java_home=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
passed=0
failed=0
pids=()
mounts=()
containers=()
work=

pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

cleanup() {
  local p m
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${containers[@]}"; do runc delete -f "$p" >/dev/null 2>&1; done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}

[ "$(id -u)" = 0 ] || { echo "test.sh: must run as root" >&2; exit 2; }
[ -n "$criu" ] && [ -x "$criu" ] || { echo "test.sh: no criu binary (give its path as argument)" >&2; exit 2; }
work=$(mktemp -d /tmp/kiln-criu-mmap-test.XXXXXX)
echo "criu: $criu ($("$criu" --version | head -1)); work dir $work"

check "criu knows --mmap-page-images" bash -c "'$criu' --help 2>&1 | grep -q -- '--mmap-page-images'"
check "criu knows --tmpfs-inline" bash -c "'$criu' --help 2>&1 | grep -q -- '--tmpfs-inline'"
check "criu knows --no-breakpoints" bash -c "'$criu' --help 2>&1 | grep -q -- '--no-breakpoints'"
if [ "$failed" != 0 ]; then finish; fi

gcc -O2 -Wall -o "$work/memtest" "$here/memtest.c" || { fail "build memtest"; finish; }
mkdir -p "$work/classes"
"$java_home/bin/javac" -d "$work/classes" "$here/MemHog.java" || { fail "build MemHog"; finish; }

wait_file() { # FILE SECONDS
  local i
  for ((i = 0; i < $2 * 20; i++)); do [ -s "$1" ] && return 0; sleep 0.05; done
  return 1
}
wait_gone() { # PID SECONDS
  local i
  for ((i = 0; i < $2 * 20; i++)); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done
  kill -9 "$1" 2>/dev/null
  return 1
}
wait_grep() { # PATTERN FILE SECONDS
  local i
  for ((i = 0; i < $3 * 20; i++)); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

# Starts "$@" in its own session, waits for RESULT.ready, dumps it into DIR (with the options in
# $DUMP_OPTS). Sets PID.
start_and_dump() { # RESULT DIR CMD...
  local result=$1 dir=$2 extra=()
  read -ra extra <<<"${DUMP_OPTS:-}"
  shift 2
  rm -f "$result" "$result.ready" "$result.go"
  mkdir -p "$dir"
  # A subshell, so that this shell does not report the job CRIU's dump kills.
  (setsid "$@" </dev/null >"$result.out" 2>&1 &)
  if ! wait_file "$result.ready" 120; then
    fail "start $1: not ready"; return 1
  fi
  PID=$(awk '{print $2}' "$result.ready")
  pids+=("$PID")
  if ! "$criu" dump -t "$PID" -D "$dir" --shell-job -o dump.log "${extra[@]}"; then
    fail "dump $1 (see $dir/dump.log)"; tail -5 "$dir/dump.log"; return 1
  fi
  wait_gone "$PID" 10
}

# Restores DIR detached with the given options; the restored process keeps its PID.
restore() { # DIR LOG OPTIONS...
  local dir=$1 log=$2
  shift 2
  wait_gone "$PID" 30 || { fail "pid $PID still in use"; return 1; }
  if ! "$criu" restore -D "$dir" --shell-job -d -v4 -o "$log" "$@"; then
    fail "restore $dir $* (see $dir/$log)"; grep Error "$dir/$log" | tail -5; return 1
  fi
}

mapped_ranges() { sed -n 's/.*mmap-page-images: mapped \([0-9]*\) ranges.*/\1/p' "$1" | head -1; }
image_maps() { grep -c '/pages-[0-9]*\.img' "/proc/$1/maps" 2>/dev/null || true; }
anon_kb() { awk '/^Pss_Anon:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }

# memtest: RESULT gets the restored process's own checks.
memtest_checks() { # LABEL RESULT DONTNEED(zero|image) FILE-PRIVATE-WRITTEN(copy|image)
  local label=$1 result=$2 line
  kill -USR1 "$PID"
  if ! wait_grep '^done' "$result" 60; then
    fail "$label: memtest did not finish ($(cat "$result.out" 2>/dev/null | tail -2))"; return
  fi
  while read -r line; do
    case "$line" in
      ok\ *) pass "$label: ${line#ok }" ;;
      FAIL*) fail "$label: ${line#FAIL }" ;;
    esac
  done <"$result"
  check "$label: MADV_DONTNEED on restored memory refills with $3" grep -qx "info dontneed $3" "$result"
  check "$label: written pages of a private file mapping come from the $4" grep -qx "info file-private-written $4" "$result"
  wait_gone "$PID" 10
}

echo "== memtest (C): dump"
img=$work/memtest-img
res=$work/memtest-res
if start_and_dump "$res" "$img" "$work/memtest" "$res"; then
  pages_sum=$(cat "$img"/pages-*.img | sha256sum)
  max_map_count=$(cat /proc/sys/vm/max_map_count)

  echo "== memtest: restore reading the pages (option off)"
  rm -f "$res"
  if restore "$img" restore-read.log; then
    check "read: no page image mapped" [ "$(image_maps "$PID")" = 0 ]
    check "read: restorer did not take the mmap path" bash -c "! grep -q 'mmap-page-images:' '$img/restore-read.log'"
    read_anon=$(anon_kb "$PID")
    memtest_checks read "$res" zero copy
  fi

  echo "== memtest: restore mapping the page images (--mmap-page-images)"
  rm -f "$res"
  if restore "$img" restore-mmap.log --mmap-page-images; then
    n=$(image_maps "$PID")
    maps=$(wc -l <"/proc/$PID/maps")
    mmap_anon=$(anon_kb "$PID")
    echo "   $(grep -o 'mmap-page-images: .*' "$img/restore-mmap.log")"
    echo "   restored: $maps mappings, $n from the page image; Pss_Anon $mmap_anon kB (read: $read_anon kB)"
    check "mmap: page image mapped" [ "${n:-0}" -gt 0 ]
    check "mmap: budget ran out on the sparse region (budget left 0)" grep -q 'budget left 0$' "$img/restore-mmap.log"
    check "mmap: mappings stay within half of vm.max_map_count ($maps <= $((max_map_count / 2)))" [ "$maps" -le $((max_map_count / 2)) ]
    check "mmap: anonymous memory after restore < 1/4 of reading's" [ "${mmap_anon:-0}" -lt $((${read_anon:-0} / 4)) ]
    check "mmap: without the option the restore catches the task with a breakpoint" bash -c "! grep -q 'Force no-breakpoints' '$img/restore-mmap.log'"
    memtest_checks mmap "$res" image image
  fi
  check "page image unchanged by the mapped restore and its writes" [ "$(cat "$img"/pages-*.img | sha256sum)" = "$pages_sum" ]


  echo "== memtest: images on a noexec mount (mmap of the rwx region refused, read instead)"
  noexec=$work/noexec
  mkdir -p "$noexec"
  if mount -t tmpfs -o noexec,size=512m kiln-criu-test "$noexec"; then
    mounts+=("$noexec")
    cp -a "$img/." "$noexec/"
    rm -f "$res"
    if restore "$noexec" restore-noexec.log --mmap-page-images; then
      check "noexec: mmap refused and read instead" grep -q 'mmap-page-images: mmap of .* failed' "$noexec/restore-noexec.log"
      check "noexec: the rest still mapped" [ "$(image_maps "$PID")" -gt 0 ]
      memtest_checks noexec "$res" image image
    fi
    umount "$noexec" && mounts=()
  else
    fail "mount a noexec tmpfs"
  fi

  echo "== memtest: --auto-dedup turns the option off (holes punched in a mapped file would zero it)"
  dedup=$work/dedup-img
  cp -a "$img" "$dedup"
  rm -f "$res"
  if restore "$dedup" restore-dedup.log --mmap-page-images --auto-dedup; then
    check "auto-dedup: option ignored with a warning" grep -q 'mmap-page-images is ignored with --auto-dedup' "$dedup/restore-dedup.log"
    check "auto-dedup: no page image mapped" [ "$(image_maps "$PID")" = 0 ]
    memtest_checks auto-dedup "$res" zero copy
  fi
  rm -rf "$dedup"

  # 0005: the dump's parasite and the restorer hand the task back without a hardware breakpoint.
  # Last: a new dump, a new PID.
  echo "== memtest: dump and restore with --no-breakpoints"
  nobp=$work/memtest-nobp-img
  rm -f "$res"
  if DUMP_OPTS="-v4 --no-breakpoints" start_and_dump "$res" "$nobp" "$work/memtest" "$res"; then
    check "no-breakpoints: the dump caught the task leaving the parasite by its syscalls" grep -q 'Force no-breakpoints' "$nobp/dump.log"
    rm -f "$res"
    if restore "$nobp" restore-nobp.log --mmap-page-images --no-breakpoints; then
      check "no-breakpoints: the restore caught the task leaving the restorer by its syscalls" grep -q 'Force no-breakpoints' "$nobp/restore-nobp.log"
      memtest_checks no-breakpoints "$res" image image
    fi
  fi
  rm -rf "$nobp"
fi

# 0002: a runc container (the way kiln runs services: runc's /dev, /dev/shm, /sys/fs/cgroup and the
# masked paths are tmpfs mounts) with /tmp holding files written before the checkpoint (tar's job
# still), an empty /scratch owned by 12:34 and a /run tree of directories, a symlink, a fifo and a
# socket (no regular file: listed inline). Checkpointed with and without --tmpfs-inline (a line in the CRIU
# config file runc is given through the org.criu.config annotation, as kiln does), restored,
# inspected through /proc/PID/root.
tmpfs_test() {
  local b=$work/tmpfs-bundle conf
  mkdir -p "$b/rootfs"/{usr,proc,sys,dev,tmp,scratch,run}
  for l in bin lib lib64 sbin; do ln -s "usr/$l" "$b/rootfs/$l"; done
  (cd "$b" && runc spec) || { fail "runc spec"; return; }
  jq --arg conf "$work/tmpfs-criu.conf" '
    .process.terminal = false
    | .process.args = ["/bin/sh", "-c", "mkdir -p /run/a/b; chmod 750 /run/a/b; ln -s ../x /run/a/link; mkfifo -m 640 /run/a/fifo; echo warm > /tmp/kept; mkdir /tmp/d; echo ready > /tmp/d/ready; exec sleep 1000"]
    | .root.readonly = false
    | .mounts += [{"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
                  {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
                  {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "uid=12", "gid=34"]},
                  {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}]
    | .annotations = {"org.criu.config": $conf}' "$b/config.json" >"$b/config.new" && mv "$b/config.new" "$b/config.json"
  for mode in tar inline; do
    local id=kiln-criu-tmpfs-$$-$mode img=$work/tmpfs-img-$mode cpid before after markers tarballs tree_before tree_after
    conf='network-lock skip\n'
    [ "$mode" = inline ] && conf+='tmpfs-inline\n'
    printf "$conf" >"$work/tmpfs-criu.conf"
    containers+=("$id")
    # stdio: pipes (a host file as fd 1 makes runc's checkpoint fail)
    runc run -d --bundle "$b" "$id" </dev/null > >(cat >/dev/null) 2>&1 || { fail "$mode: runc run"; continue; }
    cpid=$(runc state "$id" | jq .pid)
    wait_file "/proc/$cpid/root/tmp/d/ready" 20 || { fail "$mode: container not ready"; continue; }
    before=$(stat -c '%a %u %g' "/proc/$cpid/root/scratch")
    # a unix socket file in /run (like a JVM's /tmp/.java_pid<N>), bound from the host
    /usr/bin/python3 -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "/proc/$cpid/root/run/a/sock"
    tree_before=$(tree_of "/proc/$cpid/root")
    check "tmpfs $mode: /run/a/sock is a socket before the checkpoint" [ -S "/proc/$cpid/root/run/a/sock" ]
    check "tmpfs $mode: the /run tree was made (dir 750, link, fifo)" \
      bash -c "grep -qx 'run d 755 0 0 ' <<<'$tree_before' && grep -qx 'run/a/b d 750 0 0 ' <<<'$tree_before' && grep -qx 'run/a/link l 777 0 0 ../x' <<<'$tree_before' && grep -qx 'run/a/fifo p 640 0 0 ' <<<'$tree_before'"
    # 0004: the dump mounts cgroup2 to read the container's cgroups; it must keep the host's
    # cgroup2 options (a cgroup2 mount sets them for every mount of the one root).
    local cg2 cg2_before cg2_after
    cg2=$(findmnt -n -t cgroup2 -o TARGET | head -1 || true)
    [ -n "$cg2" ] && mount -o remount,favordynmods "$cg2" 2>/dev/null || true
    cg2_before=$([ -n "$cg2" ] && findmnt -n -o FS-OPTIONS "$cg2" || true)
    if ! runc --criu "$criu" checkpoint --image-path "$img" --work-path "$img" "$id"; then
      fail "$mode: runc checkpoint (see $img/dump.log)"; tail -5 "$img/dump.log"; continue
    fi
    cg2_after=$([ -n "$cg2" ] && findmnt -n -o FS-OPTIONS "$cg2" || true)
    check "cgroup2 $mode: the checkpoint kept the host's cgroup2 options ($cg2_before -> $cg2_after)" [ "$cg2_before" = "$cg2_after" ]
    markers=$(grep -l '^CRIU-TMPFS-INLINE-v1$' "$img"/tmpfs-dev-*.img 2>/dev/null | wc -l)
    tarballs=$(for f in "$img"/tmpfs-dev-*.img; do gzip -t "$f" 2>/dev/null && echo "$f"; done | wc -l)
    echo "   $mode: dump wrote $markers tmpfs listings and $tarballs tarballs"
    if [ "$mode" = inline ]; then
      check "tmpfs inline: /tmp (regular files) is the only tarball ($tarballs = 1)" [ "$tarballs" = 1 ]
      check "tmpfs inline: the other mounts (/dev, /dev/shm, /scratch, /run, ...) are listed ($markers >= 5)" [ "$markers" -ge 5 ]
    else
      check "tmpfs tar: option off writes no listing" [ "$markers" = 0 ]
    fi
    if ! runc --criu "$criu" restore -d --image-path "$img" --work-path "$img" --bundle "$b" "$id" </dev/null > >(cat >/dev/null) 2>&1; then
      fail "$mode: runc restore (see $img/restore.log)"; grep Error "$img/restore.log" | tail -5; continue
    fi
    cpid=$(runc state "$id" | jq .pid)
    after=$(stat -c '%a %u %g' "/proc/$cpid/root/scratch")
    tree_after=$(tree_of "/proc/$cpid/root")
    check "tmpfs $mode: /tmp written before the checkpoint is there after restore" \
      [ "$(cat "/proc/$cpid/root/tmp/kept" "/proc/$cpid/root/tmp/d/ready" 2>/dev/null)" = "$(printf 'warm\nready')" ]
    check "tmpfs $mode: empty /scratch keeps mode and owner ($before -> $after)" [ "$before" = "$after" ]
    check "tmpfs $mode: /dev/null is a character device" [ -c "/proc/$cpid/root/dev/null" ]
    check "tmpfs $mode: /dev and /run trees (types, modes, owners, devices, link targets) as before" [ "$tree_before" = "$tree_after" ]
    [ "$tree_before" = "$tree_after" ] || diff <(echo "$tree_before") <(echo "$tree_after") | head -10
    check "tmpfs $mode: the restored process runs" [ -d "/proc/$cpid" ]
    if [ "$mode" = inline ]; then
      for m in /scratch /dev/shm /dev /run; do
        check "tmpfs inline: $m restored without tar" grep -q "tmpfs-inline: $m restored from its listing" "$img/restore.log"
      done
    fi
    runc kill "$id" KILL 2>/dev/null
    wait_gone "$cpid" 10
    runc delete -f "$id" && unset 'containers[-1]'
  done
}
# What a tmpfs tree looks like from outside (not mtimes, which a listing does not keep, nor
# sockets, which neither tar nor a listing keeps).
tree_of() { # ROOT
  (cd "$1" && find dev run -xdev \( -path dev/pts -o -path dev/mqueue -o -path dev/shm \) -prune -o \
    ! -type s -printf '%p %y %m %U %G %l\n' | sort; stat -c '%n %t:%T' dev/null dev/zero dev/urandom)
}
if command -v runc >/dev/null && command -v jq >/dev/null; then
  echo "== tmpfs mounts of a runc container: tarballs vs --tmpfs-inline"
  tmpfs_test
else
  fail "tmpfs test needs runc and jq"
fi

# The JVM's mapped restore turns the option on the way kiln does: a line in a CRIU config file.
printf '# as in kiln'"'"'s criu-runc.conf\nmmap-page-images\nno-breakpoints\n' >"$work/criu.conf"

jvm_test() { # JAVA_HOME LABEL
  local jh=$1 label=$2 mode n line
  echo "== JVM $label (MemHog, 300 MiB of known arrays): dump"
  local jimg=$work/jvm-img-$label jres=$work/jvm-res-$label
  start_and_dump "$jres" "$jimg" "$jh/bin/java" -XX:-UsePerfData -Xmx1g -cp "$work/classes" MemHog "$jres" 300 || return
  for mode in read mmap; do
    opts=()
    [ "$mode" = mmap ] && opts=(--config "$work/criu.conf")
    rm -f "$jres" "$jres.go"
    restore "$jimg" "restore-$mode.log" "${opts[@]}" || continue
    n=$(image_maps "$PID")
    echo "   $mode: $(wc -l <"/proc/$PID/maps") mappings, $n from the page image, Pss_Anon $(anon_kb "$PID") kB"
    if [ "$mode" = mmap ]; then
      check "jvm $label mmap: page image mapped" [ "${n:-0}" -gt 0 ]
      check "jvm $label mmap: every thread caught without a breakpoint" \
        [ "$(grep -c 'Force no-breakpoints' "$jimg/restore-$mode.log")" -ge "$(ls "/proc/$PID/task" | wc -l)" ]
    else
      check "jvm $label read: no page image mapped" [ "$n" = 0 ]
    fi
    touch "$jres.go"
    if wait_grep '^done' "$jres" 120; then
      while read -r line; do
        case "$line" in
          ok\ *) pass "jvm $label $mode: ${line#ok }" ;;
          FAIL*) fail "jvm $label $mode: ${line#FAIL }" ;;
        esac
      done <"$jres"
    else
      fail "jvm $label $mode: MemHog did not finish ($(tail -3 "$jres.out"))"
    fi
    wait_gone "$PID" 30 || fail "jvm $label $mode: did not exit"
  done
  rm -rf "$jimg"
}

# JDK 17 (what kiln's samples run on); also Temurin 25 where it is installed (or JAVA_HOMES="A B").
for jh in ${JAVA_HOMES:-$java_home /usr/lib/jvm/temurin-25-jdk-amd64}; do
  [ -x "$jh/bin/java" ] || continue
  jvm_test "$jh" "$("$jh/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
done

finish
