#!/usr/bin/env python3
"""Quantizes models/bert_tiny_op17 with ONNX Runtime's static QDQ quantizer, for the tests of
`kiln validate --per-layer`.

Writes two folders (model.onnx + test_data_set_0, via generate.py's `save`):

- models/bert_tiny_qdq/: QDQ format, per-channel int8 weights, uint8 activations, MinMax
  calibration on seeded random inputs (valid token ids).
- models/bert_tiny_qdq_bad/: the same model with ONE activation's QuantizeLinear and
  DequantizeLinear scale forced 1000x too small (`BAD_TENSOR` below), so that tensor saturates:
  a deliberately badly-quantized layer. Its name is written to bad_tensor.txt next to the model,
  so tests know which layer must be reported first.

    pip install onnx==1.20.1 onnxruntime==1.31.1 numpy
    python3 models/generate_qdq.py

Deterministic (fixed seeds); the files are committed, so tests never need Python.
"""

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
    quantize_static,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate import HERE, save  # noqa: E402

SOURCE = os.path.join(HERE, "bert_tiny_op17", "model.onnx")
# The output of layer 1's attention output projection (before its bias Add): in the middle of
# the network, with float layers both before and after it.
BAD_TENSOR = "/model/encoder/layer.1/attention/output/dense/MatMul_output_0"
BAD_FACTOR = 1000.0
VOCAB = 1000  # bert_tiny's word embedding rows: token ids must be below this
BATCH, SEQ = 2, 16


def sample(rng):
    """One feed: random token ids, a mask with some padding, two segments."""
    ids = rng.integers(0, VOCAB, size=(BATCH, SEQ), dtype=np.int64)
    mask = np.ones((BATCH, SEQ), dtype=np.int64)
    mask[1, SEQ - 3:] = 0
    types = np.zeros((BATCH, SEQ), dtype=np.int64)
    types[:, SEQ // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class Reader(CalibrationDataReader):
    """Sixteen seeded calibration feeds."""

    def __init__(self):
        rng = np.random.default_rng(1234)
        self.feeds = iter([sample(rng) for _ in range(16)])

    def get_next(self):
        return next(self.feeds, None)


def quantize():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "qdq.onnx")
        # No quant_pre_process: the exporter's model already carries shapes where ORT needs
        # them, and the pre-processor's optimizer would rename tensors the tests match by name.
        quantize_static(
            SOURCE,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return onnx.load(out)


def force_bad_scale(model):
    """Divides the scale of BAD_TENSOR's QuantizeLinear/DequantizeLinear pair by BAD_FACTOR."""
    graph = model.graph
    q = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == BAD_TENSOR]
    if len(q) != 1:
        raise SystemExit(f"expected one QuantizeLinear of {BAD_TENSOR}, found {len(q)}")
    scale_names = {q[0].input[1]}
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] == q[0].output[0]:
            scale_names.add(n.input[1])
    inits = {t.name: t for t in graph.initializer}
    for name in scale_names:
        # The scale may be shared with other tensors' pairs: give this pair its own copy.
        fresh = f"{BAD_TENSOR}_forced_scale"
        arr = numpy_helper.to_array(inits[name]) / np.float32(BAD_FACTOR)
        graph.initializer.append(numpy_helper.from_array(arr.astype(np.float32), fresh))
        for n in graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and (
                n is q[0] or n.input[0] == q[0].output[0]
            ) and n.input[1] == name:
                n.input[1] = fresh
    # Drop the old scale if this pair was its only user (ORT warns about unused initializers).
    used = {i for n in graph.node for i in n.input}
    for name in scale_names - used:
        graph.initializer.remove(inits[name])
    return model


def main():
    model = quantize()
    rng = np.random.default_rng(7)
    feed = sample(rng)
    inputs = [feed["input_ids"], feed["attention_mask"], feed["token_type_ids"]]
    save("bert_tiny_qdq", model, inputs)
    bad = force_bad_scale(onnx.load_from_string(model.SerializeToString()))
    save("bert_tiny_qdq_bad", bad, inputs)
    with open(os.path.join(HERE, "bert_tiny_qdq_bad", "bad_tensor.txt"), "w") as f:
        f.write(BAD_TENSOR + "\n")


if __name__ == "__main__":
    main()
