#!/usr/bin/env python3
"""Accuracy-aware weight-only int4: `kiln quantize --weight-only int4 --weight-method gptq|awq`
(GPTQ, with act-order, with the clip search; AWQ, and AWQ's scales then GPTQ) against Kiln's
RTN and against ONNX Runtime's own tool, `onnxruntime.quantization.matmul_nbits_quantizer`,
with its RTN (the default algorithm) and its GPTQ (`GPTQWeightOnlyQuantConfig`, Intel Neural
Compressor's implementation vendored in ORT), at the same block size, on the same calibration
data.

Calibration data: 32 samples of 32 seeded random tokens (ids uniform below the vocabulary size,
position ids 0..31, an all-ones mask, an empty KV cache for llama_tiny), written as stacked
`.npy` files under bench/out/gptq/<model>/calibration (what `kiln --calibration` reads; ORT's
GPTQ gets the same arrays through a CalibrationDataReader). Accuracy: SQNR of the first output
(llama_tiny's logits, the encoders' last hidden state) against the float model, in ORT on CPU
(default session options), over 8 held-out samples from another seed.

Every quantization is one process, timed wall-clock with its peak RSS (bench/measure.py); ORT's
includes its Python imports, Kiln's its load, optimize, calibration and save. Both write the
MatMulNBits form. ORT's tool quantizes MatMul weights only, so Gemm weights (bert's pooler) are
excluded from Kiln's runs here (`--exclude-nodes`), and gpt2_tiny (all Gemm) is used as
gpt2_tiny_matmul, its Gemms rewritten as MatMul + Add (bench/weight_only_vs_ort.py).

    cargo build --release -p kiln
    python3 bench/gptq.py                      # llama_tiny, gpt2_tiny_matmul, bert_tiny_op17
    python3 bench/gptq.py --models llama_tiny --blocks 32
    python3 bench/gptq.py --models mlp_large --blocks 32   # 8 × [2048, 2048]: time and memory

mlp_large (bench/weight_only_vs_ort.py's seeded MatMul + Gelu stack, 128 MiB of weights, inputs
[4, 2048] N(0, 1): 128 calibration rows for K = 2048, so its Hessians are far from full rank and
lean on the dampening) is where GPTQ's K³ and K²N costs show.

Markdown on stdout.
"""

import argparse
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import run_measured  # noqa: E402
from weight_only_vs_ort import gemm_to_matmul, gemm_weights, mlp_large, table_rows  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "gptq")
MODELS = ["llama_tiny", "gpt2_tiny_matmul", "bert_tiny_op17"]
# Kiln's runs: (method, extra flags), in table order; file-name suffix of each flag set.
KILN_RUNS = [("rtn", []), ("gptq", []), ("gptq", ["--gptq-act-order"]), ("gptq", ["--gptq-clip"]),
             ("awq", []), ("awq", ["--awq-gptq"])]
SUFFIX = {(): "", ("--gptq-act-order",): "_ao", ("--gptq-clip",): "_clip", ("--awq-gptq",): "_gptq"}
TIMED = [("rtn", []), ("gptq", []), ("awq", []), ("awq", ["--awq-gptq"])]
TOKENS, CALIBRATION, HELD_OUT = 32, 32, 8


def vocab(model_path):
    """Rows of the table input_ids index: the Gather reading it directly, else (ids reshaped
    first, as in gpt2_tiny) the largest constant table any Gather reads."""
    rows = table_rows(model_path, "input_ids")
    if rows:
        return rows
    g = onnx.load(model_path).graph
    inits = {t.name: t for t in g.initializer}
    return max(inits[n.input[0]].dims[0] for n in g.node if n.op_type == "Gather" and n.input[0] in inits)


def write_samples(model_path, dst, count, seed):
    """`count` samples of TOKENS seeded tokens for the model's inputs, stacked along a new first
    axis, one `<input>.npy` each."""
    os.makedirs(dst, exist_ok=True)
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    for i in sess.get_inputs():
        if i.name == "input_ids":
            v = rng.integers(0, vocab(model_path), (count, 1, TOKENS))
        elif i.name == "position_ids":
            v = np.tile(np.arange(TOKENS)[None, None], (count, 1, 1))
        elif i.name == "attention_mask":
            v = np.ones((count, 1, TOKENS))
        elif i.name == "token_type_ids":
            v = np.zeros((count, 1, TOKENS))
        elif i.name.startswith("past_key_values"):
            v = np.zeros((count, 1, i.shape[1], 0, i.shape[3]), np.float32)
        elif i.type == "tensor(float)" and all(isinstance(d, int) for d in i.shape):
            v = rng.standard_normal((count, *i.shape)).astype(np.float32)
        else:
            sys.exit(f"{model_path}: no sample generator for input {i.name}")
        if i.type == "tensor(int64)":
            v = v.astype(np.int64)
        np.save(os.path.join(dst, i.name + ".npy"), v)


def read_samples(src):
    cols = {os.path.basename(f)[:-4]: np.load(f) for f in glob.glob(os.path.join(src, "*.npy"))}
    n = len(next(iter(cols.values())))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def ort_worker(src, dst, block, symmetric, algorithm, calibration):
    """Runs ORT's tool in this (fresh) process: what the timed subprocess executes."""
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq  # noqa: PLC0415
    from onnxruntime.quantization.quant_utils import QuantFormat  # noqa: PLC0415

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(read_samples(calibration))

        def get_next(self):
            return next(self.samples, None)

    if algorithm == "gptq":
        # block_size here is GPTQ's lazy-update batch (columns per iteration), not the group.
        config = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader())
    else:
        config = mnq.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=4,
                                                  quant_format=QuantFormat.QOperator)
    q = mnq.MatMulNBitsQuantizer(onnx.load(src), bits=4, block_size=block, is_symmetric=symmetric,
                                 algo_config=config)
    q.process()
    q.model.save_model_to_file(dst, use_external_data_format=False)


def first_output(model_path, data):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = sess.get_outputs()[0].name
    return np.concatenate([np.asarray(sess.run([name], d)[0], np.float64).ravel() for d in data])


def decode_logits(model_path, prompts, steps, tokens=None):
    """Prefill each prompt, then `steps` decode steps feeding back the model's own KV cache;
    the tokens fed are `tokens` (teacher forcing) or, when None, this model's argmax. Returns
    (logits per step [steps + 1][samples], tokens fed)."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values")]
    per_step = [[] for _ in range(steps + 1)]
    fed = []
    for s, prompt in enumerate(prompts):
        ids = prompt["input_ids"]
        length = ids.shape[1]
        feeds = dict(prompt)
        mine = []
        for step in range(steps + 1):
            res = dict(zip(outs, sess.run(None, feeds)))
            logits = res["logits"][:, -1, :]
            per_step[step].append(logits.astype(np.float64))
            nxt = int(np.argmax(logits)) if tokens is None else tokens[s][step]
            mine.append(nxt)
            feeds = {"input_ids": np.array([[nxt]], np.int64),
                     "position_ids": np.array([[length + step]], np.int64),
                     "attention_mask": np.ones((1, length + step + 1), np.int64)}
            for p in pasts:
                feeds[p.name] = res[p.name.replace("past_key_values", "present")]
        fed.append(mine)
    return per_step, fed


def sqnr(ref, cand):
    err = float(np.sum((ref - cand) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / err)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--blocks", default="32,128")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--ort-worker", nargs=6, metavar=("SRC", "DST", "BLOCK", "SYM", "ALGO", "CAL"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_worker:
        src, dst, block, sym, algo, cal = args.ort_worker
        ort_worker(src, dst, int(block), sym == "1", algo, cal)
        return 0
    if not os.path.exists(args.kiln):
        sys.exit(f"no kiln binary at {args.kiln}: cargo build --release -p kiln (or --kiln PATH)")
    os.makedirs(OUT, exist_ok=True)
    print(f"ORT {ort.__version__}; int4, MatMulNBits form; SQNR dB of the first output vs float on "
          f"{HELD_OUT} held-out samples; {CALIBRATION} calibration samples of {TOKENS} tokens; "
          "time s / peak RSS MiB of one quantization process\n")
    print("| model | block | sym | Kiln RTN | Kiln GPTQ | Kiln GPTQ act-order | Kiln GPTQ + clip | Kiln AWQ "
          "| Kiln AWQ + GPTQ | ORT RTN | ORT GPTQ | Kiln RTN time / RSS | Kiln GPTQ time / RSS "
          "| Kiln AWQ time / RSS | Kiln AWQ + GPTQ time / RSS | ORT GPTQ time / RSS |")
    print("|" + "---|" * 16)
    failed = False
    for name in args.models.split(","):
        work = os.path.join(OUT, name)
        os.makedirs(work, exist_ok=True)
        if name == "gpt2_tiny_matmul":
            src = os.path.join(work, "model.onnx")
            gemm_to_matmul(os.path.join(ROOT, "models", "gpt2_tiny", "model.onnx"), src)
        elif name == "mlp_large":
            src, _ = mlp_large(os.path.join(ROOT, "bench", "out", "weight_only", "mlp_large"))
        else:
            src = os.path.join(ROOT, "models", name, "model.onnx")
        cal, held = os.path.join(work, "calibration"), os.path.join(work, "held_out")
        write_samples(src, cal, CALIBRATION, 1)
        write_samples(src, held, HELD_OUT, 2)
        data = read_samples(held)
        ref = first_output(src, data)
        gemms = gemm_weights(src)
        for block in [int(b) for b in args.blocks.split(",")]:
            for sym in (True, False):
                tag = f"b{block}_{'sym' if sym else 'asym'}"
                cells, times = [], []
                for method, extra in KILN_RUNS:
                    out = os.path.join(work, f"kiln_{method}{SUFFIX[tuple(extra)]}_{tag}.onnx")
                    if os.path.exists(out):
                        os.remove(out)
                    cmd = [args.kiln, "quantize", src, "-o", out, "--weight-only", "int4",
                           "--block-size", str(block), "--weight-format", "matmulnbits",
                           "--weight-method", method] + extra
                    if method != "rtn":
                        cmd += ["--calibration", cal]
                    if not sym:
                        cmd.append("--asymmetric-weights")
                    if gemms:
                        cmd += ["--exclude-nodes", ",".join(gemms)]
                    m = run_measured(cmd)
                    if m.returncode != 0:
                        failed = True
                        cells.append("fails")
                        print(f"  kiln failed on {name} {tag} {method}: {m.stderr.strip()}", file=sys.stderr)
                    else:
                        cells.append(f"{sqnr(ref, first_output(out, data)):.2f}")
                    if (method, extra) in TIMED:
                        times.append(f"{m.wall_s:.2f} / {m.peak_rss_mib:.0f}")
                for algo in ("rtn", "gptq"):
                    out = os.path.join(work, f"ort_{algo}_{tag}.onnx")
                    if os.path.exists(out):
                        os.remove(out)
                    m = run_measured([sys.executable, os.path.abspath(__file__), "--ort-worker", src, out,
                                      str(block), "1" if sym else "0", algo, cal])
                    if m.returncode != 0:
                        cells.append("fails")
                        print(f"  ORT {algo} failed on {name} {tag}: {m.stderr.strip().splitlines()[-1:]}",
                              file=sys.stderr)
                    else:
                        cells.append(f"{sqnr(ref, first_output(out, data)):.2f}")
                    if algo == "gptq":
                        times.append(f"{m.wall_s:.2f} / {m.peak_rss_mib:.0f}")
                print(f"| {name} | {block} | {'yes' if sym else 'no'} | " + " | ".join(cells + times) + " |",
                      flush=True)
    if "llama_tiny" in args.models.split(","):
        decode_table(args)
    return 1 if failed else 0


def decode_table(args):
    """Per-step logits SQNR over a prefill (the first 8 held-out tokens) and 16 decode steps
    with each model's own KV cache, teacher-forced with the float model's greedy tokens."""
    work = os.path.join(OUT, "llama_tiny")
    src = os.path.join(ROOT, "models", "llama_tiny", "model.onnx")
    prompts = []
    for d in read_samples(os.path.join(work, "held_out")):
        p = {k: (v[:, :8] if v.ndim == 2 else v) for k, v in d.items()}
        prompts.append(p)
    steps = 16
    ref, tokens = decode_logits(src, prompts, steps)
    print(f"\nllama_tiny decode: prefill of 8 tokens + {steps} steps with the KV cache fed back, "
          f"teacher-forced with the float model's greedy tokens, {len(prompts)} prompts; logits SQNR dB "
          "per step: mean (worst step)\n")
    print("| block | sym | Kiln RTN | Kiln GPTQ | Kiln GPTQ act-order | Kiln GPTQ + clip | Kiln AWQ "
          "| Kiln AWQ + GPTQ | ORT RTN | ORT GPTQ |")
    print("|" + "---|" * 10)
    for block in [int(b) for b in args.blocks.split(",")]:
        for sym in (True, False):
            tag = f"b{block}_{'sym' if sym else 'asym'}"
            cells = []
            kiln = [f"kiln_{m}{SUFFIX[tuple(e)]}_{tag}" for m, e in KILN_RUNS]
            for f in kiln + [f"ort_rtn_{tag}", f"ort_gptq_{tag}"]:
                path = os.path.join(work, f + ".onnx")
                if not os.path.exists(path):
                    cells.append("-")
                    continue
                got, _ = decode_logits(path, prompts, steps, tokens)
                per = [sqnr(np.concatenate([r.ravel() for r in a]), np.concatenate([c.ravel() for c in b]))
                       for a, b in zip(ref, got)]
                cells.append(f"{np.mean(per):.2f} ({min(per):.2f})")
            print(f"| {block} | {'yes' if sym else 'no'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
