#!/usr/bin/env python3
"""Summarize a bench/compare.sh result directory: medians per scenario and daemon, ratios jvhost/QSD, and the
targets of issue 5 (met or not). Reads every jvhost-bench JSON (label "scenario/impl/round") in the directory,
prints Markdown on stdout and writes summary.json next to the runs. Python 3 standard library only.

usage: summarize.py RESULT_DIR
"""
import glob
import json
import os
import statistics
import sys

# (scenario, metric, what, comparison, threshold): ratio = jvhost / QSD of the medians.
TARGETS = [
    ("null-qd32", "iops", "null-co 4k randread qd32, 1 queue: IOPS", ">=", 1.5),
    ("null-2q", "iops", "null-co 4k randread qd32, 2 queues (jvhost 2 iothreads, QSD 1): IOPS", ">=", 2.0),
    ("null-qd1", "p50", "null-co 4k randread qd1: p50 latency", "<=", 0.8),
    ("file-qd32", "iops", "raw file in page cache, 4k randread qd32 (both aio=threads): IOPS", ">=", 1.5),
    ("file-qd32-uring", "iops", "the same, QSD with aio=io_uring (harder reference): IOPS", ">=", 1.5),
    ("*", "rss", "RSS under load (VmRSS max), every scenario", "<=", 2.0),
]
IMPLS = ("jvhost", "qsd")
COLUMNS = [  # key, header, format
    ("iops", "IOPS", "{:,.0f}"),
    ("mibps", "MiB/s", "{:.1f}"),
    ("p50", "p50 µs", "{:.1f}"),
    ("p99", "p99 µs", "{:.1f}"),
    ("p999", "p99.9 µs", "{:.1f}"),
    ("rss", "RSS max MiB", "{:.1f}"),
    ("daemon_cores", "daemon cores", "{:.2f}"),
    ("daemon_us", "daemon µs CPU/IO", "{:.2f}"),
    ("bench_us", "bench µs CPU/IO", "{:.2f}"),
    ("other", "other load, cores", "{:.2f}"),
]


def metrics(run):
    r, cost, t, s = run["result"], run.get("benchCost", {}), run.get("target", {}), run.get("system", {})
    lat = r["latencyNs"]
    return {
        "iops": r["iops"],
        "mibps": r["mibPerSecond"],
        "p50": lat["p50"] / 1e3,
        "p99": lat["p99"] / 1e3,
        "p999": lat["p99.9"] / 1e3,
        "rss": t.get("rssMaxBytes", -1) / 2**20 if t.get("rssMaxBytes", -1) >= 0 else None,
        "daemon_cores": t.get("cores"),
        "daemon_us": t.get("usPerIo"),
        "bench_us": cost.get("processUsPerIo"),
        "bench_cores": cost.get("processCores"),
        "other": s.get("otherCores"),
        "steal": s.get("stealCores"),
    }


def load(directory):
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        try:
            with open(path) as f:
                j = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(j, dict) or j.get("schema") != "jvhost-bench/1" or j.get("label", "").count("/") != 2:
            continue
        sc, impl, rnd = j["label"].split("/")
        runs.setdefault(sc, {}).setdefault(impl, {})[int(rnd)] = metrics(j)
    return runs


def median(values):
    v = [x for x in values if x is not None and x >= 0]
    return statistics.median(v) if v else None


def fmt(fmtstr, v):
    return "–" if v is None else fmtstr.format(v)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    runs = load(directory)
    if not runs:
        sys.exit("summarize.py: no jvhost-bench results (JSON with a scenario/impl/round label) in " + directory)
    order = [t[0] for t in TARGETS if t[0] != "*"]
    scenarios = sorted(runs, key=lambda s: (order.index(s) if s in order else len(order), s))

    summary = {"scenarios": {}, "targets": []}
    out = ["## Results: medians over rounds (ratio = jvhost / QSD)", ""]
    out.append("| scenario | daemon | runs | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    out.append("|---|---|---|" + "---|" * len(COLUMNS))
    for sc in scenarios:
        med = {}
        for impl in IMPLS:
            rs = runs[sc].get(impl, {})
            med[impl] = {k: median([m[k] for m in rs.values()]) for k, _, _ in COLUMNS}
            med[impl]["steal"] = median([m["steal"] for m in rs.values()])
            out.append("| %s | %s | %d | %s |" % (sc, impl, len(rs), " | ".join(fmt(f, med[impl][k]) for k, _, f in COLUMNS)))
        ratio = {}
        for k, _, _ in COLUMNS:
            a, b = med["jvhost"][k], med["qsd"][k]
            ratio[k] = a / b if a is not None and b not in (None, 0) else None
        out.append("| %s | **ratio** | | %s |" % (sc, " | ".join(fmt("{:.2f}×", ratio[k]) for k, _, _ in COLUMNS)))
        summary["scenarios"][sc] = {
            "median": med, "ratio": ratio,
            "runs": {impl: {str(r): m for r, m in sorted(runs[sc].get(impl, {}).items())} for impl in IMPLS},
        }

    out += ["", "## Targets of issue 5", "",
            "| target | jvhost | QSD | ratio | per-round ratios (A/B pairs) | wanted | met |", "|---|---|---|---|---|---|---|"]
    for sc, key, what, op, thr in TARGETS:
        for s in (scenarios if sc == "*" else [sc]):
            if s not in summary["scenarios"]:
                out.append("| %s | – | – | – | not run | %s %.1f× | – |" % (what, op, thr))
                continue
            e = summary["scenarios"][s]
            ratio = e["ratio"][key]
            pairs = []
            jr, qr = runs[s].get("jvhost", {}), runs[s].get("qsd", {})
            for rnd in sorted(set(jr) & set(qr)):
                a, b = jr[rnd][key], qr[rnd][key]
                if a is not None and b:
                    pairs.append(a / b)
            met = None if ratio is None else (ratio >= thr if op == ">=" else ratio <= thr)
            label = what if sc != "*" else "%s: %s" % (what.split(",")[0], s)
            f = next(f for k, _, f in COLUMNS if k == key)
            out.append("| %s | %s | %s | %s | %s | %s %.1f× | %s |" % (
                label, fmt(f, e["median"]["jvhost"][key]), fmt(f, e["median"]["qsd"][key]), fmt("{:.2f}×", ratio),
                ", ".join("%.2f" % p for p in pairs) or "–", op, thr, "–" if met is None else ("yes" if met else "**no**")))
            summary["targets"].append({"scenario": s, "metric": key, "what": what, "op": op, "threshold": thr,
                                       "ratio": ratio, "pairRatios": pairs, "met": met})
    print("\n".join(out))
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
