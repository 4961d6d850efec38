from common import *

def chol_inv_upper(H, damp=0.01):
    # H [..., K, K] -> upper Cholesky of H^-1
    K = H.shape[-1]
    d = torch.diagonal(H, dim1=-2, dim2=-1).mean(-1)
    H = H + (damp * d)[..., None, None] * torch.eye(K, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True)

def gptq(w, H, bs, damp=0.01):
    """w [N, K] float64; H [K, K] shared or [N, K, K] per row. Returns dequantized weights."""
    w = w.clone().double(); N, K = w.shape
    U = chol_inv_upper(H.double(), damp)
    if U.dim() == 2: U = U.expand(N, K, K)
    q = torch.zeros_like(w)
    scale = None
    for j in range(K):
        if j % bs == 0:
            blk = w[:, j:j + bs]
            idx = blk.abs().argmax(-1, keepdim=True)
            scale = (torch.gather(blk, -1, idx) / -8.0).squeeze(-1)
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        qj = torch.clamp(torch.round(w[:, j] / scale), -8, 7) * scale
        q[:, j] = qj
        e = (w[:, j] - qj) / U[:, j, j]
        w[:, j + 1:] -= e[:, None] * U[:, j, j + 1:]
    return q

def gptq_int(w, H, bs, damp=0.01):
    """Like gptq but returns (integers [N,K], scales [N, nb])."""
    w = w.clone().double(); N, K = w.shape
    U = chol_inv_upper(H.double(), damp)
    if U.dim() == 2: U = U.expand(N, K, K)
    z = torch.zeros_like(w); scales = []
    for j in range(K):
        if j % bs == 0:
            blk = w[:, j:j + bs]
            idx = blk.abs().argmax(-1, keepdim=True)
            scale = (torch.gather(blk, -1, idx) / -8.0).squeeze(-1)
            scale = torch.where(scale == 0, torch.ones_like(scale), scale); scales.append(scale)
        zj = torch.clamp(torch.round(w[:, j] / scale), -8, 7)
        z[:, j] = zj
        e = (w[:, j] - zj * scale) / U[:, j, j]
        w[:, j + 1:] -= e[:, None] * U[:, j, j + 1:]
    return z, torch.stack(scales, 1)

def refit(z, scales, target, H, bs):
    """Least-squares block scales given integers: min (target - Wq) H (target - Wq)^T per row."""
    N, K = z.shape; nb = K // bs
    D = torch.zeros(N, K, nb, dtype=torch.float64)
    for b in range(nb): D[:, b * bs:(b + 1) * bs, b] = z[:, b * bs:(b + 1) * bs]
    G = torch.einsum("nkb,kl,nlc->nbc", D, H, D) + 1e-9 * torch.eye(nb, dtype=torch.float64)
    r = torch.einsum("nkb,kl,nl->nb", D, H, target)
    s = torch.linalg.solve(G, r.unsqueeze(-1)).squeeze(-1)
    return z * s.repeat_interleave(bs, dim=1)

def coord_descent(z, scales, target, H, bs, sweeps=3, qmin=-8, qmax=7):
    """Greedy integer coordinate descent on (t - s z)^T H (t - s z) per row, scales fixed."""
    N, K = z.shape
    S = scales.repeat_interleave(bs, dim=1)
    z = z.clone()
    r = target - z * S              # residual [N, K]
    g = r @ H                       # H r per row (H symmetric) [N, K]
    d = torch.diagonal(H)
    for _ in range(sweeps):
        changed = 0
        for j in range(K):
            s = S[:, j]
            best = torch.zeros(N, dtype=torch.float64); bestdz = torch.zeros(N, dtype=torch.float64)
            for dz in (-1.0, 1.0):
                nz = z[:, j] + dz
                ok = (nz >= qmin) & (nz <= qmax)
                # delta cost of r_j -> r_j - dz*s: -2 dz s g_j + dz^2 s^2 H_jj
                dc = -2 * dz * s * g[:, j] + (dz * s) ** 2 * d[j]
                better = ok & (dc < best)
                best = torch.where(better, dc, best); bestdz = torch.where(better, torch.full_like(bestdz, dz), bestdz)
            m = bestdz != 0
            if m.any():
                changed += int(m.sum())
                delta = bestdz * s
                z[:, j] += bestdz
                r[:, j] -= delta
                g -= delta[:, None] * H[j][None, :]
        if changed == 0: break
    return z

def refit_s(z, target, H, bs):
    N, K = z.shape; nb = K // bs
    D = torch.zeros(N, K, nb, dtype=torch.float64)
    for b in range(nb): D[:, b * bs:(b + 1) * bs, b] = z[:, b * bs:(b + 1) * bs]
    G = torch.einsum("nkb,kl,nlc->nbc", D, H, D) + 1e-9 * torch.eye(nb, dtype=torch.float64)
    r = torch.einsum("nkb,kl,nl->nb", D, H, target)
    return torch.linalg.solve(G, r.unsqueeze(-1)).squeeze(-1)
