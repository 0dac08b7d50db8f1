"""Optimizers, schedules and clipping: parity with torch.optim / torch.nn.utils in float64,
exact resume from saved state, schedule values derived by hand, and the error messages."""

import json
import math
import re

import numpy as np
import pytest
from helpers import oracle

from rnnlab import io
from rnnlab.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Constant,
    Cosine,
    RMSprop,
    StepDecay,
    Warmup,
    clip_by_global_norm,
    clip_by_value,
    clip_gradients,
    global_norm,
    optimizer_from_config,
    schedule_from_config,
)

torch = oracle("torch")

SHAPES = {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2), "bias_ih_l0": (8,)}
STEPS = 10

# (ours, torch's, keyword arguments shared by both)
CASES = [
    ("sgd", SGD, "SGD", {"lr": 0.1}),
    ("sgd_wd", SGD, "SGD", {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd_momentum", SGD, "SGD", {"lr": 0.1, "momentum": 0.9}),
    (
        "sgd_dampening",
        SGD,
        "SGD",
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
    ),
    (
        "sgd_nesterov",
        SGD,
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.02},
    ),
    ("rmsprop", RMSprop, "RMSprop", {}),
    ("rmsprop_momentum", RMSprop, "RMSprop", {"lr": 3e-3, "momentum": 0.9, "weight_decay": 0.01}),
    ("rmsprop_centered", RMSprop, "RMSprop", {"alpha": 0.9, "centered": True}),
    (
        "rmsprop_all",
        RMSprop,
        "RMSprop",
        {"alpha": 0.95, "eps": 1e-6, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
    ),
    ("adagrad", Adagrad, "Adagrad", {}),
    (
        "adagrad_init_wd",
        Adagrad,
        "Adagrad",
        {"lr": 0.1, "initial_accumulator_value": 0.5, "weight_decay": 0.03, "eps": 1e-6},
    ),
    ("adam", Adam, "Adam", {}),
    ("adam_wd", Adam, "Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adamw", AdamW, "AdamW", {}),
    ("adamw_wd", AdamW, "AdamW", {"lr": 1e-2, "betas": (0.5, 0.9), "weight_decay": 0.3}),
]


def make_params(rng, dtype=np.float64):
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grad_sequence(rng, n=STEPS, dtype=np.float64):
    # Some steps tiny and some large, so the second-moment estimates really move.
    return [
        {
            k: (rng.standard_normal(s) * 10.0 ** rng.uniform(-3, 1)).astype(dtype)
            for k, s in SHAPES.items()
        }
        for _ in range(n)
    ]


def rel_err(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def run_torch(tname, kw, params, grads_seq, lrs=None):
    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    opt = getattr(torch.optim, tname)(list(tp.values()), **kw)
    history = []
    for i, grads in enumerate(grads_seq):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[i]
        for k, p in tp.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
        history.append({k: p.detach().numpy().copy() for k, p in tp.items()})
    return history


@pytest.mark.parametrize("name,cls,tname,kw", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_over_ten_steps(rng, name, cls, tname, kw):
    params = make_params(rng)
    grads_seq = grad_sequence(rng)
    ref = run_torch(tname, kw, params, grads_seq)
    opt = cls(**kw)
    state = opt.init(params)
    moved = False
    for t, grads in enumerate(grads_seq):
        before = {k: v.copy() for k, v in params.items()}
        opt.update(params, grads, state)
        assert int(state["step"]) == t + 1
        for k in params:
            assert rel_err(params[k], ref[t][k]) < 1e-12, (name, t, k)
            moved |= not np.array_equal(before[k], params[k])
    assert moved


def test_lr_override_follows_a_schedule_like_torch(rng):
    params = make_params(rng)
    grads_seq = grad_sequence(rng)
    schedule = Warmup(Cosine(1e-2, 6, min_lr=1e-3), 3)
    lrs = [schedule(t) for t in range(STEPS)]
    ref = run_torch("Adam", {"lr": 1.0}, params, grads_seq, lrs)
    opt = Adam(lr=1.0)  # the constructor's lr is overridden at every step
    state = opt.init(params)
    for t, grads in enumerate(grads_seq):
        opt.update(params, grads, state, lr=lrs[t])
    for k in params:
        assert rel_err(params[k], ref[-1][k]) < 1e-12


def test_lr_zero_override_leaves_adam_params_alone_but_advances_moments(rng):
    params = make_params(rng)
    before = {k: v.copy() for k, v in params.items()}
    opt = Adam()
    state = opt.init(params)
    opt.update(params, grad_sequence(rng, 1)[0], state, lr=0.0)
    assert all(np.array_equal(before[k], params[k]) for k in params)
    assert int(state["step"]) == 1 and np.abs(state["m/bias_ih_l0"]).max() > 0


@pytest.mark.parametrize("name,cls,tname,kw", CASES, ids=[c[0] for c in CASES])
def test_state_round_trip_resumes_bit_for_bit(rng, name, cls, tname, kw):
    params = make_params(rng)
    grads_seq = grad_sequence(rng)
    opt = cls(**kw)
    state = opt.init(params)
    for grads in grads_seq[:5]:
        opt.update(params, grads, state)
    # The state is a flat dict of arrays: exactly what a safetensors file can hold.
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["step"].dtype == np.int64 and state["step"].shape == ()
    copied = {k: v.copy() for k, v in state.items()}
    loaded, _ = io.parse_safetensors(io.safetensors_bytes(state))
    readonly = {k: v.copy() for k, v in state.items()}
    for v in readonly.values():
        v.flags.writeable = False  # as when arrays view a file's bytes: update copies them
    p_copied = {k: v.copy() for k, v in params.items()}
    p_loaded = {k: v.copy() for k, v in params.items()}
    p_readonly = {k: v.copy() for k, v in params.items()}
    # A rebuilt optimizer (from its JSON config) continues as the original does.
    opt2 = optimizer_from_config(json.loads(json.dumps(opt.config())))
    assert opt2.config() == opt.config()
    for grads in grads_seq[5:]:
        opt.update(params, grads, state)
        opt2.update(p_copied, grads, copied)
        opt2.update(p_loaded, grads, loaded)
        opt2.update(p_readonly, grads, readonly)
    for other_p, other_s in ((p_copied, copied), (p_loaded, loaded), (p_readonly, readonly)):
        assert all(np.array_equal(params[k], other_p[k]) for k in params)
        assert set(other_s) == set(state)
        assert all(np.array_equal(state[k], other_s[k]) for k in state)


def test_state_layout():
    params = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    assert set(Adam().init(params)) == {"step", "m/w", "m/b", "v/w", "v/b"}
    assert set(SGD(0.1).init(params)) == {"step"}
    assert set(SGD(0.1, momentum=0.9).init(params)) == {"step", "b/w", "b/b"}
    assert set(RMSprop(centered=True, momentum=0.5).init(params)) == {
        "step",
        "v/w",
        "v/b",
        "g_avg/w",
        "g_avg/b",
        "b/w",
        "b/b",
    }
    s = Adagrad(initial_accumulator_value=0.25).init(params)
    assert s["s/w"].dtype == np.float32 and np.all(s["s/w"] == 0.25)


@pytest.mark.parametrize("name,cls,tname,kw", CASES, ids=[c[0] for c in CASES])
def test_float32_stays_float32(rng, name, cls, tname, kw):
    params = make_params(rng, np.float32)
    opt = cls(**kw)
    state = opt.init(params)
    for grads in grad_sequence(rng, 3, np.float32):
        opt.update(params, grads, state)
    assert all(v.dtype == np.float32 for v in params.values())
    assert all(v.dtype == np.float32 for k, v in state.items() if k != "step")


def test_update_does_not_touch_the_gradients(rng):
    params, grads = make_params(rng), grad_sequence(rng, 1)[0]
    kept = {k: v.copy() for k, v in grads.items()}
    opt = SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    opt.update(params, grads, opt.init(params))
    assert all(np.array_equal(kept[k], grads[k]) for k in grads)


# ------------------------------------------------------------------------ schedules (by hand)
def test_constant():
    s = Constant(0.1)
    assert s(0) == 0.1 and s(10**6) == 0.1


def test_step_decay():
    s = StepDecay(1.0, step_size=3, gamma=0.5)
    assert [s(t) for t in range(10)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


def test_cosine():
    s = Cosine(1.0, total_steps=4, min_lr=0.2)
    # 0.2 + 0.8·(1 + cos(π t/4))/2: t=1 → 0.6 + 0.2·√2, t=2 → 0.6, t=3 → 0.6 − 0.2·√2
    expected = [1.0, 0.6 + 0.2 * math.sqrt(2), 0.6, 0.6 - 0.2 * math.sqrt(2), 0.2, 0.2]
    assert [s(t) for t in range(6)] == pytest.approx(expected, rel=1e-15)
    assert s(10**9) == 0.2
    assert Cosine(2.0, 10)(5) == pytest.approx(1.0, rel=1e-15) and Cosine(2.0, 10)(10) == 0.0


def test_warmup():
    s = Warmup(Constant(0.4), warmup_steps=4)
    assert [s(t) for t in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rel=1e-15)
    # The inner schedule starts afresh after the ramp: a cosine over 2 steps from 1 to 0.
    s = Warmup(Cosine(1.0, 2), warmup_steps=2)
    assert [s(t) for t in range(6)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0, 0.0], abs=1e-15)
    s = Warmup(StepDecay(0.8, 2, 0.5), 4)
    assert [s(t) for t in range(9)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 0.4, 0.4, 0.2], rel=1e-15
    )


@pytest.mark.parametrize(
    "schedule",
    [
        Constant(0.3),
        StepDecay(0.1, 7, 0.9),
        Cosine(0.5, 100, 0.01),
        Warmup(Warmup(Cosine(0.5, 10), 3), 2),
    ],
    ids=["constant", "step", "cosine", "warmup"],
)
def test_schedule_config_round_trip(schedule):
    again = schedule_from_config(json.loads(json.dumps(schedule.config())))
    assert type(again) is type(schedule) and again.config() == schedule.config()
    assert [again(t) for t in range(30)] == [schedule(t) for t in range(30)]


# ------------------------------------------------------------------------ clipping
def torch_grads(grads):
    ps = []
    for v in grads.values():
        p = torch.nn.Parameter(torch.zeros(v.shape, dtype=torch.float64))
        p.grad = torch.tensor(v)
        ps.append(p)
    return ps


@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clips, and leaves alone
def test_clip_by_global_norm_matches_torch(rng, max_norm):
    grads = grad_sequence(rng, 1)[0]
    ps = torch_grads(grads)
    ref = torch.nn.utils.clip_grad_norm_(ps, max_norm).item()
    before = {k: v.copy() for k, v in grads.items()}
    norm = clip_by_global_norm(grads, max_norm)
    assert norm == pytest.approx(ref, rel=1e-13)
    assert norm == pytest.approx(math.sqrt(sum((g**2).sum() for g in before.values())), rel=1e-13)
    for g, p in zip(grads.values(), ps, strict=True):
        assert rel_err(g, p.grad.numpy()) < 1e-13
    if max_norm > norm:
        assert all(np.array_equal(before[k], grads[k]) for k in grads)
    else:
        assert global_norm(grads) == pytest.approx(max_norm, rel=1e-5)


def test_clip_by_value_matches_torch(rng):
    grads = grad_sequence(rng, 1)[0]
    expected_norm = global_norm(grads)
    ps = torch_grads(grads)
    torch.nn.utils.clip_grad_value_(ps, 0.3)
    assert clip_by_value(grads, 0.3) == expected_norm  # the norm before clipping
    for g, p in zip(grads.values(), ps, strict=True):
        assert np.array_equal(g, p.grad.numpy())
    assert max(np.abs(g).max() for g in grads.values()) == 0.3


def test_clip_gradients_dispatches_by_name(rng):
    grads = grad_sequence(rng, 1)[0]
    norm = global_norm(grads)
    a, b, c = ({k: v.copy() for k, v in grads.items()} for _ in range(3))
    assert clip_gradients(a, "none", 0.0) == norm and all(np.array_equal(a[k], grads[k]) for k in a)
    assert clip_gradients(b, "global_norm", 0.1) == norm
    assert global_norm(b) == pytest.approx(0.1, rel=1e-5)
    assert clip_gradients(c, "value", 0.01) == norm
    assert max(np.abs(g).max() for g in c.values()) == 0.01


def test_global_norm_is_float64_accurate_for_float32():
    g = {"a": np.full(4, 1e20, np.float32), "b": np.full(3, 1e-3, np.float32)}
    assert global_norm(g) == pytest.approx(2e20, rel=1e-6)  # float32 squares would overflow


def test_global_norm_compiled_pass_matches_numpy_and_not_the_thread_count(monkeypatch, setenv):
    """rnnlab.fast.sum_of_squares against the float64 dot products it replaces, on arrays of
    every layout the gradients come in (non-contiguous, 0-d, empty, float64 beside float32),
    and the same bits on one thread and on three: the chunks' sums add in their order."""
    from rnnlab import fast, settings
    from rnnlab.fast import parallel

    if not fast.available():
        pytest.skip("needs the compiled kernels")
    monkeypatch.setattr(fast, "SQUARES_CHUNK", 7)  # many chunks, a ragged last one
    rng = np.random.default_rng(3)
    grads = {
        "w": rng.standard_normal((37, 11)).astype(np.float32),
        "t": rng.standard_normal((11, 37)).T,  # not contiguous
        "s": np.array(2.5, np.float32),
        "e": np.zeros((0, 4), np.float32),
        "b": rng.standard_normal(5),
    }
    calls = []
    compiled = fast.sum_of_squares
    monkeypatch.setattr(fast, "sum_of_squares", lambda a: calls.append(1) or compiled(a))
    norms = []
    for threads in ("1", "3"):
        setenv(RNNLAB_NUM_THREADS=threads)
        with parallel.session():
            norms.append(global_norm(grads))
    assert calls and norms[0] == norms[1]
    with settings.override(no_numba=True):
        want = global_norm(grads)
    assert norms[0] == pytest.approx(want, rel=1e-14)
    half = {"h": np.ones(3, np.float16), "w": grads["w"]}  # float16: the NumPy path
    assert global_norm(half) == pytest.approx(math.sqrt(3 + float((grads["w"].astype(float) ** 2)
                                                                   .sum())), rel=1e-12)  # fmt: skip


@pytest.mark.parametrize("bad,expected", [(np.inf, math.inf), (np.nan, None), (-np.inf, math.inf)])
def test_non_finite_gradients_are_reported_not_raised(bad, expected):
    # np.seterr(all="raise") is on in the tests: none of these may raise.
    grads = {"a": np.array([1.0, bad, 2.0]), "b": np.ones(2)}
    for fn in (
        global_norm,
        lambda g: clip_by_global_norm(g, 1.0),
        lambda g: clip_by_value(g, 0.5),
        lambda g: clip_gradients(g, "global_norm", 1.0),
    ):
        g = {k: v.copy() for k, v in grads.items()}
        norm = fn(g)
        assert math.isnan(norm) if expected is None else norm == expected
    g = {k: v.copy() for k, v in grads.items()}
    clip_by_global_norm(g, 1.0)  # no finite scale exists: the gradients are left as they came
    assert np.array_equal(g["b"], grads["b"]) and np.array_equal(g["a"], grads["a"], equal_nan=True)


# ------------------------------------------------------------------------ errors
ERROR_CASES = [
    (lambda: SGD(0.0), r"`lr` must be a finite number > 0; got 0.0 \(float\)"),
    (lambda: Adam(lr=float("nan")), r"`lr` must be a finite number > 0; got nan"),
    (lambda: Adam(lr="1e-3"), r"`lr` must be a finite number > 0; got '1e-3' \(str\)"),
    (lambda: Adam(betas=(0.9, 1.0)), r"`betas\[1\]` must be a number in \[0, 1\); got 1.0"),
    (
        lambda: AdamW(betas=0.9),
        r"`betas` must be a pair \(beta1, beta2\) of numbers in \[0, 1\); got 0.9",
    ),
    (lambda: Adam(eps=0.0), r"`eps` must be a finite number > 0; got 0.0"),
    (lambda: Adam(weight_decay=-1e-4), r"`weight_decay` must be a finite number >= 0; got -0.0001"),
    (lambda: SGD(0.1, nesterov=True), r"`momentum` must be > 0 with nesterov=True; got 0.0"),
    (
        lambda: SGD(0.1, momentum=0.9, nesterov=True, dampening=0.1),
        r"`dampening` must be 0 with nesterov=True; got 0.1",
    ),
    (lambda: SGD(0.1, momentum=1.5), r"`momentum` must be a number in \[0, 1\); got 1.5"),
    (lambda: SGD(0.1, nesterov=1), r"`nesterov` must be True or False; got 1 \(int\)"),
    (lambda: RMSprop(alpha=1.0), r"`alpha` must be a number in \[0, 1\); got 1.0"),
    (lambda: RMSprop(centered="yes"), r"`centered` must be True or False; got 'yes'"),
    (
        lambda: Adagrad(initial_accumulator_value=-1.0),
        r"`initial_accumulator_value` must be a finite number >= 0",
    ),
    (lambda: StepDecay(0.1, 0, 0.5), r"`step_size` must be a positive integer; got 0 \(int\)"),
    (lambda: StepDecay(0.1, 5, 0.0), r"`gamma` must be a number in \(0, 1\]; got 0.0"),
    (
        lambda: Cosine(0.1, 10, min_lr=0.2),
        r"`min_lr` must be a number in \[0, lr\] = \[0, 0.1\]; got 0.2",
    ),
    (lambda: Cosine(0.1, 2.5), r"`total_steps` must be a positive integer; got 2.5"),
    (
        lambda: Warmup(lambda t: 0.1, 5),
        r"`schedule` must be a schedule \(Constant, StepDecay, Cosine or Warmup\)",
    ),
    (lambda: Warmup(Constant(0.1), -1), r"`warmup_steps` must be a positive integer; got -1"),
    (lambda: Constant(0.1)(-1), r"`step` must be an integer >= 0 \(steps count from 0\); got -1"),
    (lambda: Constant(0.1)(1.0), r"`step` must be an integer >= 0 .*got 1.0 \(float\)"),
    (
        lambda: optimizer_from_config({"name": "lion", "lr": 1.0}),
        r"`config\['name'\]` must be one of 'sgd', 'rmsprop', 'adagrad', 'adam', 'adamw'; "
        r"got 'lion'",
    ),
    (lambda: optimizer_from_config({"lr": 1.0}), r"`config` must be a dict with a 'name' entry"),
    (
        lambda: optimizer_from_config({"name": "adam", "momentum": 0.9}),
        r"`config` must be keys among .* for Adam; got the unknown key 'momentum'",
    ),
    (
        lambda: schedule_from_config({"name": "linear"}),
        r"`config\['name'\]` must be one of 'constant'",
    ),
    (
        lambda: schedule_from_config({"name": "warmup", "schedule": 0.1, "warmup_steps": 2}),
        r"`config\['schedule'\]` must be the config dict of the inner schedule; got 0.1",
    ),
    (
        lambda: clip_by_global_norm({"a": np.ones(2)}, 0.0),
        r"`max_norm` must be a finite number > 0; got 0.0",
    ),
    (
        lambda: clip_by_value({"a": np.ones(2)}, -1),
        r"`clip_value` must be a finite number > 0; got -1",
    ),
    (
        lambda: clip_gradients({"a": np.ones(2)}, "norm", 1.0),
        r"`mode` must be one of 'global_norm', 'value', 'none'; got 'norm'",
    ),
    (
        lambda: global_norm([np.ones(2)]),
        r"`grads` must be a dict of NumPy float arrays; got a list of length 1",
    ),
    (
        lambda: global_norm({"a": np.ones(2, int)}),
        r"`grads\['a'\]` must be a NumPy array of floats",
    ),
    (
        lambda: Adam().init({"w": [1.0, 2.0]}),
        r"`params\['w'\]` must be a NumPy array of floats; got a list",
    ),
]


@pytest.mark.parametrize("make,pattern", ERROR_CASES, ids=[str(i) for i in range(len(ERROR_CASES))])
def test_bad_hyperparameters_and_inputs(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


HUGE = 10**400  # an int no float holds: float() raised OverflowError, a traceback


@pytest.mark.parametrize("make,name", [
    (lambda: Adam(lr=HUGE), "lr"),
    (lambda: SGD(0.1, weight_decay=HUGE), "weight_decay"),
    (lambda: Adam(betas=(HUGE, 0.9)), r"betas\[0\]"),
    (lambda: SGD(0.1, momentum=-HUGE), "momentum"),
    (lambda: clip_by_global_norm({"a": np.ones(2)}, HUGE), "max_norm"),
    (lambda: Adam().update({"a": np.ones(2)}, {"a": np.ones(2)}, Adam().init({"a": np.ones(2)}),
                           lr=HUGE), "lr"),
    (lambda: optimizer_from_config({"name": "rmsprop", "eps": HUGE}), "eps"),
])  # fmt: skip
def test_an_integer_too_large_for_a_float_is_refused_by_name(make, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*; got -?1000000000.*\.\.\. \(int\)"):
        make()


def test_a_schedule_past_a_float_s_range_of_steps_is_refused_or_computed():
    """StepDecay at step 10**400 and a Cosine over 10**400 steps raised OverflowError."""
    assert StepDecay(0.1, 10, 0.5)(HUGE) == 0.0 and StepDecay(0.1, 10, 1.0)(HUGE) == 0.1
    assert StepDecay(0.1, 10, 0.5)(25) == 0.1 * 0.5**2
    with pytest.raises(ValueError, match=r"`total_steps` must be a positive integer up to "
                       r"9223372036854775807; got 1000000000.*\.\.\. \(int\)"):  # fmt: skip
        Cosine(0.1, HUGE)
    assert Cosine(0.1, 2**63 - 1)(HUGE) == 0.0


def test_bad_update_arguments():
    params = {"w": np.zeros((2, 3)), "b": np.zeros(2)}
    opt = Adam()
    state = opt.init(params)
    good = {"w": np.ones((2, 3)), "b": np.ones(2)}
    with pytest.raises(
        ValueError, match=r"`grads` must be a gradient for every parameter; got none for 'b'"
    ):
        opt.update(params, {"w": good["w"]}, state)
    with pytest.raises(
        ValueError, match=r"`grads` must be keyed by parameter names; got a gradient for 'c'"
    ):
        opt.update(params, {**good, "c": np.ones(1)}, state)
    with pytest.raises(
        ValueError,
        match=r"`grads\['w'\]` must be an array of shape \(2, 3\) like its parameter; "
        r"got an array of shape \(3, 2\)",
    ):
        opt.update(params, {**good, "w": np.ones((3, 2))}, state)
    with pytest.raises(
        ValueError,
        match=r"`state` must be the dict `Adam.init\(params\)` returned; "
        r"got no 'm/w' entry.*another optimizer",
    ):
        opt.update(params, good, SGD(0.1).init(params))
    with pytest.raises(
        ValueError, match=r"`state` must be the dict `init\(params\)` returned; got no 'step' entry"
    ):
        opt.update(params, good, {})
    with pytest.raises(ValueError, match=r"`state` must be .*; got a wrongly shaped 'v/b' entry"):
        opt.update(params, good, {**state, "v/b": np.zeros(3)})
    with pytest.raises(
        ValueError,
        match=r"`lr` must be a finite number >= 0 \(or None for the optimizer's own\); got -0.1",
    ):
        opt.update(params, good, state, lr=-0.1)
    with pytest.raises(ValueError, match=r"`params` must be a dict of NumPy arrays; got a list"):
        opt.update([params["w"]], good, state)
    assert int(state["step"]) == 0 and np.all(params["w"] == 0)  # nothing moved on bad input


@pytest.mark.parametrize("bad", ["read-only", "int"])
def test_update_checks_every_parameter_before_it_moves_any(bad):
    """A parameter it cannot write (read-only, or integers) was found half way: the ones
    before it and their moments had moved, the step count had not, and NumPy's error named
    none of them."""
    params = {"a": np.ones(2), "b": np.ones(2)}
    opt = Adam(0.1)
    state = opt.init(params)
    if bad == "read-only":
        params["b"].flags.writeable = False
        match = r"`params\[.b.\]` must be a writeable array of floats .*; got dtype float64, read"
    else:
        params["b"] = np.ones(2, np.int64)
        match = r"`params\['b'\]` must be a writeable array of floats .*; got dtype int64"
    with pytest.raises(ValueError, match=match):
        opt.update(params, {"a": np.ones(2), "b": np.ones(2)}, state)
    np.testing.assert_array_equal(params["a"], 1.0)
    assert not state["m/a"].any() and int(state["step"]) == 0
    with pytest.raises(ValueError, match=r"`grads\['a'\]` must be an array of real numbers"):
        Adam().update({"a": np.ones(2)}, {"a": np.ones(2, bool)}, Adam().init({"a": np.ones(2)}))


def test_update_checks_the_state_and_the_parameters_before_anything_moves():
    """A slot of integers, a negative or fractional step count, a parameter that is a list:
    each named before any parameter moves (they were NumPy's casting error or a division by
    zero after the first parameter and its moments had stepped, or an AttributeError)."""
    params = {"a": np.ones(2), "b": np.ones(2)}
    good = {"a": np.ones(2), "b": np.ones(2)}
    opt = Adam(0.1)
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"`state\['v/b'\]` must be an array of float64 like "
                       r"its parameter; got dtype int64"):  # fmt: skip
        opt.update(params, good, {**state, "v/b": np.zeros(2, np.int64)})
    for step, shown in ((np.array(-1), r"-1 \(int64\)"), (np.array(1.5), r"1.5 \(float64\)"),
                        (True, "True")):  # fmt: skip
        with pytest.raises(ValueError, match=r"`state\['step'\]` must be the number of updates "
                           r"so far \(an integer >= 0\); got " + shown):  # fmt: skip
            opt.update(params, good, {**state, "step": step})
    np.testing.assert_array_equal(params["a"], 1.0)
    assert not state["m/a"].any() and int(state["step"]) == 0
    with pytest.raises(ValueError, match=r"`params\['w'\]` must be a writeable array of floats"):
        opt.update({"w": [1.0, 2.0]}, {"w": np.ones(2)}, {"step": np.array(0)})


SUBCLASS_OPTIMIZERS = [
    lambda: SGD(0.1, momentum=0.9), lambda: RMSprop(0.1), lambda: Adagrad(0.1),
    lambda: Adam(0.1), lambda: AdamW(0.1),
]


@pytest.mark.parametrize("make", SUBCLASS_OPTIMIZERS, ids=["sgd", "rmsprop", "adagrad", "adam",
                                                           "adamw"])  # fmt: skip
@pytest.mark.parametrize("where", ["params", "grads", "state", "masked"])
def test_an_array_subclass_with_other_arithmetic_is_refused_by_name(engine_path, make, where):
    """np.matrix parameters or gradients: RMSprop, Adagrad and NumPy's Adam squared the
    gradient as a matrix product (g * g), silently; the compiled Adam step failed inside
    numba. A masked parameter kept its masked elements, silently. Each is named now, at
    `init` for the parameters and before anything moves at `update`."""
    opt = make()
    params = {"a": np.ones((2, 2)), "b": np.ones((2, 2))}
    grads = {"a": np.full((2, 2), 0.5), "b": np.array([[0.1, 0.2], [0.3, 0.4]])}
    if where in ("params", "masked"):
        bad = (params["b"].view(np.matrix) if where == "params" else
               np.ma.masked_array(params["b"], mask=[[0, 1], [0, 0]]))  # fmt: skip
        cls = "numpy.matrix" if where == "params" else "numpy.ma.MaskedArray"
        with pytest.raises(ValueError, match=rf"`params\['b'\]` must be a plain NumPy array "
                           rf"\(numpy.ndarray: arithmetic element by element\); got a {cls} "
                           r"of shape \(2, 2\) and dtype float64 instead"):  # fmt: skip
            opt.init({**params, "b": bad})
    state = opt.init(params)
    if where in ("params", "masked"):
        args = ({**params, "b": bad}, grads, state)
        name = "params['b']"
    elif where == "grads":
        args, name = (params, {**grads, "b": grads["b"].view(np.matrix)}, state), "grads['b']"
    else:
        if not opt.slots():
            pytest.skip("no state slot")
        key = f"{opt.slots()[0]}/b"
        args, name = (params, grads, {**state, key: state[key].view(np.matrix)}), f"state['{key}']"
    with pytest.raises(ValueError, match=rf"`{re.escape(name)}` must be a plain NumPy array "
                       r".*; got a numpy\.(matrix|ma\.MaskedArray) of shape \(2, 2\)"):  # fmt: skip
        opt.update(*args)
    assert np.all(params["a"] == 1) and int(state["step"]) == 0  # nothing moved


def test_a_memmap_is_an_array_to_the_optimizers(tmp_path, engine_path):
    """np.memmap is an ndarray subclass with NumPy's own arithmetic: not refused, and
    stepped as the plain array is."""
    rng = np.random.default_rng(3)
    w, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    mapped = np.memmap(tmp_path / "w.bin", dtype=np.float64, mode="w+", shape=w.shape)
    mapped[...] = w
    plain = {"w": w.copy()}
    for params in (plain, {"w": mapped}):
        opt = Adam(0.1)
        state = opt.init(params)
        for _ in range(2):
            opt.update(params, {"w": g.copy()}, state)
    np.testing.assert_array_equal(mapped, plain["w"])


def test_global_norm_refuses_a_matrix_gradient_by_name():
    """np.dot of a matrix's ravel (1 × n) with itself raised NumPy's "shapes not aligned"."""
    for clip in (global_norm, lambda g: clip_by_global_norm(g, 1.0)):
        with pytest.raises(ValueError, match=r"`grads\['a'\]` must be a plain NumPy array"):
            clip({"a": np.ones((2, 2)).view(np.matrix)})


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_running_squares_do_not_overflow_before_torchs(name):
    """A float32 gradient of 1e20 squares to inf, but (1 − β₂)·g·g in torch's order is 1e37:
    the running square stays finite and equal to torch's (v = inf froze the weight for good)."""
    cls, tname, kw = {"adam": (Adam, "Adam", {"lr": 1e-3}),
                      "rmsprop": (RMSprop, "RMSprop", {"lr": 1e-3})}[name]  # fmt: skip
    params = {"w": np.ones(3, np.float32)}
    grads = [{"w": np.array([1e20, -1.5e20, 1.0], np.float32)}, {"w": np.ones(3, np.float32)}]
    ref = run_torch(tname, kw, {k: v.copy() for k, v in params.items()}, grads)
    opt = cls(**kw)
    state = opt.init(params)
    for t, g in enumerate(grads):
        opt.update(params, g, state)
        np.testing.assert_allclose(params["w"], ref[t]["w"], rtol=1e-6)
    assert np.isfinite(state["v/w"]).all()
    # below that, the square is summed as it always was, to the bit: (1 − β₂)·(g·g) (torch's
    # order rounds differently, and every float32 run reported in the docs would move)
    g = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    params, opt = {"w": np.ones(1000, np.float32)}, cls(**kw)
    state = opt.init(params)
    opt.update(params, {"w": g}, state)
    scale = 1.0 - (0.999 if name == "adam" else 0.99)
    assert np.array_equal(state["v/w"], scale * (g * g))


@pytest.mark.parametrize(
    "load,config,key",
    [
        (schedule_from_config, {"name": "warmup", "warmup_steps": 3}, "schedule"),
        (schedule_from_config, {"name": "cosine", "lr": 1.0}, "total_steps"),
        (schedule_from_config, {"name": "constant"}, "lr"),
        (optimizer_from_config, {"name": "sgd"}, "lr"),
    ],
)
def test_a_config_missing_a_required_entry_names_it(load, config, key):
    with pytest.raises(ValueError, match=rf"`config\['{key}'\]` must be an entry"):
        load(config)


@pytest.mark.parametrize("cls", [Adam, RMSprop])
def test_a_scalar_parameter_s_square_past_float32_is_summed_in_torch_s_order(cls):
    """A 0-d parameter's square is a NumPy scalar: its overflowing element was written in
    place, a TypeError half way through the update (the parameters before it had moved)."""
    params = {"a": np.ones(1, np.float32), "w": np.array(1.0, np.float32)}
    opt = cls(1e-3)
    state = opt.init(params)
    opt.update(params, {"a": np.ones(1, np.float32), "w": np.array(3e19, np.float32)}, state)
    assert np.isfinite(state["v/w"]) and state["v/w"] > 1e35 and int(state["step"]) == 1


def test_a_weight_held_twice_is_refused_not_stepped_twice():
    """One module used twice (Sequential(lin, lin)), or one array given to two modules or two
    entries of an optimizer's params, was stepped once per entry: with Adam each entry kept
    its own moments (not Adam on the summed gradient), and clipping by the global norm took
    ‖g₁‖² + ‖g₂‖² for ‖g₁ + g₂‖². rnnlab does not tie weights, so both places refuse it."""
    from rnnlab.modules import Linear, Sequential

    lin = Linear(3, 3, rng=0)
    with pytest.raises(ValueError, match=r"`modules` must be modules whose parameters are "
                       r"arrays of their own \(rnnlab does not tie weights.*got '0.weight' and "
                       r"'1.weight' sharing memory instead"):  # fmt: skip
        Sequential(lin, lin)
    other = Linear(3, 3, rng=1)
    other.params["bias"] = lin.params["bias"]  # one array given to two modules
    with pytest.raises(ValueError, match=r"got '0.bias' and '1.bias' sharing memory"):
        Sequential(lin, other)
    for opt in (SGD(0.1), Adam(0.01), RMSprop(0.01)):
        w = lin.params["weight"]
        with pytest.raises(ValueError, match=r"`params` must be arrays of their own, one for "
                           r"each entry .* got 'a' and 'b' sharing memory instead. Give each "
                           r"its own copy \(np.copy\)."):  # fmt: skip
            opt.init({"a": w, "b": w[:1]})  # (a view shares memory too)
        assert set(opt.init({"a": w, "b": w.copy()})) >= {"step"}
    assert Sequential(lin, Linear(3, 3, rng=2)).params  # arrays of their own: taken


def test_disjoint_blocks_of_one_array_are_not_a_weight_held_twice():
    """The two column blocks of one matrix share no element, only bounds
    (np.may_share_memory says True): each is its own weight, stepped as a copy of it is."""
    from rnnlab.modules import Linear, Sequential

    w = np.arange(24, dtype=np.float64).reshape(4, 6)
    params = {"a": w[:, :3], "b": w[:, 3:]}
    assert np.may_share_memory(params["a"], params["b"])  # (what the check once used)
    copies = {k: v.copy() for k, v in params.items()}
    grads = {"a": np.full((4, 3), 0.5), "b": np.full((4, 3), -2.0)}
    for p in (params, copies):
        opt = Adam(0.1)
        state = opt.init(p)
        opt.update(p, grads, state)
    for k in params:
        np.testing.assert_array_equal(params[k], copies[k])
    lin, other = Linear(3, 2, rng=0), Linear(2, 2, rng=1)
    both = np.zeros((2, 5))
    lin.params["weight"], other.params["weight"] = both[:, :3], both[:, 3:]
    assert len(Sequential(lin, other).params) == 4
    with pytest.raises(ValueError, match=r"got 'a' and 'b' sharing memory"):
        Adam(0.1).init({"a": w[:, :4], "b": w[:, 3:]})  # (column 3 in both: held twice)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make,slot,tname,kw", [
    (lambda: Adam(0.1, betas=(0.0, 0.999)), "m", "Adam", {"lr": 0.1, "betas": (0.0, 0.999)}),
    (lambda: AdamW(0.1, betas=(0.5, 0.9)), "m", "AdamW", {"lr": 0.1, "betas": (0.5, 0.9)}),
    (lambda: RMSprop(0.1, alpha=0.0, centered=True), "g_avg", "RMSprop",
     {"lr": 0.1, "alpha": 0.0, "centered": True}),
    (lambda: RMSprop(0.1, alpha=0.5, centered=True), "g_avg", "RMSprop",
     {"lr": 0.1, "alpha": 0.5, "centered": True}),
], ids=["adam-beta1-0", "adamw-beta1-half", "rmsprop-alpha-0", "rmsprop-alpha-half"])  # fmt: skip
def test_a_running_average_of_weight_one_half_or_more_is_torch_s_lerp(engine_path, dtype, make,
                                                                      slot, tname, kw):  # fmt: skip
    """torch's lerp_ takes end − (end − a)·(1 − w) for a weight w ≥ 0.5: at Adam's β1 = 0
    the first moment is the gradient itself. m + (g − m) lost a gradient below m's last bit:
    after a gradient of 1e10, one of 1e-10 left m = 0. At w = 0.5 both forms are torch's to
    the bit (their products by 0.5 and 0 are exact), and the compiled Adam step keeps them."""
    grads = [np.array([1e10, -3.0, 0.7, 2.5e-3]), np.array([1e-10, 1.0 / 3, -0.2, 1e5]),
             np.array([-2e-10, 7.0, 1e-3, -4.0])]  # fmt: skip
    grads = [{"w": g.astype(dtype)} for g in grads]
    params = {"w": np.array([1.0, -0.5, 0.25, 2.0], dtype)}
    tp = torch.nn.Parameter(torch.tensor(params["w"].copy()))
    topt = getattr(torch.optim, tname)([tp], **kw, foreach=False)
    tslot = {"m": "exp_avg", "g_avg": "grad_avg"}[slot]
    opt = make()
    state = opt.init(params)
    for g in grads:
        opt.update(params, g, state)
        tp.grad = torch.tensor(g["w"].copy())
        topt.step()
        np.testing.assert_array_equal(state[f"{slot}/w"], topt.state[tp][tslot].numpy())
    if kw.get("betas", (None,))[0] == 0.0 or kw.get("alpha") == 0.0:
        np.testing.assert_array_equal(state[f"{slot}/w"], grads[-1]["w"])  # m_t = g_t exactly


@pytest.mark.parametrize("numba", [True, False], ids=["compiled", "numpy"])
def test_the_global_norm_of_finite_gradients_is_finite_past_float64s_squares(numba, setenv):
    """Float64 gradients of ~1e160 (finite; their squares are not): the norm summed g² into
    inf, so clipping by the norm, which is what rescues such a step, met a norm it called a
    divergence. Now summed over g / max|g|, exact; a NaN or inf among them stays NaN or
    inf."""
    setenv(RNNLAB_NO_NUMBA=None if numba else "1")
    from rnnlab.optim import clip_by_global_norm, global_norm

    g = {"w": np.full((3, 4), 1e160), "b": np.array([-2e160, 0.0]), "e": np.zeros(0)}
    assert global_norm(g) == 4e160  # sqrt(12 + 4) · 1e160
    assert clip_by_global_norm(g, 1.0) == 4e160
    assert global_norm(g) == pytest.approx(1.0, rel=1e-12)
    assert np.all(np.isfinite(g["w"])) and g["w"][0, 0] == pytest.approx(0.25, rel=1e-12)
    assert math.isinf(global_norm({"w": np.array([np.inf, 1e200])}))
    assert math.isnan(global_norm({"w": np.array([np.nan, 1e200])}))
