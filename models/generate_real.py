#!/usr/bin/env python3
"""Generates the exporter-made models under models/ (and, on demand, the `light` zoo models).

Unlike models/generate.py, which imitates exporter habits with the `onnx` helper, these models
come from the real exporter: `torch.onnx.export` of `transformers` / `torchvision` architectures
built from small configs with seeded random weights. Each gets a `test_data_set_0/` (seeded
inputs, outputs computed by ONNX Runtime) through generate.py's `save`.

    pip install onnx==1.20.1 onnxruntime==1.31.1 numpy torch==2.15.0 torchvision==0.29.2 \
        transformers==5.23.0 onnxscript==0.7.2
    python3 models/generate_real.py              # the small committed models
    python3 models/generate_real.py --light      # also models/light/* (large, gitignored)
    python3 models/generate_real.py --light-only # only those (needs only onnx and numpy)
    python3 models/generate_real.py --only bert_tiny_op14,gpt2_tiny
    python3 models/generate_real.py --summary    # the table in models/README.md

The versions the committed files were made with are in models/README.md; other torch versions
export slightly different graphs (names, node order, folding), which is why the files are
committed and CI never runs this script.

`--light` needs only onnx and numpy: it takes the `light_*.onnx` models shipped in the onnx
package's backend test data, whose float initializers were replaced by ConstantOfShape(0.02)
placeholders, and puts back seeded random weights of the same shapes (He-scaled, positive
BatchNorm variances) so that activations stay finite and differ from layer to layer.
"""

import argparse
import collections
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import MAX_IR, save  # noqa: E402  (generate.py sits next to this script)


def rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# light zoo models: ConstantOfShape placeholders -> seeded random weights
# ---------------------------------------------------------------------------------------------

LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512"]


def light_dir():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def weight_role(graph, name):
    """(op_type, input index, node) of the op that finally uses `name`, looking through the
    Unsqueeze / Reshape the zoo models put between some weights and their consumer."""
    consumers = collections.defaultdict(list)
    for n in graph.node:
        for k, i in enumerate(n.input):
            consumers[i].append((n, k))
    seen = name
    while True:
        uses = consumers.get(seen, [])
        if len(uses) != 1:
            raise ValueError(f"{name}: expected one consumer, found {len(uses)}")
        node, k = uses[0]
        if node.op_type in ("Unsqueeze", "Reshape") and k == 0:
            seen = node.output[0]
            continue
        return node.op_type, k, node


def random_weight(r, role, shape):
    """A weight for `role` that keeps activations of the order of the input (He init)."""
    op, k, node = role
    shape = tuple(int(d) for d in shape)
    if op == "Conv" and k == 1:
        fan_in = int(np.prod(shape[1:]))
        return r.normal(0, np.sqrt(2.0 / fan_in), shape)
    if op == "Gemm" and k == 1:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        fan_in = int(np.prod(shape[1:])) if trans_b else shape[0]
        return r.normal(0, np.sqrt(1.0 / fan_in), shape)
    if op in ("Conv", "Gemm") and k == 2:
        return r.normal(0, 0.05, shape)
    if op == "BatchNormalization":
        # scale, bias, running mean, running var (> 0)
        return {1: lambda: r.uniform(0.5, 1.0, shape), 2: lambda: r.normal(0, 0.1, shape),
                3: lambda: r.normal(0, 0.1, shape), 4: lambda: r.uniform(0.5, 1.5, shape)}[k]()
    if op == "Mul":  # the per-channel scale after BatchNormalization (densenet, inception_v2)
        return r.uniform(0.5, 1.0, shape)
    if op == "Add":  # its per-channel shift
        return r.normal(0, 0.1, shape)
    raise ValueError(f"no weight rule for input {k} of {op}")


def fill_light(model, seed):
    """Replaces every ConstantOfShape placeholder by an initializer of the same name."""
    g = model.graph
    r = rng(seed)
    inits = {i.name: i for i in g.initializer}
    placeholders = [n for n in g.node if n.op_type == "ConstantOfShape"]
    new_inits, shape_names = [], set()
    for n in placeholders:
        shape = numpy_helper.to_array(inits[n.input[0]])
        w = random_weight(r, weight_role(g, n.output[0]), shape).astype(np.float32)
        new_inits.append(numpy_helper.from_array(w, n.output[0]))
        shape_names.add(n.input[0])
    for n in placeholders:
        g.node.remove(n)
    # The shape tensors were only used by the placeholders.
    used = {i for n in g.node for i in n.input}
    drop = {s for s in shape_names if s not in used}
    kept = [i for i in g.initializer if i.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    # IR 3 lists every initializer among the graph inputs; keep that habit of the zoo models.
    listed_as_inputs = model.ir_version < 4
    inputs = [i for i in g.input if i.name not in drop]
    if listed_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in new_inits]
    del g.input[:]
    g.input.extend(inputs)
    return model


def source_initializer(graph, name):
    """The initializer behind `name`, looking back through Reshape (inception_v1's classifier)."""
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    while name not in inits and name in producers and producers[name].op_type == "Reshape":
        name = producers[name].input[0]
    return inits.get(name)


def tame_logits(model, x, target_std=3.0):
    """Scales the classifier Gemm so the Softmax input has a std of about `target_std`.

    Random weights in residual nets (resnet50, shufflenet) grow activations block after block,
    and shrink them in others (inception): the Softmax output would be one-hot or flat, and
    either hides numerical differences.
    """
    import onnxruntime as ort

    g = model.graph
    softmax = [n for n in g.node if n.op_type == "Softmax"]
    producers = {o: n for n in g.node for o in n.output}
    if len(softmax) != 1 or producers.get(softmax[0].input[0]) is None:
        return
    gemm = producers[softmax[0].input[0]]
    if gemm.op_type != "Gemm":
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=softmax[0].input[0]))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[-1]
    scale = target_std / max(float(logits.std()), 1e-6)
    for name in gemm.input[1:]:
        t = source_initializer(g, name)
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(scale), t.name))


def light_models():
    for k, name in enumerate(LIGHT):
        path = os.path.join(light_dir(), f"light_{name}.onnx")
        if not os.path.exists(path):
            print(f"light/{name}: not in this onnx package, skipped")
            continue
        m = fill_light(onnx.load(path), seed=300 + k)
        inits = {i.name for i in m.graph.initializer}
        (data,) = [i for i in m.graph.input if i.name not in inits]
        shape = [d.dim_value for d in data.type.tensor_type.shape.dim]
        x = rng(400 + k).normal(0, 1, shape).astype(np.float32)
        tame_logits(m, x)
        save(os.path.join("light", name), m, [x])
        report_size(os.path.join("light", name))


def report_size(name):
    folder = os.path.join(HERE, name)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"    {name}: {total / 1e6:.2f} MB on disk")


# ---------------------------------------------------------------------------------------------
# exporter-made models (torch, torchvision, transformers)
# ---------------------------------------------------------------------------------------------

BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
VOCAB = 1000


class HiddenStates:
    """Wraps a transformers model so the exporter sees named tensor arguments and a tuple out
    (transformers 5's forward takes keyword-only extras that the tracer would trip over)."""

    def __new__(cls, model, outputs):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra,
                                 use_cache=False, return_dict=True)
                return tuple(getattr(out, o) for o in outputs)

        return Wrapper().eval()


def token_inputs(seed, batch, seq, names):
    """input_ids, an attention mask with padding at the end of the later rows, segment ids."""
    r = rng(seed)
    ids = r.integers(0, VOCAB, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    for b in range(1, batch):
        mask[b, seq - min(seq - 1, 3 * b):] = 0
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2:] = 1
    return [{"input_ids": ids, "attention_mask": mask, "token_type_ids": types}[n] for n in names]


def bert(opset, dynamo):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
                     hidden_act="gelu", attn_implementation="eager")
    net = HiddenStates(BertModel(cfg).eval(), ["last_hidden_state", "pooler_output"])
    seq_axes = {0: "batch", 1: "sequence"}
    axes = {n: seq_axes for n in BERT_INPUTS + ["last_hidden_state"]}
    axes["pooler_output"] = {0: "batch"}
    return export(net, BERT_INPUTS, ["last_hidden_state", "pooler_output"], axes, opset, dynamo,
                  example=token_inputs(10, 2, 16, BERT_INPUTS),
                  other=token_inputs(11, 3, 9, BERT_INPUTS))


def gpt2():
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(1)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=VOCAB,
                     bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
                     activation_function="gelu_new", attn_implementation="eager")
    names = ["input_ids", "attention_mask"]
    net = HiddenStates(GPT2Model(cfg).eval(), ["last_hidden_state"])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    return export(net, names, ["last_hidden_state"], axes, 14, False,
                  example=token_inputs(12, 2, 16, names), other=token_inputs(13, 3, 9, names))


def randomize_batchnorm(net, seed):
    """Gives every BatchNorm non-trivial statistics: fresh torchvision layers have mean 0,
    var 1, scale 1, shift 0, under which a wrong BN fold would go unnoticed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return net.eval()


def mobilenetv2():
    import torch
    import torchvision

    torch.manual_seed(2)
    net = randomize_batchnorm(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10), 2)
    return export(net, ["input"], ["logits"], {"input": {0: "batch"}, "logits": {0: "batch"}},
                  14, False, example=[image(14, 1, 96)], other=[image(15, 2, 96)], fold=False)


class TinyResNet:
    """A CIFAR-style ResNet from torchvision's BasicBlock: widths 16/32/64, two blocks each
    (torchvision's own ResNet class fixes the stem at 64 channels, 11M parameters for resnet18)."""

    def __new__(cls, num_classes=10):
        import torch
        from torch import nn
        from torchvision.models.resnet import BasicBlock, conv1x1

        layers, inplanes = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
            layers += [BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes)]
            inplanes = planes
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def resnet():
    import torch

    torch.manual_seed(3)
    net = randomize_batchnorm(TinyResNet(), 3)
    return export(net, ["input"], ["logits"], {"input": {0: "batch"}, "logits": {0: "batch"}},
                  17, False, example=[image(16, 1, 64)], other=[image(17, 2, 64)], fold=False)


def llama():
    """LlamaForCausalLM's logits through the dynamo exporter: in-graph rotary (Cos/Sin of
    position × inv_freq), decomposed RMSNorm, GQA, SiLU MLP; no KV cache (that form is
    models/llama_tiny's, from generate_llama.py)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                      max_position_embeddings=64, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    lm = LlamaForCausalLM(cfg).eval()
    # Fresh RMSNorm gains are ones, which an optimizer rightly drops; trained ones are not.
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    names = ["input_ids", "attention_mask"]
    net = HiddenStates(lm, ["logits"])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["logits"]}
    return export(net, names, ["logits"], axes, None, True,
                  example=token_inputs(14, 2, 16, names), other=token_inputs(15, 3, 9, names))


def image(seed, batch, size):
    return rng(seed).normal(0, 1, (batch, 3, size, size)).astype(np.float32)


def export(net, inputs, outputs, axes, opset, dynamo, example, other, fold=True):
    """Exports `net` as PyTorch users do and checks ONNX Runtime agrees with torch on the example
    and on inputs of another batch/sequence size (the dynamic axes must really be dynamic).

    Returns the model and the example inputs for the test data set.
    """
    import io

    import onnxruntime as ort
    import torch

    args = tuple(torch.from_numpy(x) for x in example)
    kwargs = dict(input_names=inputs, output_names=outputs)
    if opset:
        kwargs["opset_version"] = opset
    if dynamo:
        dims = {}  # one Dim per axis name, shared by every input that has that axis
        shapes = tuple({k: dims.setdefault(v, torch.export.Dim(v, max=64 if v == "sequence"
                                                                else None))
                        for k, v in axes[n].items()} for n in inputs)
        program = torch.onnx.export(net, args, dynamo=True, dynamic_shapes=shapes, **kwargs)
        model = program.model_proto
    else:
        buf = io.BytesIO()
        torch.onnx.export(net, args, buf, dynamo=False, dynamic_axes=axes,
                          do_constant_folding=fold, **kwargs)
        model = onnx.load_from_string(buf.getvalue())
    # ONNX Runtime 1.31 reads IR <= 13, but Kiln's other tools and older runtimes want <= 10.
    model.ir_version = min(model.ir_version, MAX_IR)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == inputs, "the exporter dropped an input"
    for feed in (example, other):
        with torch.no_grad():
            want = net(*(torch.from_numpy(x) for x in feed))
        want = want if isinstance(want, tuple) else (want,)
        got = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), feed)})
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)
    return model, example


SMALL = {
    "bert_tiny_op14": lambda: bert(14, dynamo=False),
    "bert_tiny_op17": lambda: bert(17, dynamo=False),
    "bert_tiny_dynamo": lambda: bert(17, dynamo=True),
    "bert_tiny_dynamo_op20": lambda: bert(None, dynamo=True),
    "gpt2_tiny": gpt2,
    "llama_dynamo": llama,
    "mobilenetv2_tiny": mobilenetv2,
    "resnet_tiny": resnet,
}


def small_models(names=None):
    for name in names or SMALL:
        m, inputs = SMALL[name]()
        save(name, m, inputs)
        report_size(name)


# ---------------------------------------------------------------------------------------------
# the table in models/README.md
# ---------------------------------------------------------------------------------------------

HOW = {
    "bert_tiny_op14": "TorchScript exporter, `dynamo=False`, opset 14",
    "bert_tiny_op17": "TorchScript exporter, `dynamo=False`, opset 17",
    "bert_tiny_dynamo": "dynamo exporter (`torch.export`, onnxscript optimizer), opset 17",
    "bert_tiny_dynamo_op20": "dynamo exporter, its default opset (20)",
    "gpt2_tiny": "TorchScript exporter, opset 14",
    "llama_dynamo": "dynamo exporter, its default opset (20), `LlamaForCausalLM` logits",
    "mobilenetv2_tiny": "TorchScript exporter, opset 14, `do_constant_folding=False`",
    "resnet_tiny": "TorchScript exporter, opset 17, `do_constant_folding=False`",
}

KEY_OPS = ["ReduceMean", "Pow", "Sqrt", "LayerNormalization", "Erf", "Tanh", "Gelu", "Softmax",
           "MatMul", "Gemm", "Conv", "BatchNormalization", "Clip", "Relu", "Shape", "Constant",
           "Sum"]


def summary(names):
    """Prints one markdown row per model: IR, opset, nodes, key op counts, size on disk."""
    print("| model | made by | IR | opset | nodes | key ops | size |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        folder = os.path.join(HERE, name)
        if not os.path.exists(os.path.join(folder, "model.onnx")):
            continue
        m = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
        ops = collections.Counter(n.op_type for n in m.graph.node)
        opset = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]
        key = ", ".join(f"{op} {ops[op]}" for op in KEY_OPS if ops[op])
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, fs in os.walk(folder) for f in fs)
        how = HOW.get(name, "onnx light zoo model, ConstantOfShape → seeded weights")
        print(f"| `{name}` | {how} | {m.ir_version} | {opset} | {len(m.graph.node)} | {key} "
              f"| {size / 1e6:.2f} MB |")


# ---------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--light", action="store_true", help="also write models/light/* (large)")
    p.add_argument("--light-only", action="store_true", help="only write models/light/*")
    p.add_argument("--only", help="comma-separated names of the small models to write")
    p.add_argument("--summary", action="store_true",
                   help="write nothing; print the models/README.md table of what is on disk")
    a = p.parse_args()
    if a.summary:
        import torch  # noqa: F401  (only for the versions line)
        import torchvision
        import transformers

        print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
              f"transformers {transformers.__version__}, onnx {onnx.__version__}\n")
        summary(list(SMALL) + [os.path.join("light", n) for n in LIGHT])
        return
    if not a.light_only:
        small_models(a.only.split(",") if a.only else None)
    if a.light or a.light_only:
        light_models()


if __name__ == "__main__":
    main()
