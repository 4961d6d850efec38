from common import *
import copy, sys
bs = int(sys.argv[1]); steps = int(sys.argv[2]); lr = float(sys.argv[3]); lam = float(sys.argv[4])
NC = int(os.environ.get("NC", 256))
m, s = load()
cal, held = data(NC, 1), data(8, 2)
ref = logits(m, held)
refc = logits(m, cal).float()
q = copy.deepcopy(m)
entries = []; params = []
for n, lin in linears(q):
    w = lin.weight.data.clone()
    b = min(bs, w.shape[1])
    sc = rtn_scale(w, b)
    S = sc.repeat_interleave(b, dim=1)
    fl = torch.floor(w / S)
    rest = w / S - fl
    # init so h(V) = rest
    p = ((rest + 0.1) / 1.2).clamp(0.01, 0.99)
    V = torch.log(p / (1 - p)).requires_grad_(True)
    entries.append((lin, S, fl, V)); params.append(V)
def h(V): return torch.clamp(torch.sigmoid(V) * 1.2 - 0.1, 0, 1)
def apply(hard=False):
    for lin, S, fl, V in entries:
        hv = (h(V) >= 0.5).float() if hard else h(V)
        wq = torch.clamp(fl + hv, -8, 7) * S
        del lin.weight; lin.weight = wq
opt = torch.optim.Adam(params, lr=lr)
warm = steps // 5
for it in range(steps + 1):
    if it % (steps // 5) == 0:
        with torch.no_grad():
            apply(True)
            print(it, "held", round(sqnr(ref, q(input_ids=held, use_cache=False).logits.double()), 3), flush=True)
    apply()
    out = q(input_ids=cal, use_cache=False).logits
    rec = ((out - refc) ** 2).sum(-1).mean()
    if it < warm: reg = torch.tensor(0.)
    else:
        beta = 20 - (20 - 2) * (it - warm) / (steps - warm)
        reg = sum((1 - (2 * h(V) - 1).abs() ** beta).sum() for _, _, _, V in entries)
    loss = rec + lam * reg
    opt.zero_grad(); loss.backward(); opt.step()
