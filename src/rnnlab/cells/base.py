"""The cell protocol: what a recurrent cell states once, and what the library does with it.

A cell is its equations. It declares

- its shape: `gates` (G, the blocks of H rows stacked in W_ih, W_hh, b_ih, b_hh, PyTorch's
  layout), `has_c` (a carry of (h, c), or h alone), `tape` (the blocks of H values per step
  its backward reads: gate activations and the like), `extra` (its own parameters, e.g.
  peephole weights: a name for H values, (name, n) for n·H);
- its recurrent products, `products`: which blocks of W_hh's rows multiply what, in order.
  ((0, G), None) is the one product h_{t-1} W_hhᵀ; the original GRU has two, the second on a
  block of its own tape (r ⊙ h_{t-1}). One or two products, the first on h_{t-1}, their
  blocks disjoint (a block of W_hh gets its gradient from one block of da). A gate block no
  product covers has no recurrence: its rows of W_hh and b_hh multiply nothing, get a zero
  gradient, and the step must not read b_hh there. A cell without a recurrent matrix (an
  IndRNN's u ⊙ h_{t-1}, u an `extra`) still has one product: leave `ha` out of the step,
  declare hh_own = (0,) with da_h zero, and read no b_hh; W_hh and b_hh stay at their
  initial values (zero them in `init`), and the product is still computed every step;
- its step, row by row, in the vocabulary of rnnlab.cells.pointwise: `forward` (one
  function per product, in `stages`) and `backward` (`backward_stages`: one per product,
  listed in the same order as `stages`; BPTT runs them last first);
- whether its steps may run in place (`in_place`), and where W_hh sees another gradient
  than W_ih (`hh_own`);
- optionally, for rnnlab.diagnostics.gate_saturation, where its gate activations lie after a
  step and what squashed them (`gate_activations`): only the cell knows which tape blocks
  hold σ(z) and which z, a product's source or anything else.

The library gives it the rest (rnnlab.recurrence on NumPy, rnnlab.fast compiled, from the
same functions): the input projection for all steps, XA = X W_ihᵀ, before the loop; the
loop over time in either direction; the products; masks (a masked step keeps the carry and
gets no gradient); initial states; the weight gradients as a few large products after the
loop; depth, directions, checkpointing and gradient checks (rnnlab.layers).

Step signatures (every argument a row, (n,) in the compiled loops and (B, n) on NumPy; q,
the cell's extra parameters one after the other, is one row of n_extra·H values for the
whole batch; a step loops over units with `for j in units(h)`, never over range(n) or
len(h), which count the batch's rows on NumPy):

    forward stage k:  f(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape)
        xa    (G·H)  x_t W_ihᵀ, without b_ih          ha   product k's result, without b_hh:
        b_ih, b_hh  (G·H) the whole biases, every          (hi − lo)·H wide, its blocks only;
              block (cut out the ones a stage adds)    the stage may overwrite it (scratch)
        q     (n_extra·H) the cell's extra parameters, in the order of `extra`
        writes h (and c, when has_c) and the tape row; may write tape blocks a later
        product reads (`products`). h, c and the tape row hold old memory until a stage
        writes them: read a tape block only after an earlier stage (or this one) wrote it
    backward stage k (last stage first): f(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape,
                                            da, da_h, dq)
        dh    in: ∂L/∂h_t; out: the part of ∂L/∂h_{t-1} that does not go through W_hh
              (the library adds da_W_hh · W_hh afterwards): write it in every step, zero(d)
              where h_t reads h_{t-1} only through the products (left as it came,
              ∂L/∂h_t is passed on as ∂L/∂h_{t-1}). With two stages the second
              (run first) turns ∂L/∂h_t into its part of ∂L/∂h_{t-1}, and the first gets
              that, not ∂L/∂h_t, and adds its own (the MGU's dsrc ⊙ f)
        dc    in: ∂L/∂c_t; out: ∂L/∂c_{t-1} (written, as dh)
        dsrc  ∂L/∂(the tape block the next product took), for a stage followed by a product
              on its tape; else an empty row
        da    out: ∂L/∂ pre-activations as W_ih sees them (G·H); a stage writes its blocks,
              and may leave a partial sum in a block an earlier stage finishes (the MGU's
              ∂L/∂f from the candidate's stage, finished by the gate's: da persists between
              the stages of a step). An in_place cell finds its tape's first G blocks here
              on entry. b_ih's gradient is the sum of da; b_hh's that of what W_hh sees
        da_h  out: where W_hh (and b_hh) see another gradient: the blocks `hh_own`, in that
              order
        dq    (n_extra·H) in/out: add this step's ∂L/∂q (dq[j] = dq[j] + ...: it holds
              the later steps' sums)

For cells without a cell state, c_prev, c and dc are empty rows. Constants are `one(x)`,
`zero(x)`; nothing is allocated (rnnlab.cells.pointwise has the rules).

A forward stage writes h, c and its tape row (ha is scratch) and only reads the rest; a
backward stage writes dh, dc, da, da_h and dq (dsrc is scratch) and only reads the rest, h,
c and the tape included. What they read is the layer's own: its parameters (b_ih, b_hh, q),
the states kept for BPTT and the caller (h_prev, c_prev, h, c), the tape (BPTT, and W_hh's
gradient after the loop, read it; an in-place cell's gradients go over it through da alone)
and xa (compiled after an Embedding, the steps of one id share its row). A step is a function
of its arguments: no random draws, nothing kept between calls (checkpointing and gradcheck
run the forward again).

rnnlab.layers.Recurrent runs a cell's steps once per cell (rnnlab.cellcheck) on NumPy in
float64, blockwise and as the compiled loops run them (a batch row at a time, unit by unit,
in place), and
refuses, naming the cell and the step, one that reaches past the rows it declares, writes
an argument it only reads, differs between two runs or between the two paths, leaves a
gradient unwritten, or whose backward is not its forward's derivative (one step against
central differences: da, W_hh's, dq, dh, dc; exact_gradient = False for a deliberate
surrogate). rnnlab.gradcheck(layer, x) checks whole sequences.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import NoReturn

import numpy as np

Product = tuple[tuple[int, int], int | None]
"""((first block, end block) of W_hh's rows, source): the source is h_{t-1} (None) or the
tape block that many H columns in."""

Row = np.ndarray
"""An argument of a step function: (B, n) on NumPy, (n,) in the compiled loops."""

ForwardStage = Callable[[Row, Row, Row, Row, Row, Row, Row, Row, Row, Row], None]
"""f(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape): one forward stage (see above)."""

BackwardStage = Callable[[Row, Row, Row, Row, Row, Row, Row, Row, Row, Row, Row, Row], None]
"""f(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq): one backward stage."""

Steps = tuple[tuple[ForwardStage, ...], tuple[BackwardStage, ...]]
"""A cell's (stages, backward_stages)."""

CellKey = tuple[
    tuple[ForwardStage, ...],
    tuple[BackwardStage, ...],
    tuple[Product, ...],
    int,
    tuple[int, ...],
    bool,
    bool,
]
"""Cell.key: (stages, backward_stages, products, gates, hh_own, grads_over_tape, in_place)."""

GateActivation = tuple[str, str, int | str, str]
"""(symbol, name, place, activation) of one gate: place is the tape block that holds the
activation once the step is done, or "h" for the cell's output h_t itself."""

ACTIVATIONS: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu": (0.0, float("inf")),
}
"""The functions a gate activation may be declared with, and their ranges: what "near the
bottom" and "near the top" mean (relu has no top, so nothing to saturate at)."""


def describe_range(activation: str) -> str:
    """An activation's range as messages write it: "[−1, 1]", "[0, ∞)"."""
    lo, hi = ACTIVATIONS[activation]
    return f"[{lo:g}, {hi:g}]".replace("-", "−").replace("inf]", "∞)")


class Cell:
    """Base of the cells; a subclass sets the attributes below and its step functions.

    Options of a cell live on the cell (`LSTMCell(peephole=True)`), and a cell instance is
    what rnnlab.layers.Recurrent takes: `Recurrent(LSTMCell(coupled=True), 32, 64)`.
    """

    # a class attribute for most cells (a custom cell sets `name = "mgu"`); a cell whose name
    # depends on its options sets it in __init__ (ElmanCell: "rnn", "relu" or "irnn")
    name: str = "cell"
    gates: int = 1
    has_c: bool = False
    tape: int = 0
    extra: tuple[str | tuple[str, int], ...] = ()
    """The cell's own parameters: a name for an (H,) vector, or (name, n) for one of n·H
    values; q (and dq) hold them one after the other, in this order."""
    products: tuple[Product, ...] = (((0, 1), None),)
    in_place: bool = False
    """True when the steps run in place, for memory: the forward step reads xa at j before it
    writes the tape or h at j (the loops may put the input projection there: the tape's
    first G blocks, or a one-gate cell's outputs); and the backward step finds the tape's
    first G blocks in da, and the next len(hh_own) in da_h, on entry, and replaces them with
    the gradients (reading each place before writing it, and writing each through the same
    view it read it from). The compiled BPTT then works on the tape itself
    (`grads_over_tape`): no (T, B, G·H) array beside it. (A loop that reads one view and
    writes another over the same memory runs scalar: LLVM's overlap check fails.)"""
    hh_own: tuple[int, ...] = ()
    reads_h_prev: bool = True
    """False when the steps read h_{t-1} only through the products (`h_prev` unused): then
    the carry may be a projection of the cell's output (Recurrent's proj_size), whose width
    the steps never see."""
    stages: tuple[ForwardStage, ...] = ()
    backward_stages: tuple[BackwardStage, ...] = ()
    exact_gradient: bool = True
    """False for a cell whose backward is deliberately not its forward's derivative (a
    straight-through estimator, a truncated gradient): Recurrent then does not compare the
    two (it does for every other cell, one step in float64, and refuses a backward that
    disagrees, naming the gradient: dh, dc, dq, da or W_hh's); rnnlab.gradcheck still
    reports the difference."""
    min_hidden: int = 1
    """The smallest hidden size the steps work at (Recurrent refuses a smaller one): a step
    that keeps k > 1 values per row in one H-wide tape block needs H ≥ k."""
    gate_activations: tuple[GateActivation, ...] | None = None
    """Where each gate's activation lies once a step is done, for
    rnnlab.diagnostics.gate_saturation: (symbol, name, place, activation), e.g.
    ("f", "forget", 0, "sigmoid"), place a tape block or "h" (the cell's output h_t: an
    Elman unit's tanh; rnnlab reads the cell's own h̃_t under a projection or zoneout), and
    activation one of ACTIVATIONS. Point at the squashed values, not the pre-activations:
    a block a step leaves z in, or a product's source, is no gate activation (Recurrent
    runs the step once and refuses a block outside its activation's range). None: not
    declared, and gate_saturation refuses the cell saying so."""

    def __init__(self) -> None:
        """Check the declarations against each other (a cell's author meets these errors).
        A subclass with an __init__ of its own sets its attributes, then calls this one;
        rnnlab.layers.Recurrent checks them again (a subclass may skip this)."""
        self.check()

    def check(self) -> None:
        """Check the declarations against each other and the step functions' signatures
        (TypeError naming the cell's class); Cell.__init__ and Recurrent call it."""
        name = type(self).__name__
        for attr, least in (("gates", 1), ("tape", 0)):  # (sizes: a float or a string failed
            value = getattr(self, attr)  # in a comparison or in NumPy)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                    value < least):
                _refuse(f"{name}.{attr}", f"an integer ≥ {least} (blocks of H values)",
                        _describe(value))  # fmt: skip
        if isinstance(self.min_hidden, bool) or not isinstance(
                self.min_hidden, (int, np.integer)) or self.min_hidden < 1:  # fmt: skip
            _refuse(f"{name}.min_hidden", "an integer ≥ 1 (the smallest H the steps work at)",
                    _describe(self.min_hidden))  # fmt: skip
        for attr in ("has_c", "in_place", "reads_h_prev", "exact_gradient"):  # (a string
            value = getattr(self, attr)  # "False" is true: has_c = "no" asked for a c)
            if not (isinstance(value, (bool, np.bool_)) or (
                    isinstance(value, (int, np.integer)) and value in (0, 1))):  # fmt: skip
                _refuse(f"{name}.{attr}", "True or False", _describe(value))
        for attr in ("hh_own", "products"):  # a list reads as its tuple
            if isinstance(getattr(self, attr), list):
                setattr(self, attr, tuple(getattr(self, attr)))
        if not isinstance(self.hh_own, tuple) or not all(
                isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in self.hh_own):
            _refuse(f"{name}.hh_own", "a tuple of gate indices", _describe(self.hh_own))
        if not isinstance(self.products, tuple) or not all(
                isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], tuple)
                and len(p[0]) == 2 and all(isinstance(k, (int, np.integer)) for k in p[0])
                and (p[1] is None or isinstance(p[1], (int, np.integer))) for p in self.products):
            _refuse(f"{name}.products", "a tuple of ((first, end), source) tuples (source None "
                    "or a tape block)", _describe(self.products))  # fmt: skip
        if not self.stages:
            raise TypeError(f"{name} has no forward step (stages)")
        if len(self.stages) != len(self.products) or len(self.backward_stages) != len(
            self.products
        ):
            raise TypeError(
                f"{name}: one forward and one backward stage per product "
                f"({len(self.products)} products, {len(self.stages)} forward stages, "
                f"{len(self.backward_stages)} backward stages)"
            )
        if not 1 <= len(self.products) <= 2:
            raise TypeError(f"{name}: one or two products a step; got {len(self.products)}")
        if self.products[0][1] is not None:
            raise TypeError(f"{name}: the first product must be on h_{{t-1}} (source None)")
        for (lo, hi), src in self.products:
            if not 0 <= lo < hi <= self.gates:
                raise TypeError(f"{name}: product blocks {(lo, hi)} outside the {self.gates} gates")
            if src is not None and not 0 <= src < self.tape:
                raise TypeError(
                    f"{name}: product source {src} is not one of {self.tape} tape blocks"
                )
        if len(self.products) == 2:
            (a, b), (c, d) = (p[0] for p in self.products)
            if max(a, c) < min(b, d):
                raise TypeError(
                    f"{name}: the products {self.products} share W_hh's block(s) "
                    f"{list(range(max(a, c), min(b, d)))}: each block of W_hh's rows takes "
                    "part in one product (its gradient is that block of da, one per step)"
                )
        if any(not 0 <= k < self.gates for k in self.hh_own):
            raise TypeError(f"{name}: hh_own {self.hh_own} outside the {self.gates} gates")
        if len(set(self.hh_own)) != len(self.hh_own):
            _refuse(f"{name}.hh_own", "distinct gate indices (W_hh's block of each takes its "
                    "gradient from one block of da_h)", repr(self.hh_own))  # fmt: skip
        if self.in_place and self.gates <= self.tape < self.gates + len(self.hh_own):
            raise TypeError(
                f"{name}: a cell that runs in place keeps its gates and own blocks on its tape "
                f"(tape ≥ {self.gates + len(self.hh_own)}) or no gates there at all"
            )
        for attr in ("stages", "backward_stages", "extra"):  # a list reads as its tuple
            if isinstance(getattr(self, attr), list):
                setattr(self, attr, tuple(getattr(self, attr)))
        for attr, fns, arity in (
            ("stages", self.stages, FORWARD_ARITY),
            ("backward_stages", self.backward_stages, BACKWARD_ARITY),
        ):
            if not isinstance(fns, tuple):
                _refuse(f"{name}.{attr}", "a tuple of functions", _describe(fns))
            for k, fn in enumerate(fns):
                _check_stage(f"{name}.{attr}[{k}]", fn, arity)
        _check_extra(name, self.extra)
        if isinstance(self.gate_activations, list):  # a list reads as its tuple
            self.gate_activations = tuple(self.gate_activations)
        _check_gate_activations(name, self.gate_activations, self.tape)
        try:
            hash(self.key)
        except TypeError:
            _refuse(f"{name}.products", "a tuple of ((first, end), source) tuples",
                    _describe(self.products), "Cell.key, which the compiled loops are made "
                    "for, must be hashable.")  # fmt: skip

    @property
    def extra_rows(self) -> list[tuple[str, int, int]]:
        """(name, first row, rows) of each extra parameter in q."""
        out, row = [], 0
        for entry in self.extra:
            name, n = (entry, 1) if isinstance(entry, str) else entry
            out.append((name, row, n))
            row += n
        return out

    @property
    def grads_over_tape(self) -> bool:
        """Whether the compiled BPTT writes da (then da_h) over the tape's first blocks."""
        return self.in_place and self.tape >= self.gates + len(self.hh_own)

    @property
    def key(self) -> CellKey:
        """What makes two cells compute alike: the compiled loops are made once per key."""
        return (self.stages, self.backward_stages, self.products, self.gates, self.hh_own,
                self.grads_over_tape, self.in_place)  # fmt: skip

    def init(self, params: dict[str, np.ndarray], H: int, rng: np.random.Generator) -> None:
        """Adjust a direction's freshly drawn parameters (PyTorch's U(−1/√H, 1/√H) for the
        four weights and biases; zeros for `extra`) in place: a cell's own recipe, e.g. the
        IRNN's identity W_hh. Keys: "weight_ih", "weight_hh", "bias_ih", "bias_hh" and the
        names in `extra`. Write into the arrays (`params["u"][...] = rng.uniform(0, 1, H)`,
        cast to the layer's dtype); Recurrent refuses a new key, a removed one, or an
        array replaced by one of another shape or dtype (a float64 np.eye in a float32
        layer)."""

    def describe(self) -> str:
        """The cell's name with its options, for messages and run summaries."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


FORWARD_ARITY = 10
"""The positional parameters of a forward stage (ForwardStage)."""
BACKWARD_ARITY = 12
"""The positional parameters of a backward stage (BackwardStage)."""
_PARAMETERS = {
    FORWARD_ARITY: "(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape)",
    BACKWARD_ARITY: "(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq)",
}
RESERVED = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "bias_hr", "h0", "c0")
"""Names rnnlab.layers.Recurrent gives its own parameters (`{name}_l{k}`): not for `extra`."""


def _refuse(name: str, expected: str, got: str, hint: str = "") -> NoReturn:
    """A declaration refused, in the shape of rnnlab._checks.fail (a TypeError, as the
    other declaration errors of Cell.check)."""
    message = f"`{name}` must be {expected}; got {got} instead."
    raise TypeError(message + (" " + hint if hint else ""))


def _describe(value: object) -> str:
    from rnnlab import _checks

    return _checks.describe(value)


def _check_stage(name: str, fn: object, arity: int) -> None:
    """A step function: a plain Python function of exactly `arity` positional parameters
    (numba compiles and inlines it into the loops; the NumPy loop calls it with them)."""
    expected = (f"a Python function of {arity} positional parameters (any more with a "
                "default)")
    if not isinstance(fn, types.FunctionType):
        _refuse(name, expected, _describe(fn),
                "A step is a function written with def in the vocabulary of "
                "rnnlab.cells.pointwise (rnnlab.cells.base has the protocol).")  # fmt: skip
    if not _takes(fn, arity):
        _refuse(name, expected, f"{fn.__qualname__}{inspect.signature(fn)}",
                f"A {'forward' if arity == FORWARD_ARITY else 'backward'} stage takes "
                f"{_PARAMETERS[arity]}.")  # fmt: skip


@functools.lru_cache(maxsize=256)
def _takes(fn: types.FunctionType, arity: int) -> bool:
    """Whether fn takes `arity` positional parameters, any more of them with a default (a
    constant of the step's own), and nothing else: no *args, **kwargs or keyword-only ones
    (cached: a signature costs ~25 µs, and every cell and layer made checks its steps)."""
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return (len(params) >= arity and all(p.kind in positional for p in params)
            and all(p.default is not inspect.Parameter.empty for p in params[arity:]))


def _check_extra(cell: str, extra: object) -> None:
    """`extra`: names (or (name, n) with n ≥ 1), distinct identifiers none of which is a
    name of the layer's own parameters."""
    expected = "a tuple of names, or (name, n) pairs, of the cell's own parameters"
    if not isinstance(extra, tuple):
        _refuse(f"{cell}.extra", expected, _describe(extra))
    seen: set[str] = set()
    for entry in extra:
        if isinstance(entry, tuple) and len(entry) == 2:
            label, n = entry
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                _refuse(f"{cell}.extra", "(name, n) with n a positive number of H-blocks",
                        _describe(entry))  # fmt: skip
        else:
            label = entry
        if not isinstance(label, str) or not label.isidentifier():
            _refuse(f"{cell}.extra", expected + " (each name a Python identifier)",
                    f"{_describe(entry)} in {extra!r}")  # fmt: skip
        if label in seen:
            _refuse(f"{cell}.extra", "distinct names (each names one parameter)",
                    f"{label!r} twice in {extra!r}")  # fmt: skip
        if label in RESERVED:
            _refuse(f"{cell}.extra", "names other than the layer's own parameters' ("
                    + ", ".join(RESERVED) + ")", f"{label!r} in {extra!r}")  # fmt: skip
        seen.add(label)


def _check_gate_activations(cell: str, declared: object, tape: int) -> None:
    """`gate_activations`: None, or distinct (symbol, name, place, activation) tuples, each
    place a tape block the cell declares or "h", each activation one of ACTIVATIONS."""
    name = f"{cell}.gate_activations"
    if declared is None:
        return
    expected = ("None or a tuple of (symbol, name, place, activation) tuples, place a tape "
                'block or "h"')  # fmt: skip
    if not isinstance(declared, tuple):
        _refuse(name, expected, _describe(declared))
    seen: dict[str, set[object]] = {"symbol": set(), "name": set(), "place": set()}
    for entry in declared:
        if not (isinstance(entry, tuple) and len(entry) == 4 and all(
                isinstance(s, str) and s.strip() for s in entry[:2])):  # fmt: skip
            _refuse(name, expected + " (symbol and name non-empty strings)",
                    f"{_describe(entry)} in {declared!r}")  # fmt: skip
        symbol, long, place, activation = entry
        places = (f'a tape block in [0, {tape}) or "h" (the output h_t)' if tape else
                  '"h" (the output h_t; it declares tape = 0, no tape blocks)')  # fmt: skip
        if (place != "h") if isinstance(place, str) else (
                isinstance(place, bool) or not isinstance(place, (int, np.integer))
                or not 0 <= place < tape):  # fmt: skip
            _refuse(name, f"entries whose place is {places}", f"{_describe(place)} for {symbol!r}")
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            _refuse(name, "entries whose activation is one of " + ", ".join(map(repr, ACTIVATIONS)),
                    f"{_describe(activation)} for {symbol!r}")  # fmt: skip
        for what, value in (("symbol", symbol), ("name", long),
                            ("place", place if isinstance(place, str) else int(place))):
            if value in seen[what]:
                _refuse(name, f"entries of distinct {what}s (one gate each)",
                        f"{value!r} twice in {declared!r}")  # fmt: skip
            seen[what].add(value)


def check_init(init: object, options: tuple[str, ...], what: str) -> str:
    """A cell's `init` option, with the hint that the IRNN recipe is the Elman cell's."""
    if init == "irnn" and "irnn" not in options:
        from rnnlab import _checks

        _checks.fail(
            "init",
            " or ".join(repr(o) for o in options) + f" for {what}",
            "'irnn'",
            "The IRNN initialisation is for RNN(nonlinearity='relu').",
        )
    from rnnlab import _checks

    return _checks.choice(init, "init", options)
