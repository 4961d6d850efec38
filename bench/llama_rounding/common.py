import json
import os
import sys
import numpy as np, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
sys.dont_write_bytecode = True
import generate_llama as gl
torch.set_num_threads(2)
FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "llama_tiny")

def load():
    c = json.load(open(os.path.join(FOLDER, "config.json")))
    s = gl.Shape.from_config_json(c)
    m = gl.hf_model(FOLDER, s)
    # own copies of params so we can modify
    for n, p in list(m.named_parameters()):
        mod, leaf = n.rsplit(".", 1)
        setattr(m.get_submodule(mod), leaf, torch.nn.Parameter(p.detach().clone().float(), requires_grad=False))
    return m.eval(), s

def data(n, seed, T=32, V=256):
    r = np.random.default_rng(seed)
    return torch.from_numpy(r.integers(0, V, (n, T)))

def logits(m, ids):
    with torch.no_grad():
        return m(input_ids=ids, use_cache=False).logits.double()

def linears(m):
    out = []
    for i, l in enumerate(m.model.layers):
        for name in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]:
            out.append((f"{i}.{name}", l.get_submodule(name)))
    out.append(("lm_head", m.lm_head))
    return out

def rtn_scale(w, bs):
    # w [N, K]; blocks along K. MLAS symmetric: scale = signed max / -8
    N, K = w.shape
    wb = w.reshape(N, K // bs, bs)
    idx = wb.abs().argmax(-1, keepdim=True)
    vmax = torch.gather(wb, -1, idx)
    return (vmax / -8.0).squeeze(-1)  # [N, nb]

def qdq(w, scale, bs):
    N, K = w.shape
    s = scale.repeat_interleave(bs, dim=1)
    return torch.clamp(torch.round(w / s), -8, 7) * s

def sqnr(ref, q):
    return 10 * torch.log10((ref ** 2).sum() / ((ref - q) ** 2).sum()).item()

def setup(nc_default=32):
    """(float model, shape, calibration ids, held-out ids, float held-out logits, a copy to
    quantize, its linears) with NC calibration samples (environment, default nc_default)."""
    import copy
    nc = int(os.environ.get("NC", nc_default))
    m, s = load()
    cal, held = data(nc, 1), data(8, 2)
    q = copy.deepcopy(m)
    return m, s, cal, held, logits(m, held), q, linears(q)
