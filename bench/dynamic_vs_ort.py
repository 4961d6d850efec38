#!/usr/bin/env python3
"""Dynamic quantization: Kiln against ONNX Runtime's own `quantize_dynamic`.

For each model in models/, runs the float model on test_data_set_0 and reports the output SQNR
(dB, worst float output) of:
  - ort            ORT quantize_dynamic on the original model, its defaults
                   (int8 weights, per tensor);
  - ort_pc         the same with per_channel=True;
  - ort_pc_opt     ORT quantize_dynamic, per_channel=True, on Kiln's optimized float model
                   (the same graph Kiln quantizes: BatchNorm folded, fusions done);
  - kiln           Kiln's quantized model (default config: int8 symmetric per-channel weights).

Kiln's models come from the integration test, which writes them when asked:

    KILN_DYNAMIC_OUT=/tmp/kiln_dynamic cargo test -p kiln-tests --test quantize_dynamic
    python3 bench/dynamic_vs_ort.py --kiln-out /tmp/kiln_dynamic

(`kiln quantize --dynamic` will write the same models once the CLI has it.)
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [
    "bert_tiny_op17",
    "gpt2_tiny",
    "external_mlp",
    "tiny_cnn",
    "resnet_tiny",
    "constant_weights",
    "mobilenetv2_tiny",
]


def read_inputs(model_path, data_dir):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = {}
    k = 0
    while os.path.exists(os.path.join(data_dir, f"input_{k}.pb")):
        t = onnx.TensorProto()
        with open(os.path.join(data_dir, f"input_{k}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        feeds[t.name or names[k]] = numpy_helper.to_array(t)
        k += 1
    return feeds


def random_samples(feeds, n, seed=0):
    """`n` seeded samples shaped like `feeds`: float inputs standard normal, integer inputs
    uniform over the values the test sample holds (token ids, masks)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = {}
        for k, v in feeds.items():
            if np.issubdtype(v.dtype, np.floating):
                s[k] = rng.standard_normal(v.shape).astype(v.dtype)
            else:
                s[k] = rng.integers(v.min(), v.max() + 1, v.shape).astype(v.dtype)
        out.append(s)
    return out


def run(model_path, samples):
    """Outputs of every sample, concatenated per output name."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = {n: [] for n in names}
    for feeds in samples:
        for n, v in zip(names, sess.run(None, feeds)):
            outs[n].append(v.ravel())
    return {n: np.concatenate(v) for n, v in outs.items()}


def worst_sqnr(ref, cand):
    """SQNR (dB) of the worst float output; inf when the outputs are identical."""
    worst = float("inf")
    for name, r in ref.items():
        if not np.issubdtype(r.dtype, np.floating):
            continue
        c = cand[name].astype(np.float64)
        r = r.astype(np.float64)
        err = np.sum((r - c) ** 2)
        s = float("inf") if err == 0 else 10 * np.log10(np.sum(r**2) / err)
        worst = min(worst, s)
    return worst


def ort_quantized(src, dst, per_channel):
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=per_channel)
        return dst
    except Exception as e:  # report, keep going
        print(f"  ORT quantize_dynamic failed on {src}: {e}", file=sys.stderr)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-out", default=os.environ.get("KILN_DYNAMIC_OUT", "/tmp/kiln_dynamic"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument(
        "--random",
        type=int,
        default=0,
        help="judge on N seeded random samples shaped like test_data_set_0 instead of on it",
    )
    args = ap.parse_args()
    what = f"{args.random} random samples" if args.random else "test_data_set_0"

    cols = ["ort", "ort_pc", "ort_pc_opt", "kiln"]
    print(f"{'model':<18}" + "".join(f"{c:>12}" for c in cols) + f"   (SQNR dB vs float, worst output, {what}; 'float' = nothing quantized)")
    sums = {c: [] for c in cols}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            mdir = os.path.join(ROOT, "models", name)
            src = os.path.join(mdir, "model.onnx")
            feeds = read_inputs(src, os.path.join(mdir, "test_data_set_0"))
            samples = random_samples(feeds, args.random) if args.random else [feeds]
            ref = run(src, samples)
            kiln_dir = os.path.join(args.kiln_out, name)
            paths = {
                "ort": ort_quantized(src, os.path.join(tmp, f"{name}_ort.onnx"), False),
                "ort_pc": ort_quantized(src, os.path.join(tmp, f"{name}_ort_pc.onnx"), True),
                "ort_pc_opt": ort_quantized(
                    os.path.join(kiln_dir, "float.onnx"), os.path.join(tmp, f"{name}_ort_pc_opt.onnx"), True
                )
                if os.path.exists(os.path.join(kiln_dir, "float.onnx"))
                else None,
                "kiln": os.path.join(kiln_dir, "model.onnx") if os.path.exists(os.path.join(kiln_dir, "model.onnx")) else None,
            }
            row = []
            for c in cols:
                p = paths[c]
                if p is None:
                    row.append(f"{'-':>12}")
                    continue
                try:
                    s = worst_sqnr(ref, run(p, samples))
                    if np.isinf(s):
                        row.append(f"{'float':>12}")
                    else:
                        sums[c].append((name, s))
                        row.append(f"{s:>12.2f}")
                except Exception as e:
                    print(f"  {c} on {name} does not run: {str(e).splitlines()[0][:160]}", file=sys.stderr)
                    row.append(f"{'fails':>12}")
            print(f"{name:<18}" + "".join(row), flush=True)
    # Means over the models every column quantized, so the columns compare like for like.
    common = set.intersection(*({n for n, _ in v} for v in sums.values()))
    means = [np.mean([s for n, s in v if n in common]) if common else float("nan") for v in sums.values()]
    print(f"{'mean (common)':<18}" + "".join(f"{m:>12.2f}" for m in means) + f"   over {len(common)} models")


if __name__ == "__main__":
    main()
