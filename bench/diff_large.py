#!/usr/bin/env python3
"""Benchmark: `kiln diff` of two saved outputs of a ~100 MB-output model.

Writes two float32 outputs of 25M elements (100 MB each; the second perturbed by small noise
and one known +0.5) as `.npy` folders into bench/out/diff_large/{a,b}, then times
`kiln diff A B --json` N times (warm page cache) and reports the median wall time, the peak
RSS of the kiln process, and peak RSS / one side's size. Those folders are compared chunk by
chunk (streamed). For contrast it also times the same data saved as `.npz`, which kiln reads
whole (both sides in memory, widened to f64).

    cargo build --release -p kiln
    python3 bench/diff_large.py [--elements 25000000] [--runs 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from measure import run_measured

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "diff_large")
KILN = os.path.join(ROOT, "target", "release", "kiln")


def generate(n):
    """a/y.npy, b/y.npy (and a.npz, b.npz with the same data); returns one side's bytes."""
    import numpy as np

    a_path = os.path.join(OUT, "a", "y.npy")
    if os.path.exists(a_path) and np.load(a_path, mmap_mode="r").size == n:
        return os.path.getsize(a_path)
    for side in ("a", "b"):
        os.makedirs(os.path.join(OUT, side), exist_ok=True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n, dtype=np.float32)
    b = a + rng.standard_normal(n, dtype=np.float32) * np.float32(1e-4)
    b[n // 2] = a[n // 2] + np.float32(0.5)
    np.save(a_path, a)
    np.save(os.path.join(OUT, "b", "y.npy"), b)
    np.savez(os.path.join(OUT, "a.npz"), y=a)
    np.savez(os.path.join(OUT, "b.npz"), y=b)
    return os.path.getsize(a_path)


def run_with_rss(cmd):
    """Runs cmd (exit 0 or 1: diff's verdict); returns (wall s, peak RSS bytes, stdout)."""
    m = run_measured(cmd)
    if m.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({m.returncode}): {m.stderr}")
    return m.wall_s, m.peak_rss_bytes, m.stdout


def measure(a, b, runs):
    """Median wall, max peak RSS, and the report of `kiln diff a b --json`."""
    walls, peaks, out = [], [], ""
    for _ in range(runs):
        w, r, out = run_with_rss([KILN, "diff", a, b, "--json"])
        walls.append(w)
        peaks.append(r)
    return statistics.median(walls), max(peaks), json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=25_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-whole", action="store_true", help="skip the .npz (whole read) contrast")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        generate(args.elements)
        return
    if not os.path.exists(KILN):
        sys.exit("build first: cargo build --release -p kiln")
    # Generate in a child so numpy's memory never counts against a measured command.
    subprocess.run([sys.executable, __file__, "--elements", str(args.elements), "--generate-only"],
                   check=True)
    side = os.path.getsize(os.path.join(OUT, "a", "y.npy"))
    mib = 2**20
    print(f"one side: {args.elements} float32 = {side / mib:.1f} MiB; {args.runs} runs, warm cache")
    wall, peak, report = measure(os.path.join(OUT, "a"), os.path.join(OUT, "b"), args.runs)
    m = report["outputs"][0]["metrics"]
    assert m["elements"] == args.elements and abs(m["max_abs"] - 0.5) < 1e-3, m
    print(f"streamed (.npy folders): median {wall:.3f} s, peak RSS {peak / mib:.1f} MiB "
          f"= {peak / side:.2f} x one side (max abs {m['max_abs']:.4f}, "
          f"SQNR {m['sqnr_db']:.1f} dB)")
    ok = wall < 2.0 and peak < 2 * side
    if not args.no_whole:
        wall_w, peak_w, _ = measure(os.path.join(OUT, "a.npz"), os.path.join(OUT, "b.npz"),
                                    max(1, min(args.runs, 3)))
        print(f"whole read (.npz):       median {wall_w:.3f} s, peak RSS {peak_w / mib:.1f} MiB "
              f"= {peak_w / side:.2f} x one side")
    print(f"target (< 2 s, peak RSS < 2 x one side): {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
