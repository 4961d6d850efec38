#!/usr/bin/env python3
"""Generates the small models under models/ that Kiln's tests and demo use.

Each model is built with the `onnx` helper (seeded random weights) to reproduce one habit of
a real exporter, and gets a `test_data_set_0/` with inputs and the outputs ONNX Runtime
computes, in the ONNX test-data layout. Run from anywhere:

    pip install onnx==1.20.1 onnxruntime==1.31.1 numpy
    python3 models/generate.py

Output is deterministic (fixed seeds); the files are committed, so tests never need Python.
"""

import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
# ONNX Runtime 1.31 reads IR up to 13; onnx's helper would write a newer one by default.
MAX_IR = 10


def rng(seed):
    return np.random.default_rng(seed)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def write_test_data(folder, feeds, outputs, index=0):
    """Writes <folder>/test_data_set_<index>/input_k.pb and output_k.pb, in the order given.

    `feeds` and `outputs` are lists of (name, numpy array).
    """
    data = os.path.join(folder, f"test_data_set_{index}")
    os.makedirs(data, exist_ok=True)
    for kind, values in (("input", feeds), ("output", outputs)):
        for k, (n, v) in enumerate(values):
            t = numpy_helper.from_array(v, n)
            open(os.path.join(data, f"{kind}_{k}.pb"), "wb").write(t.SerializeToString())


def save(name, model, inputs, external=False, sorted_nodes=True):
    """Writes models/<name>/model.onnx and test_data_set_0 computed by ONNX Runtime."""
    import onnxruntime as ort

    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    # The checker insists on topological order, which some exporters do not keep.
    if sorted_nodes:
        onnx.checker.check_model(model, full_check=True)
    path = os.path.join(folder, "model.onnx")
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin", size_threshold=0)
    else:
        onnx.save_model(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[k] for k, i in enumerate(sess.get_inputs())}
    outputs = sess.run(None, feeds)
    write_test_data(folder, list(feeds.items()),
                    [(o.name, v) for o, v in zip(sess.get_outputs(), outputs)])
    print(f"{name}: {len(model.graph.node)} nodes, outputs {[o.shape for o in outputs]}")


def model(graph, opset, ir=MAX_IR, producer="kiln-models"):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name=producer, producer_version="1.0")
    m.ir_version = ir
    return m


def tiny_cnn():
    """A PyTorch-style CNN: Conv+BatchNorm+Relu, MaxPool, Conv+Clip(0,6), global pool, Gemm."""
    r = rng(1)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    inits = [
        init("conv1.weight", r.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32)),
        init("conv1.bias", r.normal(0, 0.1, 16).astype(np.float32)),
        init("bn1.scale", r.uniform(0.5, 1.5, 16).astype(np.float32)),
        init("bn1.bias", r.normal(0, 0.1, 16).astype(np.float32)),
        init("bn1.mean", r.normal(0, 0.1, 16).astype(np.float32)),
        init("bn1.var", r.uniform(0.5, 1.5, 16).astype(np.float32)),
        init("conv2.weight", r.normal(0, 0.2, (32, 16, 3, 3)).astype(np.float32)),
        init("conv2.bias", r.normal(0, 0.1, 32).astype(np.float32)),
        init("fc.weight", r.normal(0, 0.2, (10, 32)).astype(np.float32)),
        init("fc.bias", r.normal(0, 0.1, 10).astype(np.float32)),
        init("clip.min", np.array(0.0, np.float32)),
        init("clip.max", np.array(6.0, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"],
                         name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization",
                         ["/conv1/Conv_output_0", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
                         ["/bn1/BatchNormalization_output_0"], name="/bn1/BatchNormalization"),
        helper.make_node("Relu", ["/bn1/BatchNormalization_output_0"], ["/relu/Relu_output_0"],
                         name="/relu/Relu"),
        helper.make_node("MaxPool", ["/relu/Relu_output_0"], ["/pool/MaxPool_output_0"],
                         name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["/pool/MaxPool_output_0", "conv2.weight", "conv2.bias"],
                         ["/conv2/Conv_output_0"], name="/conv2/Conv", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Clip", ["/conv2/Conv_output_0", "clip.min", "clip.max"],
                         ["/act/Clip_output_0"], name="/act/Clip"),
        helper.make_node("GlobalAveragePool", ["/act/Clip_output_0"], ["/gap/GlobalAveragePool_output_0"],
                         name="/gap/GlobalAveragePool"),
        helper.make_node("Flatten", ["/gap/GlobalAveragePool_output_0"], ["/Flatten_output_0"],
                         name="/Flatten", axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["logits"],
                         name="/fc/Gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "tiny_cnn", [x], [y], inits)
    inp = rng(100).normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
    return model(g, 13), [inp]


def constant_weights():
    """paddle2onnx habit: every weight in a Constant node, nodes unnamed, opset 12."""
    r = rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])
    y = helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", TensorProto.FLOAT, [None, 4])
    w1 = r.normal(0, 0.5, (8, 16)).astype(np.float32)
    b1 = r.normal(0, 0.1, 16).astype(np.float32)
    w2 = r.normal(0, 0.5, (16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["linear_0.w_0"], value=init("", w1)),
        helper.make_node("Constant", [], ["linear_0.b_0"], value=init("", b1)),
        helper.make_node("Constant", [], ["linear_1.w_0"], value=init("", w2)),
        helper.make_node("Constant", [], ["scale"], value_float=0.5),
        helper.make_node("MatMul", ["x", "linear_0.w_0"], ["linear_0.tmp_0"]),
        helper.make_node("Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"]),
        helper.make_node("Tanh", ["linear_0.tmp_1"], ["tanh_0.tmp_0"]),
        helper.make_node("MatMul", ["tanh_0.tmp_0", "linear_1.w_0"], ["linear_1.tmp_0"]),
        helper.make_node("Mul", ["linear_1.tmp_0", "scale"], ["save_infer_model/scale_0.tmp_0"]),
    ]
    g = helper.make_graph(nodes, "paddle_mlp", [x], [y])
    return model(g, 12, producer="PaddlePaddle"), [rng(101).normal(0, 1, (3, 8)).astype(np.float32)]


def legacy_opset9():
    """Old Caffe2/CNTK habit: IR 3, opset 9, initializers also listed as graph inputs."""
    r = rng(3)
    w = r.normal(0, 0.5, (4, 6)).astype(np.float32)
    b = r.normal(0, 0.1, 4).astype(np.float32)
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 4])
    inputs = [x, helper.make_tensor_value_info("fc_w", TensorProto.FLOAT, [4, 6]),
              helper.make_tensor_value_info("fc_b", TensorProto.FLOAT, [4])]
    nodes = [
        helper.make_node("Gemm", ["data", "fc_w", "fc_b"], ["fc"], transB=1),
        helper.make_node("Softmax", ["fc"], ["prob"], axis=1),
    ]
    g = helper.make_graph(nodes, "legacy", inputs, [y], [init("fc_w", w), init("fc_b", b)])
    return model(g, 9, ir=3, producer="caffe2"), [rng(102).normal(0, 1, (1, 6)).astype(np.float32)]


def tf2onnx_names():
    """tf2onnx habit: tensor names with ':' and '/', nodes out of topological order, NHWC Transposes."""
    r = rng(4)
    x = helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["unk__6", 8, 8, 3])
    y = helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, ["unk__7", 8, 8, 4])
    k = r.normal(0, 0.4, (4, 3, 1, 1)).astype(np.float32)
    nodes = [
        # Listed out of order on purpose: consumers before producers.
        helper.make_node("Transpose", ["model/conv/BiasAdd:0"], ["Identity:0"], name="Identity__5",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Conv", ["model/conv/Conv2D__2:0", "model/conv/kernel:0", "model/conv/bias:0"],
                         ["model/conv/BiasAdd:0"], name="model/conv/BiasAdd"),
        helper.make_node("Transpose", ["input_1:0"], ["model/conv/Conv2D__2:0"],
                         name="model/conv/Conv2D__2", perm=[0, 3, 1, 2]),
    ]
    g = helper.make_graph(nodes, "tf2onnx", [x], [y],
                          [init("model/conv/kernel:0", k),
                           init("model/conv/bias:0", r.normal(0, 0.1, 4).astype(np.float32))])
    m = model(g, 13, producer="tf2onnx")
    return m, [rng(103).normal(0, 1, (1, 8, 8, 3)).astype(np.float32)]


def control_flow():
    """If and Loop bodies that read outer-scope values, one level and two levels deep."""
    r = rng(5)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])
    w = init("w", r.normal(0, 1, 4).astype(np.float32))
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["then_out"])], "then", [],
                               [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [4])])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "w"], ["else_out"])], "else", [],
                               [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [4])])
    # Loop body: acc = acc + If(cond, x*w, x) — the inner If reads main-graph values two levels down.
    inner_then = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["it_out"])], "inner_then", [],
                                   [helper.make_tensor_value_info("it_out", TensorProto.FLOAT, [4])])
    inner_else = helper.make_graph([helper.make_node("Identity", ["x"], ["ie_out"])], "inner_else", [],
                                   [helper.make_tensor_value_info("ie_out", TensorProto.FLOAT, [4])])
    body = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["step"], then_branch=inner_then, else_branch=inner_else),
            helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"),
        helper.make_node("Constant", [], ["trips"], value=init("", np.array(3, np.int64))),
        helper.make_node("Constant", [], ["zeros"], value=init("", np.zeros(4, np.float32))),
        helper.make_node("Loop", ["trips", "", "zeros"], ["z"], body=body, name="accumulate"),
    ]
    g = helper.make_graph(nodes, "control_flow", [x, cond], [y, z], [w])
    return model(g, 13), [rng(104).normal(0, 1, 4).astype(np.float32), np.array(True)]


def external_mlp():
    """Weights in an external data file (the >2 GiB export form, small here)."""
    r = rng(6)
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 32])
    inits = [init("l1.w", r.normal(0, 0.2, (64, 128)).astype(np.float32)),
             init("l1.b", r.normal(0, 0.1, 128).astype(np.float32)),
             init("l2.w", r.normal(0, 0.2, (128, 32)).astype(np.float32))]
    nodes = [
        helper.make_node("MatMul", ["features", "l1.w"], ["h"], name="l1"),
        helper.make_node("Add", ["h", "l1.b"], ["hb"], name="l1_bias"),
        helper.make_node("Relu", ["hb"], ["ha"], name="act"),
        helper.make_node("MatMul", ["ha", "l2.w"], ["out"], name="l2"),
    ]
    g = helper.make_graph(nodes, "external_mlp", [x], [y], inits)
    return model(g, 17), [rng(105).normal(0, 1, (2, 64)).astype(np.float32)]


def main():
    for name, build, options in [
        ("tiny_cnn", tiny_cnn, {}),
        ("constant_weights", constant_weights, {}),
        ("legacy_opset9", legacy_opset9, {}),
        ("tf2onnx_names", tf2onnx_names, {"sorted_nodes": False}),
        ("control_flow", control_flow, {}),
        ("external_mlp", external_mlp, {"external": True}),
    ]:
        m, inputs = build()
        save(name, m, inputs, **options)


if __name__ == "__main__":
    main()
