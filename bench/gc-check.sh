#!/usr/bin/env bash
# bench/gc-check.sh: does jvhost allocate per request? Issue 5's acceptance: "a 10-second run at full load shows
# zero young-generation GCs in the GC log".
#
# For each scenario it starts bin/jvhost as shipped (its default JVM flags) plus a GC log (-Xlog:gc*) and
# performance counters (-XX:+UsePerfData, for jstat), drives it with bin/jvhost-bench, and samples `jstat -gc`
# twice inside the bench's measured window (after the ramp-up, so start-up and JIT warm-up are outside). Between
# the two samples it reports the young GCs (jstat's YGC count, cross-checked against the "Pause Young" lines of
# the GC log in that uptime window), the bytes the daemon allocated on the Java heap (growth of eden use, plus
# one eden capacity per young GC: exact without GCs, an estimate with them) and those bytes per request.
# Allocation is counted at TLAB granularity (a thread's next TLAB counts when it is carved out), so a few
# hundred KiB per window can show up without any per-request allocation.
#
#   bench/gc-check.sh                        # all scenarios, TIME=10s RAMP=4s
#   TIME=2s RAMP=2s SCENARIOS="null-randread" bench/gc-check.sh
#
# Environment (defaults in brackets):
#   SCENARIOS [null-randread null-randrw-2q file-randread file-randrw-2q uring-randread uring-randrw-2q]
#   TIME [10s]  measured window (whole seconds);  RAMP [4s] warm-up before it (whole seconds)
#   SIZE [1073741824]  device size;  OUT [/tmp/jvhost-gc-check];  IMAGE [$OUT/image.raw] (file scenarios)
#   JVHOST_JAVA_OPTS  extra daemon JVM options, added after the GC-log options (bin/jvhost puts them after
#                     its defaults, so they win)
# Exit status: 0 when every daemon and bench run succeeded (whatever the GC numbers), 1 otherwise. STRICT=1 also
# fails when a window shows a young GC.
set -euo pipefail

here="$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
root="$(dirname -- "$here")"
SCENARIOS=${SCENARIOS:-"null-randread null-randrw-2q file-randread file-randrw-2q uring-randread uring-randrw-2q"}
TIME=${TIME:-10s}
RAMP=${RAMP:-4s}
SIZE=${SIZE:-1073741824}
OUT=${OUT:-/tmp/jvhost-gc-check}
IMAGE=${IMAGE:-$OUT/image.raw}
STRICT=${STRICT:-0}
time_s=${TIME%s}
ramp_s=${RAMP%s}

die() { echo "gc-check.sh: $*" >&2; exit 1; }
[[ $time_s =~ ^[0-9]+$ && $ramp_s =~ ^[0-9]+$ && $time_s -ge 2 && $ramp_s -ge 1 ]] \
    || die "TIME (>= 2s) and RAMP (>= 1s) must be whole seconds"
ls "$root"/daemon/target/jvhost-daemon-*.jar >/dev/null 2>&1 || die "build first: mvn -B -DskipTests package (in $root)"
jstat=jstat
[[ -n "${JAVA_HOME:-}" ]] && jstat="$JAVA_HOME/bin/jstat"
command -v "$jstat" >/dev/null || die "jstat not found (a JDK is needed, not a JRE)"
mkdir -p "$OUT"
run_dir="$(mktemp -d /tmp/jvhost-gc.XXXXXX)"   # sockets: short path (108-byte sun_path limit)

# shellcheck source=lib.sh
source "$here/lib.sh"   # cleanup on exit

scenario() {
    case "$1" in
        null-randread)  node="driver=null-co,node-name=n,size=$SIZE,read-zeroes=on"; queues=1; rw="--rw randread" ;;
        null-randrw-2q) node="driver=null-co,node-name=n,size=$SIZE,read-zeroes=on"; queues=2; rw="--rw randrw" ;;
        file-randread)  node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off,aio=threads"; queues=1; rw="--rw randread" ;;
        file-randrw-2q) node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off,aio=threads"; queues=2; rw="--rw randrw" ;;
        uring-randread) node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off,aio=io_uring"; queues=1; rw="--rw randread" ;;
        uring-randrw-2q) node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off,aio=io_uring"; queues=2; rw="--rw randrw" ;;
        *) die "unknown scenario '$1' (null-randread null-randrw-2q file-randread file-randrw-2q uring-randread uring-randrw-2q)" ;;
    esac
}

if [[ " $SCENARIOS " == *" file-"* || " $SCENARIOS " == *" uring-"* ]]; then
    if [[ ! -f "$IMAGE" || $(stat -c %s "$IMAGE") -ne $SIZE ]]; then
        echo "creating $IMAGE ($((SIZE / 1048576)) MiB of data, not sparse)"
        head -c "$SIZE" /dev/urandom > "$IMAGE"
    fi
fi

# jstat -gc -t PID: one header line, one value line; prints "uptime eden_capacity eden_used ygc" (KiB, seconds).
sample() {
    "$jstat" -gc -t "$1" | awk 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
        NR == 2 { print $col["Timestamp"], $col["EC"], $col["EU"], $col["YGC"] }'
}

failures=0 young_total=0
summary=()
for sc in $SCENARIOS; do
    scenario "$sc"
    [[ $sc == file-* || $sc == uring-* ]] && cat "$IMAGE" > /dev/null   # into the page cache
    sock="$run_dir/jvhost.sock" pidf="$run_dir/jvhost.pid" gclog="$OUT/$sc.gc.log" log="$OUT/$sc.daemon.log"
    rm -f "$sock" "$pidf" "$gclog"
    exp="type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues"
    objs=()
    for ((i = 0; i < queues; i++)); do objs+=(--object "iothread,id=iot$i"); exp="$exp,iothread.$i=iot$i"; done
    JVHOST_JAVA_OPTS="-Xlog:gc*:file=$gclog:uptime,level,tags -XX:+UsePerfData ${JVHOST_JAVA_OPTS:-}" \
        "$root/bin/jvhost" --blockdev "$node" "${objs[@]}" --export "$exp" --pidfile "$pidf" > "$log" 2>&1 &
    daemon_pid=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s "$pidf" && -S "$sock" ]] && break
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -S "$sock" ]]; then
        cat "$log" >&2
        echo "== $sc: FAILED: jvhost did not start"; failures=$((failures + 1)); daemon_pid=""; continue
    fi
    json="$OUT/$sc.json"
    # shellcheck disable=SC2086  # $rw is an option list on purpose
    "$root/bin/jvhost-bench" --socket "$sock" $rw --bs 4k --iodepth 32 --queues "$queues" --time "$TIME" \
        --ramp "$RAMP" --json "$json" --target-pid "$daemon_pid" --progress off --label "gc-check/$sc" \
        > "$OUT/$sc.txt" 2> "$OUT/$sc.err" &
    bench_pid=$!
    # The samples sit inside the bench's window, half a second from either edge (connection set-up included).
    sleep "$ramp_s.5"
    s0=$(sample "$daemon_pid" || true)
    sleep "$((time_s - 1))"
    s1=$(sample "$daemon_pid" || true)
    bench_ok=1
    wait "$bench_pid" || bench_ok=0
    bench_pid=""
    kill -TERM "$daemon_pid" 2>/dev/null || true
    daemon_ok=1
    wait "$daemon_pid" || daemon_ok=0   # jvhost exits 0 on SIGTERM
    daemon_pid=""
    if [[ $bench_ok -eq 0 || $daemon_ok -eq 0 || -z "$s0" || -z "$s1" ]]; then
        failures=$((failures + 1))
        echo "== $sc: FAILED (bench ok=$bench_ok, daemon exit ok=$daemon_ok, jstat '${s0}' '${s1}'): $(tail -1 "$OUT/$sc.err")"
        continue
    fi
    line=$(python3 - "$json" "$gclog" "$s0" "$s1" <<'EOF'
import json, re, sys
res = json.load(open(sys.argv[1]))["result"]
t0, ec0, eu0, y0 = map(float, sys.argv[3].split())
t1, ec1, eu1, y1 = map(float, sys.argv[4].split())
young = int(y1 - y0)
# Pause Young lines of the GC log whose uptime lies in the window ([12.345s][info][gc] GC(3) Pause Young ...)
logged = 0
for l in open(sys.argv[2], errors="replace"):
    m = re.match(r"\[(\d+\.\d+)s\]\[info\s*\]\[gc\s*\] GC\(\d+\) Pause Young", l)
    if m and t0 <= float(m.group(1)) <= t1:
        logged += 1
kib = (eu1 - eu0) + young * ec1           # eden growth (+ one eden per young GC: an estimate then)
ios = res["iops"] * (t1 - t0)
print("%d %d %.0f %.1f %.2f %.0f" % (young, logged, kib, t1 - t0, kib * 1024 / ios if ios else 0, res["iops"]))
EOF
)
    read -r young logged kib secs per_io iops <<< "$line"
    young_total=$((young_total + young))
    msg=$(printf '%-15s young GCs %d (GC log: %d) in %ss; allocated %s KiB = %s B/request at %s IOPS' \
        "$sc" "$young" "$logged" "$secs" "$kib" "$per_io" "$iops")
    echo "== $msg"
    summary+=("$msg")
done

echo
echo "gc-check summary (JVHOST_JAVA_OPTS='${JVHOST_JAVA_OPTS:-}', window ${TIME} after ${RAMP}; logs in $OUT):"
for m in "${summary[@]}"; do echo "  $m"; done
[[ $failures -eq 0 ]] || die "$failures run(s) failed"
[[ $STRICT != 1 || $young_total -eq 0 ]] || die "$young_total young GC(s) in the measured windows"
