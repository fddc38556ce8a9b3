#!/usr/bin/env python3
"""Hot spots of a JFR recording (e.g. jvhost under bench/profile.sh): reads `jfr print --json` of the execution
samples (Java code) and native method samples (threads inside JNI/JNA calls: syscalls, epoll) and prints, per
thread group, the top methods by self samples and by inclusive samples. Python 3 standard library only.

usage: jfr-top.py RECORDING.jfr [--top N] [--jfr PATH_TO_jfr]
"""
import collections
import json
import os
import re
import shutil
import subprocess
import sys


CHAIN = 4          # caller frames shown for the hottest methods
CALLERS_FOR = 6    # how many of the top self methods get their callers listed


def short(frame):
    """io.jvhost.vhostuser.BlkQueue.process -> BlkQueue.process (lambdas keep their outer class)."""
    cls, _, meth = frame.rpartition(".")
    cls = re.sub(r"\$\$Lambda.*", "$lambda", cls)
    return "%s.%s" % (cls.rpartition(".")[2], meth)


def frames_of(event):
    st = event["values"].get("stackTrace") or {}
    out = []
    for f in st.get("frames") or []:
        m = f["method"]
        cls = m["type"]["name"]
        out.append("%s.%s" % (cls.replace("/", "."), m["name"]))
    return out


def thread_group(event):
    t = event["values"].get("sampledThread") or {}
    name = t.get("javaName") or t.get("osName") or "?"
    # iothreads are named after their export/queue or the --object id; collapse numbers so queues group together
    return re.sub(r"\d+", "N", name)


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    rec, top, jfr = args[0], 15, None
    i = 1
    while i < len(args):
        if args[i] == "--top":
            top = int(args[i + 1])
            i += 2
        elif args[i] == "--jfr":
            jfr = args[i + 1]
            i += 2
        else:
            sys.exit(__doc__)
    if jfr is None:
        home = os.environ.get("JAVA_HOME")
        jfr = os.path.join(home, "bin", "jfr") if home else shutil.which("jfr")
    if not jfr:
        sys.exit("jfr-top.py: the JDK's jfr tool was not found (set JAVA_HOME or --jfr)")
    raw = subprocess.run([jfr, "print", "--json", "--stack-depth", "64", "--events",
                          "jdk.ExecutionSample,jdk.NativeMethodSample", rec],
                         check=True, capture_output=True, text=True).stdout
    events = json.loads(raw)["recording"]["events"]
    groups = collections.defaultdict(lambda: {"n": 0, "self": collections.Counter(), "incl": collections.Counter(),
                                              "native": 0, "chains": collections.defaultdict(collections.Counter)})
    for e in events:
        fr = frames_of(e)
        if not fr:
            continue
        g = groups[thread_group(e)]
        g["n"] += 1
        native = e["type"] == "jdk.NativeMethodSample"
        if native:
            g["native"] += 1
        key = ("[native] " if native else "") + fr[0]
        g["self"][key] += 1
        g["chains"][key][" < ".join(short(f) for f in fr[1:1 + CHAIN])] += 1
        for m in set(fr):
            g["incl"][m] += 1
    total = sum(g["n"] for g in groups.values())
    print("%d samples (%s)" % (total, rec))
    for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["n"]):
        if g["n"] < max(5, total // 200):
            continue
        print("\n== thread %s: %d samples (%.0f%%), %d in native code" % (name, g["n"], 100.0 * g["n"] / total, g["native"]))
        print("  top self:")
        for k, (m, c) in enumerate(g["self"].most_common(top)):
            print("    %5.1f%%  %s" % (100.0 * c / g["n"], m))
            if k < CALLERS_FOR:
                for chain, cc in g["chains"][m].most_common(2):
                    print("             %4.1f%% from %s" % (100.0 * cc / g["n"], chain))
        print("  top inclusive (io.jvhost):")
        shown = 0
        for m, c in g["incl"].most_common():
            if m.startswith("io.jvhost."):
                print("    %5.1f%%  %s" % (100.0 * c / g["n"], m))
                shown += 1
                if shown >= top:
                    break


if __name__ == "__main__":
    main()
