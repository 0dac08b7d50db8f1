"""A review of rnnlab.losses on both of its paths (the compiled one-pass kernels of rnnlab.fast
and NumPy's passes, chosen by fast.available(): numba installed and RNNLAB_NO_NUMBA off):
extreme and non-finite values, ids of every integer dtype, array subclasses, memory layouts,
the messages of bad input, float32 against float64, and torch and finite differences on the
NumPy path (tests/test_losses.py runs them on the default one)."""

import re

import numpy as np
import pytest
from helpers import oracle

from rnnlab import fast, losses, settings
from rnnlab.losses import (
    binary_cross_entropy,
    log_softmax,
    mean_squared_error,
    softmax,
    softmax_cross_entropy,
)

torch = oracle("torch")

F_ = torch.nn.functional
COMPILED = ("_compiled_cross_entropy", "_compiled_squared_error")


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """The loss's path: "numpy" through the user's own switch (RNNLAB_NO_NUMBA, as a setting),
    "compiled" with a record of whether each call of a kernel took the arrays (`ran`: True
    for every call the kernel computed, False where it handed them back to NumPy)."""
    if request.param == "numpy":
        with settings.override(no_numba=True):
            assert not fast.available()
            yield request.param, []
        return
    if not fast.available():
        pytest.skip("needs the compiled kernels")
    ran: list[bool] = []
    for name in COMPILED:
        real = getattr(losses, name)

        def record(*args, real=real):
            done = real(*args)
            if fast.available():  # (not a call a test sent to NumPy's path on purpose)
                ran.append(done is not None)
            return done

        monkeypatch.setattr(losses, name, record)
    yield request.param, ran


def took(path, ran, compiled=True):
    """The path ran as it should: the kernel computed every call on the compiled path (or
    handed every call back, for layouts it does not take), nothing on NumPy's."""
    if path == "compiled":
        assert ran and all(ran) if compiled else ran and not any(ran)
    else:
        assert not ran


def message(fn):
    with pytest.raises(ValueError) as e:
        fn()
    return str(e.value)


# ------------------------------------------------------------ logits further apart than a dtype
def test_cross_entropy_of_logits_further_apart_than_the_dtype_holds(path):
    """o − max o overflows to −inf for a row of ±3e38 in float32: NumPy's path raised (a
    RuntimeWarning, FloatingPointError under np.seterr(all="raise")), the kernel returned an
    inf loss. The softmax there is exact ([1, 0, 0]), and so, in float64, is the loss: 6e38.
    Float64 logits 1.8e308 apart give inf on both paths (past float64 itself), and nothing
    at a padded step."""
    name, ran = path
    big = float(np.float32(3e38))
    o = np.array([[big, -big, 0.0], [0.0, 0.0, 0.0]], np.float32)
    loss, d = softmax_cross_entropy(o, np.array([1, 0]))
    assert loss == 2 * big + np.log(3.0)  # (e^{−3e38} and e^{−6e38} are 0 next to 1)
    np.testing.assert_array_equal(d[0], [1.0, -1.0, 0.0])
    assert loss == softmax_cross_entropy(o.astype(np.float64), np.array([1, 0]))[0]
    took(name, ran)
    h = float(np.float16(6e4))
    loss, d = softmax_cross_entropy(np.array([[h, -h]], np.float16), np.array([1]))
    assert loss == 2 * h and d.dtype == np.float16  # (float16 takes NumPy's path always)
    np.testing.assert_array_equal(d, [[1.0, -1.0]])

    o = np.zeros((2, 2, 3))
    o[1, 1] = [-1e308, 1e308, 0.0]
    y = np.zeros((2, 2), int)  # (a padded step's id is read as 0: the loss there is inf too)
    loss, d = softmax_cross_entropy(o, y)
    assert loss == np.inf and np.isfinite(d).all()
    np.testing.assert_array_equal(d[1, 1], [-1.0, 1.0, 0.0])
    loss, d = softmax_cross_entropy(o, y, lengths=np.array([2, 1]), reduction="mean")
    assert loss == pytest.approx(np.log(3.0), rel=1e-15) and not d[1, 1].any()


def test_softmax_helpers_of_logits_further_apart_than_the_dtype_holds():
    """Documented "stable for any finite x", they raised on x − max x; now softmax is exact
    and log_softmax −inf where the value is past the dtype (torch's float32 alike)."""
    for dtype in (np.float32, np.float64):
        big = float(np.finfo(dtype).max) * 0.9
        x = np.array([[big, -big, 0.0]], dtype)
        np.testing.assert_array_equal(softmax(x), torch.softmax(torch.from_numpy(x), -1))
        np.testing.assert_array_equal(log_softmax(x),
                                      torch.log_softmax(torch.from_numpy(x), -1))  # fmt: skip
        np.testing.assert_array_equal(log_softmax(x), np.array([[0.0, -np.inf, -big]], dtype))


# ------------------------------------------------------------------------ array subclasses
def test_losses_refuse_array_subclasses(path):
    """A masked array's mask is not read: targets np.ma.masked_equal(y, -1) passed the range
    check (the min of a masked array skips its masked ids) and the −1 was read as the last
    class, without a word. np.matrix logits failed inside NumPy (TypeError: keepdims, or an
    IndexError), a masked array's targets inside numba. A memmap is a plain array's
    arithmetic: taken."""
    name, ran = path
    rng = np.random.default_rng(0)
    o, y = rng.standard_normal((2, 3, 4)), np.array([[1, 2, 3], [0, 1, -1]])
    masked_ids = np.ma.masked_equal(y, -1)
    hint = ("Its mask is not read here: pass np.asarray(...) of it, and the valid steps as "
            "`mask` (B, T), True where valid.")  # fmt: skip
    assert message(lambda: softmax_cross_entropy(o, masked_ids)) == (
        "`targets` must be a plain NumPy array (numpy.ndarray); got a numpy.ma.MaskedArray of "
        f"shape (2, 3) and dtype int64 instead. {hint}"
    )
    mask = ~np.ma.getmaskarray(masked_ids)  # what the hint says: the same loss as y masked
    want = softmax_cross_entropy(o, np.asarray(masked_ids), mask=mask)
    assert want[0] != softmax_cross_entropy(o, np.where(mask, y, 3))[0]
    t = np.ma.masked_array(rng.uniform(0, 1, (2, 3, 4)), mask=np.zeros((2, 3, 4), bool))
    matrix = np.asarray(o[:, 0]).view(np.matrix)
    plain = "np.asarray(...) of it is one, with the same values."
    ran.clear()
    for fn, args, arg, kind in [
        (mean_squared_error, (o, t), "targets", "numpy.ma.MaskedArray of shape (2, 3, 4)"),
        (binary_cross_entropy, (o, t), "targets", "numpy.ma.MaskedArray of shape (2, 3, 4)"),
        (
            softmax_cross_entropy,
            (matrix, np.zeros(2, int)),
            "logits",
            "numpy.matrix of shape (2, 4)",
        ),
        (
            binary_cross_entropy,
            (matrix, np.zeros((2, 4))),
            "logits",
            "numpy.matrix of shape (2, 4)",
        ),
        (mean_squared_error, (matrix, np.zeros((2, 4))), "pred", "numpy.matrix of shape (2, 4)"),
        (mean_squared_error, (o[:, 0], matrix), "targets", "numpy.matrix of shape (2, 4)"),
    ]:
        said = message(lambda fn=fn, args=args: fn(*args))
        assert said == (
            f"`{arg}` must be a plain NumPy array (numpy.ndarray); got a {kind} and "
            f"dtype float64 instead. " + (hint if "ma." in kind else plain)
        )
    assert not ran  # (every one refused at the door)


def test_losses_take_a_memmap(path, tmp_path):
    name, ran = path
    rng = np.random.default_rng(1)
    o = rng.standard_normal((3, 4, 5)).astype(np.float32)
    mapped = np.memmap(tmp_path / "o", dtype=np.float32, mode="w+", shape=o.shape)
    mapped[:] = o
    y = rng.integers(0, 5, (3, 4))
    for fn, t in [(softmax_cross_entropy, y), (mean_squared_error, o[::-1].copy()),
                  (binary_cross_entropy, np.full_like(o, 0.25))]:  # fmt: skip
        lengths = np.array([4, 1, 2])
        got, want = fn(mapped, t, lengths=lengths), fn(o, t, lengths=lengths)
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
    took(name, ran)


# ------------------------------------------------------------------------ class ids
@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.uint64])
def test_ids_out_of_range_are_reported_by_the_valid_steps(path, dtype):
    """Padded ids were set to 0 before the range check, and the message said "from 0" for
    valid ids that were all 5 or more; now the valid ids' range and the first bad one."""
    o = np.zeros((2, 3, 8))
    y = np.array([[5, 9, 6], [7, 0, 0]], dtype)
    said = message(lambda: softmax_cross_entropy(o, y, lengths=np.array([3, 1])))
    assert said == (
        "`targets` must be class ids in [0, 8) (K = logits.shape[-1]); got values "
        "from 5 to 9 (9 at index (0, 1)) instead."
    )
    if np.dtype(dtype).kind == "i":
        said = message(lambda: softmax_cross_entropy(o[:, 0], np.array([2, -3], dtype)))
        assert said.endswith("got values from -3 to 2 (-3 at index (1,)) instead.")
    y = np.array([[5, 7, 6], [7, 100, 99]], dtype)  # (out of range, padded)
    loss, d = softmax_cross_entropy(o, y, lengths=np.array([3, 1]))
    assert loss == pytest.approx(4 * np.log(8)) and not d[1, 1:].any()


# ------------------------------------------------------- float targets past the output's dtype
@pytest.mark.parametrize("fn", [mean_squared_error, binary_cross_entropy])
def test_targets_past_the_output_dtype_count_only_where_valid(path, fn):
    """float64 targets are converted to a float32 output's dtype: 1e39 became inf with the
    cast's RuntimeWarning (FloatingPointError under np.seterr(all="raise")), also at a padded
    step, where padding may hold anything; at a valid step the message named an inf that
    nobody gave. Now padding is ignored and a valid step names the value given."""
    name, ran = path
    pred = np.full((2, 3, 2), 0.25, np.float32)
    clean = np.full((2, 3, 2), 0.5)
    t = clean.copy()
    t[1, 2, 1] = 1e39  # padded (lengths 3, 2)
    got, want = fn(pred, t, lengths=np.array([3, 2])), fn(pred, clean, lengths=np.array([3, 2]))
    assert got[0] == want[0] and np.array_equal(got[1], want[1]) and got[1].dtype == np.float32
    if fn is mean_squared_error:  # (binary cross entropy has NumPy's path only)
        took(name, ran)
    t[1, 1, 0] = -1e40  # valid
    said = message(lambda: fn(pred, t, lengths=np.array([3, 2])))
    assert said == (
        "`targets` must be within the range of the output's dtype float32 "
        "(±3.403e+38) at the valid steps; got -1e+40 at index (1, 1, 0) instead."
    )
    half = message(lambda: fn(np.zeros(2, np.float16), np.array([0.5, 7e4], np.float32)))
    assert half == (
        "`targets` must be within the range of the output's dtype float16 "
        "(±6.55e+04) at the valid steps; got 70000.0 at index (1,) instead."
    )


def test_bce_says_the_target_out_of_range_as_its_dtype_holds_it(path):
    """1 + 2e-7 is 1.0000002 in float32, refused rightly, but the message printed it with
    :g as "1": "must be probabilities in [0, 1]; got values from 0.2 to 1"."""
    said = message(lambda: binary_cross_entropy(np.zeros(2, np.float32), np.array([1 + 2e-7, 0.2])))
    assert said == (
        "`targets` must be probabilities in [0, 1]; got values from 0.2 to 1.0000002 instead."
    )


# ------------------------------------------------------------ the two paths, side by side
def both_paths(fn):
    """fn() on the compiled path and on NumPy's: (result or message, result or message)."""
    out = []
    for no_numba in (False, True):
        with settings.override(no_numba=no_numba):
            try:
                out.append(fn())
            except ValueError as e:
                out.append(str(e))
    return out


def bad_inputs():
    rng = np.random.default_rng(2)
    o = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y = rng.integers(0, 4, (2, 3))
    lengths = np.array([3, 2])
    cases = {}
    for where, at in [("valid", (0, 1, 2)), ("padded", (1, 2, 3))]:
        for bad in (np.nan, np.inf, -np.inf):
            x = o.copy()
            x[at] = bad
            cases[f"ce {bad} {where}"] = (softmax_cross_entropy, x, y, lengths)
            cases[f"mse {bad} {where}"] = (mean_squared_error, x, o, lengths)
    y_bad = y.copy()
    y_bad[0, 0] = 4
    cases["ce id 4"] = (softmax_cross_entropy, o, y_bad, lengths)
    cases["ce float ids"] = (softmax_cross_entropy, o, y.astype(float), None)
    cases["ce bool ids"] = (softmax_cross_entropy, o, y > 1, None)
    cases["ce ids (B,)"] = (softmax_cross_entropy, o, y[:, 0], None)
    cases["ce ids (B, T) for (B, K)"] = (softmax_cross_entropy, o[:, 0], y, None)
    cases["ce empty batch"] = (softmax_cross_entropy, o[:0], y[:0], None)
    cases["ce K = 0"] = (softmax_cross_entropy, o[..., :0], y, None)
    cases["mse empty"] = (mean_squared_error, o[:, :0], o[:, :0], None)
    cases["ce length 0"] = (softmax_cross_entropy, o, y, np.array([3, 0]))
    cases["ce all-False row"] = (
        softmax_cross_entropy,
        o,
        y,
        np.array([[1, 1, 0], [0, 0, 0]], bool),
    )
    return cases


BAD = bad_inputs()


@pytest.mark.parametrize("case", list(BAD))
def test_both_paths_refuse_bad_input_in_the_same_words(case):
    """The compiled pass finds a NaN or inf on its way (the NumPy path checks first): the
    same message, the argument named, the first bad index; the rest is refused at the door,
    before the paths part. One line each, in the house shape (no text of numba's or NumPy's)."""
    fn, x, t, lengths = BAD[case]
    kw = ({} if lengths is None else
          {"lengths": lengths} if lengths.dtype != bool else {"mask": lengths})  # fmt: skip
    compiled, numpy_ = both_paths(lambda: fn(x, t, **kw))
    assert isinstance(numpy_, str) and compiled == numpy_
    assert re.fullmatch(r"`(logits|pred|targets|mask|lengths)` must be [^\n]+; got [^\n]+\.",
                        numpy_), numpy_  # fmt: skip
    if "nan" in case or "inf" in case:
        at = (0, 1, 2) if "valid" in case else (1, 2, 3)
        arg = "logits" if fn is softmax_cross_entropy else "pred"
        assert numpy_ == (
            f"`{arg}` must be finite (no NaN or inf); got {x[at]} at index {at} instead."
        )


LAYOUTS = {
    "batch-first": (lambda a: a, True),
    "time-major view": (
        lambda a: np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 0, 1)), 0, 1),
        True,
    ),
    "strided classes": (lambda a: np.repeat(a, 2, axis=-1)[..., ::2], False),  # (NumPy's path)
    "per sequence": (lambda a: np.ascontiguousarray(a[:, 0]), True),
    "one class": (lambda a: np.ascontiguousarray(a[..., :1]), True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("ids", [np.int8, np.uint16, np.int64])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_cross_entropy_matches_torch_on_both_paths(path, layout, ids, masked):
    """float64, against F.cross_entropy: a mask is torch's ignore_index on the padded steps
    (−100 there), "mean" its mean over the rest; every layout, id dtype and V = 1."""
    name, ran = path
    rng = np.random.default_rng(3)
    make, compiled = LAYOUTS[layout]
    o = make(rng.standard_normal((4, 5, 6)) * 3)
    K = o.shape[-1]
    y = rng.integers(0, K, o.shape[:-1]).astype(ids)
    per_step = o.ndim == 3
    lengths = np.array([5, 2, 1, 4]) if masked and per_step else None
    valid = (np.ones(y.shape, bool) if lengths is None else
             np.arange(5)[None, :] < lengths[:, None])  # fmt: skip
    for reduction in ("sum", "mean"):
        loss, d = softmax_cross_entropy(o, y, lengths=lengths, reduction=reduction)
        ot = torch.tensor(o, requires_grad=True)
        yt = torch.from_numpy(np.where(valid, y.astype(np.int64), -100))
        ref = F_.cross_entropy(ot.reshape(-1, K), yt.reshape(-1), ignore_index=-100,
                               reduction=reduction)  # fmt: skip
        ref.backward()
        assert loss == pytest.approx(ref.item(), rel=1e-13, abs=1e-15)
        np.testing.assert_allclose(d, ot.grad.numpy(), rtol=1e-12, atol=1e-16)
        assert d.strides == np.empty_like(o).strides  # laid out like the logits
    took(name, ran, compiled)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_numpy_paths_gradients_against_finite_differences(reduction):
    """tests/test_losses.py's finite differences run the default path; here NumPy's."""
    rng = np.random.default_rng(4)
    o, y = rng.standard_normal((3, 4, 5)), rng.integers(0, 5, (3, 4))
    x, t = rng.standard_normal((3, 4, 2)), rng.uniform(0, 1, (3, 4, 2))
    lengths, h = np.array([4, 1, 3]), 1e-6
    with settings.override(no_numba=True):
        for fn, a, b in [(softmax_cross_entropy, o, y), (mean_squared_error, x, t),
                         (binary_cross_entropy, x, t)]:  # fmt: skip
            loss, g = fn(a, b, lengths=lengths, reduction=reduction)
            num = np.zeros_like(a)
            for i in np.ndindex(a.shape):
                ap, am = a.copy(), a.copy()
                ap[i] += h
                am[i] -= h
                num[i] = (
                    fn(ap, b, lengths=lengths, reduction=reduction)[0]
                    - fn(am, b, lengths=lengths, reduction=reduction)[0]
                ) / (2 * h)
            assert np.linalg.norm(g - num) / np.linalg.norm(num) < 1e-7


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_float32_compiled_against_float64_numpy(path, masked, reduction):
    """A character LM's shape (104 classes, logits of a few units): float32 on this path
    against float64 on NumPy's, on the same float32 values, to 1e-5 of the loss and of the
    largest gradient; the element-wise losses likewise."""
    name, ran = path
    rng = np.random.default_rng(5)
    o = (rng.standard_normal((16, 32, 104)) * 4).astype(np.float32)
    y = rng.integers(0, 104, (16, 32))
    kw = {"lengths": rng.integers(1, 33, 16)} if masked else {}
    x = (rng.standard_normal((16, 32, 8)) * 3).astype(np.float32)
    t = rng.uniform(0, 1, x.shape).astype(np.float32)
    cases = [(softmax_cross_entropy, o, y), (mean_squared_error, x, t),
             (binary_cross_entropy, x, t)]  # fmt: skip
    for fn, a, b in cases:
        loss32, d32 = fn(a, b, reduction=reduction, **kw)
        with settings.override(no_numba=True):
            loss64, d64 = fn(a.astype(np.float64), b if b.dtype.kind == "i"
                             else b.astype(np.float64), reduction=reduction, **kw)  # fmt: skip
        assert d32.dtype == np.float32
        assert abs(loss32 - loss64) <= 1e-5 * abs(loss64), fn.__name__
        assert np.abs(d32 - d64).max() <= 1e-5 * np.abs(d64).max(), fn.__name__
    took(name, ran)


def test_the_path_follows_the_switch_and_the_layout(path):
    """How the path is chosen: NumPy's where numba is missing or RNNLAB_NO_NUMBA is set, or
    for arrays the kernels do not take (float16, a class axis that is not contiguous); the
    kernel otherwise, the results a few ulp apart."""
    name, ran = path
    rng = np.random.default_rng(6)
    o, y = rng.standard_normal((3, 4, 5)).astype(np.float32), rng.integers(0, 5, (3, 4))
    softmax_cross_entropy(o, y)
    took(name, ran)
    ran.clear()
    softmax_cross_entropy(o.astype(np.float16), y)
    softmax_cross_entropy(np.repeat(o, 2, axis=-1)[..., ::2], y)
    took(name, ran, compiled=False)
    if name == "numpy":
        return
    a, b = both_paths(lambda: softmax_cross_entropy(o, y, lengths=np.array([4, 2, 3])))
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    assert np.abs(a[1] - b[1]).max() <= 4 * np.finfo(np.float32).eps * np.abs(b[1]).max()


def test_ragged_lists_are_refused_by_name():
    """Lists are taken as arrays; nested lists of unequal lengths failed in np.asarray with
    NumPy's "setting an array element with a sequence...", which names no argument."""
    ragged = [[0.0, 1.0], [0.0]]
    cases = [
        (lambda: softmax_cross_entropy(ragged, [0, 1]), "logits"),
        (lambda: softmax_cross_entropy([[0.0, 1.0]], [[0], [1, 0]]), "targets"),
        (lambda: mean_squared_error(ragged, np.zeros(2)), "pred"),
        (lambda: binary_cross_entropy(np.zeros((2, 2)), ragged), "targets"),
        (
            lambda: mean_squared_error(np.zeros((2, 3)), np.zeros((2, 3)), lengths=[3, [2]]),
            "lengths",
        ),  # fmt: skip
        (lambda: log_softmax(ragged), "x"),
        (lambda: softmax(ragged), "x"),
    ]
    for fn, arg in cases:
        said = message(fn)
        assert re.fullmatch(
            rf"`{arg}` must be an array, or nested lists of equal lengths; got "
            r"ragged nested lists \(a list of length 2\) instead\.",
            said,
        ), said
    loss, d = softmax_cross_entropy([[0.0, 1.0]], [1])  # (lists of equal lengths: arrays)
    assert loss == pytest.approx(np.log1p(np.exp(-1.0))) and d.shape == (1, 2)


def test_lengths_and_masks_must_be_plain_arrays():
    """`mask` or `lengths` given as a masked array (of a layer, a loss, anything that takes
    them: recurrence.valid_mask): its min and all skip the masked entries, so a masked step
    or length was read as no mask at all, every step valid, silently. Refused by name, and
    an np.matrix mask likewise."""
    from rnnlab.layers import GRU
    from rnnlab.recurrence import valid_mask

    steps = np.ma.masked_array(np.ones((2, 3), bool), mask=[[0, 0, 1], [0, 1, 1]])
    lengths = np.ma.masked_array([3, 2], mask=[0, 1])
    said = (r"must be a plain NumPy array \(numpy.ndarray\); got a numpy.ma.MaskedArray of "
            r"shape .*A masked array's mask is not read here")
    with pytest.raises(ValueError, match=r"^`mask` " + said):
        valid_mask(None, steps, 2, 3)
    with pytest.raises(ValueError, match=r"^`lengths` " + said):
        GRU(2, 3, batch_first=True).forward(np.zeros((2, 3, 2), np.float32), lengths=lengths)
    with pytest.raises(ValueError, match=r"^`mask` must be a plain NumPy array"):
        mean_squared_error(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)),
                           mask=np.ones((2, 3), bool).view(np.matrix))  # fmt: skip
    assert valid_mask(None, np.asarray(steps), 2, 3) is None  # (its values: all valid)
