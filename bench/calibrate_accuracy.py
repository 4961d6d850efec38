#!/usr/bin/env python3
"""End-to-end accuracy of Kiln's calibration methods against ONNX Runtime's.

For each model: draw calibration samples and held-out samples (seeded), compute activation
ranges with Kiln (`cargo bench -p kiln-backends --bench calibrate -- ranges ...`) by each
method, hand each set of ranges to ONNX Runtime's own `quantize_static` (through its
calibration cache, so the QDQ model is built the same way for every set of ranges), and report
the output SQNR (dB) of the quantized model against the float model on the held-out samples.
ORT's own MinMax, Entropy and Percentile calibrations are run on the same samples for
reference. QDQ, per-channel int8 weights, uint8 asymmetric activations (ORT's CPU advice).

This isolates calibration: the quantizer is ORT's in every row, only the ranges differ.

    python3 bench/calibrate_accuracy.py [--calib 64] [--held-out 128] [models...]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["tiny_cnn", "resnet_tiny", "mobilenetv2_tiny", "bert_tiny_op17", "gpt2_tiny"]


def make_samples(model_path, count, seed):
    """`count` samples as {input: stacked array [count, *shape]}: normalised-image-like floats
    for image models, token ids < 1000 with a full mask and two token types for text ones."""
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (16 if "seq" in str(d) else 1) for d in i.shape]
        if i.type == "tensor(float)":
            x = (rng.random([count] + shape, dtype=np.float32) - 0.45) / 0.225
        elif i.name == "attention_mask":
            x = np.ones([count] + shape, dtype=np.int64)
        elif i.name == "token_type_ids":
            x = np.zeros([count] + shape, dtype=np.int64)
            x[..., shape[-1] // 2 :] = 1
        else:
            x = rng.integers(0, 1000, [count] + shape, dtype=np.int64)
        out[i.name] = x
    return out


class Reader(CalibrationDataReader):
    def __init__(self, stacked):
        self.stacked = stacked
        self.n = len(next(iter(stacked.values())))
        self.i = 0

    def get_next(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return {k: v[self.i - 1] for k, v in self.stacked.items()}


def outputs(model, stacked):
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    n = len(next(iter(stacked.values())))
    runs = [sess.run(None, {k: v[i] for k, v in stacked.items()}) for i in range(n)]
    return [np.concatenate([r[j].ravel() for r in runs]) for j in range(len(runs[0]))]


def sqnr(reference, candidate):
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((r.astype(np.float64) - c) ** 2)) for r, c in zip(reference, candidate))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def quantize(model, out, calib, method, cache=None):
    quantize_static(
        str(model),
        str(out),
        None if cache else Reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        calibration_cache_path=cache,
    )


def kiln_ranges(model, calib_npz, out):
    cmd = ["cargo", "bench", "-q", "-p", "kiln-backends", "--bench", "calibrate", "--",
           "ranges", str(model), str(calib_npz), "uint8", "false", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return json.loads(Path(out).read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--held-out", type=int, default=128)
    ap.add_argument("models", nargs="*", default=MODELS)
    args = ap.parse_args()
    subprocess.run(["cargo", "bench", "-q", "-p", "kiln-backends", "--bench", "calibrate", "--no-run"],
                   cwd=ROOT, check=True)
    print(f"output SQNR (dB) on {args.held_out} held-out samples, {args.calib} calibration samples; "
          "QDQ by ORT, per-channel int8 weights, uint8 activations")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models:
            model = ROOT / "models" / name / "model.onnx"
            calib = make_samples(model, args.calib, 1)
            held = make_samples(model, args.held_out, 2)
            npz = tmp / f"{name}.npz"
            np.savez(npz, **calib)
            reference = outputs(model, held)
            row = {"model": name}
            t = time.time()
            ranges = kiln_ranges(model, npz, tmp / f"{name}.json")
            row["kiln_s"] = time.time() - t
            for method, data in ranges.items():
                cache = tmp / f"{name}.{method}.cache.json"
                td = TensorsData(CalibrationMethod.MinMax, {
                    k: (np.array(v[0], dtype=np.float32), np.array(v[1], dtype=np.float32))
                    for k, v in data.items()})
                save_tensors_data(td, cache)
                q = tmp / f"{name}.kiln.{method}.onnx"
                quantize(model, q, calib, CalibrationMethod.MinMax, cache=cache)
                row[f"kiln {method}"] = sqnr(reference, outputs(q, held))
            for method in [CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile]:
                q = tmp / f"{name}.ort.{method.name}.onnx"
                t = time.time()
                try:
                    quantize(model, q, calib, method)
                except Exception as e:  # ORT's own calibrators fail on some models
                    print(f"{name}: ORT {method.name} failed: {str(e).splitlines()[-1]}", flush=True)
                    row[f"ort {method.name.lower()}"] = float("nan")
                    continue
                row[f"ort {method.name.lower()}_s"] = time.time() - t
                row[f"ort {method.name.lower()}"] = sqnr(reference, outputs(q, held))
            rows.append(row)
            print(json.dumps(row), flush=True)
    cols = ["ort minmax", "ort entropy", "ort percentile", "kiln minmax", "kiln entropy",
            "kiln percentile", "kiln mse"]
    print("\n| model | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    common = [r for r in rows if not any(np.isnan(r[c]) for c in cols)]
    if common:
        means = {c: np.mean([r[c] for r in common]) for c in cols}
        print(f"| mean of the {len(common)} models every calibration ran on | "
              + " | ".join(f"{means[c]:.2f}" for c in cols) + " |")
    kiln = [c for c in cols if c.startswith("kiln")]
    means = {c: np.mean([r[c] for r in rows]) for c in kiln}
    print("| mean of all models | " + " | ".join("" for c in cols if not c.startswith("kiln"))
          + " | " + " | ".join(f"{means[c]:.2f}" for c in kiln) + " |")


if __name__ == "__main__":
    sys.exit(main())
