#!/usr/bin/env python3
"""`kiln optimize` on the ONNX model zoo's `light` models with real (seeded) weights.

The `light` models of the onnx test data keep their weights as ConstantOfShape placeholders;
`models/generate_real.py --light` replaces them with seeded random weights of the same shapes
(1.4 GB in all, so they are generated on demand into the gitignored models/light/, not
committed). For each model this optimizes it with the release `kiln`, runs original and
optimized in ONNX Runtime on the model's test_data_set_0 inputs, and compares every output
(rtol 1e-4, atol 1e-5, numpy allclose). Exit code 1 if any output differs.

    cargo build --release -p kiln
    python3 models/generate_real.py --light-only     # once, about 2 minutes
    python3 bench/optimize_light.py
"""

import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target", "release", "kiln")


def inputs_of(folder, session):
    """The test_data_set_0 inputs by the session's input names (in order)."""
    feeds = {}
    files = sorted(glob.glob(os.path.join(folder, "test_data_set_0", "input_*.pb")))
    for info, path in zip(session.get_inputs(), files):
        t = onnx.TensorProto()
        t.ParseFromString(open(path, "rb").read())
        feeds[info.name] = numpy_helper.to_array(t)
    return feeds


def main():
    if not os.path.exists(KILN):
        sys.exit("build first: cargo build --release -p kiln")
    models = sorted(glob.glob(os.path.join(ROOT, "models", "light", "*", "model.onnx")))
    if not models:
        sys.exit("no models/light/*: run python3 models/generate_real.py --light-only first")
    failed = 0
    print(f"{'model':<16} {'nodes':>13} {'kiln s':>7}  {'max abs diff':>12}  result")
    for path in models:
        name = os.path.basename(os.path.dirname(path))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "model.onnx")
            t0 = time.perf_counter()
            p = subprocess.run([KILN, "optimize", path, "-o", out], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                print(f"{name:<16} kiln failed: {p.stderr.strip()}")
                failed += 1
                continue
            nodes = next((l for l in p.stdout.splitlines() if l.startswith("nodes ")), "nodes ?")
            a = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            b = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
            feeds = inputs_of(os.path.dirname(path), a)
            ra, rb = a.run(None, feeds), b.run(None, feeds)
            diff = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(ra, rb))
            ok = all(np.allclose(y, x, rtol=1e-4, atol=1e-5) for x, y in zip(ra, rb))
            failed += not ok
            print(f"{name:<16} {nodes[6:]:>13} {wall:>7.2f}  {diff:>12.3g}  {'ok' if ok else 'DIFFERS'}")
    print(f"{len(models) - failed} of {len(models)} models optimized and equal in ONNX Runtime")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
