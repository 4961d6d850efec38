"""Takes `kiln compile --profile edgetpu` to a full-integer TFLite model, and checks it.

The Edge TPU runs only TFLite. The route that works here (measured, see bench/README.md):
the float model plus the calibration samples Kiln used go through onnx2tf with full-integer
quantization (`-oiqt`, uint8 input/output), whose TFLite converter calibrates min/max over the
same samples. Kiln's emitted QDQ model itself does not go through onnx2tf correctly: onnx2tf
turns a QuantizeLinear -> DequantizeLinear pair into an identity (its `bypass_fake_quant`), so the
clamp of a quantizer whose Relu/Clip Kiln folded away is lost (`--qdq-route` measures this).

Per model it then checks, with the TFLite interpreter (builtin kernels, no delegate):
- every tensor is int8/uint8, int32 only for biases (quantized) and shape/axis operands;
  input and output uint8; which ops are outside the Edge TPU compiler's op table;
- the .tflite runs, and agrees with ONNX Runtime on Kiln's emitted model (SQNR, top-1, and the
  uint8 outputs themselves, which share one scale when the converter chose Kiln's);
- whether Kiln's scales survive: each Kiln activation / weight scale against the TFLite tensor
  with the nearest scale (int8 zero point + 128 = Kiln's uint8 zero point), and the reverse.
edgetpu_compiler (a Coral apt package) is not run: it is not installable from PyPI.

Needs a venv with onnx2tf (it pins tensorflow 2.19, onnx 1.19.1, onnxruntime 1.23, numpy 1.26):

    python3 -m venv .venv && .venv/bin/pip install onnx2tf==1.29.24 sng4onnx sne4onnx
    .venv/bin/python bench/edgetpu_tflite.py --kiln target/release/kiln
    .venv/bin/python bench/edgetpu_tflite.py --models tiny_cnn --qdq-route

Outputs in bench/out/edgetpu_tflite/<model>/ (Kiln's output, the .tflite, onnx2tf's log) and
bench/out/edgetpu_tflite.json; markdown on stdout. Exit 1 if a model fails a check.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench", "quantize"))
from calibration import _structured_image, ensure_split, read_split  # noqa: E402

DATA = os.path.join(ROOT, "bench", "out", "quantize", "data")
OUT = os.path.join(ROOT, "bench", "out", "edgetpu_tflite")
# The Edge TPU compiler's op table (coral.ai/docs/edgetpu/models-intro, "Supported operations"),
# in TFLite builtin names. An op outside it, and usually everything after it, runs on the CPU.
EDGETPU_OPS = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE_CONV",
}
# onnx2tf looks for this file in its working directory and downloads MS-COCO samples from
# GitHub when it is missing (for its own sanity inference only; -cind gives the calibration).
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def sqnr(ref, y):
    err = float(((ref - y) ** 2).sum())
    return float("inf") if err == 0 else 10 * np.log10(float((ref ** 2).sum()) / err)


def run(cmd, log=None, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if log:
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n" + p.stdout + p.stderr)
    return p


def gap_flatten_to_mean(src, dst):
    """GlobalAveragePool -> Flatten/Reshape(to [N, C]) becomes ReduceMean(H, W, keepdims=0).

    Same values; without it onnx2tf flattens in NCHW order through a TRANSPOSE, an op the Edge
    TPU does not run (google-coral/edgetpu#193), which would leave the head on the CPU.
    """
    m = onnx.load(src)
    g = m.graph
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    consumers = Counter(i for n in g.node for i in n.input)
    by_input = {n.input[0]: n for n in g.node if n.input}
    rewritten = 0
    for n in list(g.node):
        if n.op_type != "GlobalAveragePool" or consumers[n.output[0]] != 1:
            continue
        nxt = by_input.get(n.output[0])
        axis = next((a.i for a in nxt.attribute if a.name == "axis"), 1) if nxt else None
        if nxt is None or nxt.op_type != "Flatten" or axis != 1:
            continue
        if opset >= 18:
            axes = numpy_helper.from_array(np.array([2, 3], np.int64), n.output[0] + "_axes")
            g.initializer.append(axes)
            mean = helper.make_node("ReduceMean", [n.input[0], axes.name], list(nxt.output),
                                    name=n.name + "_mean", keepdims=0)
        else:
            mean = helper.make_node("ReduceMean", [n.input[0]], list(nxt.output),
                                    name=n.name + "_mean", axes=[2, 3], keepdims=0)
        idx = list(g.node).index(n)
        g.node.remove(n)
        g.node.remove(nxt)
        g.node.insert(idx, mean)
        rewritten += 1
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return rewritten


def float_io(kiln_model, report, dst):
    """Kiln's emitted model with its uint8 inputs/outputs given back their edge Q/DQ (float I/O),
    as onnx2tf's integer quantizer takes float inputs."""
    m = onnx.load(kiln_model)
    g = m.graph
    front, back = [], []
    for q in report["quantized_io"]:
        zp_type = TensorProto.UINT8 if q["dtype"] == "uint8" else TensorProto.INT8
        s = numpy_helper.from_array(np.array(q["scale"], np.float32), q["name"] + "_io_scale")
        z = helper.make_tensor(q["name"] + "_io_zp", zp_type, [], [q["zero_point"]])
        g.initializer.extend([s, z])
        inner = q["name"] + "_int"
        if q["kind"] == "input":
            for n in g.node:
                n.input[:] = [inner if x == q["name"] else x for x in n.input]
            next(i for i in g.input if i.name == q["name"]).type.tensor_type.elem_type = \
                TensorProto.FLOAT
            front.append(helper.make_node("QuantizeLinear", [q["name"], s.name, z.name], [inner]))
        else:
            for n in g.node:
                n.output[:] = [inner if x == q["name"] else x for x in n.output]
            next(o for o in g.output if o.name == q["name"]).type.tensor_type.elem_type = \
                TensorProto.FLOAT
            back.append(helper.make_node("DequantizeLinear", [inner, s.name, z.name], [q["name"]]))
    nodes = front + list(g.node) + back
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


def nhwc_stack(folder, name):
    return np.concatenate([f[name] for f in read_split(folder)]).transpose(0, 2, 3, 1) \
        .astype(np.float32)


def write_onnx2tf_sample(folder):
    """Seeded stand-ins for the 20 MS-COCO images onnx2tf would download into folder."""
    sample = os.path.join(folder, ONNX2TF_SAMPLE)
    if not os.path.exists(sample):
        rng = np.random.default_rng(0)
        np.save(sample, np.stack([_structured_image(rng, 3, 128, 128).transpose(1, 2, 0)
                                  for _ in range(20)]).astype(np.float32))


def onnx2tf(model, out_dir, input_name, calib_npy, channels, log, integer=True):
    """Runs onnx2tf; returns the full-integer (or float32) .tflite path, or None."""
    exe = os.path.join(os.path.dirname(sys.executable), "onnx2tf")
    work = os.path.dirname(out_dir)
    write_onnx2tf_sample(work)
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [exe, "-i", model, "-o", out_dir]
    if integer:
        zeros, ones = str([[[[0.0] * channels]]]), str([[[[1.0] * channels]]])
        cmd += ["-oiqt", "-qt", "per-channel", "-iqd", "uint8", "-oqd", "uint8",
                "-cind", input_name, calib_npy, zeros, ones]
    p = run(cmd, log=log, cwd=work)
    stem = os.path.splitext(os.path.basename(model))[0]
    path = os.path.join(out_dir, f"{stem}_{'full_integer_quant' if integer else 'float32'}.tflite")
    return (path if p.returncode == 0 and os.path.exists(path) else None), cmd


def interpreter(path, xnnpack=False):
    """TFLite's reference builtin kernels, or (xnnpack) its default CPU path with the XNNPACK
    delegate; they round requantization differently, so both are measured."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=path, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def quantize(x, scale, zp, dtype):
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


def tflite_facts(it):
    """Tensor dtypes, ops, and the ops outside the Edge TPU table."""
    ops = [o["op_name"] for o in it._get_ops_details()]
    bias_like, shape_like, bad = 0, 0, []
    dtypes = Counter()
    for d in it.get_tensor_details():
        t = np.dtype(d["dtype"]).name
        dtypes[t] += 1
        quantized = len(d["quantization_parameters"]["scales"]) > 0
        if t == "int32":
            if quantized:
                bias_like += 1
            else:
                shape_like += 1
        elif t not in ("int8", "uint8"):
            bad.append(f"{d['name']}:{t}")
    return {
        "ops": dict(Counter(ops)),
        "ops_outside_edgetpu_table": sorted(set(ops) - EDGETPU_OPS),
        "tensor_dtypes": dict(dtypes),
        "int32_quantized": bias_like,
        "int32_unquantized_operands": shape_like,
        "non_integer_tensors": bad,
    }


def compare_scales(it, report):
    """Kiln's activation and weight scales against the TFLite tensor with the nearest scale."""
    acts, consts = [], []
    # A constant is a tensor no op writes and that is not the graph's input.
    produced = {i for o in it._get_ops_details() for i in o["outputs"]}
    produced |= {d["index"] for d in it.get_input_details()}
    for d in it.get_tensor_details():
        qp = d["quantization_parameters"]
        dtype = np.dtype(d["dtype"]).name
        if len(qp["scales"]) == 0 or dtype == "int32":
            continue
        zp = qp["zero_points"].astype(int)
        # int8 zero point + 128 is the uint8 zero point of the same grid.
        zp_u8 = zp + 128 if dtype == "int8" else zp
        entry = (d["name"], qp["scales"].astype(np.float64), zp_u8)
        (acts if d["index"] in produced else consts).append(entry)
    rows = {"activations": [], "weights": []}
    for t in report["quantize"]["tensors"]:
        if t["kind"] == "activation":
            s, z = float(t["scale"][0]), int(t["zero_point"][0])
            best = min(acts, key=lambda a: abs(a[1][0] - s) / s) if acts else None
            if best is None:
                continue
            rows["activations"].append({
                "kiln": t["name"], "kiln_scale": s, "kiln_zp": z, "tflite": best[0],
                "tflite_scale": float(best[1][0]), "tflite_zp_as_uint8": int(best[2][0]),
                "rel_diff": abs(float(best[1][0]) - s) / s})
        elif t["kind"] == "weight":
            s = np.array(t["scale"], np.float64)
            cands = [c for c in consts if len(c[1]) == len(s)]
            if not cands:
                rows["weights"].append({"kiln": t["name"], "tflite": None})
                continue
            best = min(cands, key=lambda c: float(np.max(np.abs(c[1] - s) / np.maximum(s, 1e-30))))
            rows["weights"].append({
                "kiln": t["name"], "tflite": best[0], "channels": len(s),
                "max_rel_diff": float(np.max(np.abs(best[1] - s) / np.maximum(s, 1e-30)))})
    kiln_scales = [float(t["scale"][0]) for t in report["quantize"]["tensors"]
                   if t["kind"] == "activation"]
    reverse = [min(abs(a[1][0] - k) / k for k in kiln_scales) for a in acts] if kiln_scales else []
    return rows, {"tflite_activation_tensors": len(acts),
                  "tflite_activations_matching_a_kiln_scale": int(sum(r < 1e-5 for r in reverse))}


def agree(it, kiln_model, float_model, report, held):
    """TFLite vs ORT on Kiln's emitted model vs the float model, on the held-out samples."""
    import onnxruntime as ort

    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = inp["quantization"], out["quantization"]
    qio = {q["kind"]: q for q in report["quantized_io"]}
    ks = ort.InferenceSession(kiln_model, providers=["CPUExecutionProvider"])
    fs = ort.InferenceSession(float_model, providers=["CPUExecutionProvider"])
    kin = ks.get_inputs()[0].name
    tq, kq, T, K, F = [], [], [], [], []
    for x in held:
        x = x[None]
        it.set_tensor(inp["index"], quantize(x, si, zi, inp["dtype"]))
        it.invoke()
        t = it.get_tensor(out["index"]).copy()
        tq.append(t.astype(np.int64))
        T.append((t.astype(np.float32) - zo) * so)
        xi = x.transpose(0, 3, 1, 2)
        k = ks.run(None, {kin: quantize(xi, qio["input"]["scale"], qio["input"]["zero_point"],
                                        np.uint8)})[0]
        kq.append(k.astype(np.int64))
        K.append((k.astype(np.float32) - qio["output"]["zero_point"]) * qio["output"]["scale"])
        F.append(fs.run(None, {fs.get_inputs()[0].name: xi})[0])
    T, K, F, tq, kq = map(np.concatenate, (T, K, F, tq, kq))
    same_grid = bool(np.isclose(so, qio["output"]["scale"], rtol=1e-6)
                     and zo == qio["output"]["zero_point"])
    res = {
        "samples": len(held),
        "tflite_input": [float(si), int(zi), np.dtype(inp["dtype"]).name],
        "tflite_output": [float(so), int(zo), np.dtype(out["dtype"]).name],
        "kiln_input": [qio["input"]["scale"], qio["input"]["zero_point"]],
        "kiln_output": [qio["output"]["scale"], qio["output"]["zero_point"]],
        "sqnr_tflite_vs_kiln_db": sqnr(K, T),
        "sqnr_tflite_vs_float_db": sqnr(F, T),
        "sqnr_kiln_vs_float_db": sqnr(F, K),
        "top1_tflite_vs_kiln": float((T.argmax(-1) == K.argmax(-1)).mean()),
        "top1_tflite_vs_float": float((T.argmax(-1) == F.argmax(-1)).mean()),
        "top1_kiln_vs_float": float((K.argmax(-1) == F.argmax(-1)).mean()),
    }
    if same_grid:
        d = np.abs(tq - kq)
        res["uint8_outputs_identical"] = float((d == 0).mean())
        res["uint8_max_lsb_diff"] = int(d.max())
    return res


def restore_clamps(src, dst):
    """After every activation QuantizeLinear -> DequantizeLinear pair, a Clip to the range the
    quantizer represents: the clamp onnx2tf drops (Kiln removed the Relu/Clip it implies)."""
    m = onnx.load(src)
    g = m.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    nodes = []
    for k, n in enumerate(list(g.node)):
        nodes.append(n)
        q = prod.get(n.input[0])
        if n.op_type != "DequantizeLinear" or q is None or q.op_type != "QuantizeLinear":
            continue
        scale, zp = float(init[n.input[1]]), init[n.input[2]]
        info = np.iinfo(zp.dtype)
        lo = numpy_helper.from_array(np.array((info.min - int(zp)) * scale, np.float32), f"clamp{k}_lo")
        hi = numpy_helper.from_array(np.array((info.max - int(zp)) * scale, np.float32), f"clamp{k}_hi")
        g.initializer.extend([lo, hi])
        out = n.output[0]
        n.output[0] = out + "_unclamped"
        nodes.append(helper.make_node("Clip", [n.output[0], lo.name, hi.name], [out]))
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, dst)


def fold_weight_dq(src, dst):
    """DequantizeLinear of a constant (weights, biases) replaced by its float result."""
    m = onnx.load(src)
    g = m.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in init:
            keep.append(n)
            continue
        x = init[n.input[0]].astype(np.float64)
        scale = init[n.input[1]].astype(np.float64)
        zp = init[n.input[2]].astype(np.float64) if len(n.input) > 2 else np.zeros_like(scale)
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and x.ndim > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        g.initializer.append(numpy_helper.from_array(((x - zp) * scale).astype(np.float32),
                                                     n.output[0]))
    del g.node[:]
    g.node.extend(keep)
    onnx.save(m, dst)


def qdq_route(kiln_model, report, work, held):
    """onnx2tf straight on Kiln's emitted QDQ model (float I/O form), float32 TFLite out: does
    the conversion keep the model's numbers? Then the same with the quantizers' clamps written
    as Clip, and with the weights' DequantizeLinear folded, to show which part onnx2tf loses."""
    import onnxruntime as ort

    fio = os.path.join(work, "kiln_float_io.onnx")
    float_io(kiln_model, report, fio)
    clamped = os.path.join(work, "kiln_clamped.onnx")
    restore_clamps(fio, clamped)
    folded = os.path.join(work, "kiln_clamped_folded.onnx")
    fold_weight_dq(clamped, folded)
    s = ort.InferenceSession(fio, providers=["CPUExecutionProvider"])
    ref = np.concatenate([s.run(None, {s.get_inputs()[0].name: x[None].transpose(0, 3, 1, 2)})[0]
                          for x in held[:8]])
    out = {}
    for key, model in (("as_emitted", fio), ("clamps_restored", clamped),
                       ("clamps_restored_weights_folded", folded)):
        stem = os.path.splitext(os.path.basename(model))[0]
        path, cmd = onnx2tf(model, os.path.join(work, "o2t_" + stem), None, None, 0,
                            os.path.join(work, f"onnx2tf_{stem}.log"), integer=False)
        if path is None:
            out[key] = {"converted": False, "command": cmd}
            continue
        it = interpreter(path)
        inp, o = it.get_input_details()[0], it.get_output_details()[0]
        got = []
        for x in held[:8]:
            it.set_tensor(inp["index"], x[None])
            it.invoke()
            got.append(it.get_tensor(o["index"]).copy())
        got = np.concatenate(got)
        out[key] = {"converted": True, "sqnr_vs_ort_db": sqnr(ref, got),
                    "top1": float((got.argmax(-1) == ref.argmax(-1)).mean())}
    return out


def one_model(name, args):
    model_dir = os.path.join(ROOT, "models", name)
    float_model = os.path.join(model_dir, "model.onnx")
    work = os.path.join(OUT, name)
    os.makedirs(work, exist_ok=True)
    calib, specs = ensure_split(model_dir, DATA, "calib", args.samples, 0)
    heldout, _ = ensure_split(model_dir, DATA, "heldout", args.heldout, 0)
    if len(specs) != 1 or specs[0].kind != "image_nchw":
        return {"model": name, "error": "the route here takes one NCHW image input"}
    inp = specs[0].name
    channels = specs[0].shape[1]
    kdir = os.path.join(work, "kiln")
    kcmd = [args.kiln, "compile", float_model, "--profile", "edgetpu", "-o", kdir,
            "--calibration", calib, "--check-inputs", heldout]
    p = run(kcmd)
    res = {"model": name, "kiln_command": kcmd, "kiln_exit": p.returncode}
    if p.returncode != 0:
        res["error"] = "kiln compile failed: " + p.stderr[-500:]
        return res
    kiln_model = os.path.join(kdir, "model.onnx")
    with open(os.path.join(kdir, "report.json")) as f:
        report = json.load(f)
    res["kiln_validation"] = report["validation"]["outputs"]

    calib_npy = os.path.join(work, "calib_nhwc.npy")
    np.save(calib_npy, nhwc_stack(calib, inp))
    held = nhwc_stack(heldout, inp)
    prepared = os.path.join(work, "model.onnx")
    res["gap_flatten_rewritten"] = gap_flatten_to_mean(float_model, prepared)
    path, cmd = onnx2tf(prepared, os.path.join(work, "o2t"), inp, calib_npy, channels,
                        os.path.join(work, "onnx2tf.log"))
    res["onnx2tf_command"] = cmd
    if path is None:
        res["error"] = "onnx2tf failed, see " + os.path.join(work, "onnx2tf.log")
        return res
    res["tflite"] = os.path.relpath(path, ROOT)
    res["tflite_bytes"] = os.path.getsize(path)
    it = interpreter(path)
    res["facts"] = tflite_facts(it)
    res["agreement"] = agree(it, kiln_model, float_model, report, held)
    res["agreement_xnnpack"] = agree(interpreter(path, xnnpack=True), kiln_model, float_model,
                                     report, held)
    res["scales"], res["scales_reverse"] = compare_scales(it, report)
    if args.qdq_route:
        res["qdq_route"] = qdq_route(kiln_model, report, work, held)
    f = res["facts"]
    res["full_integer"] = not f["non_integer_tensors"] and \
        res["agreement"]["tflite_input"][2] == "uint8" and \
        res["agreement"]["tflite_output"][2] == "uint8"
    return res


def markdown(results):
    lines = ["| model | full-integer | ops outside the Edge TPU table | SQNR vs Kiln (ORT) | "
             "SQNR vs float (TFLite / Kiln) | top-1 vs Kiln | uint8 outputs identical to Kiln's | "
             "Kiln act. scales kept | Kiln weight scales kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} |||||||")
            continue
        a, f = r["agreement"], r["facts"]
        acts = r["scales"]["activations"]
        ws = r["scales"]["weights"]
        kept_a = sum(x["rel_diff"] < 1e-5 and x["tflite_zp_as_uint8"] == x["kiln_zp"]
                     for x in acts)
        kept_w = sum(x.get("tflite") is not None and x["max_rel_diff"] < 1e-5 for x in ws)
        worst_a = max((x["rel_diff"] for x in acts), default=0.0)
        ident = []
        for kernels, ag in (("builtin", a), ("XNNPACK", r["agreement_xnnpack"])):
            same = ag.get("uint8_outputs_identical")
            ident.append(f"{kernels}: n/a (other output scale)" if same is None else
                         f"{kernels}: {same:.3f} (max {ag['uint8_max_lsb_diff']} LSB)")
        ident = "<br>".join(ident)
        lines.append(
            f"| {r['model']} | {'yes' if r['full_integer'] else 'NO'} | "
            f"{', '.join(f['ops_outside_edgetpu_table']) or 'none'} | "
            f"{a['sqnr_tflite_vs_kiln_db']:.1f} dB (XNNPACK "
            f"{r['agreement_xnnpack']['sqnr_tflite_vs_kiln_db']:.1f}) | "
            f"{a['sqnr_tflite_vs_float_db']:.2f} / "
            f"{a['sqnr_kiln_vs_float_db']:.2f} dB | {a['top1_tflite_vs_kiln']:.3f} | "
            f"{ident} | "
            f"{kept_a}/{len(acts)} (worst rel. diff {worst_a:.1e}) | {kept_w}/{len(ws)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--models", default="tiny_cnn,mobilenetv2_tiny")
    ap.add_argument("--samples", type=int, default=256, help="calibration samples")
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--qdq-route", action="store_true",
                    help="also run onnx2tf on Kiln's emitted QDQ model itself (float32 TFLite)")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "out", "edgetpu_tflite.json"))
    args = ap.parse_args()
    args.kiln = os.path.abspath(args.kiln)
    results = []
    for name in args.models.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        results.append(one_model(name, args))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1, default=float)
    print(markdown(results))
    for r in results:
        if "qdq_route" in r:
            print(f"\n{r['model']}: onnx2tf on Kiln's QDQ model, float32 TFLite vs ORT on it "
                  "(8 held-out samples):")
            for key, q in r["qdq_route"].items():
                print(f"  {key}: " + (f"{q['sqnr_vs_ort_db']:.2f} dB, top-1 {q['top1']:.3f}"
                                      if q["converted"] else "conversion failed"))
    ok = all("error" not in r and r["full_integer"] for r in results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
