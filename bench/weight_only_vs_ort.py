#!/usr/bin/env python3
"""Weight-only block-wise quantization: `kiln quantize --weight-only` against ONNX Runtime's
own tool, `onnxruntime.quantization.matmul_nbits_quantizer` (its default algorithm, which
rounds to nearest block by block: RTN).

For each model and each setting (bits, block size, symmetric or not), both tools quantize the
same float model to the MatMulNBits form; Kiln also writes its QDQ form. Each quantization is one
process, timed wall-clock with its peak RSS (bench/measure.py's run_measured; ORT's run includes
its Python imports, Kiln's its load, optimize and save). Accuracy is the output SQNR against the
float model, 10·log10(Σ ref² / Σ (ref − q)²) over every element of every float output, in ONNX
Runtime on CPU (default session options), on test_data_set_0 plus N seeded random samples of the
same shapes (token ids uniform over the embedding table). `codes equal` is the share of stored
4/8-bit integers (MatMulNBits B, weights both tools quantized) that are equal in the two models.
ORT's tool quantizes MatMul weights only; Kiln quantizes Gemm weights too (bert's pooler), so
where the model has Gemms that ORT left in float the `Kiln, ORT's weights` column is Kiln with
those Gemms excluded (`--exclude-nodes`): the like-for-like comparison.

Models: bert_tiny_op17 and llama_tiny (MatMul weights; llama_tiny's prefill sample, logits and
KV cache compared), gpt2_tiny (its weights are Gemm B: ORT's tool
quantizes MatMul only, so it leaves this model in float), gpt2_tiny_matmul, the same model
with every Gemm rewritten as MatMul + Add here, which both tools quantize, and mlp_large, a
seeded 8 × [2048, 2048] MatMul + Gelu stack (128 MiB of float32 weights, generated here) where
time and memory are more than process start-up.

    cargo build --release -p kiln
    python3 bench/weight_only_vs_ort.py                 # everything (~1 min)
    python3 bench/weight_only_vs_ort.py --models bert_tiny_op17 --random 32

Markdown on stdout, models under bench/out/weight_only/ (gitignored).
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import run_measured  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "weight_only")
MODELS = ["bert_tiny_op17", "gpt2_tiny", "gpt2_tiny_matmul", "llama_tiny", "mlp_large"]
LARGE_LAYERS, LARGE_DIM = 8, 2048
# (bits, block_size, symmetric)
SETTINGS = [(4, 32, True), (4, 32, False), (4, 128, True), (4, 128, False), (8, 32, True)]


def ort_worker(src, dst, bits, block, symmetric):
    """Runs ORT's tool in this (fresh) process: what the timed subprocess executes."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq  # noqa: PLC0415
    from onnxruntime.quantization.quant_utils import QuantFormat  # noqa: PLC0415

    config = mnq.DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=symmetric, bits=bits, quant_format=QuantFormat.QOperator
    )
    q = mnq.MatMulNBitsQuantizer(onnx.load(src), bits=bits, block_size=block, is_symmetric=symmetric,
                                 algo_config=config)
    q.process()
    q.model.save_model_to_file(dst, use_external_data_format=False)


def gemm_to_matmul(src, dst):
    """The model with every Gemm(A, B, C) (transA 0, alpha = beta = 1, constant B) written as
    MatMul(A, B') + Add(C), B' = Bᵀ when transB: the form ORT's weight-only tool quantizes."""
    m = onnx.load(src)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type != "Gemm" or n.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(n)
            continue
        b = n.input[1]
        if attrs.get("transB", 0):
            t = numpy_helper.to_array(inits[b]).T.copy()
            b = b + "_t"
            g.initializer.append(numpy_helper.from_array(t, b))
        has_c = len(n.input) > 2 and n.input[2]
        mm_out = n.output[0] + "_mm" if has_c else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], b], [mm_out], name=n.name + "_matmul"))
        if has_c:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=n.name + "_add"))
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


def mlp_large(dst_dir):
    """A seeded MatMul + Gelu stack, weights N(0, 1/dim); model.onnx + test_data_set_0."""
    model = os.path.join(dst_dir, "model.onnx")
    data = os.path.join(dst_dir, "test_data_set_0")
    if os.path.exists(model) and os.path.exists(os.path.join(data, "input_0.pb")):
        return model, data
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(1234)
    d = LARGE_DIM
    nodes, inits, x = [], [], "x"
    for i in range(LARGE_LAYERS):
        w = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"layer{i}.weight"))
        nodes.append(helper.make_node("MatMul", [x, f"layer{i}.weight"], [f"h{i}"], name=f"layer{i}"))
        x = f"h{i}"
        if i + 1 < LARGE_LAYERS:
            nodes.append(helper.make_node("Gelu", [x], [f"a{i}"], name=f"gelu{i}"))
            x = f"a{i}"
    g = helper.make_graph(nodes, "mlp_large", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, d])],
                          [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [4, d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    onnx.save(m, model)
    x = rng.standard_normal((4, d)).astype(np.float32)
    with open(os.path.join(data, "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x, "x").SerializeToString())
    return model, data


def gemm_weights(model_path):
    """Names of the Gemm nodes with a constant B (what ORT's tool leaves in float)."""
    g = onnx.load(model_path).graph
    inits = {t.name for t in g.initializer}
    return [n.name for n in g.node if n.op_type == "Gemm" and len(n.input) > 1 and n.input[1] in inits]


def read_inputs(model_path, data_dir):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds, k = {}, 0
    while os.path.exists(os.path.join(data_dir, f"input_{k}.pb")):
        t = onnx.TensorProto()
        with open(os.path.join(data_dir, f"input_{k}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        feeds[t.name or names[k]] = numpy_helper.to_array(t)
        k += 1
    return feeds


def table_rows(model_path, input_name):
    """Rows of the constant table a Gather indexes with `input_name`, if there is one."""
    g = onnx.load(model_path).graph
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == input_name and n.input[0] in inits:
            return inits[n.input[0]].dims[0]
    return None


def samples(model_path, feeds, n, seed):
    """test_data_set_0 and `n` seeded samples like it: float inputs N(0, 1); token ids uniform
    over the embedding table; masks and 0/1 inputs kept as the test sample has them."""
    rng = np.random.default_rng(seed)
    out = [feeds]
    for _ in range(n):
        s = {}
        for k, v in feeds.items():
            if np.issubdtype(v.dtype, np.floating):
                s[k] = rng.standard_normal(v.shape).astype(v.dtype)
            elif v.max() <= 1:
                s[k] = v
            else:
                rows = table_rows(model_path, k) or int(v.max()) + 1
                s[k] = rng.integers(0, rows, v.shape).astype(v.dtype)
        out.append(s)
    return out


def outputs(model_path, data):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    res = {n: [] for n in names}
    for feeds in data:
        for n, v in zip(names, sess.run(None, feeds)):
            res[n].append(np.asarray(v, dtype=np.float64).ravel())
    return {n: np.concatenate(v) for n, v in res.items()}


def sqnr(ref, cand):
    sig = sum(float(np.sum(r ** 2)) for r in ref.values())
    err = sum(float(np.sum((r - cand[n]) ** 2)) for n, r in ref.items())
    return float("inf") if err == 0 else 10 * np.log10(sig / err)


def nbits_codes(path, bits):
    """Per source weight, the unpacked integers of every MatMulNBits B, by the weight's name
    (ORT names B `<w>_Q4`, Kiln `<w>_quantized`)."""
    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type != "MatMulNBits":
            continue
        b = n.input[1]
        raw = numpy_helper.to_array(inits[b]).ravel()
        k = next(a.i for a in n.attribute if a.name == "K")
        blocks = numpy_helper.to_array(inits[b]).shape
        if bits == 4:
            codes = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(blocks[0], -1)
        else:
            codes = raw.reshape(blocks[0], -1)
        key = b
        for suffix in (f"_Q{bits}", "_quantized"):
            if key.endswith(suffix):
                key = key[: -len(suffix)]
        out[key] = codes[:, :k]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--random", type=int, default=16, help="seeded random samples besides test_data_set_0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--ort-worker", nargs=5, metavar=("SRC", "DST", "BITS", "BLOCK", "SYM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_worker:
        src, dst, bits, block, sym = args.ort_worker
        ort_worker(src, dst, int(bits), int(block), sym == "1")
        return 0
    if not os.path.exists(args.kiln):
        sys.exit(f"no kiln binary at {args.kiln}: cargo build --release -p kiln (or --kiln PATH)")
    os.makedirs(OUT, exist_ok=True)
    print(f"ORT {ort.__version__}; SQNR dB vs float over test_data_set_0 + {args.random} seeded samples; "
          "time s / peak RSS MiB of one quantization process\n")
    print("| model | bits | block | sym | ORT tool | Kiln matmulnbits | Kiln qdq | Kiln, ORT's weights | codes equal "
          "| ORT time / RSS | Kiln time / RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for name in args.models.split(","):
        if name == "gpt2_tiny_matmul":
            src = os.path.join(OUT, "gpt2_tiny_matmul.onnx")
            gemm_to_matmul(os.path.join(ROOT, "models", "gpt2_tiny", "model.onnx"), src)
            data_dir = os.path.join(ROOT, "models", "gpt2_tiny", "test_data_set_0")
        elif name == "mlp_large":
            src, data_dir = mlp_large(os.path.join(OUT, "mlp_large"))
        else:
            src = os.path.join(ROOT, "models", name, "model.onnx")
            data_dir = os.path.join(ROOT, "models", name, "test_data_set_0")
        data = samples(src, read_inputs(src, data_dir), args.random, args.seed)
        gemms = gemm_weights(src)
        ref = outputs(src, data)
        for bits, block, sym in SETTINGS:
            tag = f"{name}_int{bits}_b{block}_{'sym' if sym else 'asym'}"
            ort_out = os.path.join(OUT, tag + "_ort.onnx")
            mo = run_measured([sys.executable, os.path.abspath(__file__), "--ort-worker", src, ort_out,
                               str(bits), str(block), "1" if sym else "0"])
            cells = []
            if mo.returncode == 0:
                cells.append(f"{sqnr(ref, outputs(ort_out, data)):.2f}")
            else:
                cells.append("fails")
                print(f"  ORT failed on {tag}: {mo.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            kiln_runs = {}
            ort_quantized = mo.returncode == 0 and any(
                n.op_type == "MatMulNBits" for n in onnx.load(ort_out).graph.node)
            for form in ("matmulnbits", "qdq", "ort_weights"):
                if form == "ort_weights" and not (gemms and ort_quantized):
                    cells.append("-")
                    continue
                out = os.path.join(OUT, f"{tag}_kiln_{form}.onnx")
                cmd = [args.kiln, "quantize", src, "-o", out, "--weight-only", f"int{bits}",
                       "--block-size", str(block),
                       "--weight-format", "qdq" if form == "qdq" else "matmulnbits"]
                if not sym:
                    cmd.append("--asymmetric-weights")
                if form == "ort_weights":
                    cmd += ["--exclude-nodes", ",".join(gemms)]
                mk = run_measured(cmd)
                kiln_runs[form] = (mk, out)
                if mk.returncode != 0:
                    failed = True
                    cells.append("fails")
                    print(f"  kiln failed on {tag} {form}: {mk.stderr.strip()}", file=sys.stderr)
                else:
                    cells.append(f"{sqnr(ref, outputs(out, data)):.2f}")
            equal = "-"
            mk, kout = kiln_runs["matmulnbits"]
            if mo.returncode == 0 and mk.returncode == 0:
                a, b = nbits_codes(ort_out, bits), nbits_codes(kout, bits)
                common = [k for k in a if k in b and a[k].shape == b[k].shape]
                if common:
                    same = sum(int(np.sum(a[k] == b[k])) for k in common)
                    total = sum(a[k].size for k in common)
                    equal = f"{100 * same / total:.3f}% of {len(common)} weights"
            cells.append(equal)
            cells.append(f"{mo.wall_s:.2f} / {mo.peak_rss_mib:.0f}")
            cells.append(f"{mk.wall_s:.2f} / {mk.peak_rss_mib:.0f}")
            print(f"| {name} | {bits} | {block} | {'yes' if sym else 'no'} | " + " | ".join(cells) + " |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
