#!/usr/bin/env python3
"""Benchmark: load + save of a model with >= 1 GiB of external weights, against `cp`.

Measures, side by side in one run (alternating, warm page cache, medians of N runs):
  - `cp model.onnx weights.bin DEST/`                       (the reference throughput)
  - `kiln convert MODEL -o OUT --external-data`             (load through the graph + save)
  - `kiln inspect MODEL`                                    (load only: peak RSS on load)
and prints throughput ratio kiln/cp and peak RSS / weight bytes.

    cargo build --release -p kiln
    python3 bench/external_io.py [--gib 1.0] [--runs 5]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

import numpy as np

from measure import run_measured

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "external_io")
KILN = os.path.join(ROOT, "target", "release", "kiln")


def generate(folder, gib):
    """A chain of MatMuls whose 4096x4096 float32 weights (64 MiB each) live in weights.bin."""
    import onnx
    from onnx import TensorProto, helper

    n = max(1, round(gib * 1024 / 64))
    model_path = os.path.join(folder, "model.onnx")
    if os.path.exists(model_path):
        return model_path, n * 64 * 2**20
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    offset = 0
    with open(os.path.join(folder, "weights.bin"), "wb") as f:
        for i in range(n):
            w = rng.standard_normal((4096, 4096), dtype=np.float32) * 0.01
            f.write(w.tobytes())
            t = TensorProto(name=f"layer{i}.weight", data_type=TensorProto.FLOAT, dims=[4096, 4096])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(w.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += w.nbytes
            inits.append(t)
            nodes.append(helper.make_node("MatMul", [f"h{i}", f"layer{i}.weight"], [f"h{i+1}"]))
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 4096])],
                          [helper.make_tensor_value_info(f"h{n}", TensorProto.FLOAT, [1, 4096])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    with open(model_path, "wb") as f:
        f.write(m.SerializeToString())
    return model_path, offset


def run_with_rss(cmd):
    """Runs cmd; returns (wall seconds, peak RSS bytes of the command itself); exits on failure."""
    m = run_measured(cmd)
    if m.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {m.stderr}")
    return m.wall_s, m.peak_rss_bytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not os.path.exists(KILN):
        sys.exit("build first: cargo build --release -p kiln")
    if args.generate_only:
        generate(os.path.join(OUT, "src"), args.gib)
        return
    # Generate in a child: a forked child's ru_maxrss starts from the parent's RSS, so the
    # measuring process must stay small (numpy would otherwise count against every command).
    subprocess.run([sys.executable, __file__, "--gib", str(args.gib), "--generate-only"], check=True)
    model, weight_bytes = generate(os.path.join(OUT, "src"), args.gib)
    src = os.path.dirname(model)
    files = [os.path.join(src, f) for f in ("model.onnx", "weights.bin")]
    total = sum(os.path.getsize(f) for f in files)
    cp_dir, kiln_dir = os.path.join(OUT, "cp"), os.path.join(OUT, "kiln")
    cp_t, cp_rss, kiln_t, kiln_rss, load_rss = [], [], [], [], []
    for _ in range(args.runs):
        for d in (cp_dir, kiln_dir):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        w, r = run_with_rss(["cp", *files, cp_dir])
        cp_t.append(w)
        cp_rss.append(r)
        w, r = run_with_rss([KILN, "convert", model, "-o", os.path.join(kiln_dir, "model.onnx"),
                             "--external-data"])
        kiln_t.append(w)
        kiln_rss.append(r)
        load_rss.append(run_with_rss([KILN, "inspect", model])[1])
    cp_med, kiln_med = statistics.median(cp_t), statistics.median(kiln_t)
    print(f"weights: {weight_bytes / 2**30:.2f} GiB in {len(files)} files ({total / 2**30:.2f} GiB), {args.runs} runs, medians")
    print(f"cp:            {cp_med:.3f} s  ({total / cp_med / 2**30:.2f} GiB/s)")
    print(f"kiln convert:  {kiln_med:.3f} s  ({total / kiln_med / 2**30:.2f} GiB/s)  throughput = {cp_med / kiln_med:.0%} of cp")
    print(f"peak RSS, cp (baseline):            {statistics.median(cp_rss) / 2**20:.1f} MiB")
    print(f"peak RSS, kiln convert (load+save): {statistics.median(kiln_rss) / 2**20:.1f} MiB = {statistics.median(kiln_rss) / weight_bytes:.3f} x weight bytes")
    print(f"peak RSS, kiln inspect (load):      {statistics.median(load_rss) / 2**20:.1f} MiB = {statistics.median(load_rss) / weight_bytes:.3f} x weight bytes")


if __name__ == "__main__":
    main()
