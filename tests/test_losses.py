"""Losses: finite differences of every gradient, parity with torch.nn.functional, masking,
dtypes, numerical stability and the error messages."""

import re

import numpy as np
import pytest
from helpers import oracle

from rnnlab.losses import (
    binary_cross_entropy,
    log_softmax,
    mean_squared_error,
    softmax,
    softmax_cross_entropy,
)

torch = oracle("torch")

B, T, K, F = 3, 5, 4, 2
LENGTHS = np.array([5, 2, 3])
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 1, 0]], dtype=bool)


def fd_error(f, x, h=1e-6):
    """Normwise relative error between f's gradient and central differences of its loss."""
    loss, g = f(x)
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        num[i] = (f(xp)[0] - f(xm)[0]) / (2 * h)
    assert np.linalg.norm(g) > 0
    return np.linalg.norm(g - num) / max(np.linalg.norm(g), np.linalg.norm(num))


# name -> (keyword arguments, the (B, T) bool mask they mean or None): no mask, a mask with a
# gap (masks need not be prefixes), lengths.
MASKINGS = {
    "none": ({}, None),
    "mask": ({"mask": MASK}, MASK),
    "lengths": ({"lengths": LENGTHS}, np.arange(T)[None, :] < LENGTHS[:, None]),
}
MASK_CASES = list(MASKINGS)


def pick(name):
    return (name, *MASKINGS[name])


# ------------------------------------------------------------------------ finite differences
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("which", MASK_CASES)
def test_cross_entropy_per_step_fd(rng, which, reduction):
    _, kw, _ = pick(which)
    logits = rng.standard_normal((B, T, K))
    y = rng.integers(0, K, (B, T))
    err = fd_error(lambda o: softmax_cross_entropy(o, y, reduction=reduction, **kw), logits)
    assert err < 1e-7


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_last_step_fd(rng, reduction):
    logits = rng.standard_normal((B, K))
    y = rng.integers(0, K, B)
    err = fd_error(lambda o: softmax_cross_entropy(o, y, reduction=reduction), logits)
    assert err < 1e-7


@pytest.mark.parametrize("loss_fn", [binary_cross_entropy, mean_squared_error])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("which", MASK_CASES)
@pytest.mark.parametrize("features", [(F,), ()])  # (B, T, F) and one number per step (B, T)
def test_elementwise_fd(rng, loss_fn, reduction, which, features):
    _, kw, _ = pick(which)
    x = rng.standard_normal((B, T, *features)) * 2
    y = rng.uniform(0, 1, x.shape)
    err = fd_error(lambda z: loss_fn(z, y, reduction=reduction, **kw), x)
    assert err < 1e-7


@pytest.mark.parametrize("loss_fn", [binary_cross_entropy, mean_squared_error])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_elementwise_no_time_axis_fd(rng, loss_fn, reduction):
    x = rng.standard_normal((B, K))
    y = rng.uniform(0, 1, x.shape)
    assert fd_error(lambda z: loss_fn(z, y, reduction=reduction), x) < 1e-7


# ------------------------------------------------------------------------ torch parity
def close(a, b, tol=1e-12):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() / scale < tol, (a, b)


def torch_loss_and_grad(fn, x, valid, *args):
    """torch's loss on the valid positions only (flattened), and its gradient scattered back."""
    xt = torch.tensor(x, requires_grad=True)
    sel = xt if valid is None else xt[torch.from_numpy(valid)]
    loss = fn(sel, *args)
    loss.backward()
    return loss.item(), xt.grad.numpy()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("which", MASK_CASES)
def test_cross_entropy_matches_torch(rng, which, reduction):
    _, kw, valid = pick(which)
    logits = rng.standard_normal((B, T, K)) * 3
    y = rng.integers(0, K, (B, T))
    loss, d = softmax_cross_entropy(logits, y, reduction=reduction, **kw)
    yv = torch.from_numpy(y if valid is None else y[valid]).reshape(-1)
    ref, dref = torch_loss_and_grad(
        lambda s: torch.nn.functional.cross_entropy(s.reshape(-1, K), yv, reduction=reduction),
        logits,
        valid,
    )
    close(loss, ref)
    close(d, dref)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_last_step_matches_torch(rng, reduction):
    logits = rng.standard_normal((B, K)) * 3
    y = rng.integers(0, K, B)
    loss, d = softmax_cross_entropy(logits, y, reduction=reduction)
    ref, dref = torch_loss_and_grad(
        lambda s: torch.nn.functional.cross_entropy(s, torch.from_numpy(y), reduction=reduction),
        logits,
        None,
    )
    close(loss, ref)
    close(d, dref)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("which", MASK_CASES)
def test_bce_and_mse_match_torch(rng, which, reduction):
    _, kw, valid = pick(which)
    x = rng.standard_normal((B, T, F)) * 3
    y = rng.uniform(0, 1, x.shape)
    yv = torch.from_numpy(y if valid is None else y[valid])
    F_ = torch.nn.functional
    for ours, theirs in [
        (
            binary_cross_entropy,
            lambda s: F_.binary_cross_entropy_with_logits(s, yv, reduction=reduction),
        ),
        (mean_squared_error, lambda s: F_.mse_loss(s, yv, reduction=reduction)),
    ]:
        loss, d = ours(x, y, reduction=reduction, **kw)
        ref, dref = torch_loss_and_grad(theirs, x, valid)
        close(loss, ref)
        close(d, dref)


def test_softmax_helpers_match_torch(rng):
    x = rng.standard_normal((3, 4, 6)) * 10
    for axis in (-1, 0, 1):
        close(softmax(x, axis=axis), torch.softmax(torch.from_numpy(x), dim=axis).numpy())
        close(log_softmax(x, axis=axis), torch.log_softmax(torch.from_numpy(x), dim=axis).numpy())


# ------------------------------------------------------------ masking, dtypes, stability
def test_masked_steps_get_zero_gradient_and_ignore_their_targets(rng):
    logits = rng.standard_normal((B, T, K))
    y = rng.integers(0, K, (B, T))
    loss, d = softmax_cross_entropy(logits, y, mask=MASK)
    assert np.all(d[~MASK] == 0) and np.all(np.abs(d[MASK]).sum(-1) > 0)
    # Padding may hold anything (here an id out of range), and the logits there do not matter.
    y2, logits2 = y.copy(), logits.copy()
    y2[~MASK] = -1
    logits2[~MASK] = 1e3
    loss2, d2 = softmax_cross_entropy(logits2, y2, mask=MASK)
    assert loss2 == loss and np.array_equal(d2, d)
    x, t = rng.standard_normal((B, T, F)), rng.uniform(0, 1, (B, T, F))
    t2 = t.copy()
    t2[~MASK] = 7.0  # not a probability, but padding
    for fn in (binary_cross_entropy, mean_squared_error):
        loss, d = fn(x, t, mask=MASK)
        loss2, d2 = fn(x, t2, mask=MASK)
        assert loss2 == loss and np.array_equal(d2, d) and np.all(d[~MASK] == 0)


def test_mean_divides_by_valid_positions(rng):
    logits, y = rng.standard_normal((B, T, K)), rng.integers(0, K, (B, T))
    s, ds = softmax_cross_entropy(logits, y, lengths=LENGTHS, reduction="sum")
    m, dm = softmax_cross_entropy(logits, y, lengths=LENGTHS, reduction="mean")
    assert m == pytest.approx(s / LENGTHS.sum(), rel=1e-14)
    np.testing.assert_allclose(dm, ds / LENGTHS.sum(), rtol=1e-14)
    x, t = rng.standard_normal((B, T, F)), rng.uniform(0, 1, (B, T, F))
    s, _ = mean_squared_error(x, t, lengths=LENGTHS, reduction="sum")
    m, _ = mean_squared_error(x, t, lengths=LENGTHS, reduction="mean")
    assert m == pytest.approx(s / (LENGTHS.sum() * F), rel=1e-14)  # features count, as in torch


def test_cross_entropy_gradient_rows_sum_to_zero_and_onehot_value(rng):
    logits = rng.standard_normal((B, K))
    y = rng.integers(0, K, B)
    loss, d = softmax_cross_entropy(logits, y)
    np.testing.assert_allclose(d.sum(-1), 0.0, atol=1e-15)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(B), y]).sum(), rel=1e-14)


@pytest.mark.parametrize("fn", ["ce", "bce", "mse"])
def test_float32_in_float32_out(rng, fn):
    x64 = rng.standard_normal((B, T, K))
    x32 = x64.astype(np.float32)
    if fn == "ce":
        y = rng.integers(0, K, (B, T))
        run = lambda x: softmax_cross_entropy(x, y, lengths=LENGTHS)  # noqa: E731
    else:
        y = rng.uniform(0, 1, (B, T, K))  # float64 targets are cast to the output's dtype
        f = binary_cross_entropy if fn == "bce" else mean_squared_error
        run = lambda x: f(x, y, mask=MASK)  # noqa: E731
    loss32, d32 = run(x32)
    loss64, d64 = run(x64)
    assert d32.dtype == np.float32 and d32.shape == x32.shape and isinstance(loss32, float)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(d32, d64, rtol=1e-4, atol=1e-6)


def test_stable_at_extreme_logits():
    big = np.array([[1e4, -1e4, 0.0], [-800.0, 800.0, 1.0]])
    loss, d = softmax_cross_entropy(big, np.array([1, 1]))
    assert loss == pytest.approx(2e4, rel=1e-12) and np.isfinite(d).all()
    tiny = np.array([[0.0, -708.0, -745.0, -30.0]])  # probabilities near the subnormal range
    loss, d = softmax_cross_entropy(np.repeat(tiny, 3, 0), np.array([0, 0, 3]), reduction="mean")
    assert np.isfinite(loss) and np.isfinite(d).all() and d[0, 2] >= 0
    p = softmax(big)
    assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1.0)
    assert np.isfinite(log_softmax(big)).all()
    z = np.array([[800.0, -800.0]])
    loss, d = binary_cross_entropy(z, np.array([[0.0, 1.0]]), reduction="sum")
    assert loss == pytest.approx(1600.0, rel=1e-12)
    np.testing.assert_allclose(d, [[1.0, -1.0]])
    loss, _ = binary_cross_entropy(z, np.array([[1.0, 0.0]]), reduction="sum")
    assert loss == 0.0


# ------------------------------------------------------------------------ errors
def test_targets_out_of_range():
    with pytest.raises(
        ValueError, match=r"`targets` must be class ids in \[0, 4\) .*; got values from 0 to 4"
    ):
        softmax_cross_entropy(np.zeros((2, 3, 4)), np.array([[0, 1, 2], [3, 4, 0]]))
    with pytest.raises(ValueError, match=r"`targets` must be class ids in \[0, 4\).*from -1 to 2"):
        softmax_cross_entropy(np.zeros((2, 4)), np.array([-1, 2]))


def test_targets_shape_and_dtype():
    with pytest.raises(
        ValueError,
        match=r"`targets` must be class ids of shape \(B, T\) = \(2, 3\) .*; got shape \(2, 4\)",
    ):
        softmax_cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 4), int))
    with pytest.raises(
        ValueError, match=r"`targets` must be an array of integers; got an array .*float64"
    ):
        softmax_cross_entropy(np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(
        ValueError,
        match=r"`targets` must be an array of the output's shape \(2, 3\); got shape \(3, 2\)",
    ):
        mean_squared_error(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(
        ValueError, match=r"`targets` must be a floating-point array; got dtype int64 .*astype"
    ):
        binary_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3), np.int64))


def test_bce_targets_must_be_probabilities():
    with pytest.raises(
        ValueError, match=r"`targets` must be probabilities in \[0, 1\]; got values from -0.5 to 1"
    ):
        binary_cross_entropy(np.zeros((2, 2)), np.array([[-0.5, 1.0], [0.0, 0.5]]))


def test_logits_rank_dtype_and_finiteness():
    with pytest.raises(
        ValueError, match=r"`logits` must be an array with 2 or 3 dimensions; got shape \(4,\)"
    ):
        softmax_cross_entropy(np.zeros(4), np.zeros(4, int))
    with pytest.raises(
        ValueError, match=r"`logits` must be finite \(no NaN or inf\); got nan at index \(0, 1\)"
    ):
        softmax_cross_entropy(np.array([[0.0, np.nan]]), np.array([0]))
    with pytest.raises(ValueError, match=r"`logits` must be finite .*got inf"):
        binary_cross_entropy(np.array([[np.inf]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match=r"`pred` must be a floating-point array"):
        mean_squared_error(np.zeros((2, 2), int), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"`targets` must be finite"):
        mean_squared_error(np.zeros((2, 2)), np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"`pred` must be a non-empty array; got shape \(0, 3\)"):
        mean_squared_error(np.zeros((0, 3)), np.zeros((0, 3)))


def test_reduction_must_be_sum_or_mean():
    with pytest.raises(ValueError, match=r"`reduction` must be one of 'sum', 'mean'; got 'avg'"):
        softmax_cross_entropy(np.zeros((2, 4)), np.zeros(2, int), reduction="avg")
    with pytest.raises(ValueError, match=r"`reduction` must be one of 'sum', 'mean'; got None"):
        mean_squared_error(np.zeros(2), np.zeros(2), reduction=None)


def test_mask_errors():
    o, y = np.zeros((2, 3, 4)), np.zeros((2, 3), int)
    m = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match=r"`lengths` must be None when `mask` is given"):
        softmax_cross_entropy(o, y, mask=m, lengths=np.array([3, 3]))
    with pytest.raises(
        ValueError, match=r"`mask` must be an array of shape \(2, 3\); got shape \(3, 2\)"
    ):
        softmax_cross_entropy(o, y, mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match=r"`mask` must be a boolean array"):
        binary_cross_entropy(o, np.zeros_like(o), mask=np.ones((2, 3)))
    with pytest.raises(
        ValueError, match=r"`lengths` must be between 1 and the padded length 3; got a length of 4"
    ):
        mean_squared_error(o, o, lengths=np.array([4, 1]))
    with pytest.raises(
        ValueError,
        match=r"`mask` must be None for outputs without a time axis; .*shape \(2, 4\).*time axis",
    ):
        softmax_cross_entropy(np.zeros((2, 4)), np.zeros(2, int), mask=m)
    with pytest.raises(ValueError, match=r"`lengths` must be None for outputs without a time axis"):
        mean_squared_error(np.zeros(2), np.zeros(2), lengths=np.array([1, 1]))


def test_mse_names_a_non_finite_prediction_even_in_padding():
    """The finiteness check runs after the loss (one pass fewer); it must still name the
    first NaN or inf, also one that sits at a masked step."""
    pred = np.zeros((2, 3, 2))
    pred[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"`pred` must be finite .*got inf at index \(1, 2, 0\)"):
        mean_squared_error(pred, np.zeros((2, 3, 2)), lengths=np.array([3, 2]))
    with pytest.raises(ValueError, match=r"`targets` must be finite .*got nan at index \(0, 0\)"):
        mean_squared_error(np.zeros((2, 2)), np.array([[np.nan, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize("path", ["compiled", "numpy"])
def test_a_padded_target_is_ignored_whatever_it_holds(path, monkeypatch):
    """Padding was masked by multiplying: a padded target whose square overflowed (1e200, or
    −3e38 in float32) gave inf · 0 = NaN with nothing to name, and a NaN padded target was
    refused. Now a padded step adds nothing whatever its target holds, on both paths; the
    model's outputs must still be finite everywhere."""
    from rnnlab import fast, losses

    if path == "numpy":
        monkeypatch.setattr(losses, "_compiled_squared_error", lambda *a: None)
    elif not fast.available():
        pytest.skip("needs the compiled kernels")
    lengths = np.array([1, 2])
    for dtype, big in ((np.float64, 1e200), (np.float32, -3e38)):
        pred = np.full((2, 2, 3), 0.5, dtype)
        pred[0, 1] = -big  # a large but finite output at a padded step
        clean = np.zeros((2, 2, 3), dtype)
        for pad in (big, np.inf, -np.inf, np.nan):
            t = clean.copy()
            t[0, 1] = pad
            for fn in (mean_squared_error, binary_cross_entropy):
                x = pred if fn is mean_squared_error else np.full_like(pred, 0.5)
                want = fn(x, clean, lengths=lengths)
                got = fn(x, t, lengths=lengths)
                assert got[0] == want[0] and np.isfinite(got[0]), (fn.__name__, dtype, pad)
                np.testing.assert_array_equal(got[1], want[1])
                assert np.all(got[1][0, 1] == 0)
    t = np.zeros((2, 2, 3))
    t[1, 1, 2] = np.nan  # at a valid step: refused, by its index in the targets
    for fn in (mean_squared_error, binary_cross_entropy):
        with pytest.raises(ValueError, match=r"`targets` must be finite \(no NaN or inf\) at "
                                             r"the valid steps; got nan at index \(1, 1, 2\)"):
            fn(np.zeros((2, 2, 3)), t, lengths=lengths)
    pred = np.zeros((2, 2, 3))
    pred[0, 1, 1] = np.inf  # the model's output: refused even at a padded step
    with pytest.raises(ValueError, match=r"`pred` must be finite .*got inf at index \(0, 1, 1\)"):
        mean_squared_error(pred, np.zeros((2, 2, 3)), lengths=lengths)


def test_mse_gradient_is_laid_out_like_the_prediction():
    """A batch-first view of a time-major output gets a gradient whose time-major view is
    contiguous: the layer's backward then reads it without a copy."""
    rng = np.random.default_rng(0)
    time_major = rng.standard_normal((5, 3, 4))
    pred = np.swapaxes(time_major, 0, 1)
    targets = rng.standard_normal((3, 5, 4))
    loss, d = mean_squared_error(pred, targets)
    assert np.swapaxes(d, 0, 1).flags.c_contiguous
    np.testing.assert_allclose(loss, np.mean((pred - targets) ** 2), rtol=1e-12)
    np.testing.assert_allclose(d, 2 * (pred - targets) / pred.size, rtol=1e-12)


MSE_LAYOUTS = {
    "batch-first": lambda a: a,
    "time-major view": lambda a: np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 0, 1)), 0, 1),
    "per step": lambda a: a[:, :, 0],
    "per sequence": lambda a: a[:, 0, 0].copy(),
}


@pytest.mark.parametrize("layout", list(MSE_LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_mse_compiled_pass_matches_the_numpy_passes(layout, dtype, reduction, masked, monkeypatch):
    """rnnlab.fast's one-pass kernel against the NumPy path it replaces: the same gradient bit
    for bit (the same float operations), the loss to float64 rounding of the sum."""
    from rnnlab import fast, losses

    if not fast.available():
        pytest.skip("needs the compiled kernels")
    rng = np.random.default_rng(3)
    shape = (B, T, 6)
    pred = MSE_LAYOUTS[layout](rng.standard_normal(shape).astype(dtype))
    targets = MSE_LAYOUTS[layout](rng.standard_normal(shape).astype(dtype))
    kw = {"lengths": LENGTHS} if masked and pred.ndim > 1 else {}
    kw["reduction"] = reduction
    calls = []
    compiled = losses._compiled_squared_error
    monkeypatch.setattr(
        losses, "_compiled_squared_error", lambda *a: calls.append(1) or compiled(*a)
    )
    got_loss, got_d = mean_squared_error(pred, targets, **kw)
    assert calls
    monkeypatch.setattr(losses, "_compiled_squared_error", lambda *a: None)
    want_loss, want_d = mean_squared_error(pred, targets, **kw)
    assert got_d.dtype == want_d.dtype == dtype and got_d.strides == want_d.strides
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-14)


@pytest.mark.parametrize("name", ["mse", "softmax"])
def test_compiled_losses_split_large_batches_over_threads(name, monkeypatch, setenv):
    """A loss over many values is split by batch rows over the threads; each row's sum is
    kept apart and the rows' sums added in order, so the loss is the same bits on one thread
    and on three (the per-part sums of before differed in the last bits)."""
    from rnnlab import fast
    from rnnlab.fast import parallel

    if not fast.available():
        pytest.skip("needs the compiled kernels")
    monkeypatch.setattr(fast, "MIN_LOSS_ELEMENTS", 0)
    parts = []
    run_parts = parallel.run_parts
    monkeypatch.setattr(
        parallel, "run_parts", lambda fn, p: parts.append(len(p)) or run_parts(fn, p)
    )
    rng = np.random.default_rng(4)
    lengths = np.array([9, 1, 4, 9, 2, 8, 3])
    mask = np.arange(9)[None, :] < lengths[:, None]
    if name == "mse":
        pred, targets = rng.standard_normal((7, 9, 5)), rng.standard_normal((7, 9, 5))
        r = np.where(mask[:, :, None], pred - targets, 0.0)
        want_loss, want_d = (r**2).sum() / (mask.sum() * 5), 2 * r / (mask.sum() * 5)
        loss_fn = lambda: mean_squared_error(pred, targets, lengths=lengths)  # noqa: E731
    else:
        logits, targets = rng.standard_normal((7, 9, 5)), rng.integers(0, 5, (7, 9))
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        nll = -np.log(np.take_along_axis(p, targets[..., None], -1))[..., 0]
        want_loss = nll[mask].sum() / mask.sum()
        want_d = np.where(mask[..., None], p - np.eye(5)[targets], 0.0) / mask.sum()
        loss_fn = lambda: softmax_cross_entropy(logits, targets, lengths=lengths,  # noqa: E731
                                                reduction="mean")
    got = []
    for threads in ("1", "3"):
        setenv(RNNLAB_NUM_THREADS=threads)
        with parallel.session():
            got.append(loss_fn())
    assert parts == [1, 3]
    assert got[0][0] == got[1][0] and np.array_equal(got[0][1], got[1][1])
    np.testing.assert_allclose(got[1][0], want_loss, rtol=1e-13)
    np.testing.assert_allclose(got[1][1], want_d, rtol=1e-12, atol=1e-16)


def test_mse_in_float16_takes_the_numpy_path():
    """The compiled pass is for float32 and float64; float16 arrays (accepted as floats) get
    NumPy's passes, with or without numba."""
    pred = np.ones((4, 3, 2), np.float16)
    loss, d = mean_squared_error(pred, np.zeros_like(pred))
    assert loss == pytest.approx(1.0) and d.dtype == np.float16
    np.testing.assert_array_equal(d, np.full_like(pred, 2 / pred.size))


CE_LAYOUTS = {
    "batch-first": lambda a: a,
    "time-major view": lambda a: np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 0, 1)), 0, 1),
    "per sequence": lambda a: a[:, 0].copy(),
}


@pytest.mark.parametrize("layout", list(CE_LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_cross_entropy_compiled_pass_matches_the_numpy_passes(layout, dtype, reduction, masked,
                                                              monkeypatch):  # fmt: skip
    """rnnlab.fast's one-pass softmax cross-entropy against the NumPy path it replaces: the
    same operations in the same order, but its exp (Cephes', ≤ 2.5 ulp) is not NumPy's, so
    the two agree to a few ulp of the dtype, not bit for bit; masked steps get exactly 0."""
    from rnnlab import fast, losses

    if not fast.available():
        pytest.skip("needs the compiled kernels")
    rng = np.random.default_rng(5)
    logits = CE_LAYOUTS[layout]((rng.standard_normal((B, T, 7)) * 4).astype(dtype))
    targets = rng.integers(0, 7, logits.shape[:-1])
    kw = {"lengths": LENGTHS} if masked and logits.ndim == 3 else {}
    if kw:
        targets[1, -1] = -5  # a padded step's target is never read
    calls = []
    compiled = losses._compiled_cross_entropy
    monkeypatch.setattr(
        losses, "_compiled_cross_entropy", lambda *a: calls.append(1) or compiled(*a)
    )
    got_loss, got_d = softmax_cross_entropy(logits, targets, reduction=reduction, **kw)
    assert calls
    monkeypatch.setattr(losses, "_compiled_cross_entropy", lambda *a: None)
    want_loss, want_d = softmax_cross_entropy(logits, targets, reduction=reduction, **kw)
    assert got_d.dtype == want_d.dtype == dtype and got_d.strides == want_d.strides
    ulp = float(np.finfo(dtype).eps)
    assert np.abs(got_d - want_d).max() <= 4 * ulp * np.abs(want_d).max()
    assert got_loss == pytest.approx(want_loss, rel=8 * ulp)
    if kw:
        assert not got_d[0, LENGTHS[0] :].any() and not got_d[1, LENGTHS[1] :].any()


@pytest.mark.parametrize("where", ["valid", "padded"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_cross_entropy_names_a_non_finite_logit(where, bad):
    """A NaN or inf logit is the model's output gone wrong: named by its index, at a valid
    step and at a padded one, on the compiled path as on NumPy's."""
    logits = np.zeros((2, 3, 4), np.float32)
    at = (0, 1, 2) if where == "valid" else (1, 2, 3)
    logits[at] = bad
    with pytest.raises(ValueError, match=r"`logits` must be finite .*got "
                       + re.escape(f"{bad} at index {at}")):  # fmt: skip
        softmax_cross_entropy(logits, np.zeros((2, 3), int), lengths=np.array([3, 2]))


def test_cross_entropy_in_float16_takes_the_numpy_path():
    logits = np.zeros((4, 3, 2), np.float16)
    loss, d = softmax_cross_entropy(logits, np.zeros((4, 3), int), reduction="mean")
    assert loss == pytest.approx(np.log(2), rel=1e-3) and d.dtype == np.float16


@pytest.mark.parametrize("layout", ["time-major", "strided"])
@pytest.mark.parametrize("name", ["softmax", "binary", "mse"])
def test_every_loss_gives_the_same_gradient_whatever_the_memory_order(name, layout):
    """A recurrent layer's batch-first output, and a Linear's over it, lie time-major in
    memory. softmax_cross_entropy's − 1 at the targets once went into a copy of such
    logits' gradient (a reshape of a non-contiguous array), so the gradient came out wrong."""
    rng = np.random.default_rng(7)
    held = rng.standard_normal((T, B, K) if layout == "time-major" else (B, T, 2 * K))
    x = np.swapaxes(held, 0, 1) if layout == "time-major" else held[:, :, ::2]
    assert not x.flags.c_contiguous
    if name == "softmax":
        targets = rng.integers(0, K, (B, T))
        loss = lambda o: softmax_cross_entropy(o, targets, mask=MASK)  # noqa: E731
    elif name == "binary":
        targets = rng.uniform(0, 1, (B, T, K))
        loss = lambda o: binary_cross_entropy(o, targets, mask=MASK)  # noqa: E731
    else:
        targets = rng.standard_normal((B, T, K))
        loss = lambda o: mean_squared_error(o, targets, mask=MASK)  # noqa: E731
    want_loss, want = loss(np.ascontiguousarray(x))
    got_loss, got = loss(x)
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_softmax_and_log_softmax_check_their_arguments_and_0d_losses_work():
    """log_softmax and softmax are public here: a list of ints failed inside NumPy with
    AttributeError or UFuncTypeError; a 0-d binary cross entropy failed in sigmoid (NumPy's
    multiply returns a scalar for 0-d input); a loss's integer targets or logits were told
    that token ids go through an Embedding."""
    from rnnlab.losses import log_softmax, softmax

    for fn in (log_softmax, softmax):
        np.testing.assert_array_equal(fn([1, 2]), fn([1.0, 2.0]))  # integers, as NumPy reads them
        np.testing.assert_allclose(fn(np.zeros((2, 2)), axis=None), fn(np.zeros(4)).reshape(2, 2))
        np.testing.assert_array_equal(fn(np.zeros((2, 2)), axis=(0, 1)),
                                      fn(np.zeros((2, 2)), axis=None))  # fmt: skip
        with pytest.raises(ValueError, match=r"`x` must be a NumPy array of floats; got 'a'"):
            fn("a")
        for axis in (2, (0, 0)):
            with pytest.raises(ValueError, match=r"`axis` must be axes of x, from -2 to 1, each "
                                                 rf"once; got {re.escape(str(axis))} instead"):
                fn(np.zeros((2, 3)), axis=axis)
        with pytest.raises(ValueError, match=r"`axis` must be an int, a tuple of ints or None; "
                                             r"got 1.0"):  # fmt: skip
            fn(np.zeros(2), axis=1.0)
        with pytest.raises(ValueError, match=r"`axis` must be None or \(\) \(x is a 0-d array"):
            fn(np.array(1.0))
    np.testing.assert_allclose(softmax([0.0, np.log(3.0)]), [0.25, 0.75])
    np.testing.assert_allclose(log_softmax([[0.0], [np.log(3.0)]], axis=0),
                               np.log([[0.25], [0.75]]))  # fmt: skip
    loss, d = binary_cross_entropy(np.array(0.0), np.array(1.0))
    assert loss == pytest.approx(np.log(2.0)) and d.shape == () and float(d) == -0.5
    for fn in (mean_squared_error, binary_cross_entropy):
        with pytest.raises(ValueError, match=r"`targets` must be a floating-point array; got "
                                             r"dtype int64 instead\. Convert labels with "
                                             r"targets\.astype\(np\.float32\)"):  # fmt: skip
            fn(np.zeros(2), [0, 1])  # (a list of ints: the hint of an array of ints)
    with pytest.raises(ValueError, match=r"`logits` must be a floating-point array .*instead\.$"):
        softmax_cross_entropy(np.zeros((2, 3), np.int64), np.zeros(2, np.int64))
