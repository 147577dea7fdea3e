#!/usr/bin/env python3
"""Recompute a logged step's numbers from a phasemap checkpoint, independently of phasemap.

Usage: python3 test/recompute_checkpoint.py DIR/checkpoints/<trial_id>/step-<n>.safetensors [--check-gradients]

Reads the safetensors file with its own parser (8-byte little-endian header length, JSON header,
numpy.frombuffer), rebuilds the tanh MLP in float64 with input derivatives propagated forward
(science.md §2), the PDE residual (§3) of
    helmholtz2d   r = u_xx + u_yy + k^2 u - q            inputs (x, y) on [-1, 1]^2
    poisson2d     r = u_xx + u_yy - q                    inputs (x, y) on [-1, 1]^2
    burgers1d     r = u_t + u u_x - nu u_xx              inputs (x, t) on [-1, 1] x [0, 1]
    allen_cahn1d  r = u_t - d u_xx + 5 u^3 - 5 u         inputs (x, t) on [-1, 1] x [0, 1]
and the loss
    L = mean_i (lambda_i r_i)^2 + sum over the condition terms
over step n's batch (all N points, or the checkpoint's `batch` tensor for mini-batch trials). The
condition terms come from the metadata `conditions` (else `loss_weights`): `bc` on boundary.*, `ic` on
initial.*, each either
    value     w mean_j (u(x_j) - g_j)^2
    periodic  w mean_j [(u(a_j) - u(b_j))^2 + (u_s(a_j) - u_s(b_j))^2]   (a = first half of the
              points, b = second half, s = the periodic input `axis`; mean over the m/2 pairs).
The diagnostics of §5 come from per-batch gradients w.r.t. the weight matrices, derived by hand
(reverse mode through the value and derivative streams). Prints one JSON object:
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
#
# Each problem: input order, domain (for the res_homogeneity cells) and a function of the fields
#   (X, u, ud, us) -> (r, dr/du, [dr/du_i], [dr/du_ii])
# with ud[i] = du/dx_i, us[i] = d2u/dx_i^2 in input order; the partials drive the backward pass.

BOX = [(-1.0, 1.0), (-1.0, 1.0)]
XT = [(-1.0, 1.0), (0.0, 1.0)]


def make_problem(name, params):
    """(input_order, domain, residual_fn)."""
    if name in ("helmholtz2d", "poisson2d"):
        if name == "helmholtz2d":
            a1, a2, k = params["a1"], params["a2"], params["k"]
            k2 = k * k
            q = lambda X: (k2 - math.pi**2 * (a1 * a1 + a2 * a2)) * np.sin(a1 * math.pi * X[:, 0]) * np.sin(a2 * math.pi * X[:, 1])
        else:
            k2 = 0.0
            q = lambda X: -2.0 * math.pi**2 * np.sin(math.pi * X[:, 0]) * np.sin(math.pi * X[:, 1])

        def res(X, u, ud, us):
            one = np.ones_like(u)
            zero = np.zeros_like(u)
            return us[0] + us[1] + k2 * u - q(X), k2 * one, [zero, zero], [one, one]

        return ["x", "y"], BOX, res
    if name == "burgers1d":
        nu = params["nu"]

        def res(X, u, ud, us):
            u_x, u_t, u_xx = ud[0], ud[1], us[0]
            one = np.ones_like(u)
            zero = np.zeros_like(u)
            # r = u_t + u u_x - nu u_xx
            return u_t + u * u_x - nu * u_xx, u_x, [u, one], [-nu * one, zero]

        return ["x", "t"], XT, res
    if name == "allen_cahn1d":
        dd = params["d"]

        def res(X, u, ud, us):
            u_t, u_xx = ud[1], us[0]
            one = np.ones_like(u)
            zero = np.zeros_like(u)
            # r = u_t - d u_xx + 5 u^3 - 5 u
            return u_t - dd * u_xx + 5.0 * u**3 - 5.0 * u, 15.0 * u * u - 5.0, [zero, one], [-dd * one, zero]

        return ["x", "t"], XT, res
    raise SystemExit(f"recompute_checkpoint: problem {name!r} not supported (helmholtz2d, poisson2d, burgers1d, allen_cahn1d)")


def condition_terms(T, meta, f64):
    """[(name, kind, w, axis, points, values)] in the order of the metadata `conditions` (else bc, ic)."""
    sets = {"bc": "boundary", "ic": "initial"}
    if "conditions" in meta:
        specs = json.loads(meta["conditions"])
    else:
        weights = json.loads(meta["loss_weights"])
        specs = [{"name": "bc", "kind": "value", "w": weights["bc"]}]
        if "initial.points" in T:
            specs.append({"name": "ic", "kind": "value", "w": weights.get("ic", 1.0)})
    out = []
    for c in specs:
        pre = sets[c["name"]]
        kind = c.get("kind", "value")
        if kind not in ("value", "periodic"):
            raise SystemExit(f"recompute_checkpoint: condition kind {kind!r} not supported")
        out.append((c["name"], kind, float(c["w"]), int(c.get("axis", 0)), f64(T[f"{pre}.points"]), f64(T[f"{pre}.values"])))
    # Every condition set in the file must be in the loss.
    for nm, pre in sets.items():
        if f"{pre}.points" in T and not any(o[0] == nm for o in out):
            raise SystemExit(f"recompute_checkpoint: {pre}.points present but no {nm!r} condition term")
    return out


def main(argv):
    path = argv[1]
    check = "--check-gradients" in argv
    T, meta = load_safetensors(path)
    f64 = lambda a: np.array(a, dtype=np.float64)
    L = sum(1 for k in T if k.startswith("net.") and k.endswith(".weight"))
    Ws = [f64(T[f"net.{l}.weight"]) for l in range(L)]
    bs = [f64(T[f"net.{l}.bias"]) for l in range(L)]
    X = f64(T["collocation"])
    lam_stored = f64(T["lambda"])
    N, d = X.shape
    params = json.loads(meta["problem_params"])
    order, domain, res_fn = make_problem(meta["problem"], params)
    if json.loads(meta["input_order"]) != order:
        raise SystemExit(f"recompute_checkpoint: expected input_order {order}, got {meta['input_order']}")
    conds = condition_terms(T, meta, f64)

    def residual_loss_and_grads(idx, lam, want_grads):
        """(r [len(idx)], mean (lam r)^2 over idx, its weight-matrix gradients or None)."""
        u, ud, us, cache = forward(Ws, bs, X[idx], True)
        r, r_u, r_ud, r_us = res_fn(X[idx], u, ud, us)
        loss = float(np.mean((lam[idx] * r) ** 2))
        if not want_grads:
            return r, loss, None
        dr = 2.0 * lam[idx] ** 2 * r / len(idx)  # d/dr_i of mean_{i in idx} (lambda_i r_i)^2
        g = backward(Ws, X[idx], cache, dr * r_u, [dr * p for p in r_ud], [dr * p for p in r_us])
        return r, loss, g

    def cond_loss_and_grads(want_grads):
        """Sum of the condition terms and its weight-matrix gradients."""
        loss, grads = 0.0, [np.zeros_like(W) for W in Ws]
        for _name, kind, w, axis, P, g in conds:
            if kind == "value":
                u, _, _, cache = forward(Ws, bs, P, False)
                e = u - g
                loss += w * float(np.mean(e * e))
                if want_grads:
                    gw = backward(Ws, P, cache, w * 2.0 * e / len(e), [], [])
            else:  # periodic: first half a_j paired with second half b_j
                m = len(P)
                if m % 2:
                    raise SystemExit(f"recompute_checkpoint: periodic condition with an odd number of points ({m})")
                h = m // 2
                u, ud, _, cache = forward(Ws, bs, P, True)
                us_ = ud[axis]
                ev = u[:h] - u[h:]
                es = us_[:h] - us_[h:]
                loss += w * float(np.mean(ev * ev + es * es))
                if want_grads:
                    gu = np.concatenate([ev, -ev]) * (2.0 * w / h)
                    gs = np.concatenate([es, -es]) * (2.0 * w / h)
                    gud = [gs if i == axis else np.zeros(m) for i in range(d)]
                    gw = backward(Ws, P, cache, gu, gud, [np.zeros(m)] * d)
            if want_grads:
                for l in range(L):
                    grads[l] += gw[l]
        return loss, grads

    # Loss of step n (science.md §2), over step n's batch.
    bidx = np.asarray(T["batch"], dtype=np.int64) if "batch" in T else np.arange(N)
    _, loss_residual, _ = residual_loss_and_grads(bidx, lam_stored, False)
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
            r, _, g = residual_loss_and_grads(idx, lam_stored, True)
            r_all[idx] = r
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
        # res_homogeneity: 10 x 10 cells over the domain (x × y, or x × t), c_k = mean |r| in cell k
        # (empty cells skipped; the upper edge belongs to the last cell).
        cells = 10
        lo = np.array([a for a, _ in domain])
        hi = np.array([b for _, b in domain])
        ij = np.clip(np.floor((X - lo) / (hi - lo) * cells), 0, cells - 1).astype(np.int64)
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
        # Hand-derived gradient of batch 0's loss vs central differences on a few weights of every
        # layer, with the stored lambda and with lambda = 1 (so that the residual part is exercised
        # even where lambda is 0, as for RBA at step 0).
        batch_of = np.asarray(T["snr_batch"], dtype=np.int64) if "snr_batch" in T else np.zeros(N, dtype=np.int64)
        idx = np.nonzero(batch_of == 0)[0]
        worst = 0.0
        rng = np.random.default_rng(0)
        for lam in (lam_stored, np.ones(N)):
            _, _, g = residual_loss_and_grads(idx, lam, True)
            an_all = [gl + bl for gl, bl in zip(g, cond_loss_and_grads(True)[1])]

            def lb():
                return residual_loss_and_grads(idx, lam, False)[1] + cond_loss_and_grads(False)[0]

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
                    an = an_all[l][i, j]
                    # relative to the entry, floored at 1e-3 of the layer's largest entry (the
                    # differences' round-off, ~1e-16 L / h, swamps entries much smaller than that)
                    worst = max(worst, abs(fd - an) / max(1e-8, abs(fd), abs(an), 1e-3 * float(np.abs(an_all[l]).max())))
        out["gradient_check_max_rel_err"] = worst
    print(json.dumps(out))



if __name__ == "__main__":
    main(sys.argv)
