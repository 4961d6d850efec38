"""`kiln compile` on every model in models/ x every built-in profile, as a markdown table.

Per model, the data (the first that works):
1. the bench's seeded samples, `bench/out/quantize/data/<model>/calib_<N>` to calibrate and
   `heldout_<M>` to validate on (`--check-inputs`), drawn by bench/quantize/calibration.py when
   missing;
2. when that generator cannot draw the model's inputs: the model's own `test_data_set_*`
   folders (`--calibration models/<model>`, validation on a few of them);
3. else `--synthetic 16`.
Per (model, profile): exit code, wall time and peak RSS (bench/measure.py), and from
report.json the verdict and the worst output: a failed output first, else the one with the
lowest SQNR; its SQNR / cosine / top-1 agreement make the cell (`–` where the report has no
top-1, e.g. an output without a class axis).

    python3 bench/compile_matrix.py --kiln target/release/kiln
    python3 bench/compile_matrix.py --only tiny_cnn,bert_tiny_op17 --json bench/out/m.json

Outputs in bench/out/compile_matrix/<model>/<profile>/; everything in --json
(bench/out/compile_matrix.json by default); the table on stdout. Exit 1 if any cell is not a
pass (the table is still printed).
"""

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "bench"), os.path.join(ROOT, "bench", "quantize")]
from calibration import ensure_split  # noqa: E402
from measure import run_measured  # noqa: E402

DATA = os.path.join(ROOT, "bench", "out", "quantize", "data")
OUT = os.path.join(ROOT, "bench", "out", "compile_matrix")


def models(only):
    names = sorted(os.path.basename(os.path.dirname(p))
                   for p in glob.glob(os.path.join(ROOT, "models", "*", "model.onnx")))
    if only:
        wanted = only.split(",")
        unknown = set(wanted) - set(names)
        if unknown:
            sys.exit(f"no models/<name>/model.onnx for: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in wanted]
    return names


def profiles(kiln):
    p = subprocess.run([kiln, "profile", "list"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{kiln} profile list failed: {p.stderr.strip()}")
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def data_for(name, samples, heldout):
    """(kiln arguments, one-line description) of the data the model is compiled with."""
    model_dir = os.path.join(ROOT, "models", name)
    try:
        calib, _ = ensure_split(model_dir, DATA, "calib", samples, 0)
        held, _ = ensure_split(model_dir, DATA, "heldout", heldout, 0)
        return (["--calibration", calib, "--check-inputs", held],
                f"bench samples ({samples} calibration, {heldout} held-out)")
    except Exception as e:  # the generator cannot draw these inputs: fall back, and say why
        why = f"{type(e).__name__}: {e}"
    sets = glob.glob(os.path.join(model_dir, "test_data_set_*"))
    if sets:
        return (["--calibration", model_dir],
                f"its own test_data_set_* ({len(sets)}; bench generator: {why})")
    return (["--synthetic", "16"], f"--synthetic 16 (no test data; bench generator: {why})")


def worst_output(outputs):
    """The failed output with the lowest SQNR, else the output with the lowest SQNR."""
    def sqnr(o):
        s = o.get("sqnr_db")
        return math.inf if s is None else s
    failed = [o for o in outputs if not o.get("passed", True)]
    pool = failed or outputs
    return min(pool, key=sqnr) if pool else None


def one(kiln, model, profile, data_args):
    out_dir = os.path.join(OUT, model, profile)
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [kiln, "compile", os.path.join(ROOT, "models", model, "model.onnx"),
           "--profile", profile, "-o", out_dir, *data_args]
    m = run_measured(cmd)
    res = {"model": model, "profile": profile, "command": cmd, "exit": m.returncode,
           "wall_s": round(m.wall_s, 3), "peak_rss_mib": round(m.peak_rss_mib, 1)}
    report_path = os.path.join(out_dir, "report.json")
    if not os.path.exists(report_path):
        res["error"] = (m.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return res
    with open(report_path) as f:
        report = json.load(f)
    v = report.get("validation")
    if not v:
        res["error"] = "report has no validation"
        return res
    res["validated"] = v.get("validated")
    res["passed"] = bool(v.get("passed"))
    w = worst_output(v.get("outputs", []))
    if w:
        res["worst"] = {k: w.get(k) for k in ("name", "sqnr_db", "cosine", "top1", "max_abs",
                                              "failures")}
    return res


def fmt_sqnr(s):
    if s is None:
        return "–"
    return "inf dB" if (isinstance(s, float) and math.isinf(s)) or s == "inf" else f"{s:.1f} dB"


def cell(r):
    if "error" in r:
        return f"exit {r['exit']}: {r['error'][:160]}"
    w = r.get("worst")
    if not w:
        return f"exit {r['exit']}, no outputs ({'pass' if r['passed'] else 'fail'})"
    cos = "–" if w["cosine"] is None else f"{w['cosine']:.4f}"
    top1 = "–" if w["top1"] is None else f"{w['top1']:.2f}"
    verdict = "pass" if r["passed"] else "FAIL"
    if not r["passed"] and w.get("failures"):
        verdict += ": " + "; ".join(str(f) for f in w["failures"])[:80]
    if r["exit"] not in (0, 1):
        verdict += f", exit {r['exit']}"
    return f"{fmt_sqnr(w['sqnr_db'])} / {cos} / {top1} ({verdict})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--only", help="comma-separated model folders (default: all of models/)")
    ap.add_argument("--profiles", help="comma-separated profiles (default: kiln profile list)")
    ap.add_argument("--samples", type=int, default=256, help="bench calibration samples")
    ap.add_argument("--heldout", type=int, default=32, help="bench held-out samples")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "out", "compile_matrix.json"))
    args = ap.parse_args()
    kiln = os.path.abspath(args.kiln)
    names = models(args.only)
    profs = args.profiles.split(",") if args.profiles else profiles(kiln)
    results, data = [], {}
    for name in names:
        data_args, data[name] = data_for(name, args.samples, args.heldout)
        for prof in profs:
            r = one(kiln, name, prof, data_args)
            r["data"] = data[name]
            results.append(r)
            print(f"{name} / {prof}: {cell(r)}  [{r['wall_s']:.1f} s]", file=sys.stderr,
                  flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"kiln": kiln, "profiles": profs, "data": data, "runs": results}, f,
                  indent=1, default=str)
    by = {(r["model"], r["profile"]): r for r in results}
    print("| model | " + " | ".join(profs) + " |")
    print("|---|" + "---|" * len(profs))
    for name in names:
        print(f"| {name} | " + " | ".join(cell(by[name, p]) for p in profs) + " |")
    print("\nWall time (s) per compile, validation included:\n")
    print("| model | " + " | ".join(profs) + " |")
    print("|---|" + "---|" * len(profs))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{by[name, p]['wall_s']:.1f}" for p in profs) + " |")
    print("\nData per row:")
    for name in names:
        print(f"- {name}: {data[name]}")
    sys.exit(0 if all(r.get("passed") and "error" not in r for r in results) else 1)


if __name__ == "__main__":
    main()
