# bench/lib.sh: shared by bench/compare.sh and bench/gc-check.sh (sourced, after they set run_dir).
#
# Cleanup on exit: stops the bench and daemon still running (bench_pid, daemon_pid), restores the halt-polling
# setting, removes run_dir.
#
# HALTPOLL_NS=N (optional, root, cpuidle driver haltpoll): sets /sys/module/haltpoll/parameters/guest_halt_poll_ns
# for the run and restores it afterwards. On a VM where it is 0 (an idle vCPU halts at once), every wake-up of a
# sleeping thread on an idle vCPU costs a VM exit, tens of µs: a benchmark on an otherwise idle machine then
# measures that, for both daemons alike. 200000 is the kernel's default for KVM guests.

daemon_pid="" bench_pid="" haltpoll_saved=""
haltpoll_file=/sys/module/haltpoll/parameters/guest_halt_poll_ns

bench_cleanup() {
    [[ -n "$bench_pid" ]] && kill -TERM "$bench_pid" 2>/dev/null || true
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    if [[ -n "$haltpoll_saved" ]]; then echo "$haltpoll_saved" > "$haltpoll_file" 2>/dev/null || true; fi
    rm -rf "$run_dir"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# Applies HALTPOLL_NS if set (call it directly, not in $(...): the saved value must reach the cleanup);
# haltpoll_line says what is in effect, for the record.
haltpoll_apply() {
    if [[ -n "${HALTPOLL_NS:-}" ]]; then
        [[ "$HALTPOLL_NS" =~ ^[0-9]+$ ]] || { echo "HALTPOLL_NS must be a number of ns" >&2; exit 1; }
        [[ -w "$haltpoll_file" ]] || { echo "HALTPOLL_NS: $haltpoll_file is not writable (not root, or no haltpoll cpuidle driver)" >&2; exit 1; }
        haltpoll_saved=$(cat "$haltpoll_file")
        echo "$HALTPOLL_NS" > "$haltpoll_file"
    fi
    haltpoll_line="guest_halt_poll_ns: $(cat "$haltpoll_file" 2>/dev/null || echo n/a)${haltpoll_saved:+ (set by HALTPOLL_NS, was $haltpoll_saved)}"
}
