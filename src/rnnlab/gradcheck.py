"""A public gradient check: compare a module's hand-written backward with central differences.

    report = rnnlab.gradcheck(layer, x, lengths=lengths, state=h0)
    print(report)          # one line per parameter / input / initial state
    report.assert_ok()     # raises AssertionError naming the worst offender

The scalar checked is a random projection of everything the forward pass returns,
L = Σ R ⊙ output + Σ R' ⊙ final state (+ Σ R'' ⊙ the value an output-feedback layer feeds
its next call), so every output element and every state element carries gradient. The
error for each array is normwise: ‖g_bptt − g_fd‖ / max(‖g_bptt‖, ‖g_fd‖). It needs a float64
module: in float32 the differences are dominated by rounding.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnlab import _checks

State = np.ndarray | list["State"] | tuple["State", ...] | None
"""A module's state: an array, None, or a list or tuple of states (an LSTM's (h, c))."""


@dataclass
class GradcheckReport:
    errors: dict[str, float]  # normwise relative error per checked array
    norms: dict[str, float]  # ‖analytic gradient‖ per checked array
    tolerance: float
    # per checked array, the entry where the two gradients differ most: (its index, the
    # backward's value, the finite difference), so a failure names where to look
    worst: dict[str, tuple[tuple[int, ...], float, float]] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        """The largest error, NaN if any is NaN (Python's max keeps a NaN only where it
        comes first, so a NaN gradient passed unless it was the first array checked)."""
        values = list(self.errors.values())
        return float(np.max(values)) if values else 0.0

    @property
    def ok(self) -> bool:
        return all(e < self.tolerance for e in self.errors.values())

    def assert_ok(self) -> None:
        if not self.ok:
            e = self.errors  # the worst: a NaN before any number
            worst = max(e, key=lambda k: math.inf if math.isnan(e[k]) else e[k])
            where = ""
            if worst in self.worst:
                at, analytic, numeric = self.worst[worst]
                where = (f"; most at index {at}: backward {analytic:.6g}, finite differences "
                         f"{numeric:.6g}")
            raise AssertionError(
                f"gradient check failed: {worst} has relative error {self.errors[worst]:.3e} "
                f"(tolerance {self.tolerance:.0e}){where}\n{self}"
            )

    def __str__(self) -> str:
        width = max((len(k) for k in self.errors), default=4)
        lines = [f"{'array':<{width}}  rel. error  ‖grad‖"]
        for k, e in self.errors.items():
            flag = "" if e < self.tolerance else "  <-- FAIL"
            lines.append(f"{k:<{width}}  {e:10.2e}  {self.norms[k]:.3e}{flag}")
        return "\n".join(lines)


def _leaves(tree: State, name: str = "state") -> list[np.ndarray]:
    """The arrays of a (possibly nested) state, in a fixed order."""
    if tree is None:
        return []
    if isinstance(tree, np.ndarray):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item, name)]
    _checks.fail(name, "NumPy arrays, None, or lists or tuples of them (the values to perturb)",
                 f"{_checks.describe(tree)} inside")  # fmt: skip


def _paired(given: State, grad: Any, name: str) -> list[tuple[np.ndarray, Any]]:
    """(given array, its gradient) for every array in the structure `given`; a gradient
    missing or of another structure is paired with None (refused by `record`)."""
    if given is None:
        return []
    if isinstance(given, np.ndarray):
        return [(given, grad)]
    if not isinstance(grad, (list, tuple)) or len(grad) != len(given):
        return [(leaf, None) for leaf in _leaves(given, name)]
    return [pair for g, d in zip(given, grad, strict=True) for pair in _paired(g, d, name)]


def _like(tree: State, leaves: Iterator[np.ndarray]) -> State:
    """Rebuild the structure of `tree` from an iterator of arrays."""
    if tree is None:
        return None
    if isinstance(tree, np.ndarray):
        return next(leaves)
    return type(tree)(_like(item, leaves) for item in tree)


_STATES = ("state", "y0")
"""The forward keywords gradcheck perturbs besides the parameters and the input: each
module's backward returns their gradients under the same names."""


def _fed_next(module: Any, f: Any) -> np.ndarray | None:
    """What an OutputFeedback layer would feed a next call (`cache["y_last"]`), when its
    backward takes that value's gradient (`d_y_last`): the loss then weighs it too, so the
    path from the last prediction back into the weights (free running, scheduled sampling;
    truncated BPTT's seam) is checked, not only the outputs and the state."""
    cache = getattr(f, "cache", None)
    fed = cache.get("y_last") if isinstance(cache, dict) else None
    if not isinstance(fed, np.ndarray):
        return None
    try:
        takes = "d_y_last" in inspect.signature(module.backward).parameters
    except (TypeError, ValueError):  # (a backward without a signature Python can read)
        return None
    return fed if takes else None


def gradcheck(
    module: Any,
    x: Any,
    *,
    eps: float = 1e-6,
    tolerance: float = 1e-7,
    seed: int = 0,
    max_entries: int | None = None,
    rng_seed: int | None = None,
    check_input: bool = True,
    **forward_kwargs: Any,
) -> GradcheckReport:
    """Check every parameter gradient, the input gradient and the initial-state gradient.

    `module` is any rnnlab module (forward, backward, params; checked below), `x` what its
    forward takes. `forward_kwargs` go to `module.forward` (lengths, mask, state, targets,
    mode, training...); a `state` among them is checked too (backward's `state`), and so is
    an OutputFeedback's `y0` (backward's `y0`): each array float64, as the module; the loss
    weighs an OutputFeedback's last fed-back value too (`cache["y_last"]`, backward's
    `d_y_last`). `rng_seed`:
    forward passes that draw random numbers (dropout, scheduled sampling) get a fresh
    Generator with this seed each time, so every pass draws the same; an `rng` given as a
    Generator (or BitGenerator) is copied for each pass to the same end, and left as it was
    (one or the other: both at once are refused).
    `max_entries` checks a random subset of large arrays (a failure's report names the entry
    that differs most, of those checked). Parameters that share elements (tied) are refused:
    each is perturbed alone. Every perturbed entry is put back, also when a forward raises.
    Each gradient must have the shape of what it is the gradient of: a reshaped or padded
    one would be compared entry by entry as if it did.
    The tolerance is below 1 (the error is at most 2, so a larger one passes anything).
    """
    if not hasattr(module, "params") or not hasattr(module, "backward"):
        _checks.fail("module", "an rnnlab module (forward, backward, params)",
                     _checks.describe(module))  # fmt: skip
    if not (_checks.finite_float(eps, "eps") > 0):
        _checks.fail("eps", "a positive step for the finite differences", repr(eps))
    if not (0 < _checks.finite_float(tolerance, "tolerance") < 1):
        _checks.fail("tolerance", "a number in (0, 1) (the normwise relative error allowed)",
                     repr(tolerance))  # fmt: skip
    if max_entries is not None:
        _checks.positive_int(max_entries, "max_entries")
    _checks.seed(seed, "seed")
    if rng_seed is not None:
        _checks.seed(rng_seed, "rng_seed")
        rng = forward_kwargs.get("rng")
        if rng is not None:  # (rng_seed's generator replaced it, unsaid)
            named = repr(rng) if isinstance(rng, (int, np.integer)) else type(rng).__name__
            _checks.fail("rng_seed", "None when `rng` is given (either makes every forward "
                         "pass draw the same; one would be used and the other dropped)",
                         f"rng_seed={rng_seed!r} and rng={named}", "Give one of them.")  # fmt: skip
    _checks.boolean(check_input, "check_input")
    for name, value in module.params.items():
        if value.dtype != np.float64:
            _checks.fail(
                "module",
                "a float64 module (create it with dtype=np.float64)",
                f"parameter {name!r} of dtype {value.dtype}",
                "Finite differences in float32 are dominated by rounding.",
            )
        if not value.flags.writeable:  # (each entry is perturbed in place, then put back)
            _checks.fail("module", "parameters gradcheck can perturb in place (writeable)",
                         f"parameter {name!r} read-only", "Give the module a copy "
                         "(np.array(...)) to check.")  # fmt: skip
    # A tied weight (two names, one array's elements): perturbing either moves both, so each
    # finite difference is the whole derivative while backward gives each name its part; the
    # check failed both with errors that said nothing of why.
    _checks.untied(module.params, "module", "parameters of their own, one array each (each "
                   "is perturbed alone)", "Give each name its own array (np.copy) to check.")
    if isinstance(x, (list, tuple)):  # nested numbers, as forward reads them: the array
        try:  # (a custom module's x may be a list of arrays of other shapes: left as it is)
            as_array = np.asarray(x)
        except ValueError:
            as_array = None
        if as_array is not None and as_array.dtype.kind in "fiu":
            x = as_array
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.dtype != np.float64:
        _checks.fail("x", "float64", f"dtype {x.dtype}")
    given_states = {k: forward_kwargs[k] for k in _STATES if forward_kwargs.get(k) is not None}
    for key, tree in given_states.items():
        for leaf in _leaves(tree, key):
            if leaf.dtype != np.float64:  # (differences on a float32 copy measure rounding)
                _checks.fail(key, "float64 arrays, as the module", f"an array of dtype "
                             f"{leaf.dtype}")  # fmt: skip
    input_checked = check_input and isinstance(x, np.ndarray) and x.dtype.kind == "f"
    if not module.params and not input_checked and not given_states:
        # (an empty report is ok: assert_ok passed having compared nothing)
        _checks.fail("module", "something to check: parameters, a float input with "
                     "check_input=True, or an initial state given", "none of them")  # fmt: skip
    pick = np.random.default_rng(seed)

    def run(x_: Any, kwargs: dict[str, Any]) -> Any:
        if rng_seed is not None:
            kwargs = dict(kwargs, rng=np.random.default_rng(rng_seed))
        elif isinstance(kwargs.get("rng"), (np.random.Generator, np.random.BitGenerator)):
            # A generator advances as it draws: each pass drew other dropout masks, and a
            # correct backward failed with errors near 1. Each pass draws from a copy of it
            # in the state it was given, as from a seed (the caller's is left as it was).
            kwargs = dict(kwargs, rng=copy.deepcopy(kwargs["rng"]))
        return module.forward(x_, **kwargs)

    f = run(x, forward_kwargs)
    R = pick.standard_normal(f.output.shape)
    state_leaves = _leaves(f.state)
    R_state = [pick.standard_normal(s.shape) for s in state_leaves]
    d_state = _like(f.state, iter(R_state)) if state_leaves else None
    fed = _fed_next(module, f)
    R_fed = None if fed is None else pick.standard_normal(fed.shape)
    if R_fed is None:
        b = module.backward(f, R, d_state)
    else:
        b = module.backward(f, R, d_state, d_y_last=R_fed)

    def loss(x_: Any, kwargs: dict[str, Any]) -> float:
        g = run(x_, kwargs)
        total = float(np.sum(R * g.output))
        for r, s in zip(R_state, _leaves(g.state), strict=True):
            total += float(np.sum(r * s))
        if R_fed is not None:
            total += float(np.sum(R_fed * g.cache["y_last"]))
        return total

    def numeric(array: np.ndarray, evaluate: Callable[[], float]) -> tuple[np.ndarray, np.ndarray]:
        # Each entry is written through its index into `array` itself: a reshape(-1) of a
        # parameter that is not C-contiguous (Fortran-ordered, a block of a larger matrix) is
        # a copy, whose perturbation the forward never saw (every difference 0, a correct
        # backward failed with error 1). Indices are C-order, as the analytic gradient's.
        idx = np.arange(array.size)
        if max_entries is not None and array.size > max_entries:
            idx = np.sort(pick.choice(array.size, max_entries, replace=False))
        g = np.empty(idx.size)
        for j, i in enumerate(idx):
            at = np.unravel_index(i, array.shape)
            old = array[at]
            try:  # (a forward that raises, or Ctrl-C, left a model's weight moved by eps)
                array[at] = old + eps
                up = evaluate()
                array[at] = old - eps
                down = evaluate()
            finally:
                array[at] = old
            g[j] = (up - down) / (2 * eps)
        return idx, g

    errors: dict[str, float] = {}
    norms: dict[str, float] = {}
    worst: dict[str, tuple[tuple[int, ...], float, float]] = {}

    def record(name: str, analytic: Any, of: np.ndarray, idx: np.ndarray,
               g_num: np.ndarray) -> None:  # fmt: skip
        if analytic is None:  # (a gradient that does not exist cannot be compared)
            _checks.fail("module", f"a backward pass that returns the gradient of the {name}",
                         "None", "check_input=False skips the input; an initial state that "
                         "carries no gradient cannot be checked." if name == "input" else
                         "An initial state the loss depends on needs its gradient.")  # fmt: skip
        a = np.asarray(analytic, dtype=np.float64)
        if a.shape != of.shape:
            _checks.fail("module", f"a backward pass whose gradient of the {name} has its "
                         f"shape {of.shape}", f"shape {a.shape}")  # fmt: skip
        a = a.reshape(-1)[idx]
        scale = max(np.linalg.norm(a), np.linalg.norm(g_num))
        errors[name] = 0.0 if scale == 0 else float(np.linalg.norm(a - g_num) / scale)
        norms[name] = float(np.linalg.norm(a))
        if a.size:
            gap = np.abs(a - g_num)
            j = int(np.argmax(np.where(np.isnan(gap), np.inf, gap)))  # (a NaN first)
            at = tuple(int(i) for i in np.unravel_index(int(idx[j]), of.shape))
            worst[name] = (at, float(a[j]), float(g_num[j]))

    for name, value in module.params.items():
        idx, g = numeric(value, lambda: loss(x, forward_kwargs))
        record(name, b.params.get(name), value, idx, g)

    if input_checked:
        xc = x.copy()
        idx, g = numeric(xc, lambda: loss(xc, forward_kwargs))
        record("input", b.input, xc, idx, g)

    for key, tree in given_states.items():
        given = [s.copy() for s in _leaves(tree, key)]
        kwargs = dict(forward_kwargs, **{key: _like(tree, iter(given))})
        grads = [d for _, d in _paired(tree, getattr(b, key, None), key)]
        label = "initial_state" if key == "state" else key
        for k, (arr, d) in enumerate(zip(given, grads, strict=True)):
            idx, g = numeric(arr, functools.partial(loss, x, kwargs))
            record(f"{label}[{k}]" if len(given) > 1 else label, d, arr, idx, g)
    return GradcheckReport(errors, norms, tolerance, worst)
