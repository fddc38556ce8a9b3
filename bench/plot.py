#!/usr/bin/env python3
"""Latency-by-percentile plot (PNG) of jvhost-bench JSON results, with the Python standard library only: a tiny
raster canvas, a 5x7 bitmap font and a zlib+struct PNG writer (no matplotlib on these machines).

One panel per scenario (label "scenario/impl/round", as bench/compare.sh writes them): x = percentile on the
usual "nines" scale (0, 90, 99, 99.9, ... : log10(1 / (1 - p))), y = latency in microseconds, log scale; one step
curve per run, drawn exactly from the run's histogram buckets (jvhost blue, qemu-storage-daemon orange).

usage: plot.py RESULT_DIR_OR_JSON... [-o latency.png]
"""
import glob
import json
import math
import os
import struct
import sys
import zlib

FONT = {  # 5x7, rows top to bottom, bit 4 = leftmost column
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    " ": (0,) * 7, ".": (0, 0, 0, 0, 0, 0x0C, 0x0C), ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    "-": (0, 0, 0, 0x1F, 0, 0, 0), "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0),
    "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03), ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02), ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "=": (0, 0, 0x1F, 0, 0x1F, 0, 0), "_": (0, 0, 0, 0, 0, 0, 0x1F), "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0),
    "<": (0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02), ">": (0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08),
    "*": (0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0), ";": (0, 0x0C, 0x0C, 0, 0x0C, 0x04, 0x08), "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04),
}
COLORS = {"jvhost": (31, 119, 180), "qsd": (230, 110, 0)}
NAMES = {"jvhost": "JVHOST", "qsd": "QEMU-STORAGE-DAEMON"}
WHITE, BLACK, GRID, GRID2 = (255, 255, 255), (0, 0, 0), (200, 200, 200), (232, 232, 232)


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(WHITE * (w * h))

    def dot(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i:i + 3] = bytes(c)

    def rect(self, x0, y0, x1, y1, c):
        for y in range(max(0, y0), min(self.h, y1)):
            for x in range(max(0, x0), min(self.w, x1)):
                self.dot(x, y, c)

    def line(self, x0, y0, x1, y1, c, width=1):
        x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for ox in range(width):
                for oy in range(width):
                    self.dot(x0 + ox, y0 + oy, c)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x, y, s, c=BLACK, scale=2):
        for ch in s.upper():
            rows = FONT.get(ch, FONT["?"])
            for r, bits in enumerate(rows):
                for col in range(5):
                    if bits & (0x10 >> col):
                        self.rect(x + col * scale, y + r * scale, x + (col + 1) * scale, y + (r + 1) * scale, c)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(s, scale=2):
        return len(s) * 6 * scale

    def png(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[3 * y * self.w:3 * (y + 1) * self.w]) for y in range(self.h))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)))
            f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
            f.write(chunk(b"IEND", b""))


def load(paths):
    """{scenario: [(impl, round, histogram [(lo, hi, count)], total)]} from JSON files or directories."""
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "*.json"))) if os.path.isdir(p) else [p]
    runs = {}
    for path in files:
        try:
            with open(path) as f:
                j = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(j, dict) or j.get("schema") != "jvhost-bench/1":
            continue
        label = j.get("label") or os.path.basename(path)
        parts = label.split("/")
        sc, impl, rnd = (parts + ["?", "?"])[:3] if len(parts) >= 2 else (label, "jvhost", "1")
        hist = [tuple(b) for b in j["result"]["histogram"]]
        total = sum(b[2] for b in hist)
        if total:
            runs.setdefault(sc, []).append((impl, rnd, hist, total))
    return runs


MAX_NINES = 5.0  # 99.999th percentile


def nines(p):
    return MAX_NINES if p >= 1 - 10 ** -MAX_NINES else math.log10(1 / (1 - p))


def panel(cv, x0, y0, w, h, title, runs):
    left, right, top, bottom = 92, 16, 40, 50
    px0, px1, py0, py1 = x0 + left, x0 + w - right, y0 + top, y0 + h - bottom
    lo = min(max(b[1], 1) for _, _, hist, _ in runs for b in hist[:1]) / 1e3
    hi = max(hist[-1][1] for _, _, hist, _ in runs) / 1e3
    ylo = 10 ** math.floor(math.log10(max(lo, 0.1)))
    yhi = 10 ** math.ceil(math.log10(max(hi, ylo * 10)))
    xmax = min(MAX_NINES, max(math.log10(t) for _, _, _, t in runs))  # no percentile beyond 1 - 1/N
    xmax = max(1.0, math.ceil(xmax))

    def X(n):
        return px0 + (px1 - px0) * min(n, xmax) / xmax

    def Y(us):
        us = min(max(us, ylo), yhi)
        return py1 - (py1 - py0) * (math.log10(us) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo))

    cv.text(x0 + left, y0 + 8, title + ": LATENCY (US)", scale=2)
    # grid and y labels: decades, with 2 and 5 in between
    d = ylo
    while d <= yhi * 1.0001:
        for m, col in ((1, GRID), (2, GRID2), (5, GRID2)):
            v = d * m
            if v <= yhi * 1.0001:
                cv.line(px0, Y(v), px1, Y(v), col)
        lab = "%d" % round(d) if d >= 1 else "%g" % d
        cv.text(px0 - 8 - Canvas.text_width(lab), int(Y(d)) - 7, lab)
        d *= 10
    for n in range(0, int(xmax) + 1):
        cv.line(X(n), py0, X(n), py1, GRID)
        lab = "0" if n == 0 else "%.*f" % (max(0, n - 2), 100 - 100 * 10 ** -n)
        lx = int(X(n)) - Canvas.text_width(lab) // 2
        cv.text(min(lx, x0 + w - 2 - Canvas.text_width(lab)), py1 + 8, lab)
    cv.text((px0 + px1) // 2 - Canvas.text_width("PERCENTILE") // 2, py1 + 28, "PERCENTILE")
    # axes box
    for a, b, c, e in ((px0, py0, px1, py0), (px0, py1, px1, py1), (px0, py0, px0, py1), (px1, py0, px1, py1)):
        cv.line(a, b, c, e, BLACK)
    # curves: the percentile function is a step per bucket (value = bucket's highest latency)
    for impl, rnd, hist, total in sorted(runs, key=lambda r: (r[0] != "qsd", r[1])):
        col = COLORS.get(impl, (100, 100, 100))
        seen, prev_y, prev_x = 0, None, X(0)
        for _, high, n in hist:
            p0, seen = seen / total, seen + n
            x_a, x_b, y = X(nines(p0)), X(nines(seen / total)), Y(high / 1e3)
            if prev_y is not None:
                cv.line(prev_x, prev_y, x_a, y, col, 2)
            cv.line(x_a, y, x_b, y, col, 2)
            prev_x, prev_y = x_b, y
            if nines(p0) >= xmax:
                break
    # legend
    ly = py0 + 8
    for impl in sorted({r[0] for r in runs}, key=lambda i: i != "jvhost"):
        cv.rect(px0 + 10, ly + 4, px0 + 34, ly + 8, COLORS.get(impl, (100, 100, 100)))
        nrounds = sum(1 for r in runs if r[0] == impl)
        cv.text(px0 + 40, ly, "%s (%d RUN%s)" % (NAMES.get(impl, impl), nrounds, "S" if nrounds > 1 else ""))
        ly += 20


def main():
    args, out = [], "latency.png"
    argv = sys.argv[1:]
    while argv:
        a = argv.pop(0)
        if a in ("-o", "--output"):
            out = argv.pop(0)
        elif a in ("-h", "--help"):
            print(__doc__)
            return
        else:
            args.append(a)
    if not args:
        sys.exit(__doc__)
    runs = load(args)
    if not runs:
        sys.exit("plot.py: no jvhost-bench results in " + " ".join(args))
    order = ["null-qd32", "null-2q", "null-qd1", "file-qd32", "file-qd32-uring"]
    scs = sorted(runs, key=lambda s: (order.index(s) if s in order else len(order), s))
    cols = 1 if len(scs) == 1 else 2
    rows = (len(scs) + cols - 1) // cols
    pw, ph, head = 640, 420, 56
    cv = Canvas(cols * pw, head + rows * ph)
    cv.text(16, 12, "LATENCY BY PERCENTILE, LOG SCALES (US = MICROSECONDS)", scale=3)
    cv.text(16, 40, "EACH CURVE ONE RUN OF JVHOST-BENCH; X: 0, 90, 99, 99.9 ... PERCENTILE", scale=1)
    for i, sc in enumerate(scs):
        panel(cv, (i % cols) * pw, head + (i // cols) * ph, pw, ph, sc, runs[sc])
    cv.png(out)


if __name__ == "__main__":
    main()
