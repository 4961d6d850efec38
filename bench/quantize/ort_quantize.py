#!/usr/bin/env python3
"""One ONNX Runtime static quantization, as its users run it; the bench measures this process.

    python3 bench/quantize/ort_quantize.py MODEL -o OUT --calibration DATA --method minmax|entropy
        [--no-opset-upgrade] [--no-preprocess] [--allow-torch] [--entropy-bins N] [--info INFO.json]

A model below opset 13 is first converted to opset 13 with `onnx.version_converter`: per-channel
DequantizeLinear needs the `axis` attribute of opset 13, and `quantize_static` writes it whatever
the opset (it upgrades only opset < 10, to 11), so on opset 9-12 its output does not load
(--no-opset-upgrade shows that). Then `quant_pre_process` (symbolic + ONNX shape inference and ORT's basic graph optimizations,
as ORT's docs recommend). Where it raises, it is tried again without symbolic shape inference
(the switch ORT's docs point to when that part fails), and if that raises too the raw model is
quantized; INFO says which. Then `quantize_static`: QDQ format, per-channel weights, QUInt8 activations, QInt8 weights,
every other option at ORT's default (so weights symmetric, activations asymmetric, no reduce
range). Entropy keeps ORT's default histogram too (128 bins searched for 128 quantized bins:
as every sample is histogrammed in one call, the KL search has one candidate, the full range
clipped to the observed min/max, so it equals MinMax). `quantize_static` has no option for the
bin count; --entropy-bins N passes `num_bins` to the calibrator by wrapping the module's
`create_calibrator`, for a real KL search (slow: pure Python per tensor). DATA is a folder of `test_data_set_*` folders of
`input_K.pb` TensorProtos named after the model inputs, read one sample at a time. INFO gets the
time of each step inside this process, so the import cost of Python + onnxruntime can be told
apart from the work.

`onnxruntime.tools` (which the pre-processor imports) imports torch whenever torch is installed,
for a helper quantization never uses: about 600 MiB of RSS and 1.5 s. Unless --allow-torch is
given, torch is hidden (`sys.modules["torch"] = None`, which makes `find_spec` say it is absent),
so ORT is measured as it runs where torch is not installed, its leanest.

Kept free of bench/ imports, so it starts as lean as a user's script would.
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time
import traceback

T_START = time.perf_counter()
if "--allow-torch" not in sys.argv:
    sys.modules["torch"] = None

import onnx  # noqa: E402
import onnx.version_converter  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
import onnxruntime.quantization.quantize  # noqa: E402  (the module; the package's `quantize` is a function)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}


class FolderReader(CalibrationDataReader):
    """Feeds the `test_data_set_*` folders of DATA one at a time, in numeric order."""

    def __init__(self, folder):
        self.sets = sorted(glob.glob(os.path.join(folder, "test_data_set_*")),
                           key=lambda p: int(p.rsplit("_", 1)[1]))
        if not self.sets:
            raise SystemExit(f"{folder}: no test_data_set_* folders")
        self.next_index = 0

    def get_next(self):
        if self.next_index >= len(self.sets):
            return None
        folder = self.sets[self.next_index]
        self.next_index += 1
        feed = {}
        for path in glob.glob(os.path.join(folder, "input_*.pb")):
            t = onnx.TensorProto()
            with open(path, "rb") as f:
                t.ParseFromString(f.read())
            feed[t.name] = numpy_helper.to_array(t)
        return feed

    def __len__(self):
        return len(self.sets)


def use_entropy_bins(num_bins):
    """Makes quantize_static's Entropy calibrator histogram into num_bins bins."""
    module = sys.modules["onnxruntime.quantization.quantize"]
    create = module.create_calibrator

    def with_bins(*args, **kwargs):
        extra = dict(kwargs.get("extra_options") or {})
        extra["num_bins"] = num_bins
        kwargs["extra_options"] = extra
        return create(*args, **kwargs)

    module.create_calibrator = with_bins


PER_CHANNEL_OPSET = 13


def upgrade_opset(path, tmp, info):
    """path, or a copy converted to opset 13 in tmp when its default-domain opset is lower."""
    model = onnx.load(path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= PER_CHANNEL_OPSET:
        return path
    try:
        model = onnx.version_converter.convert_version(model, PER_CHANNEL_OPSET)
    except Exception as e:  # noqa: BLE001 - ORT then gets the model as it is
        info["opset_upgrade"] = f"failed from {opset}: {type(e).__name__}: {e}".splitlines()[0][:300]
        return path
    out = os.path.join(tmp, "opset13.onnx")
    onnx.save(model, out)
    info["opset_upgrade"] = f"{opset} -> {PER_CHANNEL_OPSET}"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--method", choices=sorted(METHODS), required=True)
    ap.add_argument("--no-opset-upgrade", action="store_true")
    ap.add_argument("--no-preprocess", action="store_true")
    ap.add_argument("--allow-torch", action="store_true")
    ap.add_argument("--entropy-bins", type=int)
    ap.add_argument("--info")
    args = ap.parse_args()
    if args.entropy_bins:
        use_entropy_bins(args.entropy_bins)

    info = {"import_s": time.perf_counter() - T_START, "preprocess": "skipped"}
    for name in ("model", "output", "calibration", "info"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    source = args.model
    with tempfile.TemporaryDirectory(prefix="ort_quantize_") as tmp:
        # The pre-processor leaves files in the working directory (sym_shape_infer_temp.onnx,
        # <uuid>.data external weights): keep them in tmp.
        os.chdir(tmp)
        if not args.no_opset_upgrade:
            t0 = time.perf_counter()
            source = upgrade_opset(source, tmp, info)
            info["opset_upgrade_s"] = time.perf_counter() - t0
        if not args.no_preprocess:
            t0 = time.perf_counter()
            pre = os.path.join(tmp, "preprocessed.onnx")
            info["preprocess"] = "failed"
            for mode, kwargs in (("ok", {}), ("ok without symbolic shapes",
                                              {"skip_symbolic_shape": True})):
                try:
                    quant_pre_process(source, pre, **kwargs)
                except Exception as e:  # noqa: BLE001 - any failure: the next fallback
                    first = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    info.setdefault("preprocess_errors", []).append(first)
                    print(f"quant_pre_process{kwargs or ''} failed: {first}", file=sys.stderr)
                    continue
                source, info["preprocess"] = pre, mode
                break
            info["preprocess_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            quantize_static(
                source,
                args.output,
                FolderReader(args.calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=METHODS[args.method],
            )
        except Exception as e:  # noqa: BLE001 - reported to the bench, which goes on
            info["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            traceback.print_exc()
        info["quantize_s"] = time.perf_counter() - t0
    info["total_s"] = time.perf_counter() - T_START
    if args.info:
        with open(args.info, "w") as f:
            json.dump(info, f, indent=1)
    sys.exit(1 if "error" in info else 0)


if __name__ == "__main__":
    main()
