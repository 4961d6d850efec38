#!/usr/bin/env python3
"""Scale benchmark of issue 7: int4 RTN weight-only quantization (load → quantize → save) of the
TinyLlama-1.1B-shaped decoder (models/generate_llama.py --tinyllama: 4.4 GB of float32 weights
in external data), by Kiln and by ONNX Runtime's tool, against the time it takes just to read
and write the weight bytes.

Per run, in this order (each a fresh process, timed wall-clock with its peak RSS by
bench/measure.py's run_measured):
- `cat model.onnx.data > /dev/null` (read; after the first run the file is in the page cache,
  as it is for the tools), then `cp model.onnx.data` into the output folder (write, same disk;
  cp does not fsync) — the baseline is their sum. `cp` + `sync FILE` (the write on disk, as
  Kiln's atomic save syncs) is reported beside it, not used in the target;
- `kiln quantize MODEL -o OUT --weight-only int4 --block-size 32 --weight-format matmulnbits
  --external-data` (no accuracy check: that would run ORT on the 4.4 GB float model);
- ORT's `python3 -m onnxruntime.quantization.matmul_nbits_quantizer` with its default (RTN,
  MLAS) algorithm, block 32, symmetric, MatMulNBits (QOperator) form, the CLI as shipped (it
  loads the model with its external data, quantizes, saves with external data).
With `--extras`, also (once per run, not in the targets): `kiln compile MODEL --profile
neon-int4 --no-validate` (the same int4 RTN inside the compiler, which also writes the
simulated twin, model.sim.onnx, and a manifest hashed while writing), and static int8
quantization of the MatMuls calibrated on test_data_set_0 through ONNX Runtime (the > 2 GiB
float model's session reads its weights from the data file) with the output SQNR check.
Outputs are deleted after each run. Medians over the runs are printed with the two targets:
Kiln's wall ≤ 1.5 × (cat + cp) and Kiln's peak RSS ≤ 0.35 × the float32 weight bytes (mapped
pages that stay resident count), and Kiln's figures as a share of ORT's.

    cargo build --release -p kiln
    python3 bench/llm_scale.py                 # 3 runs (~2 min once the model exists)
    python3 bench/llm_scale.py --runs 1 --skip-ort
    python3 bench/llm_scale.py --runs 1 --extras   # plus compile and static int8 (~1 min more)

The model is generated into models/large/tinyllama when missing (~40 s, 112 MiB RSS, plus the
generator's correctness check: several minutes); outputs go to models/large/bench_scale
(gitignored; the cp copy needs 4.4 GB free on that disk). Markdown on stdout.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import run_measured  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "large", "tinyllama")
OUT = os.path.join(ROOT, "models", "large", "bench_scale")
WALL_TARGET, RSS_TARGET = 1.5, 0.35


def ensure_model(model_dir):
    """Generates the TinyLlama-shaped model when it is not there yet."""
    model = os.path.join(model_dir, "model.onnx")
    if os.path.exists(model) and os.path.exists(model + ".data"):
        return model
    print(f"generating {model_dir} ...", file=sys.stderr)
    subprocess.run([sys.executable, os.path.join(ROOT, "models", "generate_llama.py"), "--tinyllama", model_dir],
                   check=True)
    return model


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def measured(name, cmd, results):
    """Runs cmd, records (wall, peak RSS), and says so on stderr; a failure is recorded too."""
    m = run_measured(cmd)
    ok = m.returncode == 0
    results.setdefault(name, []).append((m.wall_s, m.peak_rss_bytes, ok))
    status = "" if ok else f"  FAILED ({m.returncode}): {(m.stderr or m.stdout).strip()[-400:]}"
    print(f"  {name:<10} {m.wall_s:7.2f} s  {m.peak_rss_mib:8.0f} MiB{status}", file=sys.stderr)
    return m


def median(rows, i):
    vals = [r[i] for r in rows if r[2]]
    return statistics.median(vals) if vals else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=MODEL_DIR)
    ap.add_argument("--out", default=OUT, help="output folder (same disk as the model for cp)")
    ap.add_argument("--runs", type=int, default=3, choices=[1, 2, 3])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--skip-ort", action="store_true")
    ap.add_argument("--extras", action="store_true", help="also kiln compile neon-int4 and static int8")
    args = ap.parse_args()

    model = ensure_model(args.model_dir)
    data = model + ".data"
    weight_bytes = os.path.getsize(data)
    results = {}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", file=sys.stderr)
        measured("cat", ["sh", "-c", f'cat "{data}" > /dev/null'], results)
        fresh(args.out)
        copy = os.path.join(args.out, "copy.data")
        measured("cp", ["cp", data, copy], results)
        os.remove(copy)
        measured("cp+sync", ["sh", "-c", f'cp "{data}" "{copy}" && sync "{copy}"'], results)
        os.remove(copy)
        fresh(args.out)
        measured("kiln", [args.kiln, "quantize", model, "-o", os.path.join(args.out, "kiln", "model.onnx"),
                          "--weight-only", "int4", "--block-size", "32", "--weight-format", "matmulnbits",
                          "--external-data"], results)
        fresh(args.out)
        if args.extras:
            measured("compile", [args.kiln, "compile", model, "--profile", "neon-int4", "--no-validate",
                                 "-o", os.path.join(args.out, "compiled")], results)
            fresh(args.out)
            measured("static", [args.kiln, "quantize", model, "-o", os.path.join(args.out, "q8", "model.onnx"),
                                "--calibration", os.path.join(args.model_dir, "test_data_set_0"),
                                "--op-types", "MatMul", "--external-data"], results)
            fresh(args.out)
        if not args.skip_ort:
            measured("ort", [sys.executable, "-m", "onnxruntime.quantization.matmul_nbits_quantizer",
                             "--input_model", model, "--output_model", os.path.join(args.out, "model.onnx"),
                             "--block_size", "32", "--bits", "4", "--symmetric", "True"], results)
            fresh(args.out)
    shutil.rmtree(args.out, ignore_errors=True)

    gib = 2**30
    print(f"TinyLlama-shaped model: {weight_bytes / 1e9:.2f} GB of float32 weights "
          f"({weight_bytes / gib:.2f} GiB), {args.runs} run(s), medians; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| step | wall s | peak RSS MiB |")
    print("|---|---:|---:|")
    labels = {"kiln": "kiln quantize int4", "ort": "ORT matmul_nbits_quantizer",
              "compile": "kiln compile neon-int4", "static": "kiln quantize static int8 (calibrated)"}
    for name in ["cat", "cp", "cp+sync", "kiln", "ort", "compile", "static"]:
        if name in results:
            rows = results[name]
            failed = sum(1 for r in rows if not r[2])
            note = f" ({failed} of {len(rows)} failed)" if failed else ""
            print(f"| {labels.get(name, name)}{note} | {median(rows, 0):.2f} | {median(rows, 1) / 2**20:.0f} |")
    baseline = median(results["cat"], 0) + median(results["cp"], 0)
    kiln_wall, kiln_rss = median(results["kiln"], 0), median(results["kiln"], 1)
    wall_ratio, rss_ratio = kiln_wall / baseline, kiln_rss / weight_bytes
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print()
    print(f"- wall: Kiln {kiln_wall:.2f} s = {wall_ratio:.2f} × (cat + cp = {baseline:.2f} s); "
          f"target ≤ {WALL_TARGET} × : {verdict(wall_ratio <= WALL_TARGET)} "
          f"(against cat + cp + sync: {kiln_wall / (median(results['cat'], 0) + median(results['cp+sync'], 0)):.2f} ×)")
    print(f"- peak RSS: Kiln {kiln_rss / 2**20:.0f} MiB = {rss_ratio:.3f} × the float32 weights "
          f"({weight_bytes / 2**20:.0f} MiB); target ≤ {RSS_TARGET} × : {verdict(rss_ratio <= RSS_TARGET)}")
    if "ort" in results:
        ort_wall, ort_rss = median(results["ort"], 0), median(results["ort"], 1)
        print(f"- ORT's matmul_nbits_quantizer: {ort_wall:.2f} s, {ort_rss / 2**20:.0f} MiB; "
              f"Kiln takes {kiln_wall / ort_wall:.2f} × its time and {kiln_rss / ort_rss:.2f} × its memory")


if __name__ == "__main__":
    main()
