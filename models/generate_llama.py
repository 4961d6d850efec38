#!/usr/bin/env python3
"""Generates Llama-architecture decoder models in the form Hugging Face Optimum exports them.

The graph is built with the `onnx` helper, node by node, the way the PyTorch (TorchScript)
exporter writes `LlamaForCausalLM` with a KV cache at opset 17: exporter node names
(`/model/layers.0/self_attn/q_proj/MatMul`), `Constant` nodes for small values, shape
subgraphs (`Shape`/`Gather`/`Unsqueeze`/`Concat`) for every `Reshape` and `Expand`, MatMul
weights stored transposed ([in, out]) as `onnx::MatMul_<n>` initializers, all weights in one
external data file `model.onnx.data`. What it contains:

- inputs `input_ids`, `attention_mask`, `position_ids` (int64) and `past_key_values.<i>.key` /
  `.value` [batch, kv_heads, past, head_dim]; outputs `logits` and `present.<i>.key` / `.value`,
  with Optimum's symbolic dim names;
- decomposed RMSNorm: Cast, Pow(2), ReduceMean, Add(eps), Sqrt, Div(1, ·), Mul, Cast, Mul(weight);
- rotary embeddings from cos/sin tables (initializers) gathered by `position_ids`,
  rotate_half as Slice / Slice / Neg / Concat;
- grouped-query attention: K/V heads repeated by Unsqueeze / Expand / Reshape (`repeat_kv`);
- the causal + padding mask built in the graph from `attention_mask` (Range, LessOrEqual, And,
  Where(0, float32 min)); Softmax attention;
- SiLU-gated MLP (`Sigmoid`, `Mul`, times up_proj); untied LM head, or tied (`--tied copy`: the
  exporter's transposed copy of the embedding; `--tied shared`: one initializer read by the
  embedding `Gather` and, through a `Transpose`, by the LM head).

Weights are seeded N(0, 0.02) like Hugging Face's init (RMSNorm weights 1 + N(0, 0.1), so that
a fusion that drops them shows). They are streamed tensor by tensor, in chunks, into the data
file, so the TinyLlama-1.1B-shaped model (4.4 GB) is written with a few hundred MB of memory.

Every generation ends with a correctness check, run in a child process (so that the
generator's own peak memory is the writing's): ONNX Runtime's logits and presents against
`transformers.LlamaForCausalLM` loaded with the same weights (memory-mapped from the data
file), for a prefill with an empty past (past_sequence_length 0), decode steps with the KV cache
fed back, and a left-padded batch of 2; with ONNX Runtime's graph optimizations on and off. It
fails (exit status 1) if any max abs difference exceeds 1e-4. It also writes the test data:
`test_data_set_0` is the prefill (batch 1, 8 tokens, zero-length past tensors),
`test_data_set_1` one decode step fed the presents of set 0.

    pip install onnx==1.20.1 onnxruntime==1.31.1 numpy torch==2.15.0 transformers==5.23.0
    python3 models/generate_llama.py                    # models/llama_tiny (committed)
    python3 models/generate_llama.py --tinyllama        # models/large/tinyllama (gitignored)
    python3 models/generate_llama.py --tinyllama DIR    # the same, into DIR
    python3 models/generate_llama.py --out DIR --layers 4 --hidden 128 --heads 8 --kv-heads 2 \\
        --intermediate 256 --vocab 512 --max-positions 256 --tied shared
    python3 models/generate_llama.py --check DIR        # only the check (and the test data)

The generator itself needs only onnx and numpy; the check needs onnxruntime, torch and
transformers. Output is deterministic (fixed seeds): running it twice gives identical files.
"""

import argparse
import collections
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import write_test_data  # noqa: E402  (generate.py sits next to this script)

OPSET = 17
IR = 8  # what the TorchScript exporter writes at opset 17
DATA_FILE = "model.onnx.data"
# Tensors of 1 MiB or more start at a multiple of 64 KiB in the data file (as onnx_ir writes
# them), so that a reader can memory-map them; small ones are packed.
ALIGN, ALIGN_FROM = 1 << 16, 1 << 20
CHUNK = 1 << 22  # elements generated and written at a time
TOLERANCE = 1e-4
FLOAT_MIN = float(np.finfo(np.float32).min)

# Optimum's names for the dynamic axes.
BATCH, SEQ, PAST = "batch_size", "sequence_length", "past_sequence_length"
TOTAL = "past_sequence_length + sequence_length"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Shape:
    """The architecture's sizes and how the weights are drawn."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    tied: str = "no"  # "no", "copy" (exporter's transposed copy) or "shared" (one initializer)
    init_std: float = 0.02
    seed: int = 0

    @property
    def head_dim(self):
        return self.hidden // self.heads

    def validate(self):
        if self.hidden % self.heads or self.heads % self.kv_heads or self.head_dim % 2:
            raise SystemExit(f"hidden {self.hidden} / heads {self.heads} / kv_heads "
                             f"{self.kv_heads} do not divide into an even head_dim")
        if self.tied not in ("no", "copy", "shared"):
            raise SystemExit(f"--tied must be no, copy or shared, not {self.tied}")

    def config_json(self):
        """Hugging Face's config.json for this shape (Optimum writes one next to model.onnx),
        plus how this script drew the weights."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tied != "no",
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32",
            "kiln_generator": {"script": "models/generate_llama.py", "tied": self.tied,
                               "init_std": self.init_std, "seed": self.seed},
        }

    @classmethod
    def from_config_json(cls, c):
        g = c["kiln_generator"]
        return cls(layers=c["num_hidden_layers"], hidden=c["hidden_size"],
                   heads=c["num_attention_heads"], kv_heads=c["num_key_value_heads"],
                   intermediate=c["intermediate_size"], vocab=c["vocab_size"],
                   max_positions=c["max_position_embeddings"], rms_eps=c["rms_norm_eps"],
                   rope_theta=c["rope_theta"], tied=g["tied"], init_std=g["init_std"],
                   seed=g["seed"])


TINY = Shape(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=256,
             max_positions=128)
TINYLLAMA = Shape(layers=22, hidden=2048, heads=32, kv_heads=4, intermediate=5632, vocab=32000,
                  max_positions=2048)


# ---------------------------------------------------------------------------------------------
# graph building, exporter style
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Weight:
    """One initializer: how to fill it and which Hugging Face parameter it is."""

    name: str
    shape: tuple
    fill: str  # "normal", "norm", "cos", "sin", or "transpose:<name>" (a transposed copy)
    hf: str = None  # the LlamaForCausalLM parameter, None for the rotary tables
    transposed: bool = False  # stored as the transpose of the HF parameter ([in, out])


class Builder:
    """Appends nodes named as the TorchScript exporter names them: `<scope>/<Op>`, then
    `<scope>/<Op>_1`, ..., with outputs `<node name>_output_0`."""

    def __init__(self):
        self.nodes = []
        self.counts = collections.Counter()
        self.weights = []

    def op(self, scope, op_type, inputs, output=None, **attrs):
        k = self.counts[(scope, op_type)]
        self.counts[(scope, op_type)] += 1
        name = f"{scope}/{op_type}" + (f"_{k}" if k else "")
        out = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, scope, value, dtype=np.int64):
        return self.op(scope, "Constant", [],
                       value=numpy_helper.from_array(np.array(value, dtype), ""))

    def weight(self, name, shape, fill, hf=None, transposed=False):
        self.weights.append(Weight(name, tuple(shape), fill, hf, transposed))
        return name

    def matmul_weight(self, shape, hf):
        # The exporter folds `weight.t()` into a fresh initializer named after the value id.
        return self.weight(f"onnx::MatMul_{len(self.nodes) + 1000}", shape, "normal", hf, True)

    def unsqueeze(self, scope, x, axes):
        return self.op(scope, "Unsqueeze", [x, self.const(scope, axes)])

    def dim(self, scope, x, axis):
        """x.shape[axis] as a scalar: Shape, Gather."""
        shape = self.op(scope, "Shape", [x])
        return self.op(scope, "Gather", [shape, self.const(scope, axis)], axis=0)

    def shape_of(self, scope, parts):
        """Concat of 1-D pieces: scalars (value names) are unsqueezed, ints become constants."""
        pieces = [self.const(scope, [p]) if isinstance(p, int) else self.unsqueeze(scope, p, [0])
                  for p in parts]
        return self.op(scope, "Concat", pieces, axis=0)


def rms_norm(b, scope, x, weight, eps):
    """HF LlamaRMSNorm as exported: returns (output, the Cast of the input) — the exporter
    takes the residual from that Cast."""
    cast = b.op(scope, "Cast", [x], to=TensorProto.FLOAT)
    sq = b.op(scope, "Pow", [cast, b.const(scope, 2.0, np.float32)])
    mean = b.op(scope, "ReduceMean", [sq], axes=[-1], keepdims=1)
    var = b.op(scope, "Add", [mean, b.const(scope, eps, np.float32)])
    root = b.op(scope, "Sqrt", [var])
    inv = b.op(scope, "Div", [b.const(scope, 1.0, np.float32), root])  # torch.rsqrt
    normed = b.op(scope, "Mul", [cast, inv])
    back = b.op(scope, "Cast", [normed], to=TensorProto.FLOAT)
    return b.op(scope, "Mul", [weight, back]), cast


def rotary(b, scope, x, cos, sin):
    """(x * cos) + (rotate_half(x) * sin), rotate_half's split point computed from x's shape."""
    x_cos = b.op(scope, "Mul", [x, cos])
    half = b.op(scope, "Div", [b.dim(scope, x, 3), b.const(scope, 2)])
    half = b.op(scope, "Cast", [b.op(scope, "Cast", [half], to=TensorProto.INT64)],
                to=TensorProto.INT64)
    axis, step = b.const(scope, [3]), b.const(scope, [1])
    x1 = b.op(scope, "Slice", [x, b.const(scope, [0]), b.unsqueeze(scope, half, [0]), axis, step])
    # The exporter writes fresh constants for each Slice.
    x2 = b.op(scope, "Slice", [x, b.unsqueeze(scope, half, [0]),
                               b.const(scope, [np.iinfo(np.int64).max]), b.const(scope, [3]),
                               b.const(scope, [1])])
    rotated = b.op(scope, "Concat", [b.op(scope, "Neg", [x2]), x1], axis=-1)
    return b.op(scope, "Add", [x_cos, b.op(scope, "Mul", [rotated, sin])])


def repeat_kv(b, scope, x, n_rep):
    """x[:, :, None].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d), with the
    exporter's Expand shape dance (a -1 in the shape keeps that dim)."""
    if n_rep == 1:
        return x
    batch, kv, t, d = (b.dim(scope, x, k) for k in range(4))
    unsq = b.unsqueeze(scope, x, [2])
    flat = b.op(scope, "Reshape", [b.shape_of(scope, [batch, kv, n_rep, t, d]),
                                   b.const(scope, [-1])])
    ones = b.op(scope, "ConstantOfShape", [b.op(scope, "Shape", [flat])],
                value=numpy_helper.from_array(np.array([1], np.int64), ""))
    keep = b.op(scope, "Equal", [flat, b.op(scope, "Mul", [ones, b.const(scope, -1)])])
    expanded = b.op(scope, "Expand", [unsq, b.op(scope, "Where", [keep, ones, flat])])
    heads = b.op(scope, "Mul", [kv, b.const(scope, n_rep)])
    return b.op(scope, "Reshape", [expanded, b.shape_of(scope, [batch, heads, t, d])])


def attention(b, s, i, h, cos, sin, mask):
    """Self-attention of layer i on the normed hidden states h; returns o_proj's output."""
    scope = f"/model/layers.{i}/self_attn"
    prefix = f"model.layers.{i}.self_attn"
    hd, n_rep = s.head_dim, s.heads // s.kv_heads
    batch, seq = b.dim(scope, h, 0), b.dim(scope, h, 1)
    heads = {}
    for proj, n_out in (("q", s.hidden), ("k", s.kv_heads * hd), ("v", s.kv_heads * hd)):
        w = b.matmul_weight([s.hidden, n_out], f"{prefix}.{proj}_proj.weight")
        y = b.op(f"{scope}/{proj}_proj", "MatMul", [h, w])
        shape = b.shape_of(scope, [batch, seq, -1, hd])
        heads[proj] = b.op(scope, "Transpose", [b.op(scope, "Reshape", [y, shape])],
                           perm=[0, 2, 1, 3])
    cos = b.unsqueeze(scope, cos, [1])
    sin = b.unsqueeze(scope, sin, [1])
    q = rotary(b, scope, heads["q"], cos, sin)
    k = rotary(b, scope, heads["k"], cos, sin)
    key = b.op(scope, "Concat", [f"past_key_values.{i}.key", k], output=f"present.{i}.key",
               axis=-2)
    value = b.op(scope, "Concat", [f"past_key_values.{i}.value", heads["v"]],
                 output=f"present.{i}.value", axis=-2)
    key = repeat_kv(b, scope, key, n_rep)
    value = repeat_kv(b, scope, value, n_rep)
    scores = b.op(scope, "MatMul", [q, b.op(scope, "Transpose", [key], perm=[0, 1, 3, 2])])
    scores = b.op(scope, "Mul", [scores, b.const(scope, hd ** -0.5, np.float32)])
    scores = b.op(scope, "Add", [scores, mask])
    probs = b.op(scope, "Softmax", [scores], axis=-1)
    # softmax(dtype=float32).to(query.dtype): two Casts that change nothing in fp32
    probs = b.op(scope, "Cast", [b.op(scope, "Cast", [probs], to=TensorProto.FLOAT)],
                 to=TensorProto.FLOAT)
    out = b.op(scope, "Transpose", [b.op(scope, "MatMul", [probs, value])], perm=[0, 2, 1, 3])
    out = b.op(scope, "Reshape", [out, b.shape_of(scope, [batch, seq, -1])])
    w = b.matmul_weight([s.hidden, s.hidden], f"{prefix}.o_proj.weight")
    return b.op(f"{scope}/o_proj", "MatMul", [out, w])


def mlp(b, s, i, h):
    """down_proj(silu(gate_proj(h)) * up_proj(h)), SiLU as Mul(x, Sigmoid(x))."""
    scope = f"/model/layers.{i}/mlp"
    prefix = f"model.layers.{i}.mlp"
    gate = b.op(f"{scope}/gate_proj", "MatMul",
                [h, b.matmul_weight([s.hidden, s.intermediate], f"{prefix}.gate_proj.weight")])
    act = b.op(f"{scope}/act_fn", "Mul", [gate, b.op(f"{scope}/act_fn", "Sigmoid", [gate])])
    up = b.op(f"{scope}/up_proj", "MatMul",
              [h, b.matmul_weight([s.hidden, s.intermediate], f"{prefix}.up_proj.weight")])
    down_w = b.matmul_weight([s.intermediate, s.hidden], f"{prefix}.down_proj.weight")
    return b.op(f"{scope}/down_proj", "MatMul", [b.op(scope, "Mul", [act, up]), down_w])


def causal_mask(b):
    """[batch, 1, seq, past + seq] float: 0 where a query may attend, float32 min elsewhere
    (future keys, and keys whose attention_mask is 0)."""
    scope = "/model"
    seq = b.dim(scope, "input_ids", 1)
    total = b.dim(scope, "attention_mask", 1)
    past = b.op(scope, "Sub", [total, seq])
    one = b.const(scope, 1)
    q_pos = b.unsqueeze(scope, b.op(scope, "Range", [past, total, one]), [1])
    k_pos = b.unsqueeze(scope, b.op(scope, "Range", [b.const(scope, 0), total, one]), [0])
    causal = b.op(scope, "LessOrEqual", [k_pos, q_pos])
    keep = b.unsqueeze(scope, b.op(scope, "Cast", ["attention_mask"], to=TensorProto.BOOL), [1, 2])
    allowed = b.op(scope, "And", [keep, causal])
    return b.op(scope, "Where", [allowed, b.const(scope, 0.0, np.float32),
                                 b.const(scope, FLOAT_MIN, np.float32)])


def build_graph(s):
    """The nodes, inputs, outputs and weight list of the decoder."""
    b = Builder()
    hd = s.head_dim
    embed = b.weight("model.embed_tokens.weight", [s.vocab, s.hidden], "normal",
                     "model.embed_tokens.weight")
    x = b.op("/model/embed_tokens", "Gather", [embed, "input_ids"])
    mask = causal_mask(b)
    cos_table = b.weight("model.rotary_emb.cos_cached", [s.max_positions, hd], "cos")
    sin_table = b.weight("model.rotary_emb.sin_cached", [s.max_positions, hd], "sin")
    cos = b.op("/model/rotary_emb", "Gather", [cos_table, "position_ids"])
    sin = b.op("/model/rotary_emb", "Gather", [sin_table, "position_ids"])
    for i in range(s.layers):
        prefix = f"model.layers.{i}"
        ln1 = b.weight(f"{prefix}.input_layernorm.weight", [s.hidden], "norm",
                       f"{prefix}.input_layernorm.weight")
        h, residual = rms_norm(b, f"/model/layers.{i}/input_layernorm", x, ln1, s.rms_eps)
        x = b.op(f"/model/layers.{i}", "Add", [residual, attention(b, s, i, h, cos, sin, mask)])
        ln2 = b.weight(f"{prefix}.post_attention_layernorm.weight", [s.hidden], "norm",
                       f"{prefix}.post_attention_layernorm.weight")
        h, residual = rms_norm(b, f"/model/layers.{i}/post_attention_layernorm", x, ln2, s.rms_eps)
        x = b.op(f"/model/layers.{i}", "Add", [residual, mlp(b, s, i, h)])
    norm_w = b.weight("model.norm.weight", [s.hidden], "norm", "model.norm.weight")
    h, _ = rms_norm(b, "/model/norm", x, norm_w, s.rms_eps)
    if s.tied == "shared":
        head = b.op("/lm_head", "Transpose", [embed], perm=[1, 0])
    elif s.tied == "copy":
        head = b.weight(f"onnx::MatMul_{len(b.nodes) + 1000}", [s.hidden, s.vocab],
                        f"transpose:{embed}", "lm_head.weight", transposed=True)
    else:
        head = b.matmul_weight([s.hidden, s.vocab], "lm_head.weight")
    b.op("/lm_head", "MatMul", [h, head], output="logits")

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("input_ids", i64, [BATCH, SEQ]),
              helper.make_tensor_value_info("attention_mask", i64, [BATCH, TOTAL]),
              helper.make_tensor_value_info("position_ids", i64, [BATCH, SEQ])]
    outputs = [helper.make_tensor_value_info("logits", f, [BATCH, SEQ, s.vocab])]
    for i in range(s.layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", f, [BATCH, s.kv_heads, PAST, hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", f, [BATCH, s.kv_heads, TOTAL, hd]))
    return b.nodes, inputs, outputs, b.weights


def hf_parameters(s):
    """ONNX initializer name -> (HF parameter name, stored transposed), for the check."""
    _, _, _, weights = build_graph(s)
    return {w.name: (w.hf, w.transposed) for w in weights if w.hf}


# ---------------------------------------------------------------------------------------------
# weights, streamed into the external data file
# ---------------------------------------------------------------------------------------------

def rope_tables(s):
    """cos and sin of position * inv_freq, computed in float32 as HF's LlamaRotaryEmbedding."""
    hd = s.head_dim
    inv_freq = (1.0 / (s.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd)))
    positions = np.arange(s.max_positions, dtype=np.float32)
    freqs = positions[:, None] * inv_freq.astype(np.float32)[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def weight_chunks(s, k, w, written, data_path):
    """Yields the values of weight number k in row-major chunks of about CHUNK elements."""
    rows = w.shape[0] if len(w.shape) > 1 else 1
    cols = int(np.prod(w.shape)) // rows
    step = max(1, CHUNK // cols)
    if w.fill in ("cos", "sin"):
        cos, sin = rope_tables(s)
        yield cos if w.fill == "cos" else sin
        return
    if w.fill.startswith("transpose:"):
        # A transposed copy of a tensor already in the data file: read it back column block
        # by column block rather than holding it.
        offset, shape = written[w.fill.split(":", 1)[1]]
        src = np.memmap(data_path, np.float32, "r", offset, shape)
        step = max(1, CHUNK // shape[0])
        for c in range(0, shape[1], step):
            yield np.ascontiguousarray(src[:, c:c + step].T)
        del src
        return
    r = np.random.default_rng([s.seed, k])  # one stream per tensor: order-independent
    for start in range(0, rows, step):
        n = min(step, rows - start)
        chunk = r.standard_normal((n, cols), dtype=np.float32)
        if w.fill == "norm":
            chunk *= np.float32(0.1)
            chunk += np.float32(1.0)
        else:
            chunk *= np.float32(s.init_std)
        yield chunk


def write_weights(s, weights, folder):
    """Writes every weight into <folder>/model.onnx.data, one chunk at a time; returns the
    initializers as external-data TensorProtos (no values in memory)."""
    data_path = os.path.join(folder, DATA_FILE)
    initializers, written = [], {}
    with open(data_path, "wb") as f:
        for k, w in enumerate(weights):
            nbytes = int(np.prod(w.shape)) * 4
            offset = f.tell()
            if nbytes >= ALIGN_FROM and offset % ALIGN:
                f.write(b"\0" * (ALIGN - offset % ALIGN))
                offset = f.tell()
            f.flush()  # a transposed copy reads earlier tensors back through the file
            for chunk in weight_chunks(s, k, w, written, data_path):
                f.write(memoryview(chunk).cast("B"))
            if f.tell() - offset != nbytes:
                raise RuntimeError(f"{w.name}: wrote {f.tell() - offset} bytes, not {nbytes}")
            written[w.name] = (offset, w.shape)
            t = TensorProto(name=w.name, data_type=TensorProto.FLOAT, dims=w.shape)
            t.raw_data = b""  # set_external_data wants the field present; it stays empty
            set_external_data(t, DATA_FILE, offset=offset, length=nbytes)
            t.ClearField("raw_data")
            initializers.append(t)
    return initializers


def generate(s, folder):
    """Writes <folder>/model.onnx, model.onnx.data and config.json."""
    s.validate()
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # stale test data would not match the new weights
        if name.startswith("test_data_set_"):
            shutil.rmtree(os.path.join(folder, name))
    nodes, inputs, outputs, weights = build_graph(s)
    initializers = write_weights(s, weights, folder)
    graph = helper.make_graph(nodes, "main_graph", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pytorch", producer_version="2.15.0")
    model.ir_version = IR
    model.doc_string = ("Llama-architecture decoder in the form Optimum / the TorchScript "
                        "exporter writes it; generated by Kiln's models/generate_llama.py")
    path = os.path.join(folder, "model.onnx")
    onnx.save_model(model, path)
    onnx.checker.check_model(path, full_check=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(s.config_json(), f, indent=2, sort_keys=True)
        f.write("\n")
    return model


# ---------------------------------------------------------------------------------------------
# the correctness check: ONNX Runtime against transformers' LlamaForCausalLM
# ---------------------------------------------------------------------------------------------

def external_arrays(folder):
    """Initializer name -> copy-on-write memory map of its values in the data file."""
    m = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
    arrays = {}
    for t in m.graph.initializer:
        info = {e.key: e.value for e in t.external_data}
        shape = tuple(t.dims)
        if int(info["length"]) != int(np.prod(shape)) * 4:
            raise RuntimeError(f"{t.name}: length {info['length']} does not match {shape}")
        arrays[t.name] = np.memmap(os.path.join(folder, info["location"]), np.float32, "c",
                                   int(info["offset"]), shape)
    return arrays


def hf_model(folder, s):
    """transformers' LlamaForCausalLM with this model's weights (memory-mapped, not copied)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    # Untied for HF even when the ONNX model is tied: both matrices are set below from what
    # the ONNX graph actually reads, so the check covers the copy too.
    config = LlamaConfig(hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads,
                         num_key_value_heads=s.kv_heads, vocab_size=s.vocab,
                         max_position_embeddings=s.max_positions, rms_norm_eps=s.rms_eps,
                         rope_parameters={"rope_type": "default", "rope_theta": s.rope_theta},
                         tie_word_embeddings=False, attn_implementation="eager")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    arrays = external_arrays(folder)
    params = hf_parameters(s)
    if s.tied == "copy":  # HF gets the copy below: check it really is the embedding's transpose
        (copy,) = [n for n, (hf, _) in params.items() if hf == "lm_head.weight"]
        if not np.array_equal(arrays[copy], arrays["model.embed_tokens.weight"].T):
            raise RuntimeError(f"{copy} is not the transpose of model.embed_tokens.weight")
    assigned = set()
    for onnx_name, (hf_name, transposed) in params.items():
        tensor = torch.from_numpy(arrays[onnx_name])
        set_parameter(model, hf_name, tensor.T if transposed else tensor)
        assigned.add(hf_name)
    if s.tied == "shared":  # the LM head reads the embedding through a Transpose node
        set_parameter(model, "lm_head.weight",
                      torch.from_numpy(arrays["model.embed_tokens.weight"]))
        assigned.add("lm_head.weight")
    missing = {n for n, _ in model.named_parameters()} - assigned
    if missing:
        raise RuntimeError(f"no ONNX weight for {sorted(missing)}")
    model.model.rotary_emb = LlamaRotaryEmbedding(config)
    return model.eval()


def set_parameter(model, name, tensor):
    """Replaces a (meta) parameter of the HF model by `tensor`, without copying it."""
    import torch

    module_name, leaf = name.rsplit(".", 1)
    setattr(model.get_submodule(module_name), leaf,
            torch.nn.Parameter(tensor, requires_grad=False))


@dataclasses.dataclass
class Step:
    """One forward pass: the new tokens, their positions, the full attention mask."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray


def scenarios(s):
    """(name, steps): a prefill then decode steps, each step fed the previous presents."""
    r = np.random.default_rng(1000 + s.seed)
    seq, decode = 8, 4
    ids = r.integers(0, s.vocab, (1, seq + decode)).astype(np.int64)
    plain = [Step(ids[:, :seq], np.ones((1, seq), np.int64), np.arange(seq)[None])]
    for t in range(seq, seq + decode):
        plain.append(Step(ids[:, t:t + 1], np.ones((1, t + 1), np.int64), np.array([[t]])))
    # Batch 2, the second row left-padded by 3; positions as HF's generate() makes them.
    pad = 3
    ids2 = r.integers(0, s.vocab, (2, seq + decode)).astype(np.int64)
    mask = np.ones((2, seq + decode), np.int64)
    mask[1, :pad] = 0
    pos = np.cumsum(mask, axis=1) - 1
    pos[mask == 0] = 1
    padded = [Step(ids2[:, :seq], mask[:, :seq], pos[:, :seq])]
    for t in range(seq, seq + decode):
        padded.append(Step(ids2[:, t:t + 1], mask[:, :t + 1], pos[:, t:t + 1]))
    return [("prefill+decode", plain), ("left-padded batch 2", padded)]


def run_ort(sess, s, steps):
    """Runs the steps, feeding each one's presents back as the next one's past. Returns a list
    of (feeds, outputs), both lists of (name, array) in the session's order."""
    hd = s.head_dim
    batch = steps[0].input_ids.shape[0]
    past = {f"past_key_values.{i}.{k}": np.zeros((batch, s.kv_heads, 0, hd), np.float32)
            for i in range(s.layers) for k in ("key", "value")}
    results = []
    for step in steps:
        values = {"input_ids": step.input_ids, "attention_mask": step.attention_mask,
                  "position_ids": step.position_ids, **past}
        feeds = [(i.name, values[i.name]) for i in sess.get_inputs()]
        names = [o.name for o in sess.get_outputs()]
        outputs = list(zip(names, sess.run(names, dict(feeds))))
        results.append((feeds, outputs))
        past = {n.replace("present.", "past_key_values."): v for n, v in outputs
                if n.startswith("present.")}
    return results


def run_hf(model, s, steps):
    """The same steps through transformers, with its own DynamicCache; outputs by ONNX name."""
    import torch

    results, cache = [], None
    with torch.no_grad():
        for step in steps:
            out = model(input_ids=torch.from_numpy(step.input_ids),
                        attention_mask=torch.from_numpy(step.attention_mask),
                        position_ids=torch.from_numpy(step.position_ids),
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            got = {"logits": out.logits.numpy().copy()}
            for i, layer in enumerate(cache.layers):
                got[f"present.{i}.key"] = layer.keys.numpy().copy()
                got[f"present.{i}.value"] = layer.values.numpy().copy()
            results.append(got)
    return results


def compare(ort_results, hf_results, steps):
    """Max abs difference of logits (at positions whose attention_mask is 1: a fully masked
    query row is meaningless) and of all presents, per step."""
    rows = []
    for k, ((_, outputs), want, step) in enumerate(zip(ort_results, hf_results, steps)):
        valid = step.attention_mask[:, -step.input_ids.shape[1]:].astype(bool)
        logits = max_diff(dict(outputs)["logits"][valid], want["logits"][valid])
        presents = max(max_diff(v, want[n]) for n, v in outputs if n.startswith("present."))
        scale = float(np.abs(want["logits"][valid]).max())
        rows.append((k, logits, presents, scale))
    return rows


def max_diff(a, b):
    """max |a - b| in float64; a shape mismatch is an error, not a broadcast."""
    if a.shape != b.shape:
        raise RuntimeError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def check(folder):
    """Runs ONNX Runtime (optimizations on and off) and transformers on the same steps, writes
    test_data_set_0/1, prints the max abs differences; returns False if one exceeds TOLERANCE."""
    import onnxruntime as ort

    with open(os.path.join(folder, "config.json")) as f:
        s = Shape.from_config_json(json.load(f))
    path = os.path.join(folder, "model.onnx")
    cases = scenarios(s)
    ort_runs = {}
    for level_name, level in (("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                              ("off", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
        t0 = time.perf_counter()
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for name, steps in cases:
            ort_runs[(level_name, name)] = run_ort(sess, s, steps)
        del sess
        print(f"  onnxruntime {ort.__version__} (optimizations {level_name}): "
              f"{time.perf_counter() - t0:.1f} s")
    # The test data: the plain prefill and its first decode step, as ORT computes them with
    # its default (all) optimizations, like generate.py's save.
    plain = ort_runs[("all", cases[0][0])]
    for index in (0, 1):
        write_test_data(folder, *plain[index], index=index)

    import torch
    import transformers

    t0 = time.perf_counter()
    model = hf_model(folder, s)
    hf_runs = {name: run_hf(model, s, steps) for name, steps in cases}
    del model
    print(f"  transformers {transformers.__version__} / torch {torch.__version__} eager "
          f"reference: {time.perf_counter() - t0:.1f} s")
    worst = 0.0
    for (level_name, name), results in ort_runs.items():
        steps = dict(cases)[name]
        for k, logits, presents, scale in compare(results, hf_runs[name], steps):
            kind = "prefill" if k == 0 else f"decode {k}"
            print(f"  ORT[{level_name}] vs HF, {name}, {kind}: max |Δ| logits {logits:.2e} "
                  f"(max |logit| {scale:.2f}), presents {presents:.2e}")
            worst = max(worst, logits, presents)
    ok = worst <= TOLERANCE
    print(f"  worst max abs difference {worst:.2e}: "
          f"{'OK' if ok else 'FAILED'} (tolerance {TOLERANCE:g})")
    return ok


# ---------------------------------------------------------------------------------------------
# reporting and command line
# ---------------------------------------------------------------------------------------------

def summary(folder):
    """Prints node, initializer, parameter and op counts and file sizes of a generated model."""
    m = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in ("model.onnx", DATA_FILE)}
    print(f"{folder}: {len(m.graph.node)} nodes, {len(m.graph.initializer)} initializers, "
          f"{params:,} parameters; model.onnx {sizes['model.onnx']:,} B, "
          f"{DATA_FILE} {sizes[DATA_FILE]:,} B")
    print("  ops: " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items(),
                                                               key=lambda x: (-x[1], x[0]))))


def peak_rss_mib(who):
    """Peak RSS of this process (RUSAGE_SELF) or of its waited-for children (RUSAGE_CHILDREN)."""
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tinyllama", nargs="?", const=os.path.join(HERE, "large", "tinyllama"),
                   metavar="OUT_DIR", help="write the TinyLlama-1.1B-shaped model "
                   "(default models/large/tinyllama)")
    p.add_argument("--out", help="output folder (default models/llama_tiny)")
    p.add_argument("--check", metavar="DIR", help="only run the check on a generated folder")
    for name in ("layers", "hidden", "heads", "kv-heads", "intermediate", "vocab",
                 "max-positions", "seed"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--tied", choices=["no", "copy", "shared"])
    p.add_argument("--init-std", type=float)
    a = p.parse_args()
    if a.check:
        sys.exit(0 if check(a.check) else 1)

    base = TINYLLAMA if a.tinyllama else TINY
    changes = {f.name: getattr(a, f.name) for f in dataclasses.fields(Shape)
               if getattr(a, f.name, None) is not None}
    s = dataclasses.replace(base, **changes)
    folder = a.tinyllama or a.out or os.path.join(HERE, "llama_tiny")
    if s != TINY and folder == os.path.join(HERE, "llama_tiny"):
        raise SystemExit("models/llama_tiny holds the committed tiny config; give --out DIR")

    t0 = time.perf_counter()
    generate(s, folder)
    wall = time.perf_counter() - t0
    print(f"generated in {wall:.1f} s, peak RSS {peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB")
    summary(folder)
    t0 = time.perf_counter()
    print("check:")
    sys.stdout.flush()
    status = subprocess.run([sys.executable, os.path.abspath(__file__), "--check", folder])
    print(f"checked in {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB")
    if status.returncode:
        raise SystemExit(f"{folder}: the check against transformers FAILED")


if __name__ == "__main__":
    main()
