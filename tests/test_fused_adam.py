"""Adam's and AdamW's compiled one-pass update (rnnlab.fast.adam_step) against their NumPy
path, bit for bit in float32 and float64: every weight, moment and running square a run
saves is the same whichever path ran (the figures in the docs were made on the NumPy one),
and a checkpoint resumes on either."""

import zlib

import numpy as np
import pytest
from helpers import oracle

from rnnlab import fast, settings
from rnnlab.optim import Adam, AdamW

oracle("numba")

SHAPES = {"scalar": (), "vector": (7,), "matrix": (13, 9), "long": (1000,), "cube": (3, 4, 5)}


def _values(rng, shape, dtype):
    """Gradients of every size a float can hold: tiny (subnormal), ordinary, past the point
    where g·g overflows (the running square's (1 − β2)·g·g fallback), exact zeros of either
    sign; here and there an inf or a NaN."""
    info = np.finfo(dtype)
    top = np.log10(info.max) + 2  # |g| up to 100x the largest float: inf where it is past
    exponent = rng.uniform(np.log10(info.smallest_subnormal) + 1, top, size=shape)
    with np.errstate(all="ignore"):
        g = np.asarray(rng.choice([-1.0, 1.0], size=shape) * 10.0**exponent).astype(dtype)
    pick = rng.random(shape)
    g[pick < 0.05] = 0.0
    g[(pick >= 0.05) & (pick < 0.08)] = -0.0
    g[(pick >= 0.08) & (pick < 0.20)] = rng.standard_normal(np.shape(g[(pick >= 0.08)
                                                                      & (pick < 0.20)]))
    if np.size(g) > 50:
        g.flat[3], g.flat[4], g.flat[5] = np.inf, -np.inf, np.nan
        # g·g overflows, (1 − β2)·g·g does not (and, the last, does)
        big = np.sqrt(info.max) * np.array([1.5, -20.0, 30.0, 1e3])
        g.flat[6:10] = big.astype(dtype)
    return np.asarray(g, dtype)


def _run(cls, kw, params, grads_seq, start, compiled):
    """The parameters and state after the updates of grads_seq, from a state at step `start`
    (its moments random), on the compiled path or on NumPy's."""
    params = {k: v.copy(order="A") for k, v in params.items()}
    opt = cls(**kw)
    rng = np.random.default_rng(7)
    state = opt.init(params)
    for k, p in params.items():
        state[f"m/{k}"][...] = rng.standard_normal(p.shape) * 0.1
        state[f"v/{k}"][...] = rng.random(p.shape) * 0.01
    state["step"] = np.array(start, np.int64)
    with settings.override(no_numba=not compiled), np.errstate(all="ignore"):
        for grads in grads_seq:
            opt.update(params, grads, state, lr=kw["lr"])
    return params, state


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,decay", [(Adam, 0.0), (Adam, 0.3), (AdamW, 0.0), (AdamW, 0.01)])
@pytest.mark.parametrize("start", [0, 1, 999_999])
@pytest.mark.parametrize("beta1", [0.9, 0.5, 0.0])  # (lerp's two forms: optim._lerp)
def test_the_compiled_step_is_numpy_s_bit_for_bit(monkeypatch, dtype, cls, decay, start, beta1):
    """Random parameters of every rank (a 0-d one, an F-ordered matrix), gradients from
    subnormal to overflowing g·g, three steps from t = 1, 2 and 10^6, a first moment
    averaged in either of torch's two forms: the same bits on both paths, every update of
    every parameter taken by the compiled pass."""
    if not fast.available():
        pytest.skip("rnnlab.fast is unavailable here: no compiled path to compare")
    # (crc32, not hash(): a str's hash changes with PYTHONHASHSEED, and with it the data of
    # every run, so that a failure would not come back when run again)
    rng = np.random.default_rng(zlib.crc32(repr((np.dtype(dtype).str, cls.name, decay, start,
                                                 beta1)).encode()))  # fmt: skip
    params = {k: np.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}
    params["fortran"] = np.asfortranarray(rng.standard_normal((6, 11)).astype(dtype))
    grads_seq = []
    for _ in range(3):
        grads = {k: _values(rng, p.shape, dtype) for k, p in params.items()}
        grads["fortran"] = np.asfortranarray(grads["fortran"])
        grads_seq.append(grads)
    kw = {"lr": 1e-3, "weight_decay": decay, "betas": (beta1, 0.999)}
    taken = []
    adam_step = fast.adam_step

    def recorded(*args, **kwargs):
        taken.append(adam_step(*args, **kwargs))
        return taken[-1]

    monkeypatch.setattr(fast, "adam_step", recorded)
    got_p, got_s = _run(cls, kw, params, grads_seq, start, compiled=True)
    assert len(taken) == 3 * len(params) and None not in taken
    want_p, want_s = _run(cls, kw, params, grads_seq, start, compiled=False)
    assert len(taken) == 3 * len(params)  # the NumPy path's run never asked for the kernel
    for k in params:
        assert _same_bits(got_p[k], want_p[k]), k
    assert set(got_s) == set(want_s)
    for k in want_s:
        assert _same_bits(got_s[k], want_s[k]), k
    assert got_p["fortran"].flags.f_contiguous


def test_arrays_the_kernel_does_not_take_go_the_numpy_way(monkeypatch):
    """float16; a float64 gradient of a float32 weight; a gradient that is the running
    square itself (NumPy's passes read the v of v·β2 through it); a strided view; a C-ordered
    weight with an F-ordered gradient; a step size that rounds to inf in float32. The kernel
    writes nothing to these, and the update is NumPy's to the bit."""
    if not fast.available():
        pytest.skip("rnnlab.fast is unavailable here: no compiled path to compare")
    def case(name):  # the same arrays at every call
        rng = np.random.default_rng(3)
        w = rng.standard_normal((5, 4)).astype(np.float32)
        g = rng.standard_normal((5, 4)).astype(np.float32)
        m = (rng.standard_normal((5, 4)) * 0.1).astype(np.float32)
        v = (rng.random((5, 4)) * 0.01).astype(np.float32)
        lr = 1e-3
        if name == "float16":
            w, g, m, v = (a.astype(np.float16) for a in (w, g, m, v))
        elif name == "float64 gradient":
            g = g.astype(np.float64)
        elif name == "gradient is v":
            g = v
        elif name == "strided":
            w, g, m, v = (np.repeat(a, 2, axis=1)[:, ::2] for a in (w, g, m, v))
        elif name == "orders differ":
            g = np.asfortranarray(g)
        elif name == "step past float32":
            lr = 1e300
        return w, g, m, v, lr

    names = ["float16", "float64 gradient", "gradient is v", "strided", "orders differ",
             "step past float32"]  # fmt: skip
    for name in names:
        w, g, m, v, lr = case(name)
        before = [a.copy(order="A") for a in (w, g, m, v)]
        assert fast.adam_step(w, g, m, v, lr, 3, (0.9, 0.999), 1e-8, 0.1, False) is None, name
        assert all(_same_bits(a, b) for a, b in zip((w, g, m, v), before, strict=True)), name
        results = []
        for compiled in (True, False):
            w, g, m, v, lr = case(name)
            params, grads = {"w": w}, {"w": g}
            state = {"step": np.array(2, np.int64), "m/w": m, "v/w": v}
            with settings.override(no_numba=not compiled), np.errstate(all="ignore"):
                # (float16's ε: Adam's 1e-8 is 0 there, which the update refuses)
                eps = 1e-4 if name == "float16" else 1e-8
                for cls in (Adam, AdamW):
                    cls(lr=1e-3, weight_decay=0.1, eps=eps).update(params, grads, state, lr=lr)
            results.append((w, m, v))
        for a, b in zip(*results, strict=True):
            assert _same_bits(a, b), name


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("order", [">f4", ">f8"])
def test_big_endian_parameters_take_the_numpy_path(cls, order, monkeypatch):
    """A parameter read big-endian from a file ('>f4', whose dtype char is 'f') reached the
    kernel, which numba cannot type: a TypingError traceback from Adam.update (reviewer 76).
    Its state (full_like) and a zeros_like gradient share its byte order."""
    p0 = np.linspace(-1, 1, 12).reshape(3, 4).astype(order)
    g = np.full_like(p0, 0.5)
    out = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(fast, "adam_step", lambda *a, **k: None)
        opt = cls(weight_decay=0.01)
        P = {"w": p0.copy()}
        S = opt.init(P)
        opt.update(P, {"w": g}, S)
        out.append((P["w"], S["m/w"], S["v/w"]))
    for a, b in zip(*out, strict=True):
        assert a.dtype == np.dtype(order) and np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,decay", [(Adam, 0.0), (Adam, 0.3), (AdamW, 0.01)])
def test_a_scaled_update_is_that_of_scaled_gradients_and_says_what_is_finite(dtype, cls, decay):
    """update(grad_scale=c) (a global-norm clip's c, applied as the compiled pass reads the
    gradients, which it leaves as they were): the bits of `g *= c` then update, on both
    paths. It returns the parameters whose new values and running squares are all finite:
    on the compiled path exactly those, on NumPy's none (nothing known)."""
    rng = np.random.default_rng(21)
    params = {k: np.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}
    grads = {k: _values(rng, p.shape, dtype) for k, p in params.items()}
    grads["fine"] = rng.standard_normal(7).astype(dtype)
    params["fine"] = rng.standard_normal(7).astype(dtype)
    params["overflows"] = np.full(5, 1.0, dtype)
    grads["overflows"] = np.full(5, np.finfo(dtype).max, dtype)  # (c2·g)·g overflows: v = inf
    kw = {"lr": 1e-3, "weight_decay": decay}
    c = 0.3183098861837907
    results = []
    for how in ("scaled", "in place", "numpy scaled"):
        P = {k: v.copy() for k, v in params.items()}
        G = {k: v.copy() for k, v in grads.items()}
        opt = cls(**kw)
        S = opt.init(P)
        with settings.override(no_numba=how == "numpy scaled"), np.errstate(all="ignore"):
            if how == "in place":
                for g in G.values():
                    g *= c
                finite = opt.update(P, G, S)
            else:
                finite = opt.update(P, G, S, grad_scale=c)
                for k in grads:
                    assert _same_bits(G[k], grads[k]), k  # the gradients are not written
        results.append((P, S))
        if how == "numpy scaled":
            assert finite == frozenset()
        else:
            assert finite == {k for k in P if np.isfinite(P[k]).all()
                              and np.isfinite(S[f"v/{k}"]).all()}  # fmt: skip
            assert "fine" in finite and "overflows" not in finite
    for P, S in results[1:]:
        for k in P:
            assert _same_bits(P[k], results[0][0][k]), k
        for k in S:
            assert _same_bits(np.asarray(S[k]), np.asarray(results[0][1][k])), k


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_a_gradient_scale_that_is_not_a_positive_number_is_refused(scale):
    p = {"w": np.ones(3)}
    opt = Adam()
    with pytest.raises(ValueError, match="`grad_scale` must be a finite number > 0"):
        opt.update(p, {"w": np.ones(3)}, opt.init(p), grad_scale=scale)
