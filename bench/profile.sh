#!/usr/bin/env bash
# bench/profile.sh: where jvhost spends its time under a bench load. Starts jvhost (bin/jvhost) with a JFR
# recording (settings=profile: Java samples every 10 ms, native samples every 20 ms), runs bin/jvhost-bench
# against it, stops it, and prints the hot spots per thread with bench/jfr-top.py.
#
#   bench/profile.sh [null|file] [bench options...]     e.g.  bench/profile.sh null --iodepth 32 --time 15s
#
# Environment: OUT [/tmp/jvhost-profile] for the recording and logs; SIZE [1073741824]; IMAGE (file mode)
# [$OUT/image.raw]; QUEUES [1] (one iothread each). Build first: mvn -B -DskipTests package.
set -euo pipefail
here="$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
root="$(dirname -- "$here")"
mode=${1:-null}
[[ $# -gt 0 ]] && shift
OUT=${OUT:-/tmp/jvhost-profile}
SIZE=${SIZE:-1073741824}
IMAGE=${IMAGE:-$OUT/image.raw}
QUEUES=${QUEUES:-1}
mkdir -p "$OUT"
sock="$OUT/jvhost.sock" pidf="$OUT/jvhost.pid" jfr="$OUT/jvhost.jfr"
rm -f "$sock" "$pidf" "$jfr"

case "$mode" in
    null) node="driver=null-co,node-name=n,size=$SIZE,read-zeroes=on" ;;
    file) if [[ ! -f "$IMAGE" || $(stat -c %s "$IMAGE") -ne $SIZE ]]; then head -c "$SIZE" /dev/urandom > "$IMAGE"; fi
          cat "$IMAGE" > /dev/null
          node="driver=file,node-name=n,filename=$IMAGE,cache.direct=off,aio=threads" ;;
    *) echo "usage: $0 [null|file] [bench options...]" >&2; exit 1 ;;
esac
exp="type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=$sock,writable=on,num-queues=$QUEUES"
objs=()
for ((i = 0; i < QUEUES; i++)); do objs+=(--object "iothread,id=iot$i"); exp="$exp,iothread.$i=iot$i"; done

JVHOST_JAVA_OPTS="${JVHOST_JAVA_OPTS:-} -XX:StartFlightRecording=filename=$jfr,settings=profile,dumponexit=true" \
    "$root/bin/jvhost" --blockdev "$node" "${objs[@]}" --export "$exp" --pidfile "$pidf" > "$OUT/jvhost.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for ((i = 0; i < 600; i++)); do [[ -s "$pidf" && -S "$sock" ]] && break; sleep 0.1; done
[[ -s "$pidf" ]] || { cat "$OUT/jvhost.log" >&2; exit 1; }

"$root/bin/jvhost-bench" --socket "$sock" --queues "$QUEUES" --target-pid "$pid" --progress off "$@"
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
python3 "$here/jfr-top.py" "$jfr"
echo "recording: $jfr (open it in JDK Mission Control for flame graphs)"
