"""Float64 GPTQ written plainly from the paper (Frantar et al. 2023, eqs. 2-3), for the tests.

It shares no code with the library and uses no Cholesky factor: it keeps the explicit inverse
Hessian of the columns not yet quantized and, after each column p, removes p from it with the OBS
downdate  Hinv <- Hinv - Hinv[:, p] Hinv[p, :] / Hinv[p, p].  Column p's error
(w_p - dq_p) / Hinv[p, p] is spread over the later columns through Hinv[p, :]; the loss adds
(w_p - dq_p)^2 / Hinv[p, p] / 2. There are no blocks (blocking is an implementation device).

Grid and order of operations: quality.md §1.3-1.4 (the IST-DASLab reference), with group grids
computed from the current weights at each group start (include/gptq/quantize.h).

Exact rounding ties (x/scale on a .5 boundary, which happens by construction for the absmax
element of a symmetric group) may round either way in two correct implementations. Passing
``follow`` (the codes [N, K] of the implementation under test) makes the reference adopt that
code wherever its own x/scale lies within ``tie_band`` of a boundary, so that one tie cannot send
the rest of a row down a different path; the number of adopted ties is returned.
"""

from __future__ import annotations

import torch


def grid(x: torch.Tensor, maxq: int, sym: bool, mse: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero [N] of the min-max grid of each row of x [N, m]; with mse > 0, the best of the
    range shrunk by 1 - i/100, i < 80, under the cost sum |dequant(quant(x)) - x|^mse."""
    xmin = x.amin(1).clamp(max=0)
    xmax = x.amax(1).clamp(min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both, -1.0, xmin)
    xmax = torch.where(both, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) // 2) if sym else torch.round(-xmin / scale)
    if mse > 0:
        best = torch.full_like(scale, float("inf"))
        for i in range(80):
            shrink = 1 - i / 100
            lo, hi = shrink * xmin, shrink * xmax
            s1 = (hi - lo) / maxq
            z1 = torch.full_like(s1, (maxq + 1) // 2) if sym else torch.round(-lo / s1)
            q = torch.clamp(torch.round(x / s1[:, None]) + z1[:, None], 0, maxq)
            cost = (s1[:, None] * (q - z1[:, None]) - x).abs().pow(mse).sum(1)
            better = cost < best
            best = torch.where(better, cost, best)
            scale = torch.where(better, s1, scale)
            zero = torch.where(better, z1, zero)
    return scale, zero


def gptq_reference(W, H, bits, group_size, sym, desc_act, static_groups, damp_percent=0.01,
                   follow=None, tie_band=1e-9, mse=0.0):
    """Returns dict(codes [N, K] int64 original order, scales/zeros [G, N], g_idx [K], loss, ties)."""
    W = W.double().clone()
    H = H.double().clone()
    N, K = W.shape
    maxq = 2**bits - 1
    gs = group_size
    G = 1 if gs == -1 else (K + gs - 1) // gs
    scales = torch.zeros(G, N, dtype=torch.float64)
    zeros = torch.zeros(G, N, dtype=torch.float64)
    if gs == -1:
        scales[0], zeros[0] = grid(W, maxq, sym, mse)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if gs != -1 and static_groups:
        for g in range(G):
            scales[g], zeros[g] = grid(W[:, g * gs:(g + 1) * gs], maxq, sym, mse)
    perm = torch.argsort(torch.diag(H), descending=True, stable=True) if desc_act else torch.arange(K)
    W = W[:, perm]
    H = H[perm][:, perm]
    H += damp_percent * torch.mean(torch.diag(H)) * torch.eye(K, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    if gs == -1:
        col_group = torch.zeros(K, dtype=torch.long)
    elif static_groups:
        col_group = perm // gs
    else:
        col_group = torch.arange(K) // gs
    follow_p = None if follow is None else follow.long()[:, perm]
    codes = torch.zeros(N, K, dtype=torch.long)
    loss = torch.zeros((), dtype=torch.float64)
    ties = 0
    for p in range(K):
        g = int(col_group[p])
        if gs != -1 and not static_groups and p % gs == 0:
            scales[g], zeros[g] = grid(W[:, p:p + gs], maxq, sym, mse)
        s, z = scales[g], zeros[g]
        x = W[:, p]
        t = x / s
        q = torch.clamp(torch.round(t) + z, 0, maxq)
        if follow_p is not None:
            other = follow_p[:, p].double()
            differ = other != q
            if differ.any():  # rare: look at the tie test only then
                near_tie = (t - torch.floor(t) - 0.5).abs() <= tie_band * torch.clamp(t.abs(), min=1.0)
                adopt = near_tie & differ & ((other - q).abs() == 1)
                ties += int(adopt.sum())
                q = torch.where(adopt, other, q)
        dq = s * (q - z)
        d = Hinv[p, p]
        r = x - dq
        loss += (r @ r) / d / 2
        err = r / d
        W[:, p + 1:] -= err[:, None] * Hinv[p, p + 1:][None, :]
        # Only the not-yet-quantized block of the inverse is needed from here on.
        Hinv[p + 1:, p + 1:] -= torch.outer(Hinv[p + 1:, p], Hinv[p, p + 1:]) / d
        codes[:, p] = q.long()
    loss = float(loss)
    invperm = torch.argsort(perm)
    g_idx = torch.empty(K, dtype=torch.long)
    g_idx[perm] = col_group
    return dict(codes=codes[:, invperm], scales=scales, zeros=zeros, g_idx=g_idx, loss=loss, ties=ties,
                perm=perm)


def correlated_inputs(tokens: int, K: int, seed: int, strength: float = 1.0) -> torch.Tensor:
    """Inputs with a decaying spectrum and strong cross-channel correlation, like LLM activations."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(tokens, K, generator=g, dtype=torch.float64)
    spectrum = torch.logspace(0, -2, K, dtype=torch.float64)
    mix = torch.randn(K, K, generator=g, dtype=torch.float64) / K**0.5
    X = (Z * spectrum) @ mix * strength + 0.05 * torch.randn(tokens, K, generator=g, dtype=torch.float64)
    # A few outlier channels, as in real activations (they drive act-order).
    X[:, :: max(1, K // 8)] *= 6
    return X
