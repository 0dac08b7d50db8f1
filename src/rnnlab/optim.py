"""Optimizers, learning-rate schedules and gradient clipping, with all state explicit.

An optimizer holds only its hyperparameters; what it learns along the way (moments, the step
count) lives in a flat dict of NumPy arrays that `init` returns and `update` advances in place,
so a checkpoint saves it as tensors and a resumed run continues bit for bit:

    opt = Adam(lr=1e-3)
    state = opt.init(params)                      # {"step": 0, "m/<name>": 0, "v/<name>": 0}
    norm = clip_by_global_norm(grads, 1.0)        # the norm before clipping, for the log
    opt.update(params, grads, state, lr=schedule(step))

The update rules are PyTorch's (torch.optim 2.13, single-tensor path), including its quirks:
SGD's momentum buffer starts at the first gradient, undamped; Adam's weight decay is an L2 term
added to the gradient and AdamW's is decoupled. A schedule maps a step (from 0) to a learning
rate. Clipping is named by what it clips, so "clip at 1" always says which.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, TypeGuard

import numpy as np

from rnnlab import _checks, fast
from rnnlab.fast import parallel

Arrays = dict[str, np.ndarray]


# ---------------------------------------------------------------------------- optimizers
class Optimizer:
    """The plumbing every optimizer shares: state layout, checks, the loop over parameters.

    A subclass names its per-parameter state arrays in `slots(...)` (the state key is
    "<slot>/<parameter name>") and writes the math of one parameter's step in `_step`.
    """

    name = ""
    lr: float
    squares: tuple[str, ...] = ()
    """The slots that sum squared gradients: never below 0 (a root is taken of them), which
    a resumed state is checked for (train.Trainer.restore)."""

    def slots(self) -> tuple[str, ...]:
        return ()

    def _slot_init(self, slot: str) -> float:
        return 0.0

    def init(self, params: Arrays) -> Arrays:
        """Fresh state for `params`: a step counter (int64, 0-d) and zeroed slots."""
        params = _check_arrays(params, "params")
        _checks.untied(params, "params")
        state: Arrays = {"step": np.zeros((), dtype=np.int64)}
        for slot in self.slots():
            for k, p in params.items():
                state[f"{slot}/{k}"] = np.full_like(p, self._slot_init(slot))
        return state

    def update(self, params: Arrays, grads: Arrays, state: Arrays, lr: float | None = None,
               *, grad_scale: float = 1.0) -> frozenset[str]:  # fmt: skip
        """One step: update `params` and `state` in place. `lr` overrides `self.lr` (schedules).
        `grad_scale` multiplies every gradient first, as `g *= grad_scale` would (a global-norm
        clip's scale, `clip_scale`), without writing the gradients: Adam's compiled pass
        applies it as it reads them, a pass over them fewer.

        Returns the names of the parameters whose new values and running squares (`squares`)
        the step itself found all finite: a compiled pass sees every value it writes. For the
        others nothing is known, and a caller that must know (the Trainer) reads them."""
        if lr is None:
            lr = self.lr
        elif not (_is_number(lr) and math.isfinite(_checks.as_float(lr)) and lr >= 0):
            _checks.fail(
                "lr", "a finite number >= 0 (or None for the optimizer's own)", _checks.describe(lr)
            )
        scale = _positive(grad_scale, "grad_scale")
        self._check_update(params, grads, state)
        t = int(state["step"]) + 1  # steps count from 1 in the bias corrections, as in torch
        finite = set()
        # A product that underflows to a subnormal or 0 is the step's arithmetic, as in torch
        # (a 1e-25 gradient's square in float32); under np.seterr(all="raise") NumPy's path
        # raised FloatingPointError half way through the parameters.
        with np.errstate(under="ignore"):
            for k, p in params.items():
                S = {}
                for slot in self.slots():
                    a = state[f"{slot}/{k}"]
                    if not a.flags.writeable:  # e.g. a view of a loaded file's bytes: copy once
                        a = state[f"{slot}/{k}"] = a.copy()
                    S[slot] = a
                g = grads[k]
                found = self._fused_step(p, g, S, float(lr), t, scale)
                if found is None:
                    self._step(p, g if scale == 1.0 else g * scale, S, float(lr), t)
                elif found:
                    finite.add(k)
        # A new 0-d array rather than an in-place write: a loaded state may be read-only there.
        state["step"] = np.array(t, dtype=np.int64)
        return frozenset(finite)

    def _step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int) -> None:
        raise NotImplementedError

    def _fused_step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int,
                    scale: float) -> bool | None:  # fmt: skip
        """The step with the gradient scaled, in one compiled pass: whether the new values
        (and squares) are all finite, or None where this optimizer has no such pass (then
        `_step` runs on the scaled gradient)."""
        return None

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        c = self.config()
        args = ", ".join(f"{k}={v!r}" for k, v in c.items() if k != "name")
        return f"{type(self).__name__}({args})"

    def _check_update(self, params: Arrays, grads: Arrays, state: Arrays) -> None:
        for what, d in (("params", params), ("grads", grads), ("state", state)):
            if not isinstance(d, dict):
                _checks.fail(what, "a dict of NumPy arrays", _checks.describe(d))
        extra = sorted(set(grads) - set(params))
        if extra:
            _checks.fail(
                "grads",
                "keyed by parameter names",
                f"a gradient for {extra[0]!r}, which is not a parameter",
            )
        if "step" not in state:
            _checks.fail("state", "the dict `init(params)` returned", "no 'step' entry")
        step = state["step"]
        if not (isinstance(step, (int, np.integer, np.ndarray)) and not isinstance(step, bool)
                and np.ndim(step) == 0 and np.asarray(step).dtype.kind in "iu" and step >= 0):
            got = (f"{np.asarray(step).item()!r} ({np.asarray(step).dtype})"
                   if isinstance(step, (np.ndarray, np.generic)) and np.ndim(step) == 0
                   else _checks.describe(step))  # fmt: skip
            _checks.fail("state['step']", "the number of updates so far (an integer >= 0)", got)
        for k, p in params.items():
            # every parameter written in place, so each is checked before any moves: a
            # failure half way would leave the earlier ones and their slots a step ahead
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.writeable:
                got = (f"dtype {p.dtype}" + ("" if p.flags.writeable else ", read-only")
                       if isinstance(p, np.ndarray) else _checks.describe(p))  # fmt: skip
                _checks.fail(f"params[{k!r}]", "a writeable array of floats (updated in place)",
                             got)  # fmt: skip
            _checks.elementwise(p, f"params[{k!r}]")
            eps = getattr(self, "eps", None)  # (the optimizers that divide by a root + ε)
            if eps is not None and p.dtype.type(eps) == 0:
                # ε is used in the parameter's dtype, as torch uses it: one below float32's
                # smallest value (1e-50) is 0 there, and a weight whose gradients were all
                # 0 so far became NaN, 0 / 0, with nothing said (torch's too)
                tiny = np.finfo(p.dtype).smallest_subnormal
                _checks.fail("eps", f"a number that is not 0 in {p.dtype}, the dtype of "
                             f"params[{k!r}] (at least {tiny:.3g})", _checks.describe(eps))
            g = grads.get(k)
            if g is None:
                _checks.fail("grads", "a gradient for every parameter", f"none for {k!r}")
            if not isinstance(g, np.ndarray) or g.shape != p.shape:
                _checks.fail(
                    f"grads[{k!r}]",
                    f"an array of shape {p.shape} like its parameter",
                    _checks.describe(g),
                )
            if g.dtype.kind not in "fiu":
                _checks.fail(f"grads[{k!r}]", "an array of real numbers", f"dtype {g.dtype}")
            _checks.elementwise(g, f"grads[{k!r}]")
            for slot in self.slots():
                key = f"{slot}/{k}"
                a = state.get(key)
                if not isinstance(a, np.ndarray) or a.shape != p.shape:
                    _checks.fail(
                        "state",
                        f"the dict `{type(self).__name__}.init(params)` returned",
                        f"{'no' if a is None else 'a wrongly shaped'} {key!r} entry",
                        "Was it made by another optimizer or for other parameters?",
                    )
                if a.dtype != p.dtype:  # the step writes into it in the parameter's dtype
                    _checks.fail(f"state[{key!r}]", f"an array of {p.dtype} like its parameter",
                                 f"dtype {a.dtype}")  # fmt: skip
                _checks.elementwise(a, f"state[{key!r}]")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum μ, dampening τ, L2 decay λ.

    For each parameter θ with gradient ∇_t at step t = 1, 2, ...:

        g_t = ∇_t + λ θ_{t-1}
        b_t = g_1 at t = 1, else μ b_{t-1} + (1 − τ) g_t          (only when μ > 0)
        d_t = g_t + μ b_t (Nesterov) | b_t (momentum) | g_t (plain)
        θ_t = θ_{t-1} − lr · d_t
    """

    name = "sgd"

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ):
        self.lr = _positive(lr, "lr")
        self.momentum = _checks.probability(momentum, "momentum")
        self.nesterov = _flag(nesterov, "nesterov")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")
        self.dampening = _checks.probability(dampening, "dampening", allow_one=True)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            bad = "momentum" if self.momentum == 0.0 else "dampening"
            _checks.fail(
                bad,
                "> 0 with nesterov=True" if bad == "momentum" else "0 with nesterov=True",
                _checks.describe(getattr(self, bad)),
            )

    def slots(self) -> tuple[str, ...]:
        return ("b",) if self.momentum > 0 else ()

    def _step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum > 0:
            b = S["b"]
            if t == 1:
                b[...] = g
            else:
                b *= self.momentum
                b += (1.0 - self.dampening) * g
            g = g + self.momentum * b if self.nesterov else b
        p -= lr * g

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "dampening": self.dampening,
        }


class RMSprop(Optimizer):
    """RMSprop: divide by a running RMS of the gradient (centered: by its running std).

    For each parameter θ with gradient ∇_t at step t = 1, 2, ...:

        g_t = ∇_t + λ θ_{t-1}
        v_t = α v_{t-1} + (1 − α) g_t²
        ḡ_t = α ḡ_{t-1} + (1 − α) g_t                             (only when centered)
        s_t = sqrt(v_t − ḡ_t²) + ε (centered) | sqrt(v_t) + ε
        b_t = μ b_{t-1} + g_t / s_t,  θ_t = θ_{t-1} − lr · b_t     (μ > 0)
        θ_t = θ_{t-1} − lr · g_t / s_t                             (μ = 0)
    """

    name = "rmsprop"
    squares = ("v",)

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ):
        self.lr = _positive(lr, "lr")
        self.alpha = _checks.probability(alpha, "alpha")
        self.eps = _positive(eps, "eps")
        self.momentum = _checks.probability(momentum, "momentum")
        self.centered = _flag(centered, "centered")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")

    def slots(self) -> tuple[str, ...]:
        return (
            ("v",) + (("g_avg",) if self.centered else ()) + (("b",) if self.momentum > 0 else ())
        )

    def _step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int) -> None:
        a = self.alpha
        if self.weight_decay:
            g = g + self.weight_decay * p
        v = S["v"]
        v *= a
        v += _scaled_square(g, 1.0 - a)
        if self.centered:
            g_avg = S["g_avg"]
            _lerp(g_avg, g, 1.0 - a)
            # v ≥ ḡ² in exact arithmetic; the clamp keeps rounding from taking a root of -1e-20
            s = np.sqrt(np.maximum(v - g_avg * g_avg, 0.0))
        else:
            s = np.sqrt(v)
        s += self.eps
        if self.momentum > 0:
            b = S["b"]
            b *= self.momentum
            b += g / s
            p -= lr * b
        else:
            p -= lr * (g / s)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }


class Adagrad(Optimizer):
    """Adagrad: divide by the root of the sum of all squared gradients so far.

    For each parameter θ with gradient ∇_t at step t = 1, 2, ...:

        g_t = ∇_t + λ θ_{t-1}
        s_t = s_{t-1} + g_t²,   s_0 = initial_accumulator_value
        θ_t = θ_{t-1} − lr · g_t / (sqrt(s_t) + ε)
    """

    name = "adagrad"
    squares = ("s",)

    def __init__(
        self,
        lr: float = 1e-2,
        eps: float = 1e-10,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
    ):
        self.lr = _positive(lr, "lr")
        self.eps = _positive(eps, "eps")
        self.initial_accumulator_value = _nonnegative(
            initial_accumulator_value, "initial_accumulator_value"
        )
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")

    def slots(self) -> tuple[str, ...]:
        return ("s",)

    def _slot_init(self, slot: str) -> float:
        return self.initial_accumulator_value

    def _step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = S["s"]
        s += g * g
        p -= lr * (g / (np.sqrt(s) + self.eps))

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "eps": self.eps,
            "initial_accumulator_value": self.initial_accumulator_value,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam with bias correction; weight decay λ is an L2 term added to the gradient (torch).

    For each parameter θ with gradient ∇_t at step t = 1, 2, ...:

        g_t = ∇_t + λ θ_{t-1}
        m_t = β1 m_{t-1} + (1 − β1) g_t
        v_t = β2 v_{t-1} + (1 − β2) g_t²
        θ_t = θ_{t-1} − lr / (1 − β1^t) · m_t / (sqrt(v_t) / sqrt(1 − β2^t) + ε)
    """

    name = "adam"
    squares = ("v",)

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.lr = _positive(lr, "lr")
        self.betas = _betas(betas)
        self.eps = _positive(eps, "eps")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")

    def slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def _fused_step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int,
                    scale: float) -> bool | None:  # fmt: skip
        return _compiled_adam(p, g, S, lr, t, self.betas, self.eps, self.weight_decay,
                              False, scale)  # fmt: skip

    def _step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int) -> None:
        if _compiled_adam(p, g, S, lr, t, self.betas, self.eps, self.weight_decay,
                          False) is not None:  # fmt: skip
            return
        if self.weight_decay:
            g = g + self.weight_decay * p
        _adam_step(p, g, S["m"], S["v"], lr, t, self.betas, self.eps)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Optimizer):
    """Adam with decoupled weight decay λ (Loshchilov & Hutter), as torch.optim.AdamW.

    Each step first shrinks the weights, then takes Adam's step with the raw gradient:

        θ'_{t-1} = θ_{t-1} · (1 − lr · λ)
        θ_t = Adam's step from θ'_{t-1} with g_t = ∇_t (no L2 term)
    """

    name = "adamw"
    squares = ("v",)

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        self.lr = _positive(lr, "lr")
        self.betas = _betas(betas)
        self.eps = _positive(eps, "eps")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay")

    def slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def _fused_step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int,
                    scale: float) -> bool | None:  # fmt: skip
        return _compiled_adam(p, g, S, lr, t, self.betas, self.eps, self.weight_decay,
                              True, scale)  # fmt: skip

    def _step(self, p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int) -> None:
        if _compiled_adam(p, g, S, lr, t, self.betas, self.eps, self.weight_decay,
                          True) is not None:  # fmt: skip
            return
        if self.weight_decay:
            p *= 1.0 - lr * self.weight_decay
        _adam_step(p, g, S["m"], S["v"], lr, t, self.betas, self.eps)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


def _scaled_square(g: np.ndarray, scale: float) -> np.ndarray:
    """scale · g², as (g · g) · scale, except where g · g overflows (|g| past 1.8e19 in
    float32): there (scale · g) · g, torch's order, finite up to |g| ≈ 5.8e20 for Adam's
    scale of 1e-3. An infinite running square would freeze its weight for good (its steps
    m/√v are 0 from then on). Not torch's order everywhere: it rounds differently, and every
    float32 run would then differ from the ones the docs report."""
    with np.errstate(over="ignore"):
        sq = np.asarray(scale * (g * g))  # (an array also for a 0-d g: written below)
        if not _checks.all_finite(sq):
            big = np.isinf(sq) & np.isfinite(g)
            sq[big] = (scale * g[big]) * g[big]
    return np.asarray(sq)


def _lerp(a: np.ndarray, end: np.ndarray, weight: float) -> None:
    """a ← a + w·(end − a) in place, as torch's lerp_ computes it (its running averages): for
    a weight w of 0.5 or more, end − (end − a)·(1 − w) instead, which is `end` itself at w = 1
    (Adam's β1 = 0: m_t = g_t), where a + (end − a) loses the part of `end` below a's last
    bit (m_t = 0 for a g_t that fell 2^53-fold since the last step). The branch and 1 − w are
    decided in a's dtype, as torch's are; rnnlab.fast.kernels.adam_pass does the same."""
    w = a.dtype.type(weight)
    if w < 0.5:
        a += weight * (end - a)  # (the Python float: NumPy rounds it as it always did)
    else:
        np.subtract(end, (end - a) * (a.dtype.type(1.0) - w), out=a, casting="same_kind")


def _compiled_adam(
    p: np.ndarray, g: np.ndarray, S: Arrays, lr: float, t: int, betas: tuple[float, float],
    eps: float, weight_decay: float, decoupled: bool, scale: float = 1.0,
) -> bool | None:
    """Adam's (AdamW's) step for one parameter in one compiled pass (rnnlab.fast.adam_step),
    the gradient scaled by `scale` as it is read, bit for bit the NumPy path below after
    `g *= scale`: that makes eight passes over the parameter, with temporaries, the compiled
    one reads each array once (the update of the end-to-end character LM 3.7-4.2x shorter:
    bench/README.md, "A fused Adam step"). Whether the new p and v are all finite; None,
    having done nothing, without numba or with RNNLAB_NO_NUMBA=1, and for arrays the kernel
    does not take (float16, a gradient of another dtype, layouts that differ): the NumPy
    path then runs."""
    if not fast.available():
        return None
    return fast.adam_step(p, g, S["m"], S["v"], lr, t, betas, eps, weight_decay, decoupled,
                          scale)  # fmt: skip


def _adam_step(
    p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, t: int,
    betas: tuple[float, float], eps: float,
) -> None:
    """The moment updates and step of Adam(W), in the order of the docstring equations: the
    NumPy path, whose every rounding the compiled pass (rnnlab.fast.kernels.adam_pass) keeps."""
    beta1, beta2 = betas
    _lerp(m, g, 1.0 - beta1)  # β1 m + (1 − β1) g
    v *= beta2
    v += _scaled_square(g, 1.0 - beta2)
    denom = np.sqrt(v)
    denom /= math.sqrt(1.0 - beta2**t)
    denom += eps
    p -= (lr / (1.0 - beta1**t)) * (m / denom)


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from its `config()` (e.g. read back from a run's JSON)."""
    kwargs = _config_kwargs(config)
    name = config["name"]
    if name == "sgd":
        cls: type[Optimizer] = SGD
    elif name == "rmsprop":
        cls = RMSprop
    elif name == "adagrad":
        cls = Adagrad
    elif name == "adam":
        cls = Adam
    elif name == "adamw":
        cls = AdamW
    else:
        _checks.fail(
            "config['name']",
            "one of 'sgd', 'rmsprop', 'adagrad', 'adam', 'adamw'",
            _checks.describe(name),
        )
    _check_keys(kwargs, cls)
    return cls(**kwargs)


# ---------------------------------------------------------------------------- schedules
MAX_STEPS = 2**63 - 1
"""The most steps a schedule spans: a step count is an int64 (the optimizer's state["step"])."""

class Constant:
    """lr_t = lr."""

    name = "constant"

    def __init__(self, lr: float):
        self.lr = _positive(lr, "lr")

    def __call__(self, step: int) -> float:
        _step_index(step)
        return self.lr

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.lr}


class StepDecay:
    """lr_t = lr · γ^⌊t / step_size⌋: multiplied by γ every `step_size` steps."""

    name = "step_decay"

    def __init__(self, lr: float, step_size: int, gamma: float):
        self.lr = _positive(lr, "lr")
        self.step_size = _checks.positive_int(step_size, "step_size")
        if not (_is_number(gamma) and 0.0 < gamma <= 1.0):
            _checks.fail("gamma", "a number in (0, 1]", _checks.describe(gamma))
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        k = _step_index(step) // self.step_size
        try:
            return self.lr * self.gamma**k
        except OverflowError:  # k past a float's range (step 10**400): γ^k underflows to 0
            return self.lr if self.gamma == 1.0 else 0.0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class Cosine:
    """Half a cosine from lr down to min_lr over T = total_steps steps, then min_lr.

    With steps t counted from 0:

        lr_t = min_lr + (lr − min_lr) · (1 + cos(π t / T)) / 2     for t < T
        lr_t = min_lr                                               for t ≥ T
    """

    name = "cosine"

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0):
        self.lr = _positive(lr, "lr")
        self.total_steps = _checks.positive_int(total_steps, "total_steps")
        if self.total_steps > MAX_STEPS:  # (π t / T in floats: a T of 10**400 overflowed)
            _checks.fail("total_steps", f"a positive integer up to {MAX_STEPS}",
                         _checks.describe(total_steps))  # fmt: skip
        if not (_is_number(min_lr) and 0.0 <= min_lr <= self.lr):
            _checks.fail(
                "min_lr", f"a number in [0, lr] = [0, {self.lr:g}]", _checks.describe(min_lr)
            )
        self.min_lr = float(min_lr)

    def __call__(self, step: int) -> float:
        t = _step_index(step)
        if t >= self.total_steps:
            return self.min_lr
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * t / self.total_steps)
        )

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "total_steps": self.total_steps,
            "min_lr": self.min_lr,
        }


class Warmup:
    """A linear ramp to `schedule`'s first value over W = warmup_steps steps, then `schedule`
    started afresh (so a Cosine over N steps inside a Warmup of W spans W + N steps):

        lr_t = schedule(0) · (t + 1) / W     for t < W      (never 0: step 0 already learns)
        lr_t = schedule(t − W)               for t ≥ W
    """

    name = "warmup"

    def __init__(self, schedule: Schedule, warmup_steps: int):
        if not isinstance(schedule, (Constant, StepDecay, Cosine, Warmup)):
            _checks.fail(
                "schedule",
                "a schedule (Constant, StepDecay, Cosine or Warmup)",
                _checks.describe(schedule),
            )
        self.schedule = schedule
        self.warmup_steps = _checks.positive_int(warmup_steps, "warmup_steps")

    def __call__(self, step: int) -> float:
        t = _step_index(step)
        if t < self.warmup_steps:
            return self.schedule(0) * (t + 1) / self.warmup_steps
        return self.schedule(t - self.warmup_steps)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule.config(),
            "warmup_steps": self.warmup_steps,
        }


Schedule = Constant | StepDecay | Cosine | Warmup


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from its `config()`; a Warmup's inner schedule is nested."""
    kwargs = _config_kwargs(config)
    name = config["name"]
    if name == "constant":
        cls: type[Schedule] = Constant
    elif name == "step_decay":
        cls = StepDecay
    elif name == "cosine":
        cls = Cosine
    elif name == "warmup":
        cls = Warmup
        _check_keys(kwargs, cls)
        inner = kwargs["schedule"]
        if not isinstance(inner, dict):
            _checks.fail(
                "config['schedule']",
                "the config dict of the inner schedule",
                _checks.describe(inner),
            )
        kwargs["schedule"] = schedule_from_config(inner)
    else:
        _checks.fail(
            "config['name']",
            "one of 'constant', 'step_decay', 'cosine', 'warmup'",
            _checks.describe(name),
        )
    _check_keys(kwargs, cls)
    return cls(**kwargs)


# ---------------------------------------------------------------------------- clipping
def global_norm(grads: Arrays) -> float:
    """‖g‖ = sqrt(Σ_arrays Σ_elements g²), accumulated in float64.

    A NaN or inf anywhere comes back as a NaN or inf norm, never as an exception, so the
    caller can report it and skip the step. Finite gradients whose squares pass float64's
    range (float64 entries beyond ~1e154) get their finite norm, summed over g / max|g|:
    their sum was inf, which the Trainer took for a divergence where clipping by the norm
    is what rescues the step. (Only then: the sum of squares alone is one pass.)
    """
    grads = _check_arrays(grads, "grads")
    total = _sum_of_squares(grads)
    if total != math.inf:
        return math.sqrt(total)
    with np.errstate(over="ignore", invalid="ignore"):
        top = max((float(np.max(np.abs(g))) for g in grads.values() if g.size), default=0.0)
    if not math.isfinite(top):  # (an inf among them; a NaN makes max NaN)
        return math.inf if top == math.inf else math.nan
    scaled = {k: g / top for k, g in grads.items()}
    return top * math.sqrt(_sum_of_squares(scaled))


def _sum_of_squares(grads: Arrays) -> float:
    """Σ_arrays Σ_elements g² in float64 (compiled where numba is)."""
    compiled = fast.sum_of_squares(list(grads.values())) if fast.available() else None
    if compiled is not None:
        return float(compiled)
    total = 0.0
    # In a session: a dot product on OpenBLAS's own threads leaves them spinning into the
    # next forward pass (rnnlab.fast.parallel, "between sessions").
    with np.errstate(over="ignore", invalid="ignore"), parallel.session():
        for g in grads.values():
            f = g.ravel().astype(np.float64, copy=False)
            total += float(np.dot(f, f))
    return total


def clip_by_global_norm(grads: Arrays, max_norm: float) -> float:
    """Scale every gradient in place by c = max_norm / (‖g‖ + 1e-6) when c < 1, so the joint
    norm is at most max_norm (torch.nn.utils.clip_grad_norm_). Returns ‖g‖ BEFORE clipping.

    A non-finite norm leaves the gradients untouched (no scale is meaningful; torch would
    write NaN into them): the returned NaN/inf tells the caller to skip the step.
    """
    norm, coef = _global_norm_scale(grads, max_norm)
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return norm


def _global_norm_scale(grads: Arrays, max_norm: float) -> tuple[float, float]:
    """(‖g‖, c): c = max_norm / (‖g‖ + 1e-6) where that is below 1, else 1 (also for a
    non-finite norm, which no scale makes meaningful)."""
    max_norm = _positive(max_norm, "max_norm")
    norm = global_norm(grads)
    coef = max_norm / (norm + 1e-6) if math.isfinite(norm) else 1.0
    return norm, (coef if coef < 1.0 else 1.0)


def clip_by_value(grads: Arrays, clip_value: float) -> float:
    """Clip every gradient element to [−v, v] in place (torch.nn.utils.clip_grad_value_).
    Returns the global norm BEFORE clipping."""
    clip_value = _positive(clip_value, "clip_value")
    norm = global_norm(grads)
    with np.errstate(invalid="ignore"):  # NaN stays NaN; the returned norm reports it
        for g in grads.values():
            np.clip(g, -clip_value, clip_value, out=g)
    return norm


def clip_gradients(grads: Arrays, mode: str, value: float) -> float:
    """Clip by name: mode "global_norm" (value = max norm), "value" (value = bound per
    element) or "none" (value ignored). Returns the global norm before clipping."""
    mode = _checks.choice(mode, "mode", ("global_norm", "value", "none"))
    if mode == "global_norm":
        return clip_by_global_norm(grads, value)
    if mode == "value":
        return clip_by_value(grads, value)
    return global_norm(grads)


def takes_grad_scale(opt: object) -> bool:
    """Whether `opt.update` names `grad_scale` (every rnnlab optimizer's does). An optimizer
    of one's own written to the protocol before the keyword is handed gradients clipped in
    place, as before (rnnlab.train)."""
    try:
        return "grad_scale" in inspect.signature(opt.update).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False


def clip_scale(grads: Arrays, mode: str, value: float) -> tuple[float, float]:
    """clip_gradients, but a global-norm clip's scale c is returned, not written into the
    gradients: (the global norm before clipping, c), c = 1 where nothing is scaled (by
    value, the gradients are clipped in place as by clip_gradients). For
    Optimizer.update(grad_scale=c), which applies it as it reads them. A non-finite norm
    gives c = 1, as clip_by_global_norm leaves the gradients then."""
    mode = _checks.choice(mode, "mode", ("global_norm", "value", "none"))
    if mode != "global_norm":
        return clip_gradients(grads, mode, value), 1.0
    return _global_norm_scale(grads, value)


# ---------------------------------------------------------------------------- checks
def _is_number(x: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _positive(x: object, name: str) -> float:
    if not (_is_number(x) and math.isfinite(_checks.as_float(x)) and x > 0):
        _checks.fail(name, "a finite number > 0", _checks.describe(x))
    return float(x)


def _nonnegative(x: object, name: str) -> float:
    if not (_is_number(x) and math.isfinite(_checks.as_float(x)) and x >= 0):
        _checks.fail(name, "a finite number >= 0", _checks.describe(x))
    return float(x)


def _flag(x: object, name: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        _checks.fail(name, "True or False", _checks.describe(x))
    return bool(x)


def _betas(x: object) -> tuple[float, float]:
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        _checks.fail("betas", "a pair (beta1, beta2) of numbers in [0, 1)", _checks.describe(x))
    assert isinstance(x, (tuple, list))
    return (_checks.probability(x[0], "betas[0]"), _checks.probability(x[1], "betas[1]"))


def _step_index(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        _checks.fail("step", "an integer >= 0 (steps count from 0)", _checks.describe(step))
    return int(step)


def _check_arrays(d: object, name: str) -> Arrays:
    if not isinstance(d, dict):
        _checks.fail(name, "a dict of NumPy float arrays", _checks.describe(d))
    assert isinstance(d, dict)
    for k, v in d.items():
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            _checks.fail(f"{name}[{k!r}]", "a NumPy array of floats", _checks.describe(v))
        _checks.elementwise(v, f"{name}[{k!r}]")
    return d


def _config_kwargs(config: object) -> dict[str, Any]:
    if not isinstance(config, dict) or "name" not in config:
        _checks.fail(
            "config", "a dict with a 'name' entry, as `config()` returns", _checks.describe(config)
        )
    assert isinstance(config, dict)
    return {k: v for k, v in config.items() if k != "name"}


def _check_keys(kwargs: dict[str, Any], cls: type) -> None:
    params = inspect.signature(cls).parameters
    known = set(params)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        _checks.fail(
            "config",
            f"keys among {sorted(known)} for {cls.__name__}",
            f"the unknown key {unknown[0]!r}",
        )
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:  # (the constructor would raise a TypeError, or the Warmup a KeyError)
        _checks.fail(f"config[{missing[0]!r}]", f"an entry (every {cls.__name__} has one)",
                     "none")  # fmt: skip
