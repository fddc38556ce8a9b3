#!/usr/bin/env bash
# bench/compare.sh: jvhost against qemu-storage-daemon, same block node, same load, alternating A B A B.
#
# From a fresh clone:   mvn -B -DskipTests package && bench/compare.sh
#
# For every scenario and round it starts one daemon (jvhost, then qemu-storage-daemon), waits for its pidfile,
# runs bin/jvhost-bench against it (which samples the daemon's CPU time and RSS through /proc while it measures),
# stops the daemon, and goes on with the other one. Results: one JSON per run in $OUT, then bench/summarize.py
# prints the medians, the ratios jvhost/QSD and the targets of issue 5, and bench/plot.py draws the latency
# percentiles (PNG).
#
# Environment (defaults in brackets):
#   SCENARIOS  [null-qd32 null-2q null-qd1 file-qd32 file-qd32-uring]  (see scenario() below)
#   ROUNDS     [2]      rounds per scenario; each round runs jvhost then QSD
#   TIME       [10s]    measured time per run;  RAMP [3s] warm-up before it (JIT, caches)
#   SIZE       [1073741824]  device size in bytes (null-co size; raw image size)
#   OUT        [bench/results/<date>]  where the JSON, logs and summary go
#   IMAGE      [$OUT/image.raw]  the raw image of file-qd32 (created, filled, read into the page cache)
#   QSD        [qemu-storage-daemon]
#   JVHOST_JAVA_OPTS      extra JVM options of the daemon, after bin/jvhost's defaults (default: none, as shipped)
#   JVHOST_BENCH_JAVA_OPTS JVM options of the bench
#   BENCH_ARGS  extra bench options for every run (e.g. "--wait poll")
#   JVHOST_REV  what to record as the jvhost version (default: git rev-parse of the tree)
#   HALTPOLL_NS  set the VM's guest_halt_poll_ns for the run, restored afterwards (root; see bench/lib.sh)
set -euo pipefail

here="$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
root="$(dirname -- "$here")"
SCENARIOS=${SCENARIOS:-"null-qd32 null-2q null-qd1 file-qd32 file-qd32-uring"}
ROUNDS=${ROUNDS:-2}
TIME=${TIME:-10s}
RAMP=${RAMP:-3s}
SIZE=${SIZE:-1073741824}
OUT=${OUT:-$root/bench/results/$(date +%Y%m%d-%H%M%S)}
IMAGE=${IMAGE:-$OUT/image.raw}
QSD=${QSD:-qemu-storage-daemon}
BENCH_ARGS=${BENCH_ARGS:-}

die() { echo "compare.sh: $*" >&2; exit 1; }
command -v "$QSD" >/dev/null || die "$QSD not found (apt-get install qemu-system-common, or set QSD=...)"
command -v python3 >/dev/null || die "python3 not found (summary and plot)"
[[ -x "$root/bin/jvhost" && -x "$root/bin/jvhost-bench" ]] || die "bin/jvhost or bin/jvhost-bench missing"
ls "$root"/daemon/target/jvhost-daemon-*.jar >/dev/null 2>&1 || die "build first: mvn -B -DskipTests package (in $root)"
mkdir -p "$OUT"
run_dir="$(mktemp -d /tmp/jvhost-compare.XXXXXX)"   # sockets: short path (108-byte sun_path limit)

# shellcheck source=lib.sh
source "$here/lib.sh"   # cleanup on exit, HALTPOLL_NS
haltpoll_apply

# ---- the machine, for the record
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srvmo)"
    echo "cpus: $(nproc)  model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "virtualization: $(systemd-detect-virt 2>/dev/null || echo unknown)  kvm: $([[ -e /dev/kvm ]] && echo yes || echo no)"
    echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB total, " $7 " MiB available"}')"
    echo "load before: $(cat /proc/loadavg)"
    echo "$haltpoll_line"
    echo "java: $( (if [[ -n "${JAVA_HOME:-}" ]]; then "$JAVA_HOME/bin/java" -version; else java -version; fi) 2>&1 | head -1)"
    echo "qsd: $("$QSD" --version | head -1)"
    echo "jvhost: ${JVHOST_REV:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (modified tree)')}"
    echo "settings: SCENARIOS='$SCENARIOS' ROUNDS=$ROUNDS TIME=$TIME RAMP=$RAMP SIZE=$SIZE"
    echo "JVHOST_JAVA_OPTS='${JVHOST_JAVA_OPTS:-}' JVHOST_BENCH_JAVA_OPTS='${JVHOST_BENCH_JAVA_OPTS:-}' BENCH_ARGS='$BENCH_ARGS'"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# ---- scenarios: block node, queues, bench load. Same node options for both daemons (QSD 7.2 wants bytes).
# The file scenarios read a raw image that sits in the page cache, with the same engine on both sides:
# file-qd32 a thread pool doing pread (aio=threads), file-qd32-uring each iothread's io_uring (aio=io_uring).
scenario() {
    qsd_aio=""
    case "$1" in
        null-qd32) node="driver=null-co,node-name=n,size=$SIZE,read-zeroes=on"; queues=1
                   load="--rw randread --bs 4k --iodepth 32 --queues 1" ;;
        null-2q)   node="driver=null-co,node-name=n,size=$SIZE,read-zeroes=on"; queues=2
                   load="--rw randread --bs 4k --iodepth 32 --queues 2" ;;
        null-qd1)  node="driver=null-co,node-name=n,size=$SIZE,read-zeroes=on"; queues=1
                   load="--rw randread --bs 4k --iodepth 1 --queues 1" ;;
        file-qd32) node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off"; queues=1; qsd_aio=threads
                   load="--rw randread --bs 4k --iodepth 32 --queues 1" ;;
        file-qd32-uring) node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off"; queues=1; qsd_aio=io_uring
                   load="--rw randread --bs 4k --iodepth 32 --queues 1" ;;
        *) die "unknown scenario '$1' (null-qd32 null-2q null-qd1 file-qd32 file-qd32-uring)" ;;
    esac
}

# Starts a daemon in the background; sets daemon_pid and sock. $1 = jvhost|qsd, $2 = scenario.
start_daemon() {
    local impl=$1 sc=$2 pidf="$run_dir/daemon.pid" log="$OUT/$sc-$impl-r$round.daemon.log" i
    sock="$run_dir/$impl.sock"
    rm -f "$pidf" "$sock"
    scenario "$sc"
    local -a cmd
    if [[ $impl == jvhost ]]; then
        # One iothread per queue (issue 5: "2 queues on 2 iothreads"); the file driver uses QSD's engine.
        local n="$node" exp="type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues"
        [[ -n $qsd_aio ]] && n="$n,aio=$qsd_aio"
        cmd=("$root/bin/jvhost" --blockdev "$n")
        for ((i = 0; i < queues; i++)); do cmd+=(--object "iothread,id=iot$i"); exp="$exp,iothread.$i=iot$i"; done
        cmd+=(--export "$exp" --pidfile "$pidf")
    else
        # QSD 7.2's vhost-user-blk export runs all its queues in one iothread (it has no per-queue mapping).
        local n="$node"
        [[ -n $qsd_aio ]] && n="$n,aio=$qsd_aio"
        cmd=("$QSD" --blockdev "$n" --object iothread,id=iot0
             --export "type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues,iothread=iot0"
             --pidfile "$pidf")
    fi
    echo "+ ${cmd[*]}" > "$log"
    "${cmd[@]}" >> "$log" 2>&1 &
    daemon_pid=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s "$pidf" && -S "$sock" ]] && return 0
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$log" >&2; die "$impl exited during startup"; }
        sleep 0.1
    done
    die "$impl did not write its pidfile within 60 s (log: $log)"
}

stop_daemon() {
    local i
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=""
}

if [[ " $SCENARIOS " == *" file-"* ]]; then
    want=$((SIZE / 1048576))
    if [[ ! -f "$IMAGE" || $(stat -c %s "$IMAGE") -ne $SIZE ]]; then
        echo "creating $IMAGE ($want MiB of data, not sparse)"
        head -c "$SIZE" /dev/urandom > "$IMAGE"
    fi
fi

failures=0
for sc in $SCENARIOS; do
    for ((round = 1; round <= ROUNDS; round++)); do
        for impl in jvhost qsd; do
            scenario "$sc"
            # The image must be in the page cache for both daemons alike: read it before each run.
            [[ $sc == file-* ]] && cat "$IMAGE" > /dev/null
            start_daemon "$impl" "$sc"
            json="$OUT/$sc-$impl-r$round.json"
            echo "== $sc / $impl / round $round (pid $daemon_pid): jvhost-bench $load --time $TIME --ramp $RAMP $BENCH_ARGS"
            # shellcheck disable=SC2086  # $load and $BENCH_ARGS are option lists on purpose
            if "$root/bin/jvhost-bench" --socket "$sock" $load --time "$TIME" --ramp "$RAMP" --json "$json" \
                    --label "$sc/$impl/$round" --target-pid "$daemon_pid" --progress off $BENCH_ARGS \
                    > "$OUT/$sc-$impl-r$round.txt" 2> "$OUT/$sc-$impl-r$round.err"; then
                sed -n '3,7p' "$OUT/$sc-$impl-r$round.txt"
            else
                failures=$((failures + 1))
                echo "   FAILED: $(tail -1 "$OUT/$sc-$impl-r$round.err")"
            fi
            stop_daemon
        done
    done
done

echo
python3 "$here/summarize.py" "$OUT" | tee "$OUT/summary.md"
python3 "$here/plot.py" "$OUT" -o "$OUT/latency.png" && echo "plot: $OUT/latency.png"
[[ $failures -eq 0 ]] || die "$failures run(s) failed"
