"""Output SQNR of a quantized model against the float model, in ONNX Runtime on CPU."""

import math

import numpy as np
import onnxruntime as ort


def _session(path):
    # Default options (all graph optimizations, so QDQ runs the way a user's session runs it).
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_outputs(path, feeds):
    """Every output of the model at path for each feed, as float64 arrays, in output order."""
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    results = []
    for feed in feeds:
        outs = sess.run(None, {n: feed[n] for n in names})
        results.append([np.asarray(o, dtype=np.float64) for o in outs])
    return results


def sqnr_db(reference, quantized):
    """10·log10(Σ ref² / Σ (ref − q)²) over every element of every output of every feed."""
    signal = noise = 0.0
    for ref_outs, q_outs in zip(reference, quantized):
        if len(ref_outs) != len(q_outs):
            raise ValueError(f"{len(q_outs)} outputs, the float model has {len(ref_outs)}")
        for r, q in zip(ref_outs, q_outs):
            if r.shape != q.shape:
                raise ValueError(f"output shape {q.shape}, the float model gives {r.shape}")
            signal += float(np.sum(r * r))
            noise += float(np.sum((r - q) ** 2))
    if not math.isfinite(noise):
        return float("-inf")
    if noise == 0.0:
        return float("inf")
    return 10.0 * math.log10(signal / noise)


def model_sqnr(path, feeds, reference):
    """SQNR (dB) of the model at path against reference outputs on feeds."""
    return sqnr_db(reference, run_outputs(path, feeds))
