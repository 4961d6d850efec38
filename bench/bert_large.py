#!/usr/bin/env python3
"""Benchmark: `kiln optimize` on a BERT-large-shaped model against ONNX Runtime's session creation.

The model is transformers' BertModel with BERT-large sizes (hidden 1024, 24 layers, 16 heads,
intermediate 4096, vocab 30522, 512 positions; 335M parameters, 1.34 GB of float32 weights),
seeded random weights, exported with the TorchScript exporter (`dynamo=False`, opset 14, dynamic
batch/sequence axes, the settings of models/generate_real.py's bert_tiny_op14) and saved with its
weights in one external file. It is generated once into bench/out/bert_large/ (gitignored).

Measured side by side in one run (alternating, warm page cache, medians of N runs):
  - `kiln optimize MODEL -o OUT --external-data`   wall time and peak RSS
  - `ort.InferenceSession(MODEL)` in a fresh Python child (default graph optimization level,
    CPU provider): the time of that call alone, and the child's peak RSS
  - the same session creation for Kiln's optimized model
and, once more outside the timed runs, splits each peak RSS into anonymous memory and pages of
memory-mapped files (sampled from /proc). Then checks that both models give the same outputs in ONNX Runtime on one random input, and
prints the operator counts before/after and Kiln's per-pass table.

    cargo build --release -p kiln
    python3 bench/bert_large.py [--runs 3] [--kiln-arg=--disable --kiln-arg=dedup-constants]
"""

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
SRC_DIR = os.path.join(OUT, "bert_large")
OPT_DIR = os.path.join(OUT, "bert_large_opt")
MODEL = os.path.join(SRC_DIR, "model.onnx")
OPT_MODEL = os.path.join(OPT_DIR, "model.onnx")
KILN = os.path.join(ROOT, "target", "release", "kiln")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["last_hidden_state", "pooler_output"]
VOCAB = 30522
MAX_IR = 10  # Kiln's other tools and older runtimes want IR <= 10 (as models/generate.py)


def token_inputs(seed, batch, seq):
    """input_ids, an attention mask with padding at the end of the later rows, segment ids."""
    import numpy as np

    r = np.random.default_rng(seed)
    ids = r.integers(0, VOCAB, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    for b in range(1, batch):
        mask[b, seq - min(seq - 1, 3 * b):] = 0
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def generate():
    """Exports BERT-large to MODEL (skipped when it exists) and checks ORT against torch."""
    if os.path.exists(MODEL):
        return
    import io

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import BertConfig, BertModel

    class Wrapper(torch.nn.Module):
        """Named tensor arguments and a tuple out, as generate_real.py's HiddenStates."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids, use_cache=False, return_dict=True)
            return tuple(getattr(out, o) for o in OUTPUTS)

    t0 = time.perf_counter()
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, vocab_size=VOCAB, max_position_embeddings=512,
                     hidden_act="gelu", attn_implementation="eager")
    net = Wrapper(BertModel(cfg).eval()).eval()
    params = sum(p.numel() for p in net.parameters())
    example = token_inputs(10, 2, 16)
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUTS + ["last_hidden_state"]}
    axes["pooler_output"] = {0: "batch"}
    buf = io.BytesIO()  # 1.34 GB fits a single protobuf (< 2 GiB)
    with torch.no_grad():
        torch.onnx.export(net, tuple(torch.from_numpy(example[n]) for n in INPUTS), buf,
                          dynamo=False, dynamic_axes=axes, do_constant_folding=True,
                          input_names=INPUTS, output_names=OUTPUTS, opset_version=14)
    model = onnx.load_from_string(buf.getvalue())
    del buf
    model.ir_version = min(model.ir_version, MAX_IR)
    os.makedirs(SRC_DIR, exist_ok=True)
    tmp = MODEL + ".tmp"
    onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin")
    del model
    sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    for feed in (example, token_inputs(11, 3, 9)):
        with torch.no_grad():
            want = net(*(torch.from_numpy(feed[n]) for n in INPUTS))
        got = sess.run(None, feed)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-3, atol=1e-4)
    os.rename(tmp, MODEL)  # only a checked model counts as cached
    print(f"generated {MODEL}: {params / 1e6:.1f}M parameters, torch {torch.__version__}, "
          f"TorchScript exporter, opset 14, in {time.perf_counter() - t0:.0f} s", flush=True)


GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def run_with_rss(cmd):
    """Runs cmd; returns (wall seconds, peak RSS bytes of the command itself, its stdout).

    As bench/external_io.py: Linux carries ru_maxrss across exec, so the child's rusage seen
    from Python would be the parent's high-water mark; GNU time forks from a small process and
    reports the exact figure.
    """
    if not GNU_TIME:
        sys.exit("needs GNU time (/usr/bin/time, Debian package `time`)")
    with tempfile.NamedTemporaryFile("r") as out:
        t0 = time.perf_counter()
        p = subprocess.run([GNU_TIME, "-f", "%M", "-o", out.name, *cmd],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {p.stderr.decode()}")
        return wall, int(out.read().split()[-1]) * 1024, p.stdout.decode()


# The ORT child: import first (not timed), then only the session creation.
ORT_CHILD = """
import sys, time
import onnxruntime as ort
t0 = time.perf_counter()
if sys.argv[1] != "-":
    ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(time.perf_counter() - t0)
"""


def ort_session(path):
    """(session creation seconds, child peak RSS bytes); path "-" imports onnxruntime only."""
    _, rss, out = run_with_rss([sys.executable, "-c", ORT_CHILD, path])
    return float(out.split()[-1]), rss


def rss_breakdown(cmd):
    """Peak anonymous and file-backed RSS of cmd, sampled from /proc every millisecond.

    GNU time's figure counts pages of memory-mapped files (Kiln maps the weights), which are
    clean page cache the kernel can drop; the anonymous part is the memory really allocated.
    """
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = {"RssAnon": 0, "RssFile": 0}
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in peak:
                        peak[key] = max(peak[key], int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.001)
    return peak["RssAnon"], peak["RssFile"]


def kiln_cmd(extra):
    return [KILN, "optimize", MODEL, "-o", OPT_MODEL, "--external-data", *extra]


def kiln_optimize(extra):
    # A fresh output each time: renaming over an old 1.25 GiB file would add its deletion.
    shutil.rmtree(OPT_DIR, ignore_errors=True)
    return run_with_rss(kiln_cmd(extra))


def op_counts(path):
    import onnx

    m = onnx.load(path, load_external_data=False)
    return collections.Counter(n.op_type for n in m.graph.node), m


def check():
    """Prints op counts before/after and the max abs difference between the two models in ORT."""
    import numpy as np
    import onnxruntime as ort

    (before, m0), (after, m1) = op_counts(MODEL), op_counts(OPT_MODEL)
    opset = lambda m: [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]
    print(f"nodes: {sum(before.values())} -> {sum(after.values())} "
          f"(opset {opset(m0)} -> {opset(m1)})")
    for op in sorted(set(before) | set(after), key=lambda o: (-before[o], o)):
        if before[op] != after[op]:
            print(f"  {op:20} {before[op]:5} -> {after[op]}")
    feed = token_inputs(12, 2, 128)
    # At ORT's default level ORT fuses LayerNorm/Gelu in the original itself (so the two may
    # agree bit for bit); with its optimizations off, the original runs the decomposed ops.
    levels = [("ORT default optimizations", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
              ("ORT optimizations off", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)]
    for label, level in levels:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        outs = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]).run(None, feed)
                for p in (MODEL, OPT_MODEL)]
        for name, a, b in zip(OUTPUTS, *outs):
            print(f"  {label}: {name} {list(a.shape)}: max abs diff "
                  f"{np.abs(a - b).max():.3g} (max |value| {np.abs(a).max():.3g})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kiln-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for kiln optimize (repeat), e.g. --kiln-arg=--disable "
                         "--kiln-arg=dedup-constants")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--check-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        generate()
        return
    if args.check_only:
        check()
        return
    if not os.path.exists(KILN):
        sys.exit("build first: cargo build --release -p kiln")
    # Generate and check in children: the measuring process stays small.
    subprocess.run([sys.executable, __file__, "--generate-only"], check=True)
    data = os.path.join(SRC_DIR, "weights.bin")
    weight_bytes = os.path.getsize(data)
    # Warm the page cache and Python's imports so the first timed run is like the others.
    subprocess.run(["cat", MODEL, data], stdout=subprocess.DEVNULL, check=True)
    ort_session("-")
    kiln_t, kiln_rss, ort_t, ort_rss, opt_t, opt_rss, base_rss = [], [], [], [], [], [], []
    table = None
    for _ in range(args.runs):
        w, r, table = kiln_optimize(args.kiln_arg)
        kiln_t.append(w)
        kiln_rss.append(r)
        for path, ts, rs in ((MODEL, ort_t, ort_rss), (OPT_MODEL, opt_t, opt_rss)):
            s, r = ort_session(path)
            ts.append(s)
            rs.append(r)
        base_rss.append(ort_session("-")[1])
    med = statistics.median
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    if args.kiln_arg:
        print(f"kiln optimize extra arguments: {' '.join(args.kiln_arg)}")
    print(f"model: {MODEL}, weights {weight_bytes / 2**30:.2f} GiB "
          f"({weight_bytes / 1e9:.2f} GB), {args.runs} alternating runs, medians")
    print("kiln optimize output (last run):")
    print("  " + table.rstrip().replace("\n", "\n  "))
    print(f"kiln optimize:                 {med(kiln_t):.2f} s   (runs: "
          f"{', '.join(f'{t:.2f}' for t in kiln_t)})")
    print(f"ORT session, original:         {med(ort_t):.2f} s   (runs: "
          f"{', '.join(f'{t:.2f}' for t in ort_t)})")
    print(f"ORT session, kiln-optimized:   {med(opt_t):.2f} s   (runs: "
          f"{', '.join(f'{t:.2f}' for t in opt_t)})")
    print(f"ratio kiln optimize / ORT session (original): {med(kiln_t) / med(ort_t):.2f}")
    print(f"peak RSS, kiln optimize:              {mib(med(kiln_rss))} = "
          f"{med(kiln_rss) / weight_bytes:.3f} x weight bytes")
    print(f"peak RSS, ORT session, original:      {mib(med(ort_rss))} = "
          f"{med(ort_rss) / weight_bytes:.3f} x weight bytes")
    print(f"peak RSS, ORT session, kiln-optimized: {mib(med(opt_rss))} = "
          f"{med(opt_rss) / weight_bytes:.3f} x weight bytes")
    print(f"peak RSS, python + import onnxruntime (in both ORT figures): {mib(med(base_rss))}")
    shutil.rmtree(OPT_DIR, ignore_errors=True)
    anon, file = rss_breakdown(kiln_cmd(args.kiln_arg))
    print(f"  kiln optimize, sampled:        anonymous {mib(anon)}, file-backed (mapped) {mib(file)}")
    anon, file = rss_breakdown([sys.executable, "-c", ORT_CHILD, MODEL])
    print(f"  ORT session original, sampled: anonymous {mib(anon)}, file-backed (mapped) {mib(file)}")
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, "--check-only"], check=True)


if __name__ == "__main__":
    main()
