#!/usr/bin/env python3
"""`kiln quantize` against ONNX Runtime's `quantize_static`: accuracy, wall time, peak RSS.

For each model of models/ (by default those ORT's quantizer takes, see LEFT_OUT), on the same
seeded calibration data (bench/quantize/calibration.py; 256 samples at batch 1 by default):

- ORT: `quant_pre_process`, then `quantize_static` (QDQ, per-channel, QUInt8 activations, QInt8
  weights) with MinMax and with Entropy calibration, in a fresh Python process
  (bench/quantize/ort_quantize.py);
- Kiln: `kiln quantize MODEL -o OUT --calibration DATA --method M --activations uint8
  --weights int8 --per-channel`, with its default LayerNorm/Softmax fp16 pinning and with
  --no-pin; on models with LayerNormalization/Softmax also with them quantized to uint8.

Each run is one process, timed wall-clock (start to exit: imports and pre-processing included,
since Kiln optimizes inside `kiln quantize`) with its peak RSS from GNU time. Accuracy is the
output SQNR against the float model on held-out inputs (a disjoint seeded set, 32 samples by
default), in ONNX Runtime on CPU: 10·log10(Σ ref² / Σ (ref − q)²) over all outputs' elements.
Then a memory-flatness run (peak RSS at 64 vs 1024 samples on one model, both tools).

Markdown on stdout, JSON in bench/out/quantize_vs_ort.json, models and data under
bench/out/quantize/ (gitignored). Exit status 1 if a Kiln run failed (ORT's own failures are
findings, reported; the targets are reported, not enforced). See bench/README.md.

    cargo build --release -p kiln
    python3 bench/quantize_vs_ort.py                      # everything (ORT side ~2.5 min)
    python3 bench/quantize_vs_ort.py --skip-kiln          # the ORT side only
    python3 bench/quantize_vs_ort.py --skip-ort           # Kiln only, ORT from the last JSON
    python3 bench/quantize_vs_ort.py --models bert_tiny_op17 --methods minmax --samples 64
"""

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time

import numpy as np
import onnx
import onnxruntime

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantize import kiln as kiln_side  # noqa: E402
from quantize import report  # noqa: E402
from quantize.calibration import GENERATOR_VERSION, ensure_split, read_split  # noqa: E402
from measure import GNU_TIME, run_measured  # noqa: E402
from quantize.sqnr import model_sqnr, run_outputs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
WORK = os.path.join(OUT, "quantize")
JSON_PATH = os.path.join(OUT, "quantize_vs_ort.json")
ORT_WORKER = os.path.join(ROOT, "bench", "quantize", "ort_quantize.py")

DEFAULT_MODELS = ("tiny_cnn", "constant_weights", "tf2onnx_names", "external_mlp", "resnet_tiny",
                  "mobilenetv2_tiny", "bert_tiny_op17", "gpt2_tiny", "legacy_opset9")
LEFT_OUT = {
    "control_flow": "its float work (Mul/Sub/Add) is inside If/Loop branches, which ORT's "
                    "quantize_static does not enter: it writes the model back with no Q/DQ at "
                    "all, so there is nothing to compare",
    "bert_tiny_op14": "same weights and outputs as bert_tiny_op17 (LayerNorm decomposed); "
                      "can be added with --models",
    "bert_tiny_dynamo": "same weights and outputs as bert_tiny_op17; can be added with --models",
    "bert_tiny_dynamo_op20": "same weights and outputs as bert_tiny_op17; "
                             "can be added with --models",
    "bert_tiny_qdq": "already quantized",
    "bert_tiny_qdq_bad": "already quantized",
}
# The import of everything the ORT worker imports, alone: ORT's fixed cost in each run.
ORT_BASELINE = ("import onnx, onnxruntime.quantization\n"
                "from onnxruntime.quantization.shape_inference import quant_pre_process\n"
                "from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference\n")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated model folders of models/ "
                    f"(default: {','.join(DEFAULT_MODELS)})")
    ap.add_argument("--samples", type=int, default=256, help="calibration samples (256)")
    ap.add_argument("--heldout", type=int, default=32, help="held-out samples for SQNR (32)")
    ap.add_argument("--methods", default="minmax,entropy", help="minmax,entropy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kiln", help="kiln binary (default target/release/kiln)")
    ap.add_argument("--skip-ort", action="store_true",
                    help="do not run ORT; reuse its results from the last JSON where the "
                         "settings match")
    ap.add_argument("--skip-kiln", action="store_true", help="run the ORT side only")
    ap.add_argument("--variants", default=",".join(kiln_side.VARIANTS),
                    help="Kiln variants: pinned (default pinning), nopin (--no-pin), q8norm "
                         "(LayerNorm/Softmax quantized; only on models that have them)")
    ap.add_argument("--q8norm-op-types", default=kiln_side.Q8NORM_OP_TYPES,
                    help="--op-types of the q8norm variant")
    ap.add_argument("--allow-torch", action="store_true",
                    help="let ORT's pre-processor import torch as it does when torch is "
                         "installed (+~600 MiB, +1.5 s per run); hidden by default")
    ap.add_argument("--ort-entropy-bins", type=int,
                    help="histogram bins of ORT's Entropy calibrator (ORT's default 128 makes "
                         "it equal MinMax; e.g. 2048 for a real KL search, slow)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per measurement: the fastest wall time and the largest RSS count")
    ap.add_argument("--flat-model", default="mobilenetv2_tiny")
    ap.add_argument("--flat-samples", default="64,1024")
    ap.add_argument("--flat-methods", default="minmax,entropy")
    ap.add_argument("--no-flat", action="store_true", help="skip the memory-flatness run")
    ap.add_argument("--no-ort-opset-upgrade", action="store_true",
                    help="give ORT models below opset 13 as they are (its per-channel output "
                         "then does not load); by default they are converted to 13 first")
    ap.add_argument("--ort-max-gib", type=float, default=6.0,
                    help="skip an ORT flatness run whose RSS, extrapolated linearly from the "
                         "smallest count, would exceed this (ORT keeps every sample's "
                         "intermediate tensors)")
    args = ap.parse_args()
    args.models = args.models.split(",") if args.models else list(DEFAULT_MODELS)
    args.methods = args.methods.split(",")
    args.variants = args.variants.split(",")
    args.flat_samples = sorted(int(n) for n in args.flat_samples.split(","))
    args.flat_methods = args.flat_methods.split(",")
    for m in args.methods + args.flat_methods:
        if m not in ("minmax", "entropy"):
            ap.error(f"{m} is not minmax or entropy (the two methods both tools have)")
    for v in args.variants:
        if v not in kiln_side.VARIANTS:
            ap.error(f"--variants: {v} is not one of {','.join(kiln_side.VARIANTS)}")
    for m in args.models + ([] if args.no_flat else [args.flat_model]):
        if not os.path.isfile(os.path.join(ROOT, "models", m, "model.onnx")):
            ap.error(f"no models/{m}/model.onnx")
    return args


def work_copy(model):
    """A copy of the model folder (model + external data, no test data) both tools read, so
    neither writes next to the committed files (ORT's shape inference saves beside its input)."""
    src = os.path.join(ROOT, "models", model)
    dst = os.path.join(WORK, "models", model, "float")
    os.makedirs(dst, exist_ok=True)
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if os.path.isfile(path):
            shutil.copy2(path, os.path.join(dst, entry))
    return os.path.join(dst, "model.onnx")


def op_types(path):
    m = onnx.load(path, load_external_data=False)
    return {n.op_type for n in m.graph.node}


def qdq_counts(path):
    """Q/DQ/Cast node counts of an output model (what each tool inserted)."""
    m = onnx.load(path, load_external_data=False)
    ops = [n.op_type for n in m.graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "DequantizeLinear", "Cast")}


def measure(cmd, repeat):
    """Runs cmd `repeat` times: (last Measured, fastest wall, largest RSS MiB)."""
    walls, rss, last = [], [], None
    for _ in range(repeat):
        last = run_measured(cmd)
        if last.returncode != 0:
            break
        walls.append(last.wall_s)
        rss.append(last.peak_rss_mib)
    return last, (min(walls) if walls else None), (max(rss) if rss else None)


def tail(text, n=3):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:500]


def finish_run(run, out_path, heldout, reference):
    """Adds the output model's SQNR and Q/DQ counts to a run that produced it."""
    if not run["ok"]:
        return run
    try:
        run["qdq"] = qdq_counts(out_path)
        run["sqnr_db"] = model_sqnr(out_path, heldout, reference)
    except Exception as e:  # noqa: BLE001 - the output does not load or run: a failed run
        run["ok"] = False
        run["error"] = f"output does not run in ONNX Runtime: {type(e).__name__}: {e}"[:500]
    return run


def ort_run(args, model, model_path, calib, method, samples, purpose, heldout, reference):
    d = os.path.join(WORK, "models", model)
    out = os.path.join(d, f"ort_{method}_{samples}.onnx")
    info_path = os.path.join(d, f"ort_{method}_{samples}.info.json")
    for p in (out, info_path):
        if os.path.exists(p):
            os.remove(p)
    cmd = [sys.executable, ORT_WORKER, model_path, "-o", out, "--calibration", calib,
           "--method", method, "--info", info_path]
    if args.allow_torch:
        cmd.append("--allow-torch")
    if args.no_ort_opset_upgrade:
        cmd.append("--no-opset-upgrade")
    if args.ort_entropy_bins and method == "entropy":
        cmd += ["--entropy-bins", str(args.ort_entropy_bins)]
    m, wall, rss = measure(cmd, args.repeat)
    run = {"tool": "ort", "model": model, "method": method, "samples": samples,
           "purpose": purpose, "ok": m.returncode == 0 and os.path.exists(out),
           "wall_s": wall, "peak_rss_mib": rss, "output": os.path.relpath(out, ROOT)}
    if os.path.exists(info_path):
        with open(info_path) as f:
            run["info"] = json.load(f)
    if not run["ok"]:
        run["error"] = (run.get("info", {}).get("error")
                        or f"exit {m.returncode}: {tail(m.stderr)}")
    return finish_run(run, out, heldout, reference) if heldout is not None else run


def kiln_run(args, kiln, model, model_path, calib, method, variant, samples, purpose, heldout,
             reference):
    d = os.path.join(WORK, "models", model)
    out = os.path.join(d, f"kiln_{method}_{variant}_{samples}.onnx")
    rep = os.path.join(d, f"kiln_{method}_{variant}_{samples}.report.json")
    for p in (out, rep):
        if os.path.exists(p):
            os.remove(p)
    cmd = kiln_side.command(kiln, model_path, out, calib, method, variant, rep,
                            args.q8norm_op_types)
    m, wall, rss = measure(cmd, args.repeat)
    run = {"tool": "kiln", "variant": variant, "model": model, "method": method,
           "samples": samples, "purpose": purpose, "ok": m.returncode == 0 and os.path.exists(out),
           "wall_s": wall, "peak_rss_mib": rss, "output": os.path.relpath(out, ROOT),
           "report": os.path.relpath(rep, ROOT), "command": " ".join(cmd[1:])}
    if not run["ok"]:
        run["error"] = f"exit {m.returncode}: {tail(m.stderr)}"
    return finish_run(run, out, heldout, reference) if heldout is not None else run


def describe(run):
    if not run["ok"]:
        return f"FAILED: {run.get('error')}"
    s = f"{run['wall_s']:.2f} s, {run['peak_rss_mib']:.0f} MiB"
    if run.get("sqnr_db") is not None:
        s += f", SQNR {run['sqnr_db']:.2f} dB"
    pre = run.get("info", {}).get("preprocess")
    if pre and pre != "ok":
        s += f" (pre-process: {pre})"
    return s


def ort_notes(runs, models):
    """One line per model where ORT needed an opset upgrade or a pre-process fallback."""
    seen = {}
    for r in runs:
        info = r.get("info") or {}
        if r["tool"] != "ort" or r["model"] in seen or r["model"] not in models:
            continue
        parts = []
        if info.get("opset_upgrade"):
            parts.append(f"opset {info['opset_upgrade']} (onnx.version_converter)")
        if info.get("preprocess") not in (None, "ok"):
            parts.append(f"quant_pre_process {info['preprocess']} (it raised: "
                         f"{'; '.join(info.get('preprocess_errors', []))})")
        if parts:
            seen[r["model"]] = f"- {r['model']}: " + "; ".join(parts)
    return list(seen.values())


# The settings an ORT result depends on: --skip-ort reuses results only where these match.
ORT_SETTINGS = ("samples", "heldout", "seed", "generator_version", "allow_torch",
                "ort_entropy_bins", "ort_opset_upgrade")


def cached_ort_runs(settings):
    """ORT runs and baseline of the last JSON made with the same ORT settings (--skip-ort); all
    of them go to the new JSON again, so a run on fewer models keeps the others' results."""
    if not os.path.exists(JSON_PATH):
        return [], None
    with open(JSON_PATH) as f:
        old = json.load(f)
    same = all(old.get("settings", {}).get(k) == settings[k] for k in ORT_SETTINGS)
    if not same:
        log("--skip-ort: the last JSON was made with other settings; no ORT numbers")
        return [], None
    runs = [dict(r, cached=True) for r in old.get("runs", []) if r["tool"] == "ort"]
    return runs, old.get("meta", {}).get("ort_baseline")


def ort_baseline(allow_torch):
    hide = "" if allow_torch else "import sys; sys.modules['torch'] = None\n"
    m = run_measured([sys.executable, "-c", hide + ORT_BASELINE])
    return {"wall_s": m.wall_s, "peak_rss_mib": m.peak_rss_mib, "ok": m.returncode == 0}


def flat_runs(args, kiln, base):
    """Peak RSS and wall of both tools at each --flat-samples count (no SQNR: memory only).

    base: ORT's import-only cost, to extrapolate ORT's RSS from the smallest count."""
    model = args.flat_model
    model_path = work_copy(model)
    out = []
    for method in args.flat_methods:
        for n in args.flat_samples:
            calib, _ = ensure_split(os.path.join(ROOT, "models", model),
                                    os.path.join(WORK, "data"), "calib", n, args.seed)
            if not args.skip_ort:
                out.append(flat_ort_run(args, model, model_path, calib, method, n, base, out))
            if kiln:
                r = kiln_run(args, kiln, model, model_path, calib, method, "pinned", n, "flat",
                             None, None)
                log(f"[flat kiln ] {model} {method} {n} samples: {describe(r)}")
                out.append(r)
    return out


def flat_ort_run(args, model, model_path, calib, method, n, base, done):
    """ORT at n samples, unless its RSS extrapolated from the smallest count is over the cap."""
    first = report.find(done, tool="ort", method=method, samples=args.flat_samples[0])
    if first and first.get("ok") and base and n > first["samples"]:
        per_sample = max(first["peak_rss_mib"] - base["peak_rss_mib"], 0) / first["samples"]
        estimate = base["peak_rss_mib"] + per_sample * n
        if estimate > args.ort_max_gib * 1024:
            r = {"tool": "ort", "model": model, "method": method, "samples": n,
                 "purpose": "flat", "ok": False,
                 "skipped": f"not run: would need ~{estimate / 1024:.1f} GiB by linear "
                            f"extrapolation (> --ort-max-gib {args.ort_max_gib})"}
            log(f"[flat ort  ] {model} {method} {n} samples: {r['skipped']}")
            return r
    r = ort_run(args, model, model_path, calib, method, n, "flat", None, None)
    log(f"[flat ort  ] {model} {method} {n} samples: {describe(r)}")
    return r


def finite_or_none(x):
    """JSON has no inf/nan: such SQNRs (exact or broken outputs) become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite_or_none(v) for v in x]
    return x


def main():
    args = parse_args()
    kiln = None
    if not args.skip_kiln:
        kiln = os.path.abspath(args.kiln) if args.kiln else kiln_side.default_binary(ROOT)
        try:
            kiln_side.check_quantize(kiln)
        except kiln_side.KilnUnavailable as e:
            sys.exit(f"error: {e}")
    if args.skip_ort and args.skip_kiln:
        sys.exit("error: --skip-ort and --skip-kiln leave nothing to run")
    os.makedirs(WORK, exist_ok=True)
    settings = {"samples": args.samples, "heldout": args.heldout, "seed": args.seed,
                "generator_version": GENERATOR_VERSION, "allow_torch": args.allow_torch,
                "ort_entropy_bins": args.ort_entropy_bins,
                "flat_model": args.flat_model, "flat_methods": args.flat_methods,
                "ort_opset_upgrade": not args.no_ort_opset_upgrade,
                "flat_samples": args.flat_samples}

    runs, baseline = cached_ort_runs(settings) if args.skip_ort else ([], None)
    if not args.skip_ort:
        baseline = ort_baseline(args.allow_torch)
        log(f"[ort base  ] python + onnxruntime.quantization imports alone: "
            f"{baseline['wall_s']:.2f} s, {baseline['peak_rss_mib']:.0f} MiB")
    left_out = {m: why for m, why in LEFT_OUT.items() if m not in args.models}

    data_root = os.path.join(WORK, "data")
    for model in args.models:
        model_dir = os.path.join(ROOT, "models", model)
        model_path = work_copy(model)
        calib, specs = ensure_split(model_dir, data_root, "calib", args.samples, args.seed)
        held_dir, _ = ensure_split(model_dir, data_root, "heldout", args.heldout, args.seed)
        heldout = list(read_split(held_dir))
        reference = run_outputs(model_path, heldout)
        has_pinnable = bool(op_types(model_path) & kiln_side.PINNABLE_OPS)
        log(f"[data      ] {model}: {args.samples} calibration + {args.heldout} held-out samples, "
            + ", ".join(f"{s.name} {s.kind} {s.shape}" for s in specs))
        for method in args.methods:
            if not args.skip_ort:
                r = ort_run(args, model, model_path, calib, method, args.samples, "main",
                            heldout, reference)
                log(f"[ort       ] {model} {method}: {describe(r)}")
                runs.append(r)
            if kiln:
                for variant in args.variants:
                    if variant == "q8norm" and not has_pinnable:
                        continue
                    r = kiln_run(args, kiln, model, model_path, calib, method, variant,
                                 args.samples, "main", heldout, reference)
                    log(f"[kiln {variant:<6}] {model} {method}: {describe(r)}")
                    runs.append(r)

    if not args.no_flat:
        runs += flat_runs(args, kiln, baseline)

    rows = report.table_rows(runs, args.models, args.methods, args.samples)
    means = report.means(rows)
    pin_rows = report.pinning_rows(runs, args.models, args.methods, args.samples)
    flat = [] if args.no_flat else [
        row for method in args.flat_methods
        for row in report.flat_rows(runs, args.flat_model, method, args.flat_samples)]

    print(f"## kiln quantize vs ONNX Runtime quantize_static\n")
    print(f"{args.samples} calibration samples (batch 1), SQNR on {args.heldout} held-out "
          f"samples; uint8 activations, int8 per-channel weights, QDQ. ORT "
          f"{onnxruntime.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs. Kiln wall/RSS: the "
          f"default (pinned) run; ratios are Kiln / ORT.\n")
    print(report.main_table(rows, means))
    if baseline:
        print(f"\nORT's fixed cost in every run (Python + onnxruntime.quantization imports, "
              f"torch {'allowed' if args.allow_torch else 'hidden'}): "
              f"{baseline['wall_s']:.2f} s, {baseline['peak_rss_mib']:.0f} MiB.")
    notes = ort_notes(runs, args.models + ([] if args.no_flat else [args.flat_model]))
    if notes:
        print("\nWhat ORT needed on the way:\n")
        print("\n".join(notes))
    if pin_rows:
        print("\n### LayerNormalization / Softmax: fp16-pinned vs uint8 (Kiln)\n")
        print(report.pinning_table(pin_rows))
    if flat:
        print(f"\n### Peak RSS as calibration samples grow ({args.flat_model})\n")
        print(report.flat_table(flat, args.flat_samples))
        for r in flat:
            for n, note in r["notes"].items():
                print(f"\n{r['tool']} at {n} samples: {note}")
    print("\n### Targets (issue 4)\n")
    print("\n".join(report.targets(rows, means, pin_rows, flat)))
    failed = [r for r in runs if not r["ok"] and not r.get("skipped") and not r.get("cached")]
    if failed:
        print("\n### Failed runs\n")
    for r in failed:
        who = "ORT" if r["tool"] == "ort" else f"Kiln {r['variant']}"
        print(f"- {who} {r['model']} {r['method']} @{r['samples']}: {r.get('error')}")
    if left_out:
        print("\nLeft out: " + "; ".join(f"{m} ({why})" for m, why in left_out.items()))
    if args.skip_ort and any(r.get("cached") for r in runs):
        print("\nORT numbers reused from the previous run (--skip-ort).")

    doc = {
        "settings": settings,
        "meta": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                 "numpy": np.__version__, "python": platform.python_version(),
                 "cpus": os.cpu_count(), "platform": platform.platform(),
                 "rss_from": "GNU time" if GNU_TIME else "/proc VmHWM sampling",
                 "kiln": kiln, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "ort_baseline": baseline, "repeat": args.repeat},
        "models": args.models, "methods": args.methods, "left_out": left_out,
        "runs": runs, "table": rows, "mean_sqnr_db": means, "pinning": pin_rows,
        "flatness": flat,
    }
    os.makedirs(OUT, exist_ok=True)
    with open(JSON_PATH, "w") as f:
        json.dump(finite_or_none(doc), f, indent=1)
    log(f"wrote {os.path.relpath(JSON_PATH, ROOT)}")
    # ORT's own failures are findings; a Kiln failure fails the bench.
    sys.exit(1 if any(r["tool"] == "kiln" for r in failed) else 0)


if __name__ == "__main__":
    main()
