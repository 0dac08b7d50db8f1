"""The non-recurrent modules: Embedding, Linear (applied at every step), Dropout, the
many-to-one readouts LastStep and MeanOverTime, and the Sequential container.

They keep the module protocol of rnnlab.layers: `forward(x, **options) -> Forward` with the
pass options of `rnnlab.layers.PassOptions`, `backward(f, d_output, d_state=None) ->
Backward`, parameters in `params`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np
from numpy.typing import DTypeLike

from rnnlab import _checks
from rnnlab.fast import parallel
from rnnlab.layers import (
    Backward,
    Forward,
    Module,
    PassOptions,
    Recurrent,
    RngLike,
    _dtype,
    _rng,
    _training_rng,
    load_params,
    one_generator,
    pass_options,
    takes_overwrite,
    takes_retain_tape,
)
from rnnlab.recurrence import rows_summed_by_id, valid_mask


def _d_output(f: Forward, d_output: Any) -> np.ndarray:
    """∂L/∂output as given to a backward: the output's shape exactly (a transposed or
    broadcastable array of the same size would give wrong gradients without a word)."""
    return _checks.float_array(d_output, "d_output", shape=f.output.shape, finite=False)


def _own_forward(f: Any, fits: bool, module: str) -> None:
    """A clear error for a backward given what its own forward could not have made (another
    module's result): NumPy's own error, or a gradient of the wrong input, otherwise."""
    if not isinstance(f, Forward) or not fits:
        _checks.fail("f", f"the result of this {module}'s forward", "the result of another "
                     "module's forward" if isinstance(f, Forward) else _checks.describe(f))


def _stateless(options: Any, module: str) -> PassOptions:
    """pass_options of a module that keeps no state: a `state` given is refused, not dropped
    (Sequential(Linear, LSTM) given state=[h0, None], the entries swapped, ran the LSTM from
    zeros without a word)."""
    o = pass_options(options, f"{module}.forward")
    if o["state"] is not None:
        _checks.fail("state", f"None ({_checks.a(module)} keeps no state)",
                     _checks.describe(o["state"]))  # fmt: skip
    return o


class _Module(abc.ABC):
    """What the modules below share: calling one runs its forward, and its parameters go in
    and out as a state_dict."""

    params: dict[str, np.ndarray]

    @abc.abstractmethod
    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward: ...

    def __call__(self, x: Any, **options: Unpack[PassOptions]) -> Forward:
        return self.forward(x, **options)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """`state`'s arrays (NumPy arrays or torch tensors, PyTorch's names) into `params` by
        name, all or nothing; `strict=False` skips names either side lacks, as PyTorch's.
        What is refused, and what cannot be told (a square matrix transposed): load_params."""
        load_params(self.params, state, strict)


class Embedding(_Module):
    """Token ids (B, T) → vectors (B, T, E): e_t = E[x_t]. Initialised N(0, 1) as in PyTorch."""

    def __init__(
        self, num_embeddings: int, embedding_dim: int, *, dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        self.num_embeddings = _checks.positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _checks.positive_int(embedding_dim, "embedding_dim")
        dt = _dtype(dtype)
        _checks.affordable(2 * num_embeddings * embedding_dim * dt.itemsize, "embedding_dim",
                           "weights")  # fmt: skip
        self.params = {
            "weight": _rng(rng).standard_normal((num_embeddings, embedding_dim)).astype(dt)
        }

    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward:
        _stateless(options, "Embedding")
        x = _checks.int_array(x, "x")
        _checks.batch_of_steps(x)
        _checks.token_ids(x, "x", self.num_embeddings)
        return Forward(self.params["weight"][x], None, x)

    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward:
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        ids = getattr(f, "cache", None)
        _own_forward(f, isinstance(ids, np.ndarray) and ids.dtype.kind in "iu"
                     and f.output.shape == (*ids.shape, self.embedding_dim)
                     and (not ids.size or int(ids.max()) < self.num_embeddings),
                     f"Embedding({self.num_embeddings}, {self.embedding_dim})")  # fmt: skip
        d_output = _d_output(f, d_output)
        return Backward(None, None, {"weight": rows_summed_by_id(
            d_output.reshape(-1, self.embedding_dim), f.cache.reshape(-1),
            self.params["weight"])})  # fmt: skip


class Linear(_Module):
    """y = x Wᵀ + b over the last axis, so (B, T, F) inputs get the same map at every step."""

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True,
        dtype: DTypeLike = np.float32, rng: RngLike = None,
    ) -> None:
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        _checks.boolean(bias, "bias")  # (bias="no" gave a bias: a truthy string)
        dt, rng = _dtype(dtype), _rng(rng)
        _checks.affordable(2 * in_features * out_features * dt.itemsize, "out_features",
                           "weights")  # fmt: skip
        bound = 1.0 / np.sqrt(in_features)
        self.params = {"weight": rng.uniform(-bound, bound, (out_features, in_features)).astype(dt)}
        if bias:
            self.params["bias"] = rng.uniform(-bound, bound, out_features).astype(dt)

    @parallel.sessioned
    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward:
        check = _stateless(options, "Linear")["check"]
        x = _checks.float_array(x, "x", ndim=(2, 3), finite=check)
        _checks.batch_of_steps(x)
        if x.shape[-1] != self.in_features:
            _checks.fail(
                "x",
                f"an array with {self.in_features} features in its last axis",
                f"shape {x.shape}",
            )
        W = self.params["weight"]
        swap = _time_major_in_memory(x)
        xm = np.swapaxes(x, 0, 1) if swap else x  # rows in memory order: reshaped, not copied
        y = parallel.matmul(xm.reshape(-1, self.in_features), W.T).reshape(*xm.shape[:-1], -1)
        if "bias" in self.params:
            y += self.params["bias"]
        return Forward(np.swapaxes(y, 0, 1) if swap else y, None, x)

    @parallel.sessioned
    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward:
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        x = getattr(f, "cache", None)
        _own_forward(f, isinstance(x, np.ndarray) and x.ndim in (2, 3)
                     and x.shape[-1] == self.in_features
                     and f.output.shape == (*x.shape[:-1], self.out_features),
                     f"Linear({self.in_features}, {self.out_features})")  # fmt: skip
        assert isinstance(x, np.ndarray)  # (for the type checker: _own_forward checked it)
        dy = _d_output(f, d_output)
        swap = _time_major_in_memory(x)  # as forward: x's rows, and dy's, in x's memory order
        xm, dym = (np.swapaxes(x, 0, 1), np.swapaxes(dy, 0, 1)) if swap else (x, dy)
        dy2 = dym.reshape(-1, self.out_features)
        bias = "bias" in self.params
        # dW and db summed over the rows in one hand-over to the threads (split over the rows
        # where the result is small, as a readout over a vocabulary is)
        (dW,), totals = parallel.inner_products([(dy2, xm.reshape(-1, self.in_features))],
                                                [dy2] if bias else [])  # fmt: skip
        grads = {"weight": dW, **({"bias": totals[0]} if bias else {})}
        if not input_grad:  # x is data (see Recurrent.backward)
            return Backward(None, None, grads)
        dx = parallel.matmul(dy2, self.params["weight"]).reshape(xm.shape)
        return Backward(np.swapaxes(dx, 0, 1) if swap else dx, None, grads)


def _time_major_in_memory(x: np.ndarray) -> bool:
    """Whether a (B, T, F) x lies time-major in memory, as a recurrent layer's batch-first
    output does (a view of its time-major states): Linear then takes its rows in that order,
    and its output and gradients keep it, instead of copying x into batch-first rows in
    both passes (two copies of x in each training step of a character model)."""
    return x.ndim == 3 and not x.flags.c_contiguous and np.swapaxes(x, 0, 1).flags.c_contiguous


def _float_input(x: object) -> None:
    """Dropout's input: a float array (ints gave NaN and inf, the scale 1/(1 − p) rounded to
    int 0; a list had no shape)."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        _checks.fail("x", "an array of floats",
                     f"dtype {x.dtype}" if isinstance(x, np.ndarray) else
                     _checks.describe(x))  # fmt: skip


def _passed(x: object) -> np.ndarray:
    """What Dropout passes on unchanged (at inference, or p = 0): an array of numbers (floats,
    or token ids before an Embedding); a list as its array. None or a string was passed on as
    a 0-d array of objects or characters, for the next module, or the caller, to stumble on.
    Booleans pass on too, for the next module to refuse in its own words (as an exported
    file's Runtime does: tests/test_onnx.py compares the two messages)."""
    a = _checks.listed(x, "x") if isinstance(x, (list, tuple)) else x
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        _checks.fail("x", "an array of floats (or of token ids, which pass through at "
                     "inference)", _checks.describe(x))
    return a


def _scale_fits(p: float, dtype: np.dtype) -> None:
    """Dropout's scale 1/(1 − p) is a number of x's dtype: a p nearer 1 than that allows
    (float16 above 0.999984: 1/(1 − p) past its largest, 65504) made every kept entry inf, and
    a kept zero NaN, without a word; refused naming p, the dtype and the largest p it takes.
    (In float32 and float64 no p below 1 gets there.)"""
    with np.errstate(over="ignore", divide="ignore"):
        scale = dtype.type(1) / dtype.type(1.0 - p)
    if not np.isfinite(scale):
        largest = 1.0 - 1.0 / float(np.finfo(dtype).max)
        _checks.fail("p", f"at most {math.floor(largest * 1e6) / 1e6} for a {dtype} x (the "
                     f"kept entries are scaled by 1/(1 − p), which must fit {dtype}, whose "
                     f"largest is {float(np.finfo(dtype).max):g})", repr(p),
                     "Give x as float32 for a p that near 1.")  # fmt: skip


class Dropout(_Module):
    """Inverted dropout: in training, y = x ⊙ m / (1 − p) with m ~ Bernoulli(1 − p); else y = x.
    A float16 x takes p up to 0.999984 (the scale 1/(1 − p) is a float16: at most 65504)."""

    def __init__(self, p: float = 0.5):
        self.p = _checks.probability(p, "p")
        self.params = {}

    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward:
        o = _stateless(options, "Dropout")
        training, rng = o["training"], o["rng"]
        if not training or self.p == 0.0:  # (x passes through: a list as its array)
            return Forward(_passed(x), None, None)
        _float_input(x)
        _scale_fits(self.p, x.dtype)
        rng = _training_rng(rng, "dropout")
        keep = 1.0 - self.p
        m = (rng.random(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        return Forward(x * m, None, m)

    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward:
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        mask = getattr(f, "cache", None)
        output = getattr(f, "output", None)
        _own_forward(f, mask is None or (isinstance(mask, np.ndarray) and isinstance(
            output, np.ndarray) and mask.shape == output.shape), "Dropout")  # fmt: skip
        d_output = _d_output(f, d_output)
        return Backward(d_output if f.cache is None else d_output * f.cache, None, {})


class LastStep(_Module):
    """Many-to-one readout: (B, T, F) → (B, F), the output at each sequence's last valid step.

    After a bidirectional layer (`source`, which Sequential passes) the step differs by
    direction, as in Keras' Bidirectional(return_sequences=False) and ONNX's Y_h: the forward
    direction is read at the last valid step, the backward direction at step 0, where it has
    read the whole sequence (at the last step it has seen one input only). With the layer's
    "concat" merge that is a choice of features per direction; after "sum" the two halves are
    no longer apart in the output, so they come from the layer's final states (forward h at
    the last valid step, backward h after step 0) and the gradient goes back through them
    (Sequential.backward). The "readout" merge is refused: use "concat" and a Linear.
    """

    def __init__(self) -> None:
        self.params = {}

    def forward(
        self, x: Any, *, source: tuple[Any, Forward] | None = None,
        **options: Unpack[PassOptions],
    ) -> Forward:
        """`source`: (layer, its Forward) when x is a recurrent layer's output."""
        o = _stateless(options, "LastStep")
        lengths, mask, check = o["lengths"], o["mask"], o["check"]
        x = _checks.float_array(x, "x", ndim=3, finite=check)
        _checks.batch_of_steps(x)
        B, T = x.shape[:2]
        m = valid_mask(lengths, mask, B, T)
        last = np.full(B, T - 1) if m is None else T - 1 - np.argmax(m[::-1], axis=0)
        if source is None or not getattr(source[0], "bidirectional", False):
            return Forward(x[np.arange(B), last], None, ("steps", x.shape, last))
        layer, source_f = source
        if not layer.batch_first or layer.merge == "readout":
            _checks.fail(
                "LastStep's source",
                "a bidirectional layer with batch_first=True and merge 'concat' or 'sum'",
                f"batch_first={layer.batch_first}, merge={layer.merge!r}",
                "Use merge='concat' and a Linear layer after LastStep.",
            )
        if layer.merge == "concat":
            # the backward direction has read a whole sequence at its first valid step: step
            # 0, unless the mask pads it on the left (a masked step's output is 0)
            first = np.zeros(B, np.intp) if m is None else np.argmax(m, axis=0)
            half = x.shape[2] // 2
            rows = np.arange(B)
            out = np.concatenate([x[rows, last, :half], x[rows, first, half:]], axis=1)
            return Forward(out, None, ("concat", x.shape, (last, first)))
        h_n = source_f.state[0] if isinstance(source_f.state, tuple) else source_f.state
        return Forward(h_n[-2] + h_n[-1], None, ("final", x.shape, layer))

    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward:
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        cache = getattr(f, "cache", None)
        _own_forward(f, isinstance(cache, tuple) and len(cache) == 3
                     and cache[0] in ("steps", "concat", "final"), "LastStep")  # fmt: skip
        how, shape, last = f.cache
        d_output = _d_output(f, d_output)
        dx = np.zeros(shape, d_output.dtype)
        B = shape[0]
        if how == "steps":
            dx[np.arange(B), last] = d_output
        elif how == "concat":
            (last, first), half = last, shape[2] // 2
            dx[np.arange(B), last, :half] = d_output[:, :half]
            dx[np.arange(B), first, half:] = d_output[:, half:]
        else:
            _checks.fail(
                "f",
                "a LastStep result whose gradient can flow through its input",
                "one read from a bidirectional layer's final states (merge 'sum')",
                "Sequential.backward sends that gradient to the layer's final state.",
            )
        return Backward(dx, None, {})

    def final_state_grad(self, f: Forward, d_output: Any, d_state: Any) -> Any:
        """The layer's final-state gradient (its `d_state`) for a result read from its final
        states (merge 'sum'), added to the `d_state` the caller gave the layer."""
        _, shape, layer = f.cache
        d = _d_output(f, d_output)
        n, B, H = layer.num_layers * 2, shape[0], d.shape[1]
        has_c = layer.cell.has_c
        given = d_state[0] if has_c and d_state is not None else d_state
        dh = np.zeros((n, B, H), layer.dtype) if given is None else np.array(given, layer.dtype)
        dh[-2:] += d.astype(layer.dtype, copy=False)
        if has_c:
            return dh, None if d_state is None else d_state[1]
        return dh


class MeanOverTime(_Module):
    """Many-to-one readout: (B, T, F) → (B, F), the mean over each sequence's valid steps."""

    def __init__(self) -> None:
        self.params = {}

    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward:
        o = _stateless(options, "MeanOverTime")
        lengths, mask, check = o["lengths"], o["mask"], o["check"]
        x = _checks.float_array(x, "x", ndim=3, finite=check)
        _checks.batch_of_steps(x)
        B, T = x.shape[:2]
        m = valid_mask(lengths, mask, B, T)
        w = np.ones((B, T), x.dtype) if m is None else m.T.astype(x.dtype)
        w /= w.sum(axis=1, keepdims=True)
        return Forward(np.einsum("bt,btf->bf", w, x), None, w)

    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward:
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        w = getattr(f, "cache", None)
        _own_forward(f, isinstance(w, np.ndarray) and w.ndim == 2
                     and np.shape(f.output) == (w.shape[0], np.shape(f.output)[-1]),
                     "MeanOverTime")  # fmt: skip
        assert isinstance(w, np.ndarray)  # (for the type checker: _own_forward checked it)
        return Backward(w[:, :, None] * _d_output(f, d_output)[:, None, :], None, {})


_STATELESS = (Embedding, Linear, Dropout, LastStep, MeanOverTime)
"""The modules here that keep no state (a `state` given to one is refused)."""


def readout_source(modules: Sequence[object], i: int) -> int | None:
    """The index of the recurrent layer whose outputs readout i (LastStep, MeanOverTime) of
    `modules` reads: the nearest before it, through Dropouts (elementwise: each step's
    directions stay where they were), or None. The readouts read (B, T, F): a time-major
    layer's (T, B, F) would be read as T sequences of B steps, so it is refused; and a
    module that mixes the features (Linear) in between leaves LastStep nothing to read by
    direction. Sequential and the exporters (ONNX, PyTorch) read by it alike."""
    j = i - 1
    while j >= 0 and isinstance(modules[j], (Dropout, Linear)):
        j -= 1
    if j < 0 or not isinstance(modules[j], Recurrent):
        return None
    layer = modules[j]
    assert isinstance(layer, Recurrent)  # (for mypy: the loop stopped at one)
    readout = type(modules[i]).__name__
    if not layer.batch_first:
        _checks.fail(f"modules[{i}]", f"a {readout} after batch-first outputs (B, T, F)",
                     f"one after module {j}, a layer with batch_first=False",
                     f"{readout} reads (B, T, F); use batch_first=True.")  # fmt: skip
    between = modules[j + 1 : i]
    if any(isinstance(m, Linear) for m in between):
        return None
    if between and layer.bidirectional and layer.merge == "sum" and readout == "LastStep":
        # (MeanOverTime averages the summed outputs, Dropout or not: it was refused too)
        _checks.fail(f"modules[{i}]", "LastStep right after a bidirectional layer with "
                     "merge 'sum' (it reads the layer's final states)",
                     f"{len(between)} module(s) between them",
                     "Put the Dropout after LastStep.")  # fmt: skip
    return j


def first_reader(modules: Sequence[object]) -> object | None:
    """The module that reads a model's input: its first past any Dropouts (which pass ids
    through at inference); None for Dropouts alone."""
    return next((m for m in modules if not isinstance(m, Dropout)), None)


def reads_tokens(modules: Sequence[object]) -> bool:
    """Whether a model of these modules takes token ids: its first reader is an Embedding.
    The exporters declare their input by it."""
    return isinstance(first_reader(modules), Embedding)


def input_features(modules: Sequence[object]) -> int | None:
    """The features of the float input x of a model of these modules: those its first
    Recurrent or Linear reads, through the modules that keep the feature axis (Dropout,
    LastStep, MeanOverTime); None where no module fixes them (a model of those alone)."""
    for module in modules:
        if isinstance(module, Recurrent):
            return module.input_size
        if isinstance(module, Linear):
            return module.in_features
        if not isinstance(module, (Dropout, LastStep, MeanOverTime)):
            break
    return None


def _one_layout(modules: list[Any]) -> None:
    """Recurrent layers one after another (through modules that keep the layout: Linear,
    Dropout) read what the one before wrote, so they share batch_first: a time-major layer
    after a batch-first one ran its recurrence over the batch, silently."""
    before: tuple[int, bool] | None = None
    for i, mod in enumerate(modules):
        layout = getattr(mod, "batch_first", None)
        if isinstance(layout, bool):
            if before is not None and before[1] != layout:
                def name(first: bool) -> str:
                    return "batch-first (B, T, F)" if first else "time-major (T, B, F)"
                _checks.fail(f"modules[{i}]", f"a layer of the layout of module {before[0]}, "
                             f"{name(before[1])}, whose output it reads",
                             f"one with batch_first={layout}")  # fmt: skip
            before = (i, layout)
        elif not isinstance(mod, (Linear, Dropout)):  # (another module may change it)
            before = None


class Sequential(_Module):
    """Modules applied in order. Parameters are named `<index>.<name>` (PyTorch's convention).

    `lengths`/`mask` reach every module; `state` is a list with one entry per module (None for
    the stateless ones) and the final state comes back in the same form.
    """

    def __init__(self, *modules: Any) -> None:
        """Sequential(a, b, c) or Sequential([a, b, c]); each must be an rnnlab Module."""
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for i, mod in enumerate(modules):
            if not (
                hasattr(mod, "forward") and hasattr(mod, "backward") and hasattr(mod, "params")
            ):
                _checks.fail(
                    f"modules[{i}]",
                    "an rnnlab module (forward, backward, params)",
                    _checks.describe(mod),
                )
        self.modules: list[Module] = list(modules)
        _one_layout(self.modules)
        for i, mod in enumerate(self.modules):  # (a user's own module may hold an np.matrix)
            for k, v in mod.params.items():
                if isinstance(v, np.ndarray):
                    _checks.elementwise(v, f"modules[{i}].params[{k!r}]")
        self.params = {
            f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in m.params.items()
        }
        _checks.untied(self.params, "modules", "modules whose parameters are arrays of their "
                       "own", "Give each module its own instance, and each its own arrays "
                       "(np.copy).")  # (one module twice, or one array given to two)

    @parallel.sessioned
    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward:
        """`grad=False`: inference only, the recurrent layers keep no tape (see Recurrent)."""
        o = pass_options(options, "Sequential.forward")
        state, check = o["state"], o["check"]
        o["rng"] = one_generator(o["rng"])  # one for all: a seed each would repeat masks
        n = len(self.modules)
        if state is not None and (not isinstance(state, (list, tuple)) or len(state) != n):
            _checks.fail(
                "state",
                f"a list of {n} entries (one per module, None if stateless)",
                _checks.describe(state),
            )
        for i, mod in enumerate(self.modules):  # (said with its index, not by the module)
            if state is not None and state[i] is not None and isinstance(mod, _STATELESS):
                _checks.fail(f"state[{i}]", f"None: modules[{i}] "
                             f"({_checks.a(type(mod).__name__)}) keeps no state",
                             _checks.describe(state[i]))  # fmt: skip
        fs: list[Forward] = []
        for i, mod in enumerate(self.modules):
            # Only the first module checks that its input is finite: inside the model a
            # non-finite value means divergence, which the loss reports with its step.
            own: PassOptions = {**o, "state": None if state is None else state[i],
                                "check": check and i == 0}  # fmt: skip
            readout = isinstance(mod, (LastStep, MeanOverTime))
            source = readout_source(self.modules, i) if readout else None
            below = self.modules[i - 1] if i > 0 else None
            if source is not None and isinstance(mod, LastStep):  # (its directions)
                f = mod.forward(x, source=(self.modules[source], fs[source]), **own)
            elif type(below) is Embedding and type(mod) is Recurrent:  # (as in backward)
                f = mod.forward(x, rows_of=(below.params["weight"], fs[i - 1].cache), **own)
            else:
                f = mod.forward(x, **own)
            fs.append(f)
            x = f.output
        return Forward(x, [f.state for f in fs], fs)

    @parallel.sessioned
    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False, retain_tape: bool = False,
    ) -> Backward:
        """`input_grad=False`: the first module may skip ∂L/∂x (see Recurrent.backward).
        Each module below the top may write over the gradient it is given (the module
        above made it) unless that gradient is the caller's d_output passed through (a
        Dropout at inference): that one only with `overwrite_d_output=True`.
        `retain_tape=True` goes to every module that takes it, so `f` serves another
        backward pass (Recurrent.backward).

        An Embedding followed by a recurrent layer is folded: the layer is told that its
        input was rows of the embedding's weight (Recurrent.backward's rows_of) and gives
        the weight's gradient itself, from its first layer's pre-activation gradients summed
        by token id, instead of ∂L/∂ its input for the embedding to sum by id."""
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output,
                         retain_tape=retain_tape)  # fmt: skip
        n = len(self.modules)
        _own_forward(f, isinstance(getattr(f, "cache", None), list) and len(f.cache) == n
                     and all(isinstance(c, Forward) for c in f.cache), "Sequential")  # fmt: skip
        if d_state is not None and (not isinstance(d_state, (list, tuple)) or len(d_state) != n):
            _checks.fail("d_state", f"None or a list of {n} entries (one per module, None if "
                         "stateless)", _checks.describe(d_state))  # fmt: skip
        grads: dict[str, np.ndarray] = {}
        d_states = [None] * n
        given = d_output
        d: np.ndarray | None = _d_output(f, d_output)
        ours = overwrite_d_output or d is not given  # may a module write over d?
        through_state = None  # a LastStep read from a layer's final states (see LastStep)
        table = None  # an Embedding's weight gradient, given by the layer after it (folded)
        for i in range(len(self.modules) - 1, -1, -1):
            ds = None if d_state is None else d_state[i]
            mod, fi = self.modules[i], f.cache[i]
            if table is not None:  # this Embedding's gradient came from the layer after it
                grads[f"{i}.weight"], d, table = table, None, None
                continue
            if isinstance(mod, LastStep) and fi.cache[0] == "final":
                through_state = mod.final_state_grad(fi, d, None if d_state is None
                                                     else d_state[i - 1])  # fmt: skip
                d, ours = np.zeros(fi.cache[1], fi.output.dtype), True
                continue
            if through_state is not None:
                ds, through_state = through_state, None
            takes = takes_overwrite(mod)
            keywords: dict[str, Any] = {"overwrite_d_output": ours} if takes else {}
            if retain_tape and takes_retain_tape(mod):
                keywords["retain_tape"] = True
            below = self.modules[i - 1] if i > 0 else None
            # (Recurrent itself: a subclass of one's own may compute otherwise, review 77)
            if type(below) is Embedding and type(mod) is Recurrent:
                keywords["rows_of"] = (below.params["weight"], f.cache[i - 1].cache)
            if type(mod) is Recurrent and i < n - 1:  # d: checked below, after the module above
                keywords["check"] = False
            b = mod.backward(fi, d, ds, input_grad=input_grad or i > 0, **keywords)
            d_states[i] = b.state
            grads.update({f"{i}.{k}": v for k, v in b.params.items()})
            passed = b.input is not None and d is not None and np.may_share_memory(b.input, d)
            ours = ours if passed else takes  # (a module of one's own may keep its b.input)
            d, table = b.input, getattr(b, "table", None)
            if table is not None and not _checks.all_finite(table):
                raise _checks.NonFiniteError(
                    f"the gradient of module {i - 1}'s weight (Embedding) became NaN or inf "
                    "in backward"
                )
            if i > 0 and d is not None and d.dtype.kind == "f" and not _checks.all_finite(d):
                # inside the model a NaN or inf means divergence, not a caller's mistake
                what = type(self.modules[i - 1]).__name__
                raise _checks.NonFiniteError(
                    f"the gradient of module {i - 1}'s output ({what}) became NaN or inf in "
                    "backward"
                )
        return Backward(d, d_states, {k: grads[k] for k in self.params})


EXPORTED = (Sequential, Recurrent, Embedding, Linear, Dropout, LastStep, MeanOverTime)
"""The modules whose computation the exporters (ONNX, PyTorch, Keras) write from their
parameters and settings."""


def refuse_own_subclass(module: object, where: str, written: str) -> None:
    """Refuse `module` if its class is a subclass of one of EXPORTED of one's own, naming it
    and the class it derives from: `written` (the graph, the PyTorch code, the Keras model),
    made from its parameters, computes the base's forward, which the subclass's may not (a
    residual GRU exported as a GRU loads and runs and gives other numbers)."""
    base = next((c for c in EXPORTED if isinstance(module, c)), None)
    if base is None or type(module) is base:
        return
    _checks.fail(where, f"one of rnnlab's own modules ({_checks.a(base.__name__)}, not a "
                 "subclass)", f"{_checks.a(type(module).__name__)}, a subclass of "
                 f"{base.__name__} of one's own",
                 f"Its forward may compute what its base's does not, and {written}, built from "
                 "its parameters, computes the base's: it is refused rather than written "
                 "wrong.")  # fmt: skip
