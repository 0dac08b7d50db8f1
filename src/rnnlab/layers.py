"""The module protocol and the recurrent layers.

The protocol every module keeps (the layers here, rnnlab.modules' Embedding, Linear, Dropout,
readouts and Sequential, the models built on them): two methods, and its parameters in
`params` (a dict of arrays, PyTorch's names and layouts):

    f = module.forward(x, **options)     options: PassOptions (lengths, mask, state, training,
                                          rng, check, grad), plus the module's own keywords
        f.output, f.state (recurrent layers: the final state), and what the backward needs;
        grad=False promises no backward (recurrent layers then keep no tape)
    b = module.backward(f, d_output, d_state=None, input_grad=True, overwrite_d_output=False)
        b.input (∂L/∂x), b.state (∂L/∂initial state), b.params (∂L/∂ each parameter, same names);
        input_grad=False lets a module skip ∂L/∂x (b.input may then be None) when x is data;
        overwrite_d_output=True gives d_output up: the module may write over it (a recurrent
        layer's BPTT does where it can), as a loss's gradient or the module above's ∂L/∂x
        is given up; a module that takes the keyword gives its b.input up to its caller
        (a fresh array, or d_output itself handed on). A module of one's own may leave
        the keyword out: Sequential and the trainer then call it without it

A forward pass returns its tape instead of hiding it in the object, so a module can run several
forward passes before their backward passes (truncated BPTT windows, diagnostics) and the
objects hold nothing but parameters.

Here: Forward, Backward, PassOptions and pass_options (the protocol); Recurrent, any cell over
time with layers, directions, masks, initial states and checkpointing, and RNN, LSTM, GRU, its
PyTorch-compatible constructors; load_params (a state_dict into `params`, all or nothing).
The one-time check of a cell's steps that Recurrent runs is rnnlab.cellcheck.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, TypeVar, Unpack

import numpy as np
import numpy.typing as npt

from rnnlab import _checks, recurrence
from rnnlab.cellcheck import accept_cell
from rnnlab.cells import Cell, ElmanCell, GRUCell, LSTMCell
from rnnlab.fast import parallel
from rnnlab.recurrence import Params, valid_mask


@dataclass
class Forward:
    """The result of a forward pass: output, final state (recurrent layers) and the tape."""

    output: np.ndarray
    state: Any = None
    cache: Any = field(default=None, repr=False)


@dataclass
class Backward:
    """The result of a backward pass: gradients of the input, initial state and parameters;
    `table`: the gradient of the table whose rows the input was, where the backward was told
    so instead of giving the input's (Recurrent.backward's rows_of)."""

    input: np.ndarray | None
    state: Any
    params: dict[str, np.ndarray]
    table: np.ndarray | None = None


class PassOptions(TypedDict, total=False):
    """The keywords every module's `forward` takes, besides its own (Recurrent's
    `checkpoint_every`, a model's `targets`): what one pass over a batch is asked to do.
    A module declares them as `**options: Unpack[PassOptions]` and reads them through
    `pass_options`, so the seven are written once."""

    lengths: Any  # (B,) valid steps of each sequence, or None
    mask: Any  # (B, T) bool, True at valid steps, or None (one of lengths and mask)
    state: Any  # the initial state in the module's own form, or None (its default)
    training: bool  # dropout and the other training-only randomness on
    rng: Any  # np.random.Generator (or a seed) for that randomness
    check: bool  # check that x is finite (inside a model only its first module does)
    grad: bool  # False: no backward follows, so no tape is kept


class Module(Protocol):
    """What a module is to those that run it (Sequential, the trainer, gradcheck)."""

    params: dict[str, np.ndarray]

    def forward(self, x: Any, **options: Unpack[PassOptions]) -> Forward: ...

    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward: ...


def takes_overwrite(module: object) -> bool:
    """Whether `module.backward` names `overwrite_d_output` (every rnnlab module does). A
    module written to the protocol before the keyword (a user's own) is called without it,
    and its ∂L/∂x is not taken as given up: it may be an array the module keeps. A backward
    that only takes **kwargs (a wrapper passing them on) does not say so either way, and is
    treated as one that does not know the keyword."""
    return _names(getattr(module, "backward", None), "overwrite_d_output")


def takes_retain_tape(module: object) -> bool:
    """Whether `module.backward` names `retain_tape` (a module holding a recurrent layer, whose
    compiled BPTT turns the tape into gradients unless told to keep it): a container passes
    the keyword on to those that do."""
    return _names(getattr(module, "backward", None), "retain_tape")


def _names(fn: object, keyword: str) -> bool:
    try:
        params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return keyword in params


RngLike = (np.random.Generator | int | np.integer | np.random.SeedSequence
           | np.random.BitGenerator | None)
"""What `rng=` takes: a Generator, a seed, or None (a fresh Generator)."""

R = TypeVar("R")


PASS_DEFAULTS: PassOptions = {"lengths": None, "mask": None, "state": None, "training": False,
                              "rng": None, "check": True, "grad": True}  # fmt: skip


def pass_options(options: Mapping[str, Any], where: str) -> PassOptions:
    """`options` with the defaults of those not given; TypeError for a keyword that is none of
    them (as Python refuses an unknown keyword argument). The switches training, check and
    grad are True or False (a string "False" is truthy: it trained with zoneout's masks)."""
    for key in options:
        if key not in PASS_DEFAULTS:
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r}; the options "
                            f"of a pass are {', '.join(PASS_DEFAULTS)}")  # fmt: skip
        if key in ("training", "check", "grad"):
            _checks.boolean(options[key], key)
    return {**PASS_DEFAULTS, **options}  # type: ignore[typeddict-item]


def _dtype(dtype: npt.DTypeLike) -> np.dtype:
    """A module's dtype, float32 or float64. None is refused: NumPy reads it as float64 and
    PyTorch (`dtype=None`) as its default float32, and a layer built with it was float64
    where a PyTorch user meant the default. What NumPy cannot read as a dtype (a torch
    dtype, a misspelt name) is refused naming `dtype`, where NumPy's TypeError named neither
    the argument nor what it takes."""
    if dtype is None:
        _checks.fail("dtype", "float32 or float64 (np.float32, the default, or np.float64)",
                     "None", "NumPy reads None as float64, PyTorch as its default float32: "
                     "name the one you mean.")  # fmt: skip
    try:
        dt: np.dtype = np.dtype(dtype)
    except TypeError:
        text = str(dtype)
        hint = (f"For {text} write np.{text.removeprefix('torch.')}."
                if text.startswith("torch.") else "")  # fmt: skip
        _checks.fail("dtype", "float32 or float64 (a NumPy dtype or its name)",
                     _checks.describe(dtype), hint)  # fmt: skip
    if dt not in (np.float32, np.float64):
        _checks.fail("dtype", "float32 or float64", str(dt))
    return dt


def _rng(rng: RngLike) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(_checks.seed(rng, "rng"))
    if isinstance(rng, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(rng)  # (what NumPy's own seeding advice hands out)
    if not isinstance(rng, np.random.Generator):
        _checks.fail("rng", "a numpy Generator, an integer seed, a SeedSequence, a "
                     "BitGenerator or None", _checks.describe(rng))  # fmt: skip
    return rng


def one_generator(rng: Any) -> Any:
    """A seed (an int, a SeedSequence, a BitGenerator) made into one Generator, for a pass
    that hands `rng` to several modules: each making its own from the same seed would draw
    the same masks. A Generator, None and what is no seed pass as they are (each module
    checks its own)."""
    seeds = (int, np.integer, np.random.SeedSequence, np.random.BitGenerator)
    if isinstance(rng, seeds) and not isinstance(rng, bool):
        return _rng(rng)
    return rng


def _training_rng(rng: object, what: str) -> np.random.Generator:
    """The generator training's random masks (`what`) draw from: a Generator, or a seed made
    into one (PassOptions' rng); None is refused, a fresh draw each call being no run."""
    seeds = (np.random.Generator, int, np.integer, np.random.SeedSequence,
             np.random.BitGenerator)
    if isinstance(rng, bool) or not isinstance(rng, seeds):
        _checks.fail("rng", f"a numpy Generator or a seed when training with {what}",
                     _checks.describe(rng))  # fmt: skip
    return _rng(rng)


def _uniform(
    rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: np.dtype
) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _initialised(cell: Cell, drawn: dict[str, np.ndarray], own: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:  # fmt: skip
    """A direction's parameters after `cell.init(own, ...)`, which adjusts `drawn` in place:
    the same names, each array of its shape and dtype. An array the recipe replaced by one
    of the same shape and dtype is copied into the one drawn (which stays contiguous and
    writeable); any other change is refused naming the recipe. A replacement of another
    dtype (a float64 np.eye in a float32 layer) made the layer's parameters two dtypes, met
    later as the compiled loops' refusal of W_hh "for another cell or dtype"; a new name, a
    KeyError in the forward pass; another shape, a failed gradient check."""
    where = f"{type(cell).__name__}.init"
    names = ", ".join(drawn)
    for key in own:
        if key not in drawn:
            _checks.fail(where, f"a recipe that adjusts the parameters it is given ({names})",
                         f"a new entry {key!r}", "A parameter of the cell's own is declared in "
                         "`extra`, which gives it its place in the steps' q.")  # fmt: skip
    for key, array in drawn.items():
        if key not in own:
            _checks.fail(where, f"a recipe that adjusts the parameters it is given ({names})",
                         f"{key!r} removed")  # fmt: skip
        value = own[key]
        if value is array:
            continue
        if not (isinstance(value, np.ndarray) and value.shape == array.shape
                and value.dtype == array.dtype):  # fmt: skip
            _checks.fail(where, "a recipe that writes into the parameters it is given, each "
                         f"keeping its shape and dtype ({key!r}: {array.shape}, {array.dtype})",
                         f"{key!r} replaced by {_checks.describe(value)}",
                         f"Write into the array: params[{key!r}][...] = ... (NumPy casts "
                         "the values to the layer's dtype).")  # fmt: skip
        array[...] = value
    return drawn


def _forward_lookup(cache: dict[str, Any], rows_of: Any) -> recurrence.Lookup | None:
    """The Lookup the forward pass made and checked, where backward is given the same
    table (the same array: its values may have changed since, as Lookup allows) and ids
    equal to the forward's (kept as a copy): the check against the input and the ids'
    grouping are not made twice (0.6 ms of the character LM's step). None otherwise: the
    caller checks rows_of anew."""
    seen = cache.get("rows_of")
    if seen is None or not isinstance(rows_of, (tuple, list)) or len(rows_of) != 2:
        return None
    table, ids, lookup = seen
    given = rows_of[1]
    if rows_of[0] is not table or not isinstance(given, np.ndarray) or given.shape != ids.shape:
        return None
    return lookup if np.array_equal(given, ids) else None


class Recurrent:
    """A stack of recurrent layers of one cell, optionally bidirectional: what gives a cell
    (rnnlab.cells) depth, directions, masks, initial states, checkpointing and speed.

        Recurrent(LSTMCell(forget_bias=1.0), input_size=8, hidden_size=32, num_layers=2,
                  bidirectional=True)

    The constructors RNN, LSTM and GRU make the layers PyTorch has. Inputs are (batch, time,
    features) when `batch_first` (the default) and (time, batch, features) otherwise;
    outputs follow the same layout. Weight names and layouts are PyTorch's (`weight_ih_l0`,
    `bias_hh_l1_reverse`, …), so `load_state_dict(torch_module.state_dict())` (as NumPy
    arrays) works by name; a cell's extra parameters are named the same way
    (`weight_ci_l0`, …).

    Merging the two directions of a bidirectional stack's last layer (between layers the
    directions are always concatenated, as in PyTorch):
      - "concat": [h_t ; h'_t], 2H features (the default);
      - "sum":    h_t + h'_t, H features;
      - "readout": the notes' o_t = V h_t + V' h'_t + c with separate output weights per
        direction (`readout_weight`, `readout_weight_reverse`, `readout_bias`), `output_size`
        features; apply softmax in the loss.

    `dropout=p`: in training, inverted dropout on the input of every layer but the first,
    as PyTorch's dropout between layers (a fresh mask per element and step); with one layer
    it does nothing (PyTorch warns; rnnlab's specs pass their `dropout` at any depth). The
    layers always have biases: PyTorch's `bias=True` is taken, `bias=False` refused with the
    way to the same function (zero biases).

    Padding: forward's `lengths` (B,) or `mask` (B, T), as PyTorch's
    pack_padded_sequence(enforce_sorted=False): outputs past a sequence's length are zero,
    its final state is its last valid step's (the reverse direction's, step 0's). A step
    whose mask is False leaves the state as it was and outputs zero, so a mask with holes
    runs each sequence as if its masked steps were not there.

    Initial state (`initial_state`): "zeros", a number (the notes suggest 0.5) for every unit,
    or "learned": a parameter per layer and direction (`h0_l0`, `c0_l0_reverse`, …)
    broadcast over the batch. A `state` passed to forward overrides it.

    What the library does around any cell's step (not the cell's equations, so every cell
    has them):
      - `proj_size=P` (0 < P < hidden_size; Sak, Senior & Beaufays 2014, PyTorch's proj_size):
        the carry is h_t = W_hr h̃_t, P wide (`weight_hr_l0`, P × H): outputs, h_0 and the
        next layer's input are P wide, c stays H wide. For cells that read h_{t-1} only
        through W_hh (Cell.reads_h_prev False: the LSTM and Elman cells);
      - `recurrent_dropout=p` (Gal & Ghahramani 2016): in training the recurrent products take
        h_{t-1} ⊙ m, one mask m per sequence and layer for all its steps (kept units scaled
        by 1/(1 − p)); for cells whose products all take h_{t-1}. A step's own reads of
        h_{t-1} (the GRU's z ⊙ h_{t-1}) are not masked;
      - `zoneout=p` or (p_h, p_c) (Krueger et al. 2016): in training each unit keeps its
        previous value with probability p, h_t = d ⊙ h_{t-1} + (1 − d) ⊙ h̃_t (c_t with p_c),
        a fresh draw per step; in evaluation the expectation, d = p.
    Their draws come from forward's `rng`, as dropout's do.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = True,
        dropout: float = 0.0,
        merge: str = "concat",
        output_size: int | None = None,
        initial_state: str | float = "zeros",
        proj_size: int = 0,
        recurrent_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        dtype: npt.DTypeLike = np.float32,
        rng: RngLike = None,
    ):
        self.cell = accept_cell(cell)
        self.input_size = _checks.positive_int(input_size, "input_size")
        self.hidden_size = _checks.positive_int(hidden_size, "hidden_size")
        if self.hidden_size < cell.min_hidden:
            _checks.fail("hidden_size", f"at least {cell.min_hidden} for {cell!r} (its steps "
                         f"keep {cell.min_hidden} values in a row of H)",
                         str(self.hidden_size))  # fmt: skip
        self.num_layers = _checks.positive_int(num_layers, "num_layers")
        self.bidirectional = _checks.boolean(bidirectional, "bidirectional")
        self.batch_first = _checks.boolean(batch_first, "batch_first")
        self.dropout = _checks.probability(dropout, "dropout")
        self.merge = _checks.choice(merge, "merge", ("concat", "sum", "readout"))
        self.dtype = _dtype(dtype)
        if self.merge == "readout":
            if not self.bidirectional:
                _checks.fail(
                    "merge",
                    "'concat' for a unidirectional layer",
                    "'readout'",
                    "The readout merge combines two directions; use a Linear layer.",
                )
            self.output_size = _checks.positive_int(output_size, "output_size")
        elif output_size is not None:
            _checks.fail(
                "output_size", "None unless merge='readout'", _checks.describe(output_size)
            )
        if isinstance(initial_state, str):
            _checks.choice(initial_state, "initial_state", ("zeros", "learned"))
        elif (
            isinstance(initial_state, (bool, np.bool_))
            or not isinstance(initial_state, (int, float, np.integer, np.floating))
            or not np.isfinite(initial_state)
        ):
            _checks.fail(
                "initial_state",
                "'zeros', 'learned' or a finite number",
                _checks.describe(initial_state),
            )
        elif isinstance(initial_state, np.generic):  # (the Python number a spec writes)
            initial_state = initial_state.item()
        self.initial_state = initial_state
        self._around(proj_size, recurrent_dropout, zoneout)
        self.params: dict[str, np.ndarray] = {}
        self.reset_parameters(_rng(rng))

    def _around(
        self, proj_size: int, recurrent_dropout: float, zoneout: float | tuple[float, float]
    ) -> None:
        """Check and keep the options applied around the cell's step (see the class)."""
        cell = self.cell
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
            _checks.fail("proj_size", "an integer (0: no projection)", _checks.describe(proj_size))
        self.proj_size = int(proj_size)
        if self.proj_size:
            if not 0 < self.proj_size < self.hidden_size:
                _checks.fail(
                    "proj_size",
                    f"0 or between 1 and hidden_size - 1 = {self.hidden_size - 1}",
                    repr(self.proj_size),
                    "The projection makes the carry narrower than the cell's H units.",
                )
            if cell.reads_h_prev:
                _checks.fail(
                    "proj_size",
                    f"0 for {cell.describe()}",
                    repr(self.proj_size),
                    "Its step reads h_{t-1} itself, so its carry cannot be narrower than its "
                    "units; the LSTM and Elman cells take a projection (a cell of one's own, "
                    "when its steps read h_{t-1} only through its products: reads_h_prev = "
                    "False).",
                )
        if self.proj_size and getattr(cell, "init_name", None) == "irnn":
            _checks.fail("proj_size", "0 with init='irnn'", repr(self.proj_size),
                         "The IRNN's W_hh is the identity on h, which a projection narrows "
                         "(W_hh is hidden_size x proj_size).")  # fmt: skip
        self.recurrent_dropout = _checks.probability(recurrent_dropout, "recurrent_dropout")
        if self.recurrent_dropout and any(src is not None for _, src in cell.products):
            _checks.fail(
                "recurrent_dropout",
                f"0 for {cell.describe()}",
                repr(recurrent_dropout),
                "One of its recurrent products takes a block of its tape (as the original "
                "GRU's r ⊙ h_{t-1}), not h_{t-1}, which the mask would drop"
                + ("; use GRU(reset_after=True)." if isinstance(cell, GRUCell) else "."),
            )
        single = not isinstance(zoneout, (tuple, list))
        pair = (zoneout, zoneout if cell.has_c else 0.0) if single else zoneout
        # mypy does not narrow zoneout through `single`: pair is a tuple or list here
        if len(pair) != 2:  # type: ignore[arg-type]
            _checks.fail("zoneout", "a probability or a pair (p_h, p_c)", _checks.describe(zoneout))
        self.zoneout = tuple(_checks.probability(z, "zoneout") for z in pair)  # type: ignore[union-attr]
        if self.zoneout[0] and self.proj_size:
            _checks.fail(
                "zoneout",
                "0 for h with proj_size (zoneout=(0, p_c) zones c alone)",
                repr(zoneout),
                "Zoning out the projected h would need masks of its own width; not built yet.",
            )
        if self.zoneout[1] and not cell.has_c:
            _checks.fail(
                "zoneout",
                f"a single probability, or (p_h, 0), for {cell.describe()} (it has no cell state)",
                repr(zoneout),
            )

    @property
    def carry_size(self) -> int:
        """P: the width of h (the projection's, or hidden_size)."""
        return self.proj_size or self.hidden_size

    # ----------------------------------------------------------------- parameters
    @property
    def directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def output_features(self) -> int:
        if self.merge == "readout":
            return self.output_size
        if self.bidirectional and self.merge == "concat":
            return 2 * self.carry_size
        return self.carry_size

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """PyTorch's default U(−1/√H, 1/√H) for every weight and bias, zeros for a cell's
        extra parameters, then the cell's own recipe (Cell.init)."""
        H, G, dt = self.hidden_size, self.cell.gates, self.dtype
        D, P = len(self.directions), self.carry_size
        bound = 1.0 / np.sqrt(H)
        per_layer = G * H * (max(self.input_size, D * H) + H + 2)
        _checks.affordable(self.num_layers * D * per_layer * dt.itemsize * 2, "hidden_size",
                           "weights")  # fmt: skip
        p: dict[str, np.ndarray] = {}
        for k in range(self.num_layers):
            I = self.input_size if k == 0 else D * P
            for sfx in self.directions:
                own = {
                    "weight_ih": _uniform(rng, (G * H, I), bound, dt),
                    "weight_hh": _uniform(rng, (G * H, P), bound, dt),
                    "bias_ih": _uniform(rng, (G * H,), bound, dt),
                    "bias_hh": _uniform(rng, (G * H,), bound, dt),
                }
                own.update({n: np.zeros(rows * H, dt) for n, _, rows in self.cell.extra_rows})
                drawn = dict(own)
                self.cell.init(own, H, rng)
                own = _initialised(self.cell, drawn, own)
                if self.proj_size:  # PyTorch's order: after the four, in the same law
                    own["weight_hr"] = _uniform(rng, (P, H), bound, dt)
                for name, value in own.items():
                    p[f"{name}_l{k}{sfx}"] = value
                if self.initial_state == "learned":
                    p[f"h0_l{k}{sfx}"] = np.zeros(P, dt)
                    if self.cell.has_c:
                        p[f"c0_l{k}{sfx}"] = np.zeros(H, dt)
        if self.merge == "readout":
            K, b = self.output_size, 1.0 / np.sqrt(H)
            p["readout_weight"] = _uniform(rng, (K, P), b, dt)
            p["readout_weight_reverse"] = _uniform(rng, (K, P), b, dt)
            p["readout_bias"] = np.zeros(K, dt)
        self.params = p

    def _layer_params(self, k: int, sfx: str) -> Params:
        p = self.params
        H, extra = self.hidden_size, self.cell.extra_rows
        return Params(
            p[f"weight_ih_l{k}{sfx}"],
            p[f"weight_hh_l{k}{sfx}"],
            p[f"bias_ih_l{k}{sfx}"],
            p[f"bias_hh_l{k}{sfx}"],
            np.concatenate([p[f"{n}_l{k}{sfx}"].reshape(-1, H) for n, _, _ in extra])
            if extra
            else None,
            p[f"weight_hr_l{k}{sfx}"] if self.proj_size else None,
        )

    # rng: a Generator when training (forward checks it); not used otherwise
    def _noise(self, training: bool, rng: Any, T: int, B: int) -> recurrence.Noise | None:
        """One direction's masks for recurrent dropout and zoneout (recurrence.Noise)."""
        p_drop, (z_h, z_c) = self.recurrent_dropout, self.zoneout
        if not (p_drop and training) and not (z_h or z_c):
            return None
        dt, H, P = self.dtype, self.hidden_size, self.carry_size
        noise = recurrence.Noise()
        if p_drop and training:
            kept = 1.0 - p_drop
            noise.keep = (rng.random((B, P)) < kept).astype(dt) / dt.type(kept)
        for name, z in (("zone_h", z_h), ("zone_c", z_c)):  # z_c is 0 without a cell state
            if z:  # a draw per unit and step in training, the expectation in evaluation
                shape = (T, B, H)
                d = (rng.random(shape) < z).astype(dt) if training else np.full(shape, z, dt)
                setattr(noise, name, d)
        return noise

    # ----------------------------------------------------------------- state
    def _initial_states(self, state: Any, B: int, check: bool = True
                        ) -> list[tuple[np.ndarray, np.ndarray | None]]:  # fmt: skip
        """Per (layer, direction): (h0, c0) arrays of shape (B, P) and (B, H); a given state
        checked finite unless `check` is off (forward's `check_state`)."""
        L, D, H, dt = self.num_layers, len(self.directions), self.hidden_size, self.dtype
        P = self.carry_size
        shape = (L * D, B, P)
        if state is not None:
            if self.cell.has_c:
                if not isinstance(state, (tuple, list)) or len(state) != 2:
                    _checks.fail("state", "a pair (h0, c0) for an LSTM", _checks.describe(state))
                h0 = _checks.float_array(state[0], "state[0] (h0)", shape=shape, dtype=dt,
                                         finite=check)  # fmt: skip
                c0 = _checks.float_array(state[1], "state[1] (c0)", shape=(L * D, B, H),
                                         dtype=dt, finite=check)  # fmt: skip
            else:
                self._not_a_pair(state, "state", "h0")
                h0 = _checks.float_array(state, "state", shape=shape, dtype=dt, finite=check)
                c0 = None
            return [(h0[j], None if c0 is None else c0[j]) for j in range(L * D)]
        out = []
        for k in range(L):
            for sfx in self.directions:
                if self.initial_state == "learned":
                    h0 = np.broadcast_to(self.params[f"h0_l{k}{sfx}"], (B, P))
                    c0 = (
                        np.broadcast_to(self.params[f"c0_l{k}{sfx}"], (B, H))
                        if self.cell.has_c
                        else None
                    )
                else:
                    value = 0.0 if self.initial_state == "zeros" else float(self.initial_state)
                    h0 = np.full((B, P), value, dt)
                    c0 = np.full((B, H), value, dt) if self.cell.has_c else None
                out.append((h0, c0))
        return out

    # ----------------------------------------------------------------- forward / backward
    def __call__(
        self, x: Any, *, checkpoint_every: int = 0, check_state: bool = True,
        **options: Unpack[PassOptions],
    ) -> Forward:
        return self.forward(x, checkpoint_every=checkpoint_every, check_state=check_state,
                            **options)  # fmt: skip

    @parallel.sessioned
    def forward(
        self, x: Any, *, checkpoint_every: int = 0, check_state: bool = True,
        rows_of: tuple[Any, Any] | None = None, **options: Unpack[PassOptions],
    ) -> Forward:
        """`checkpoint_every=k` keeps every k-th state only and recomputes the rest during
        backward (gradient checkpointing; k ≈ √T makes BPTT's memory O(√T)): the same
        outputs bit for bit, the same gradients to rounding (docs/design.md, "Gradient
        checkpointing"). `rnnlab train --checkpoint-every` is another thing: how often a run
        saves its checkpoint.

        `rows_of=(table, ids)` says x is table[ids], an Embedding's output (as backward's
        rows_of; Sequential passes it): where the batch holds few distinct ids the first
        layer projects only their rows and its loop reads them by id
        (recurrence.reads_lookup). Checked against x: rows that differ under one id are
        refused.

        `check_state=False`: a given state is not checked finite (a model handing on a state
        it computed, Seq2Seq's encoder's to its decoder: one that overflowed is the model's
        output to report, not "`state` must be finite"). `check` is about x alone: in a
        Sequential only the first module checks its input, and every layer its given state.

        `grad=False` (inference, like PyTorch's inference_mode): no backward will follow, so
        the layer keeps no tape; the cells' saved values take one step of memory instead of
        T, and `backward` refuses the result."""
        o = pass_options(options, "Recurrent.forward")
        lengths, mask, state, training = o["lengths"], o["mask"], o["state"], o["training"]
        rng, check, grad = o["rng"], o["check"], o["grad"]
        x = _checks.float_array(x, "x", ndim=3, finite=check)
        _checks.batch_of_steps(x if self.batch_first else np.swapaxes(x, 0, 1))
        _checks.boolean(check_state, "check_state")
        if (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, (int, np.integer))
            or checkpoint_every < 0
        ):
            _checks.fail(
                "checkpoint_every",
                "a non-negative integer (0: keep every state)",
                _checks.describe(checkpoint_every),
            )
        checkpoint_every = int(checkpoint_every)
        if x.shape[2] != self.input_size:
            _checks.fail(
                "x",
                f"an array with {self.input_size} features in its last axis (input_size)",
                f"shape {x.shape}",
            )
        if x.dtype != self.dtype:
            _checks.fail(
                "x",
                f"of dtype {self.dtype} like the layer's parameters",
                f"dtype {x.dtype}",
                f"Convert with x.astype(np.{self.dtype}).",
            )
        X = np.swapaxes(x, 0, 1) if self.batch_first else x  # time-major (T, B, I)
        T, B = X.shape[0], X.shape[1]
        lookup, kept = None, None
        if rows_of is not None:
            lookup = self._lookup(rows_of, X)
            # the Lookup reads a copy of the ids: backward may take it (_forward_lookup) after
            # the caller's array changed in place, and BPTT reads its ids (a checkpointed
            # segment's window, the NumPy path's sums by id)
            kept = np.array(lookup.ids.T if self.batch_first else lookup.ids)
            lookup.ids = kept.T if self.batch_first else kept
        m = valid_mask(lengths, mask, B, T)  # (the mask is (B, T) for either layout)
        random = (self.dropout > 0 and self.num_layers > 1) or self.recurrent_dropout
        if training and (random or any(self.zoneout)):
            rng = _training_rng(rng, "dropout or zoneout")
        h0s = self._initial_states(state, B, check_state)
        # the tape: per layer and direction the gates, states and outputs of every step; a
        # checkpointed one the outputs, the states every k steps and one segment's tape,
        # recomputed in backward (counting T steps of tape refused what checkpoints fit)
        per_step = self.cell.gates + 3
        k = checkpoint_every
        if not grad:
            steps = per_step
        elif 0 < k < T:
            steps = T + 2 * -(-T // k) + k * per_step
        else:
            steps = T * per_step
        tape = self.num_layers * len(self.directions) * steps * B
        _checks.affordable(tape * self.hidden_size * self.dtype.itemsize, "x",
                           "saved values of every step")  # fmt: skip

        tapes, drops, finals = [], [], []
        strided = not grad and recurrence.projects_each_step(
            self.cell, self.input_size, self.hidden_size, self.dtype
        )
        if not (strided or recurrence.reads_in_place(X)):
            X = np.ascontiguousarray(X)  # time-major rows for the input projections
        inp = X
        ys_last = None
        for k in range(self.num_layers):
            drop = None
            if k > 0 and training and self.dropout > 0:
                keep = 1.0 - self.dropout
                drop = (rng.random(inp.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                inp = inp * drop
            drops.append(drop)
            ys_dirs = []
            D = len(self.directions)
            shared = self._shared_states(T, B) if D == 2 and self.merge == "concat" else None
            noises = [self._noise(training, rng, T, B) for _ in range(D)]
            jobs = [
                functools.partial(
                    recurrence.forward,
                    self.cell,
                    self._layer_params(k, sfx),
                    inp,
                    *h0s[k * D + d],
                    m,
                    reverse=d == 1,
                    checkpoint_every=checkpoint_every,
                    keep_tape=grad,
                    hs_out=None if shared is None else shared[d],
                    noise=noises[d],
                    lookup=lookup if k == 0 else None,
                )
                for d, sfx in enumerate(self.directions)
            ]
            for ys, hT, cT, tape in self._directions_at_once(jobs, inp, inference=not grad):
                ys_dirs.append(ys)
                tapes.append(tape)
                finals.append((hT, cT))
            ys_last = ys_dirs
            if D == 1:
                inp = ys_dirs[0]
            elif shared is not None and m is None:
                inp = shared[2]  # the states were written there: nothing to concatenate
            else:
                inp = np.concatenate(ys_dirs, axis=2)

        out = self._merge(ys_last, inp)  # type: ignore[arg-type]  # num_layers ≥ 1 set it
        if m is not None and self.merge == "readout":
            out = np.where(m[:, :, None], out, 0.0).astype(self.dtype, copy=False)
        h_n = np.stack([h for h, _ in finals])
        # c_T is an array when the cell has a cell state (mypy cannot tie the two)
        final = (h_n, np.stack([c for _, c in finals])) if self.cell.has_c else h_n  # type: ignore[misc]
        output = np.swapaxes(out, 0, 1) if self.batch_first else out
        cache = {
            "layer": (self._signature(), self.cell.key),  # (key: a custom cell's math)
            "tapes": tapes if grad else None,
            "drops": drops,
            "ys_last": ys_last,
            "mask": m,
            "given_state": state is not None,
            # the rows_of forward checked, for backward's (_forward_lookup)
            "rows_of": None if rows_of is None or lookup is None
            else (rows_of[0], kept, lookup),
        }
        return Forward(output, final, cache)

    def _signature(self) -> str:
        """What a forward result must come from for this layer's backward to read its tape:
        everything that sets the tape's layout or meaning (an LSTM's backward on a GRU's tape
        stopped with KeyError: 'ifgo'; one on a projecting LSTM's, or a plain LSTM's on a
        layer-normalised one's, wrote outside the compiled loops' arrays: heap corruption)."""
        initial = self.initial_state if isinstance(self.initial_state, str) else "constant"
        extras = [f"{k}={v}" for k, v in (("proj_size", self.proj_size),
                  ("zoneout", self.zoneout), ("recurrent_dropout", self.recurrent_dropout),
                  ("merge", self.merge)) if v not in (0, 0.0, (0.0, 0.0), "concat")]  # fmt: skip
        return (f"{self.cell!r}, {self.num_layers} layer(s) of "
                f"{self.input_size} → {self.hidden_size}, {len(self.directions)} direction(s), "
                f"{'batch-first' if self.batch_first else 'time-major'}, "
                f"{np.dtype(self.dtype).name}, initial state {initial}"
                + "".join(", " + e for e in extras))  # fmt: skip

    def _shared_states(self, T: int, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forward states, reverse states, output) of a bidirectional layer in one array, so
        that each direction's loop writes its outputs straight into its half of the layer's
        output (T, B, 2H) and no concatenation copies them (nor keeps them twice: 2 units of
        (T, B, H) less per layer in a training step).

        One flat array of (T + 2) rows of (B, 2H), plus H values: the forward direction's
        states h_0..h_T are rows 0..T, columns :H; the reverse direction's h_T..h_0 (its
        h_0 last) are rows 1..T + 1, columns H:; the output is rows 1..T. The H spare values
        at the end let rnnlab.fast view the reverse states' rows as whole rows of 2H."""
        H, dt = self.carry_size, self.dtype  # the states' width: P with a projection
        row = B * 2 * H
        flat = parallel.empty(((T + 2) * row + H,), dt)
        wide_fwd = flat[: (T + 1) * row].reshape(T + 1, B, 2 * H)
        wide_rev = flat[row + H : row + H + (T + 1) * row].reshape(T + 1, B, 2 * H)
        out = flat[row : (T + 1) * row].reshape(T, B, 2 * H)
        return wide_fwd[:, :, :H], wide_rev[:, :, :H], out

    def _directions_at_once(
        self, jobs: Sequence[Callable[[], R]], X: np.ndarray, inference: bool = False
    ) -> list[R]:
        """Run the jobs of this layer's directions over X (T, B, I), at once on two threads
        where that pays (rnnlab.fast.parallel.concurrently: by the products' FLOPs and, unless the
        per-step products take their weight packed, the bytes of the gates of one step)."""
        T, B, I = X.shape
        H, P = self.hidden_size, self.carry_size
        GH = self.cell.gates * H
        flops = 2 * T * B * (GH * (I + P) + P * H * bool(self.proj_size))
        packed = recurrence.packs_step_weights(self.cell, (P, GH), X.dtype, inference)
        return parallel.concurrently(jobs, flops, 0 if packed else B * GH * X.itemsize)

    def _merge(self, ys_dirs: list[np.ndarray], concat: np.ndarray) -> np.ndarray:
        if len(ys_dirs) == 1 or self.merge == "concat":
            return concat
        if self.merge == "sum":
            summed: np.ndarray = ys_dirs[0] + ys_dirs[1]
            return summed
        p = self.params  # readout: o_t = V h_t + V' h'_t + c
        T, B, H = ys_dirs[0].shape
        out = parallel.matmul(ys_dirs[0].reshape(T * B, H), p["readout_weight"].T)
        out += parallel.matmul(ys_dirs[1].reshape(T * B, H), p["readout_weight_reverse"].T)
        out += p["readout_bias"]
        return out.reshape(T, B, -1)

    @parallel.sessioned
    def backward(
        self,
        f: Forward,
        d_output: Any,
        d_state: Any = None,
        *,
        input_grad: bool = True,
        retain_tape: bool = False,
        overwrite_d_output: bool = False,
        rows_of: tuple[Any, Any] | None = None,
        check: bool = True,
    ) -> Backward:
        """BPTT from ∂L/∂output (and ∂L/∂final state). `input_grad=False` skips ∂L/∂x (one
        GEMM over all steps; Backward.input is then None) when x is data, not a parameter's
        output, as PyTorch skips it for an input that does not require a gradient.

        `check=False`: d_output is not checked finite (its shape and dtype are): a model
        handing on a gradient it computed and checked itself (Sequential, which reports a
        NaN or inf from a module above as divergence), as forward's `check` is about x.

        `rows_of=(table, ids)` says the forward's x was table[ids], an Embedding's output
        (table (V, input_size) its weight, ids its integer input, in x's layout): the result
        then carries ∂L/∂table (V, input_size) in Backward.table (with input_grad) and no
        ∂L/∂x, and where the compiled loops run (and the batch's distinct ids are few enough
        for the loop's per-thread sums, fast.sums_by_id_fit) the first layer's W_ih gradient
        and ∂L/∂table come from its pre-activation gradients summed by id, two products of
        the batch's distinct ids' rows instead of two over every step and the embedding's own
        sum by id (recurrence.Lookup). The caller vouches for the ids; the table gives the
        gradient's shape (its values may have changed since the forward pass). Sequential
        passes it for an Embedding followed by a Recurrent.

        A forward result serves one backward pass, as PyTorch's graph does: BPTT turns the
        saved gates of an LSTM or GRU into their gradients in place, so one (T, B, G·H) array
        holds both. `retain_tape=True` keeps the tape for another backward pass (it then
        works on a copy of the gates).

        `overwrite_d_output=True` gives d_output up (after the call it holds garbage): an
        Elman layer then writes its pre-activation gradients over it, one (T, B, H) array
        less at the peak of a training step, when d_output is a temporary such as a loss's
        gradient (the trainer passes it so). It takes effect where d_output, read
        time-major, has evenly spaced rows with a contiguous last axis: as a loss computed
        from `output` returns it (NumPy keeps `output`'s memory order), either half of a
        bidirectional one too. Where the top layer of a unidirectional stack takes inputs as
        wide as d_output's (every layer above the first; a one-layer module with I = H), its
        ∂L/∂x goes over a C-contiguous time-major d_output once BPTT has read it (for the
        one-layer module Backward.input is then d_output's memory). The layers below the
        top, which read ∂L/∂input of the layer above (this method's own array), are always
        written over. A d_output that shares memory with what BPTT reads (`f.output`, a view
        of the states, as the gradient of ½‖y‖²; the input itself) is never written over,
        given up or not."""
        _checks.booleans(input_grad=input_grad, retain_tape=retain_tape,
                         overwrite_d_output=overwrite_d_output, check=check)
        cache = getattr(f, "cache", None)
        if not isinstance(cache, dict) or cache.get("layer") != (self._signature(),
                                                                 self.cell.key):
            _checks.fail("f", f"the result of this layer's forward ({self._signature()})",
                         "the result of another module's forward" if isinstance(f, Forward)
                         else _checks.describe(f))  # fmt: skip
        L, D, H, dt = self.num_layers, len(self.directions), self.carry_size, self.dtype
        Hc = self.hidden_size  # c's width (H is h's: P with a projection)
        tapes, m = cache["tapes"], cache["mask"]
        if tapes is None:
            _checks.fail(
                "f",
                "the result of a forward pass that kept its tape",
                "one computed with grad=False",
                "Run forward again without grad=False to backpropagate.",
            )
        if any(tape.consumed for tape in tapes):
            _checks.fail(
                "f",
                "a forward result that no backward pass has used yet",
                "one an earlier backward pass used (its saved gates now hold gradients)",
                "Run forward again, or call backward with retain_tape=True before the last "
                "backward pass of the same forward result.",
            )
        T, B = tapes[0].X.shape[:2]
        lookup = None if rows_of is None else (_forward_lookup(cache, rows_of)
                                               or self._lookup(rows_of, tapes[0].X))
        given = d_output
        d_output = _checks.float_array(d_output, "d_output", shape=f.output.shape, dtype=dt,
                                       finite=check)  # fmt: skip
        ours = overwrite_d_output or d_output is not given  # (a converted copy is ours)
        dO = np.swapaxes(d_output, 0, 1) if self.batch_first else d_output  # (T, B, F)
        dh_n, dc_n = self._final_state_grads(d_state, L * D, B)
        grads: dict[str, np.ndarray] = {}

        # Undo the merge: gradients of the last layer's per-direction outputs, and whether
        # BPTT may write over them (never over one array both directions read)
        free = ours
        if D == 1:
            dys_dirs = [dO]
        elif self.merge == "concat":
            dys_dirs = [dO[:, :, :H], dO[:, :, H:]]
        elif self.merge == "sum":
            dys_dirs = [dO, dO]
            free = False
        else:
            if m is not None:
                dO = np.where(m[:, :, None], dO, 0.0)
            p, (yf, yb) = self.params, cache["ys_last"]
            dO2 = dO.reshape(T * B, -1)
            grads["readout_weight"] = parallel.matmul(dO2.T, yf.reshape(T * B, H))
            grads["readout_weight_reverse"] = parallel.matmul(dO2.T, yb.reshape(T * B, H))
            grads["readout_bias"] = dO2.sum(axis=0)
            dys_dirs = [
                parallel.matmul(dO2, p[name]).reshape(T, B, H)
                for name in ("readout_weight", "readout_weight_reverse")
            ]
            free = True

        d_h0 = np.zeros((L * D, B, H), dt)
        d_c0 = np.zeros((L * D, B, Hc), dt) if self.cell.has_c else None
        dX = None
        for k in range(L - 1, -1, -1):
            dX = None
            jobs = [
                functools.partial(
                    recurrence.backward,
                    self.cell,
                    self._layer_params(k, sfx),
                    tapes[k * D + d],
                    dys_dirs[d],
                    dh_n[k * D + d],
                    None if dc_n is None else dc_n[k * D + d],
                    need_dX=k > 0 or input_grad,
                    retain_tape=retain_tape,
                    overwrite_dys=free,
                    lookup=lookup if k == 0 else None,
                )
                for d, sfx in enumerate(self.directions)
            ]
            done = self._directions_at_once(jobs, tapes[k * D].X)
            for d, sfx in enumerate(self.directions):
                j = k * D + d
                dXd, g, dh0, dc0 = done[d]
                if dXd is not None:
                    dX = dXd if dX is None else dX + dXd
                grads[f"weight_ih_l{k}{sfx}"] = g.W_ih
                grads[f"weight_hh_l{k}{sfx}"] = g.W_hh
                grads[f"bias_ih_l{k}{sfx}"] = g.b_ih
                grads[f"bias_hh_l{k}{sfx}"] = g.b_hh
                # g.q, g.W_hr, dc0: arrays when the cell has extra parameters, a projection, a
                # cell state (the Optional fields' invariants, which mypy cannot see)
                for name, row, rows in self.cell.extra_rows:
                    grads[f"{name}_l{k}{sfx}"] = g.q[row : row + rows].reshape(-1)  # type: ignore[index]
                if self.proj_size:
                    grads[f"weight_hr_l{k}{sfx}"] = g.W_hr  # type: ignore[assignment]
                d_h0[j] = dh0
                if d_c0 is not None:
                    d_c0[j] = dc0
                if self.initial_state == "learned":
                    # a state given to forward replaced the learned one, which then gets 0
                    used = not cache["given_state"]
                    grads[f"h0_l{k}{sfx}"] = dh0.sum(axis=0) if used else np.zeros(H, dt)
                    if d_c0 is not None:
                        grads[f"c0_l{k}{sfx}"] = dc0.sum(axis=0) if used else np.zeros(Hc, dt)  # type: ignore[union-attr]
            if cache["drops"][k] is not None and dX is not None:
                dX = dX * cache["drops"][k]
            if k > 0:  # dX is an array: need_dX holds below the first layer
                dys_dirs = [dX] if D == 1 else [dX[:, :, :H], dX[:, :, H:]]  # type: ignore[index]
                free = True  # made here, read by nothing else

        d_init = (d_h0, d_c0) if self.cell.has_c else d_h0
        ordered = {name: grads[name] for name in self.params}
        if lookup is not None:  # dX is ∂L/∂table (V, I), both directions' summed
            return Backward(None, d_init, ordered, table=dX)
        dx = np.swapaxes(dX, 0, 1) if self.batch_first and dX is not None else dX
        return Backward(dx, d_init, ordered)

    def _lookup(self, rows_of: Any, X: np.ndarray) -> recurrence.Lookup:
        """backward's rows_of as recurrence.Lookup, checked against the input the forward
        pass read (X (T, B, I), time-major): ids under which that input's rows differ (it
        was not gathered by them) would give wrong gradients without a word. The table's
        values are not compared: it may have changed since the forward pass (an update
        between it and the backward, a second backward of a retained tape), and BPTT reads
        the forward's rows, not the table (review 77)."""
        if not isinstance(rows_of, (tuple, list)) or len(rows_of) != 2:
            _checks.fail("rows_of", "a pair (table, ids)", _checks.describe(rows_of))
        table = _checks.float_array(rows_of[0], "rows_of[0] (table)", ndim=2, finite=False)
        if table.dtype != self.dtype or table.shape[1] != self.input_size:
            _checks.fail("rows_of[0] (table)", f"a {self.dtype} array of {self.input_size} "
                         "columns (input_size)", f"{table.dtype} {table.shape}")  # fmt: skip
        T, B = X.shape[:2]
        layout = (B, T) if self.batch_first else (T, B)
        ids = _checks.int_array(rows_of[1], "rows_of[1] (ids)", ndim=2)
        if ids.shape != layout:
            _checks.fail("rows_of[1] (ids)", f"an array of shape {layout}, the input's steps",
                         f"shape {ids.shape}")  # fmt: skip
        _checks.token_ids(ids, "rows_of[1] (ids)", table.shape[0])
        lookup = recurrence.Lookup(table, ids.T if self.batch_first else ids)
        _, first, which = lookup.groups
        rows = X[first // B, first % B][which].reshape(X.shape)  # each id's first row, everywhere
        # (equal_nan only where the plain comparison fails: some 15x as long, bench/README.md
        # "The embedding folded into layer 1")
        if not np.array_equal(rows, X) and not np.array_equal(rows, X, equal_nan=True):
            _checks.fail("rows_of", "the table and ids whose rows the forward pass read",
                         "an input whose rows differ under one id")  # fmt: skip
        return lookup

    def _final_state_grads(
        self, d_state: Any, n: int, B: int
    ) -> tuple[list[None] | np.ndarray, list[None] | np.ndarray | None]:
        H, dt = self.carry_size, self.dtype
        if d_state is None:
            return [None] * n, None if not self.cell.has_c else [None] * n
        shape = (n, B, H)
        if self.cell.has_c:
            if not isinstance(d_state, (tuple, list)) or len(d_state) != 2:
                _checks.fail(
                    "d_state", "a pair (dh_n, dc_n) for an LSTM", _checks.describe(d_state)
                )
            dh = d_state[0]
            dc = d_state[1]
            dh = (
                [None] * n
                if dh is None
                else _checks.float_array(dh, "d_state[0]", shape=shape, dtype=dt)
            )
            dc = (
                [None] * n
                if dc is None
                else _checks.float_array(
                    dc, "d_state[1]", shape=(n, B, self.hidden_size), dtype=dt
                )  # fmt: skip
            )
            return dh, dc
        self._not_a_pair(d_state, "d_state", "dh_n")
        return _checks.float_array(d_state, "d_state", shape=shape, dtype=dt), None

    def _not_a_pair(self, value: Any, name: str, what: str) -> None:
        """Refuse an LSTM's (h, c) pair given to a layer without a cell state (nn.GRU's
        user passing (h0, None), or code written for either kind): it was read as nested
        lists, "ragged nested lists (a tuple of length 2)" or a shape of 4 axes. A pair of
        3-axis arrays (or None) is never one state: its list would have 4 axes."""
        if isinstance(value, (tuple, list)) and len(value) == 2 and any(
            v is None or getattr(v, "ndim", 0) == 3 for v in value
        ):
            _checks.fail(name, f"one array ({what}) for {self.cell.describe()}, which has no "
                         "cell state", f"a pair ({_checks.describe(value[0])}, "
                         f"{_checks.describe(value[1])})")  # fmt: skip

    # ----------------------------------------------------------------- state dicts
    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """`state`'s arrays (NumPy arrays or torch tensors, PyTorch's names) into `params` by
        name, all or nothing; `strict=False` skips names either side lacks, as PyTorch's.
        What is refused, and what cannot be told (a square matrix transposed): load_params."""
        if isinstance(state, dict):
            self._other_cell(state)
        load_params(self.params, state, strict)

    def _other_cell(self, state: dict[str, Any]) -> None:
        """Refuse the weights of another kind of cell by what they are: a GRU's and an LSTM's
        share PyTorch's names, and differ by their number of gate blocks (W_ih's rows) of
        the hidden size (W_hh's columns, or W_hr's with a projection)."""
        ih, hh, hr = (getattr(state.get(f"weight_{n}_l0"), "shape", None)
                      for n in ("ih", "hh", "hr"))  # fmt: skip
        want = self.params["weight_ih_l0"].shape
        if ih is None or hh is None or len(ih) != 2 or len(hh) != 2 or ih[0] == want[0]:
            return
        H = self.hidden_size
        if (hr[1] if hr is not None and len(hr) == 2 else hh[1]) != H or ih[0] % H:
            return  # (another hidden size: the shapes say it)
        blocks = ih[0] // H
        kinds = {1: "an Elman RNN's", 3: "a GRU's", 4: "an LSTM's"}
        if blocks in kinds and hh[0] == ih[0] and blocks != self.cell.gates:
            _checks.fail("state['weight_ih_l0']", f"an array of shape {tuple(want)}",
                         f"shape {tuple(ih)}", f"Its {ih[0]} rows are {blocks} gate "
                         f"block{'s' if blocks > 1 else ''} of hidden_size {H}: "
                         f"{kinds[blocks]} weights, where this layer's cell, "
                         f"{self.cell.name}, has {self.cell.gates}.")  # fmt: skip


def load_params(
    params: dict[str, np.ndarray], state: dict[str, Any], strict: bool = True
) -> None:
    """Copy arrays from `state` (a PyTorch state_dict, its tensors as they are or as NumPy
    arrays) by name. `state` is a dict of array-likes: typed dict[str, Any], as a
    dict[str, ArrayLike] would refuse a dict[str, np.ndarray] (a dict's value type is
    invariant), state_dict()'s own.

    What cannot be checked, as names and shapes are the same: a square matrix given
    transposed (weight_hh_l0 of an Elman layer, H × H; weight_ih_l0 when input and hidden
    sizes are equal; a square Linear); PyTorch's state_dicts are never transposed, but
    weights from a framework that stores x·K (Keras, JAX) must be transposed first, as
    rnnlab.keras does. Nor the cell's function: nn.GRU's weights load into the original
    GRU (reset_after=False), a tanh RNN's into a relu one. Compare the outputs of both
    models on one batch."""
    _checks.boolean(strict, "strict")  # (every module's load: "no" was strict, 0 was not)
    if not isinstance(state, dict):
        _checks.fail("state", "a dict of arrays keyed by parameter name", _checks.describe(state))
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if strict and (missing or unexpected):
        _checks.fail(
            "state",
            "a dict with exactly this module's parameter names",
            f"missing {missing} and unexpected {unexpected}",
            _under_prefix(missing, unexpected)
            or (_NO_BIAS if not unexpected and all(
                str(k).rsplit(".", 1)[-1].startswith(("bias_ih", "bias_hh")) for k in missing)
                else ""),  # (a recurrent layer's biases only: a Linear builds bias=False)
        )
    # All or nothing: every array is checked before the first is copied, so a refused state
    # leaves the module as it was.
    checked: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if name not in params:
            continue
        arr = _as_array(value, f"state[{name!r}]")
        if arr.dtype.kind not in "fiu":  # complex, bool, object, str: not a weight
            _checks.fail(f"state[{name!r}]", "an array of real numbers", f"dtype {arr.dtype}")
        if arr.dtype.kind in "iu" and not isinstance(value, (list, tuple)):
            # An array or tensor that chose an integer dtype is no float weight: a quantized
            # one (its scale is elsewhere), a counter or token ids under a weight's name.
            # Nested lists of Python numbers choose no dtype, and load as their values.
            _checks.fail(f"state[{name!r}]", "an array of floating-point weights",
                         f"dtype {arr.dtype}", "Integer weights are quantized ones or no "
                         "weights; cast them (.float(), .astype(np.float32)) if their values "
                         "are the weights.")  # fmt: skip
        if arr.shape != params[name].shape:
            _checks.fail(
                f"state[{name!r}]", f"an array of shape {params[name].shape}", f"shape {arr.shape}"
            )
        checked[name] = _checks.float_array(
            _cast_weight(arr, params[name].dtype, f"state[{name!r}]"), f"state[{name!r}]")
    for name, arr in checked.items():
        params[name][...] = arr


def _under_prefix(missing: list[str], unexpected: list[Any]) -> str:
    """The way to the missing names when `state` holds every one of them under one prefix:
    a torch module's own state_dict is keyed by its attributes ('rnn.weight_ih_l0'), and a
    DataParallel's by 'module.', which a long list of missing and unexpected names hides."""
    found: dict[str, set[str]] = {}
    for key in unexpected:
        if not isinstance(key, str):
            continue
        for i, char in enumerate(key):
            if char == "." and key[i + 1 :] in missing:
                found.setdefault(key[: i + 1], set()).add(key[i + 1 :])
    for prefix, names in found.items():
        if len(names) == len(missing):
            return (f"They are in `state` under {prefix!r}: load {{k.removeprefix({prefix!r}): "
                    f"v for k, v in state.items() if k.startswith({prefix!r})}}.")
    return ""


def _cast_weight(arr: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """`arr` as the module's `dtype`, refusing a finite value beyond its range (a float64
    weight of 1e300 into a float32 module), which the cast would make inf without a word
    but NumPy's RuntimeWarning, and which is no NaN or inf to be refused as one."""
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= dtype.itemsize:
        return arr.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        cast = arr.astype(dtype)
    over = np.isinf(cast) & np.isfinite(arr)
    if over.any():
        at = tuple(int(i) for i in np.argwhere(over)[0])
        big = float(np.finfo(dtype).max)
        _checks.fail(name, f"within {dtype}'s range (|w| ≤ {big:.3g}: the module is {dtype})",
                     f"{float(arr[at]):g}" + (f" at index {at}" if at else ""))  # fmt: skip
    return cast


def _as_array(value: Any, name: str) -> np.ndarray:
    """`value` as a NumPy array. A torch tensor goes through torch itself, detached and on the
    CPU: NumPy cannot take one that requires grad, nor bfloat16, which has no NumPy type and
    becomes float32 first (exactly: its values are float32's with fewer mantissa bits)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
            t = value.detach().cpu()  # (a meta tensor, which holds no values, refuses)
            if str(t.dtype) == "torch.bfloat16":
                t = t.float()
            value = t
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        # a ragged list, a tensor of another dtype or with no values (on the meta device)
        _checks.fail(name, "an array of real numbers (a NumPy array, a torch tensor or nested "
                     "lists of equal lengths)", _checks.describe(value))  # fmt: skip


def RNN(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    nonlinearity: str = "tanh",
    init: str = "uniform",
    **kwargs: Any,
) -> Recurrent:
    """Elman RNN, as PyTorch's nn.RNN: h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),
    φ = tanh or relu. `init="irnn"` with `nonlinearity="relu"` gives the IRNN of Le, Jaitly &
    Hinton (2015); `init="orthogonal"` orthogonal recurrent weights. The other keywords are
    Recurrent's."""
    _layer_keywords(kwargs, "RNN")
    cell = ElmanCell(nonlinearity, init=init)
    return Recurrent(cell, input_size, hidden_size, num_layers, **kwargs)


def LSTM(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    forget_bias: float | None = None,
    init: str = "uniform",
    peephole: bool = False,
    coupled: bool = False,
    cell_clip: float | None = None,
    layer_norm: bool = False,
    **kwargs: Any,
) -> Recurrent:
    """LSTM, as PyTorch's nn.LSTM (gate order i, f, g, o; `proj_size` as PyTorch's, with
    `weight_hr_l{k}`). `forget_bias=1.0` sets the forget gate's bias; `peephole`, `coupled`,
    `cell_clip`, `layer_norm` are the variants of rnnlab.cells.lstm. The other keywords are
    Recurrent's (proj_size, recurrent_dropout and zoneout among them)."""
    _layer_keywords(kwargs, "LSTM")
    cell = LSTMCell(forget_bias=forget_bias, init=init, peephole=peephole, coupled=coupled,
                    cell_clip=cell_clip, layer_norm=layer_norm)  # fmt: skip
    return Recurrent(cell, input_size, hidden_size, num_layers, **kwargs)


def GRU(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    reset_after: bool = True,
    init: str = "uniform",
    **kwargs: Any,
) -> Recurrent:
    """GRU; `reset_after=True` is PyTorch's nn.GRU, `reset_after=False` the original paper's
    form. The other keywords are Recurrent's."""
    _layer_keywords(kwargs, "GRU")
    cell = GRUCell(reset_after=reset_after, init=init)
    return Recurrent(cell, input_size, hidden_size, num_layers, **kwargs)


_NO_BIAS = ("A PyTorch layer built with bias=False computes what one with zero biases does: "
            "load its state_dict with strict=False, then zero the biases "
            "(layer.params[name][...] = 0 for each bias_ name); training would learn them.")

_CELL_OPTIONS = {
    "nonlinearity": "RNN",
    "forget_bias": "LSTM",
    "peephole": "LSTM",
    "coupled": "LSTM",
    "cell_clip": "LSTM",
    "layer_norm": "LSTM",
    "reset_after": "GRU",
}


def _layer_keywords(kwargs: dict[str, Any], ctor: str) -> None:
    """Refuse a keyword neither the constructor nor Recurrent takes, naming who does.
    PyTorch's `bias` is taken out of `kwargs`: True is what every rnnlab layer has (code
    written for nn.LSTM passes it), and False, which rnnlab's layers do not build, is refused
    with the way to the same function (the list of keywords said nothing of biases)."""
    positional = ("self", "cell", "input_size", "hidden_size", "num_layers")
    known = [k for k in inspect.signature(Recurrent.__init__).parameters if k not in positional]
    if "bias" in kwargs:
        bias = kwargs.pop("bias")
        if bias is not True and bias is not np.True_:
            _checks.fail("bias", f"True for {ctor} (its layers always have biases)",
                         _checks.describe(bias), _NO_BIAS)  # fmt: skip
    for name in kwargs:
        if name in known:
            continue
        owner = _CELL_OPTIONS.get(name)
        if owner is not None:
            _checks.fail(name, f"None for {ctor} (it is an option of {owner})",
                         _checks.describe(kwargs[name]))  # fmt: skip
        _checks.fail(
            f"{ctor}(...)",
            "called with the layer's keywords: " + ", ".join(known),
            f"an unknown keyword {name!r}",
            "A cell of your own goes to Recurrent(cell, ...)." if name == "cell" else "",
        )
