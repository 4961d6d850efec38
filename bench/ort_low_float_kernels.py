#!/usr/bin/env python3
"""Which ops ONNX Runtime's CPU provider runs in float16 / bfloat16 (the table behind
`kiln_passes::precision::ort_cpu_lacks_kernel`).

For each op and low float type, a one-node model is built in the form precision pinning
writes: float32 graph inputs, `Cast` to the low float, the op on low-float inputs, `Cast`
back to float32. It is loaded with graph optimizations off and the session's optimized model
saved, then run on seeded random inputs. Each case gets one verdict:

  native    loads, runs, and the op still reads the low-float Casts in the model ORT runs
            (a real kernel)
  fallback  loads and runs, but ORT's InsertCastTransformer found no float16 kernel: it
            computes the op (or its inlined function body) in float32 and drops the
            f32 -> f16 -> f32 rounding around it, so the "pinned" op is not low precision
  fails     the session cannot be created or run (no kernel and no fallback; bfloat16
            has no InsertCastTransformer fallback)

Each op is tried at opset 17 (the BERT exports) and at opset 21 (ops newer than that: at their
first opset); the table takes the worst verdict over both. The max |error| against float32 ORT is printed as a sanity check.

    python3 bench/ort_low_float_kernels.py
"""

import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

LOW = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
SHAPE = [2, 4, 8]

# op -> (float inputs with shapes, attributes, first opset that has it)
OPS = {
    "LayerNormalization": ([SHAPE, [8], [8]], {"axis": -1, "epsilon": 1e-5}, 17),
    "Softmax": ([SHAPE], {"axis": -1}, 13),
    "Gelu": ([SHAPE], {}, 20),
    "Sigmoid": ([SHAPE], {}, 13),
    "Tanh": ([SHAPE], {}, 13),
    "Erf": ([SHAPE], {}, 13),
    "Div": ([SHAPE, SHAPE], {}, 14),
    "Pow": ([SHAPE, SHAPE], {}, 15),
    "ReduceMean": ([SHAPE], {"keepdims": 1}, 13),
    "Sqrt": ([SHAPE], {}, 13),
    "MatMul": ([SHAPE, [8, 5]], {}, 13),
    "Add": ([SHAPE, SHAPE], {}, 14),
    "Mul": ([SHAPE, SHAPE], {}, 14),
    "InstanceNormalization": ([SHAPE, [4], [4]], {"epsilon": 1e-5}, 6),
    "GroupNormalization": ([SHAPE, [2], [2]], {"num_groups": 2, "epsilon": 1e-5}, 18),
    "Exp": ([SHAPE], {}, 13),
    "Log": ([SHAPE], {}, 13),
    "ReduceSum": ([SHAPE], {"keepdims": 1}, 13),
    # ONNX Runtime's own op, registered in the default domain since version 1.
    "SimplifiedLayerNormalization": ([SHAPE, [8]], {"axis": -1, "epsilon": 1e-5}, 1),
    "RMSNormalization": ([SHAPE, [8]], {"axis": -1, "epsilon": 1e-5}, 23),
}


def model(op, low, opset):
    """float32 inputs -> Cast(low) -> op -> Cast(float32)."""
    shapes, attrs, _ = OPS[op]
    inputs, nodes, casted = [], [], []
    for i, shape in enumerate(shapes):
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, shape))
        if low is None:
            casted.append(f"x{i}")
        else:
            nodes.append(helper.make_node("Cast", [f"x{i}"], [f"c{i}"], to=low))
            casted.append(f"c{i}")
    attrs = dict(attrs)
    if op == "GroupNormalization" and opset >= 21:
        # Opset 21 takes scale/bias per channel, not per group.
        shapes = [SHAPE, [4], [4]]
        inputs[1] = helper.make_tensor_value_info("x1", TensorProto.FLOAT, [4])
        inputs[2] = helper.make_tensor_value_info("x2", TensorProto.FLOAT, [4])
    out = "y" if low is None else "op_out"
    nodes.append(helper.make_node(op, casted, [out], name="the_op", **attrs))
    if low is not None:
        nodes.append(helper.make_node("Cast", ["op_out"], ["y"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, op, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m, shapes


def feeds(op, shapes):
    rng = np.random.default_rng(0)
    out = {}
    for i, shape in enumerate(shapes):
        x = rng.standard_normal(shape).astype(np.float32)
        if op in ("Log", "Sqrt", "Pow") and i == 0:
            x = np.abs(x) + 0.1
        if op == "Div" and i == 1:
            x = np.sign(x) * (np.abs(x) + 0.5)
        out[f"x{i}"] = x
    return out


def run(m, feed, keep_model_to=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if keep_model_to:
        so.optimized_model_filepath = keep_model_to
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feed)[0]


def verdict(op, low_name, opset):
    m, shapes = model(op, LOW[low_name], opset)
    feed = feeds(op, shapes)
    ref = run(model(op, None, opset)[0], feed)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "opt.onnx")
        try:
            got = run(m, feed, path)
        except Exception as e:  # noqa: BLE001 - any failure is the verdict
            return "fails", str(e).splitlines()[0][:90]
        opt = onnx.load(path)
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    kept = [
        n
        for n in opt.graph.node
        if n.name == "the_op"
        and n.op_type == op
        and list(n.input) == [f"c{i}" for i in range(len(shapes))]
    ]
    return ("native" if kept else "fallback"), f"max|err| {err:.2e}"


RANK = {"native": 0, "fallback": 1, "fails": 2}


def main():
    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider")
    print(f"{'op':<30}{'float16':<10}{'bfloat16':<10} notes")
    table = {}
    for op, (_, _, first) in OPS.items():
        row, notes = [], []
        for low in LOW:
            worst = "native"
            for opset in sorted({max(17, first), max(21, first)}):
                v, note = verdict(op, low, opset)
                notes.append(f"{low}@{opset}: {v} ({note})")
                worst = max(worst, v, key=RANK.get)
            row.append(worst)
        table[op] = row
        print(f"{op:<30}{row[0]:<10}{row[1]:<10}")
        for n in notes:
            print(f"    {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
