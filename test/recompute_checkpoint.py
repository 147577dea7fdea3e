#!/usr/bin/env python3
"""Recompute a logged step's numbers from a phasemap checkpoint, independently of phasemap.

Usage: python3 test/recompute_checkpoint.py DIR/checkpoints/<trial_id>/step-<n>.safetensors [--check-gradients]

Reads the safetensors file with its own parser (8-byte little-endian header length, JSON header,
numpy.frombuffer), rebuilds the tanh MLP in float64 with input derivatives propagated forward
(science.md §2), the PDE residual of helmholtz2d / poisson2d (§3), the loss
    L = mean_i (lambda_i r_i)^2 + w_bc mean_j (u(x_j) - g_j)^2
over step n's batch (all N points, or the checkpoint's `batch` tensor for mini-batch trials), and the
diagnostics of §5 from per-batch gradients w.r.t. the weight matrices, derived by hand (reverse mode
through the value and derivative streams). Prints one JSON object:
    {step, loss, loss_residual, loss_boundary, snr, snr_layers, grad_order, res_homogeneity, snr_adam}
`--check-gradients` also compares the hand-derived gradients with central differences (self-test).

Only numpy and the standard library; no phasemap code.
"""
import json
import math
import struct
import sys

import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8", "F16": "<f2", "U8": "u1"}


def load_safetensors(path):
    """(tensors as float64/int numpy arrays, metadata dict) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    if (8 + n) % 8 != 0:
        raise ValueError("header padding: 8 + header length is not a multiple of 8")
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    end_max = 0
    for name, spec in header.items():
        b, e = spec["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=DTYPES[spec["dtype"]]).reshape(spec["shape"])
        out[name] = arr
        end_max = max(end_max, e)
    if end_max != len(data):
        raise ValueError(f"byte buffer is {len(data)} bytes, tensors end at {end_max}")
    return out, meta


# ---------------------------------------------------------------------------------------------
# MLP with derivative streams: value v, first derivatives d[i], diagonal second derivatives s[i]


def forward(Ws, bs, X, streams):
    """Forward pass. Returns (u, ud, us, cache); ud/us: lists over the input dims (empty if not streams)."""
    L = len(Ws)
    d = X.shape[1]
    zv = X @ Ws[0] + bs[0]
    zd = [np.broadcast_to(Ws[0][i], zv.shape) for i in range(d)] if streams else []
    zs = [np.zeros_like(zv) for _ in range(d)] if streams else []
    cache = []
    for l in range(L - 1):
        a = np.tanh(zv)
        s1 = 1.0 - a * a
        s2 = -2.0 * a * s1
        ad = [s1 * z for z in zd]
        as_ = [s1 * zz + s2 * z * z for z, zz in zip(zd, zs)]
        cache.append(dict(zd=zd, zs=zs, a=a, s1=s1, s2=s2, av=a, ad=ad, as_=as_))
        W, b = Ws[l + 1], bs[l + 1]
        zv = a @ W + b
        zd = [t @ W for t in ad]
        zs = [t @ W for t in as_]
    return zv[:, 0], [z[:, 0] for z in zd], [z[:, 0] for z in zs], cache


def backward(Ws, X, cache, gu, gud, gus):
    """Gradients w.r.t. the weight matrices of a scalar loss with dloss/du = gu, dloss/du_i = gud[i], dloss/du_ii = gus[i]."""
    L = len(Ws)
    gW = [None] * L
    Gv = gu[:, None]
    Gd = [g[:, None] for g in gud]
    Gs = [g[:, None] for g in gus]
    for l in range(L - 1, 0, -1):
        c = cache[l - 1]
        W = Ws[l]
        gW[l] = c["av"].T @ Gv + sum((t.T @ g for t, g in zip(c["ad"], Gd)), np.zeros_like(W)) + sum(
            (t.T @ g for t, g in zip(c["as_"], Gs)), np.zeros_like(W)
        )
        Gav = Gv @ W.T
        Gad = [g @ W.T for g in Gd]
        Gas = [g @ W.T for g in Gs]
        a, s1, s2, zd, zs = c["a"], c["s1"], c["s2"], c["zd"], c["zs"]
        Gs1 = np.zeros_like(a)
        Gs2 = np.zeros_like(a)
        newGd, newGs = [], []
        for i in range(len(zd)):
            # ad_i = s1 zd_i ; as_i = s1 zs_i + s2 zd_i^2
            newGd.append(Gad[i] * s1 + Gas[i] * 2.0 * s2 * zd[i])
            newGs.append(Gas[i] * s1)
            Gs1 += Gad[i] * zd[i] + Gas[i] * zs[i]
            Gs2 += Gas[i] * zd[i] * zd[i]
        # s2 = -2 a s1 ; s1 = 1 - a^2 ; av = a
        Gs1 = Gs1 + Gs2 * (-2.0 * a)
        Ga = Gav + Gs2 * (-2.0 * s1) + Gs1 * (-2.0 * a)
        Gv = Ga * s1
        Gd, Gs = newGd, newGs
    # Layer 0: zv = X W0 + b0 ; zd_i = W0[i, :] (broadcast over points) ; zs_i = 0
    g0 = X.T @ Gv
    for i, g in enumerate(Gd):
        g0[i] += g.sum(axis=0)
    gW[0] = g0
    return gW


# ---------------------------------------------------------------------------------------------
# Problems (science.md §3)


def problem_terms(name, params):
    """(q(x, y), k2): r = u_xx + u_yy + k2 u - q on [-1, 1]^2."""
    if name == "helmholtz2d":
        a1, a2, k = params["a1"], params["a2"], params["k"]
        q = lambda X: (k * k - math.pi**2 * (a1 * a1 + a2 * a2)) * np.sin(a1 * math.pi * X[:, 0]) * np.sin(a2 * math.pi * X[:, 1])
        return q, k * k
    if name == "poisson2d":
        q = lambda X: -2.0 * math.pi**2 * np.sin(math.pi * X[:, 0]) * np.sin(math.pi * X[:, 1])
        return q, 0.0
    raise SystemExit(f"recompute_checkpoint: problem {name!r} not supported (helmholtz2d, poisson2d)")


def main(argv):
    path = argv[1]
    check = "--check-gradients" in argv
    T, meta = load_safetensors(path)
    f64 = lambda a: np.asarray(a, dtype=np.float64)
    L = sum(1 for k in T if k.startswith("net.") and k.endswith(".weight"))
    Ws = [f64(T[f"net.{l}.weight"]) for l in range(L)]
    bs = [f64(T[f"net.{l}.bias"]) for l in range(L)]
    X = f64(T["collocation"])
    lam = f64(T["lambda"])
    N, d = X.shape
    params = json.loads(meta["problem_params"])
    weights = json.loads(meta["loss_weights"])
    if json.loads(meta["input_order"]) != ["x", "y"]:
        raise SystemExit("recompute_checkpoint: expected input_order [x, y]")
    q, k2 = problem_terms(meta["problem"], params)
    Q = q(X)
    conds = [(f64(T["boundary.points"]), f64(T["boundary.values"]), float(weights["bc"]))]
    if "initial.points" in T:
        conds.append((f64(T["initial.points"]), f64(T["initial.values"]), float(weights["ic"])))

    def residual(idx):
        u, ud, us, cache = forward(Ws, bs, X[idx], True)
        return us[0] + us[1] + k2 * u - Q[idx], (ud, cache)

    def cond_loss_and_grads(want_grads):
        loss, grads = 0.0, [np.zeros_like(W) for W in Ws]
        for P, g, w in conds:
            u, _, _, cache = forward(Ws, bs, P, False)
            e = u - g
            loss += w * np.mean(e * e)
            if want_grads:
                for l, gw in enumerate(backward(Ws, P, cache, w * 2.0 * e / len(e), [], [])):
                    grads[l] += gw
        return loss, grads

    # Loss of step n (science.md §2), over step n's batch.
    bidx = np.asarray(T["batch"], dtype=np.int64) if "batch" in T else np.arange(N)
    r_b, _ = residual(bidx)
    loss_residual = float(np.mean((lam[bidx] * r_b) ** 2))
    loss_boundary, bc_grads = cond_loss_and_grads(True)
    out = {"step": int(meta["step"]), "loss": loss_residual + loss_boundary, "loss_residual": loss_residual, "loss_boundary": loss_boundary}

    # Diagnostics (science.md §5) over the fixed SNR split.
    if "snr_batch" in T:
        batch_of = np.asarray(T["snr_batch"], dtype=np.int64)
        B = int(batch_of.max()) + 1
        G = []
        r_all = np.empty(N)
        for b in range(B):
            idx = np.nonzero(batch_of == b)[0]
            r, (ud, cache) = residual(idx)
            r_all[idx] = r
            dr = 2.0 * lam[idx] ** 2 * r / len(idx)  # d/dr_i of mean_{i in b} (lambda_i r_i)^2
            g = backward(Ws, X[idx], cache, k2 * dr, [np.zeros_like(dr)] * d, [dr, dr])
            G.append([gl + bl for gl, bl in zip(g, bc_grads)])
        mu2 = var2 = ms2 = 0.0
        layers = []
        for l in range(L):
            Gl = np.stack([G[b][l].ravel() for b in range(B)])  # [B, P_l]
            mu = Gl.mean(axis=0)
            sd = Gl.std(axis=0)  # population, ddof = 0
            ms = (Gl * Gl).mean(axis=0)
            mu2 += float(mu @ mu)
            var2 += float(sd @ sd)
            ms2 += float(ms.sum())
            layers.append(math.sqrt(float(mu @ mu)) / math.sqrt(float(sd @ sd)))
        out["snr"] = math.sqrt(mu2) / math.sqrt(var2)
        out["snr_layers"] = layers
        out["grad_order"] = math.sqrt(mu2) / math.sqrt(ms2)
        # res_homogeneity: 10 x 10 cells over [-1, 1]^2, c_k = mean |r| in cell k (empty cells skipped).
        cells = 10
        ij = np.clip(np.floor((X + 1.0) / 2.0 * cells), 0, cells - 1).astype(np.int64)
        cell = ij[:, 0] * cells + ij[:, 1]
        cnt = np.bincount(cell, minlength=cells * cells)
        sm = np.bincount(cell, weights=np.abs(r_all), minlength=cells * cells)
        c = sm[cnt > 0] / cnt[cnt > 0]
        out["res_homogeneity"] = float(np.mean(c) / math.sqrt(np.mean(c * c))) if np.any(c) else 1.0
    else:
        out["snr"] = out["snr_layers"] = out["grad_order"] = out["res_homogeneity"] = None

    # snr_adam from the bias-corrected moments (null at t = 0).
    t = int(T["adam.step"][0])
    adam = json.loads(meta.get("adam", '{"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}'))
    if t > 0:
        names = [f"net.{l}.{p}" for p in ("weight", "bias") for l in range(L)]
        m2 = sum(float(np.sum(f64(T[f"adam.m.{nm}"]) ** 2)) for nm in names) / (1 - adam["beta1"] ** t) ** 2
        den = sum(float(np.sum((np.sqrt(f64(T[f"adam.v.{nm}"]) / (1 - adam["beta2"] ** t)) + adam["epsilon"]) ** 2)) for nm in names)
        out["snr_adam"] = math.sqrt(m2) / math.sqrt(den)
    else:
        out["snr_adam"] = None

    if check:
        # Hand-derived gradient of batch 0's loss vs central differences on a few weights.
        batch_of = np.asarray(T["snr_batch"], dtype=np.int64)
        idx = np.nonzero(batch_of == 0)[0]

        def lb():
            r, _ = residual(idx)
            return float(np.mean((lam[idx] * r) ** 2)) + cond_loss_and_grads(False)[0]

        worst = 0.0
        rng = np.random.default_rng(0)
        for l in range(L):
            for _ in range(4):
                i, j = rng.integers(Ws[l].shape[0]), rng.integers(Ws[l].shape[1])
                h = 1e-6
                w0 = Ws[l][i, j]
                Ws[l][i, j] = w0 + h
                lp = lb()
                Ws[l][i, j] = w0 - h
                lm = lb()
                Ws[l][i, j] = w0
                fd = (lp - lm) / (2 * h)
                an = G[0][l][i, j]
                worst = max(worst, abs(fd - an) / max(1e-8, abs(fd), abs(an)))
        out["gradient_check_max_rel_err"] = worst
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
