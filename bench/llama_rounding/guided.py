from common import *
from gptq_lib import gptq
import copy, sys
bs = int(sys.argv[1]); mode = sys.argv[2]; probes = int(os.environ.get("PROBES", 8))
m, s, cal, held, ref, q, lins = setup()
NC = len(cal)
# capture inputs and output grads
store = {}
def hook_for(name):
    def fwd(mod, inp, out):
        store.setdefault(name, {})["x"] = inp[0].detach()
        out.register_hook(lambda g: store[name].__setitem__("g2", store[name].get("g2", 0) + g.detach() ** 2))
    return fwd
def stats(model, names_mods):
    hs = [mod.register_forward_hook(hook_for(n)) for n, mod in names_mods]
    H = {n: 0 for n, _ in names_mods}; Hr = {n: 0 for n, _ in names_mods}
    for p in model.parameters(): p.requires_grad_(False)
    for b in range(0, NC, 8):
        ids = cal[b:b + 8]
        store.clear()
        emb = model.model.embed_tokens(ids).detach().requires_grad_(True)
        out = model(inputs_embeds=emb, use_cache=False).logits
        for p in range(probes):
            u = torch.randn_like(out)
            out.backward(u, retain_graph=p < probes - 1)
        for n, _ in names_mods:
            x = store[n]["x"].reshape(-1, store[n]["x"].shape[-1]).double()
            H[n] = H[n] + x.T @ x
            if mode != "plain":
                g2 = (store[n]["g2"] / probes).reshape(-1, store[n]["g2"].shape[-1]).double()  # [T, N]
                Hr[n] = Hr[n] + torch.einsum("tn,tk,tl->nkl", g2, x, x)
    for h in hs: h.remove()
    return H, Hr
def quant(lin, n, H, Hr):
    w = lin.weight.data.double()
    b = min(bs, w.shape[1])
    Huse = H[n] if mode == "plain" else Hr[n]
    lin.weight.data = gptq(w, Huse, b).float()
if os.environ.get("SEQ"):
    for n, lin in lins:
        H, Hr = stats(q, [(n, lin)])
        quant(lin, n, H, Hr)
else:
    H, Hr = stats(q, lins)
    for n, lin in lins: quant(lin, n, H, Hr)
print(mode, bs, "seq" if os.environ.get("SEQ") else "one", sqnr(ref, logits(q, held)))
