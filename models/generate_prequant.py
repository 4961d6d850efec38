#!/usr/bin/env python3
"""Makes models that arrive already quantized, for `kiln compile`'s pre-quantized path (issue 5):
their scales must be kept and legalized to the target, not quantized a second time.

Writes four folders (model.onnx + test_data_set_0, via generate.py's `save`; outputs computed by
ONNX Runtime):

- models/resnet_tiny_qop/: ONNX Runtime `quantize_static` of resnet_tiny in the QOperator format
  (QLinearConv, com.microsoft QLinearAdd / QLinearGlobalAveragePool / QGemm), int8 activations
  with signed zero points, int8 per-channel weights, MinMax calibration, after `quant_pre_process`.
- models/cnn_qat/: a small CNN trained-for-quantization style with torch.ao.quantization
  (eager `prepare_qat`, FakeQuantize: qint8 per-tensor affine activations, qint8 per-channel
  symmetric weights), exported by the TorchScript exporter at opset 13 as QuantizeLinear /
  DequantizeLinear pairs, the weights float initializers behind Q -> DQ.
- models/bert_tiny_dyn/: ONNX Runtime `quantize_dynamic` of bert_tiny_op17 with its defaults
  (MatMulInteger fed by DynamicQuantizeLinear).
- models/cnn_qdq16/: ONNX Runtime `quantize_static` QDQ of tiny_cnn with uint16 activations,
  int8 per-channel weights and com.microsoft QuantizeLinear / DequantizeLinear
  (`UseQDQContribOps`), at the source's opset 13 (see `restore_opset` for why).

The test inputs are the source models' own test_data_set_0 inputs (for cnn_qat, which has no
float source, a seeded one), so a test can compare a quantized model with its float original.

    pip install onnx==1.20.1 onnxruntime==1.31.1 numpy sympy torch==2.15.0
    python3 models/generate_prequant.py
    python3 models/generate_prequant.py --only cnn_qat,cnn_qdq16

Deterministic (fixed seeds, one torch thread); the files are committed, so tests never need
Python.
"""

import argparse
import collections
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate import HERE, save  # noqa: E402

CALIBRATION_SAMPLES = 16


class Feeds(CalibrationDataReader):
    """Hands ORT's calibrator a fixed list of feeds."""

    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def gaussian_feeds(name, shape, seed):
    """CALIBRATION_SAMPLES seeded N(0, 1) feeds for one float input."""
    rng = np.random.default_rng(seed)
    return [{name: rng.normal(0, 1, shape).astype(np.float32)} for _ in range(CALIBRATION_SAMPLES)]


def source_path(name):
    return os.path.join(HERE, name, "model.onnx")


def source_inputs(name):
    """The inputs of models/<name>/test_data_set_0, in input order."""
    data = os.path.join(HERE, name, "test_data_set_0")
    count = len([f for f in os.listdir(data) if f.startswith("input_")])
    return [numpy_helper.to_array(onnx.load_tensor(os.path.join(data, f"input_{k}.pb")))
            for k in range(count)]


def op_counts(model):
    """`op: count` for every op type, domain-qualified outside the default domain."""
    counts = collections.Counter(
        f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in model.graph.node)
    return ", ".join(f"{op} {k}" for op, k in counts.most_common())


def resnet_tiny_qop(tmp):
    """resnet_tiny through quant_pre_process, then quantize_static in the QOperator format."""
    pre = os.path.join(tmp, "resnet_pre.onnx")
    out = os.path.join(tmp, "resnet_qop.onnx")
    # ORT's docs ask for this step: shape inference plus its basic optimizer, which folds the
    # 15 BatchNormalization nodes into the Conv weights (ConvBnFusion_* initializers).
    quant_pre_process(source_path("resnet_tiny"), pre)
    quantize_static(
        pre,
        out,
        Feeds(gaussian_feeds("input", (1, 3, 64, 64), 2024)),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return onnx.load(out), source_inputs("resnet_tiny")


def qat_network():
    """Conv-BN-ReLU x2 with a residual Add, depthwise Conv-BN-ReLU (stride 2), Conv-BN-ReLU,
    global average pool, Linear: input N x 3 x 32 x 32, 10 logits."""
    import torch
    from torch import nn
    from torch.ao import quantization as tq

    def conv_bn_relu(cin, cout, stride=1, groups=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = tq.QuantStub()
            self.conv1 = conv_bn_relu(3, 16)
            self.conv2 = conv_bn_relu(16, 16)
            self.add = torch.ao.nn.quantized.FloatFunctional()  # observed residual Add
            self.dw = conv_bn_relu(16, 16, stride=2, groups=16)
            self.conv3 = conv_bn_relu(16, 32)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)
            self.dequant = tq.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            a = self.conv1(x)
            x = self.add.add(a, self.conv2(a))
            x = self.conv3(self.dw(x))
            x = torch.flatten(self.pool(x), 1)
            return self.dequant(self.fc(x))

    return Net()


def cnn_qat(tmp):
    """qat_network through torch.ao's eager QAT flow, exported with the TorchScript exporter."""
    import torch
    from torch.ao import quantization as tq
    from torch.ao.nn.intrinsic import qat as nniqat
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
    )

    torch.manual_seed(5)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    net = qat_network()
    # Non-trivial BatchNorm statistics (fresh layers have mean 0, var 1, scale 1, shift 0).
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    net.train()
    net = tq.fuse_modules_qat(
        net, [[f"{b}.0", f"{b}.1", f"{b}.2"] for b in ("conv1", "conv2", "dw", "conv3")])
    # Plain FakeQuantize, not the x86 default's FusedMovingAvgObsFakeQuantize: the TorchScript
    # exporter has Q/DQ symbolics for fake_quantize_per_{tensor,channel}_affine only.
    activations = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    weights = FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    net.qconfig = QConfig(activation=activations, weight=weights)
    tq.prepare_qat(net, inplace=True)
    # BatchNorm statistics frozen first (the QAT recipe's late phase): the fused modules
    # fake-quantize weight * gamma / running_std, so moving statistics would leave the weight
    # observers with ranges of weights that are not the exported ones (and clip those).
    net.apply(nniqat.freeze_bn_stats)

    # Forward passes in training mode that set the observers, then the observers are frozen.
    gen = torch.Generator().manual_seed(6)
    for _ in range(8):
        net(torch.randn(8, 3, 32, 32, generator=gen))
    net.apply(tq.disable_observer)
    net.eval()

    sample = torch.randn(2, 3, 32, 32, generator=gen)
    path = os.path.join(tmp, "cnn_qat.onnx")
    torch.onnx.export(
        net, (sample,), path, dynamo=False, opset_version=13,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(path)

    # ORT against torch's own fake-quantized outputs, on the sample and on another batch size
    # (the batch axis must really be dynamic).
    other = torch.randn(3, 3, 32, 32, generator=gen)
    with torch.no_grad():
        compare_with_ort(model, [("sample (batch 2)", sample.numpy(), net(sample).numpy()),
                                 ("batch 3", other.numpy(), net(other).numpy())])
    return model, [sample.numpy()]


def bert_tiny_dyn(tmp):
    """bert_tiny_op17 through quantize_dynamic with its defaults (QInt8 weights, per-tensor)."""
    out = os.path.join(tmp, "bert_dyn.onnx")
    # No quant_pre_process, as in generate_qdq.py: keeps the exporter's tensor names.
    quantize_dynamic(source_path("bert_tiny_op17"), out)
    return onnx.load(out), source_inputs("bert_tiny_op17")


def cnn_qdq16(tmp):
    """tiny_cnn through quantize_static QDQ with uint16 activations and com.microsoft Q/DQ."""
    out = os.path.join(tmp, "cnn_qdq16.onnx")
    quantize_static(
        source_path("tiny_cnn"),
        out,
        Feeds(gaussian_feeds("input", (2, 3, 32, 32), 2025)),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"UseQDQContribOps": True},
    )
    inputs = source_inputs("tiny_cnn")
    return restore_opset(onnx.load(out), source_opset("tiny_cnn"), inputs), inputs


def source_opset(name):
    model = onnx.load(source_path(name), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def restore_opset(model, opset, inputs):
    """Sets the default-domain opset back to `opset`, checking that nothing else changes.

    ORT 1.31's quantizer converts any model it gives 16-bit types to opset 21, even with
    UseQDQContribOps (quant_utils.update_opset_version); older releases kept the source opset
    and relied on the com.microsoft Q/DQ for 16 bits, which is the form this model exists to
    exercise. The ops left in the default domain (Conv, BatchNormalization, MaxPool,
    GlobalAveragePool, Flatten, Gemm) mean the same at both opsets for float tensors; the ONNX
    checker (in `save`) and identical ORT outputs below confirm it.
    """
    import onnxruntime as ort

    restored = onnx.ModelProto()
    restored.CopyFrom(model)
    next(o for o in restored.opset_import if o.domain in ("", "ai.onnx")).version = opset
    outputs = []
    for m in (model, restored):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs)}))
    for a, b in zip(*outputs):
        if not np.array_equal(a, b):
            raise SystemExit(f"restoring opset {opset} changed the outputs")
    return restored


def compare_with_ort(model, cases):
    """Prints how far ORT's output of a one-input model is from `expected`, per (label, input,
    expected) case: reported, not asserted (fake-quant rounding may differ by one step)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for label, x, e in cases:
        diff = np.abs(sess.run(None, {name: x})[0] - e)
        print(f"  torch vs ORT on {label}: max abs diff {diff.max():.3g} "
              f"(output max abs {np.abs(e).max():.3g}), {int((diff > 1e-6).sum())} of "
              f"{diff.size} values differ by more than 1e-6")


MODELS = {
    "resnet_tiny_qop": resnet_tiny_qop,
    "cnn_qat": cnn_qat,
    "bert_tiny_dyn": bert_tiny_dyn,
    "cnn_qdq16": cnn_qdq16,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated model names: " + ", ".join(MODELS))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            model, inputs = MODELS[name](tmp)
        save(name, model, inputs)
        size = os.path.getsize(os.path.join(HERE, name, "model.onnx"))
        print(f"  {size / 1e6:.2f} MB; {op_counts(model)}")


if __name__ == "__main__":
    main()
