from common import *
from gptq_lib import gptq
import copy, sys
bs = int(sys.argv[1]); vmode = sys.argv[2]
m, s, cal, held, ref, q, lins = setup()
NC = len(cal)
X = {}
def hk(n):
    def f(mod, inp, out): X.setdefault(n, []).append(inp[0].detach().double())
    return f
hs = [mod.register_forward_hook(hk(n)) for n, mod in lins]
with torch.no_grad():
    out = q(input_ids=cal, use_cache=False, output_attentions=True)
for h in hs: h.remove()
att = [a.detach().double() for a in out.attentions]  # per layer [B, H, T, T]
H = {}
for n, xs in X.items():
    x = torch.cat(xs).reshape(-1, xs[0].shape[-1]); H[n] = x.T @ x
nh, nkv, hd = s.heads, s.kv_heads, s.head_dim
rep = nh // nkv
Hv = {}
for li in range(s.layers):
    n = f"{li}.self_attn.v_proj"
    x = torch.cat(X[n])  # [B, T, K]
    A = att[li]
    Hg = []
    for g in range(nkv):
        acc = 0
        for h in range(g * rep, (g + 1) * rep):
            # o_proj weight columns for head h: Wo[:, h*hd:(h+1)*hd]
            ax = A[:, h] @ x  # [B, T, K]
            ax = ax.reshape(-1, ax.shape[-1])
            acc = acc + ax.T @ ax
        Hg.append(acc)
    Hv[n] = torch.stack([Hg[r // hd] for r in range(nkv * hd)])
for n, lin in lins:
    w = lin.weight.data.double(); b = min(bs, w.shape[1])
    if vmode == "rtnall":
        lin.weight.data = qdq(w, rtn_scale(w, b), b).float(); continue
    Hu = Hv[n] if (vmode == "attn" and n in Hv) else H[n]
    lin.weight.data = gptq(w, Hu, b).float()
print(vmode, bs, NC, sqnr(ref, logits(q, held)))
