"""The one-time check of a cell Recurrent takes: its declarations (Cell.check), then its
steps run on NumPy, forward and backward, on tiny rows in float64, every way the loops will
run them (whole blocks, unit by unit, one batch row at a time), against the declarations
and against central differences of one step.

A cell of one's own that writes outside the rows it declares, reads what it does not
declare, writes what it should only read, draws random numbers, counts units with range or
len, or whose backward is not its forward's derivative, is refused here, once per cell key,
with the cell, the step and what was expected named: the compiled loops would otherwise
compute it wrong in silence (they check nothing per step). Recurrent calls `accept_cell`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnlab import _checks, recurrence
from rnnlab.cells import Cell, pointwise
from rnnlab.cells.base import ACTIVATIONS, describe_range

_STEPS_RUN: set[tuple[Any, ...]] = set()
"""The cells (by what their steps compute and the rows they declare) _run_steps has run."""


def accept_cell(cell: object) -> Cell:
    """The cell Recurrent takes: a Cell whose declarations hold (Cell.check) and whose steps
    stay inside the rows it declares (_run_steps)."""
    if not isinstance(cell, Cell):
        _checks.fail(
            "cell",
            "a cell (rnnlab.cells: ElmanCell, LSTMCell, GRUCell or your own Cell)",
            _checks.describe(cell),
            "RNN(...), LSTM(...) and GRU(...) build the layer for you.",
        )
    cell.check()  # again: a subclass may skip Cell.__init__, or change a declaration after it
    _run_steps(cell)
    return cell


def _run_steps(cell: Cell) -> None:
    """Run a cell's steps once on NumPy, forward and backward, on a batch of 2 with H = 3 (or
    the cell's min_hidden) in float64, every row exactly as wide as the cell declares
    (h_{t-1} narrower than H when it declares reads_h_prev False, as a projected carry is):
    a step that reaches past its rows (a tape block it did not declare, a c without has_c,
    q without `extra`) raises there, where the compiled loops, which do not check bounds,
    would write over other memory. Every run starts from copies of the step's inputs: a
    step that writes one (a parameter, h_{t-1}, xa, or in the backward h, c and the tape
    that BPTT and W_hh's gradient read later) is refused, and so is one whose second
    blockwise run gives other results (random draws, state kept between calls). Then as
    the compiled loops run them, one batch row at a time (the (n,) rows a step counting
    with range or len was written for) and unit by unit (x[j] a value, not a view of the
    block), and, in place, with da and da_h the tape's own blocks: a step whose results
    differ would give the two paths different gradients.
    The gradients the stages must write start as NaN (compiled, as whatever the memory
    held): one left unwritten shows (not for a cell that runs in place with its gates on its
    tape: its da starts as the gates, and gradcheck is the test there); so do h, c and the
    tape row, which hold old memory in the loops: a forward that reads a value of the step
    before a stage writes it (stages out of order, a product on a block a later stage writes)
    or leaves part of h unwritten shows as NaN in h. A cell that declares
    gate_activations runs its forward step once more, its input projection spread wide: a
    place that keeps a pre-activation shows as a value outside its activation's range
    (gate_saturation would have counted it as saturated). A cell with a gate block no
    product covers runs forward once more with b_hh NaN there: that bias gets no gradient
    (its rows, as W_hh's, multiply nothing), so a step that reads it is refused. Last, unless
    the cell declares exact_gradient False, each gradient one backward step gives (da, W_hh's
    and b_hh's as the library forms them, dq, dh, dc) is compared with central differences
    of the forward step (_step_derivatives): a gradient forgotten (dh or dc passed on as it
    came, dq overwritten, dsrc's share left out) was silently wrong. Once per cell key and
    declared rows (a dozen or two steps on rows of 2 × 3 values); any error becomes a
    ValueError naming the cell and what it did."""
    extra = tuple(cell.extra_rows)
    seen = (type(cell), cell.key, cell.gates, cell.tape, cell.has_c, extra, cell.hh_own,
            cell.reads_h_prev, cell.in_place, cell.min_hidden, cell.gate_activations,
            cell.exact_gradient)  # fmt: skip
    if seen in _STEPS_RUN:
        return
    B, H, G = 2, max(3, cell.min_hidden), cell.gates
    P = H if cell.reads_h_prev else H - 1
    Hc, n_q, n_own = (H if cell.has_c else 0), sum(n for _, _, n in extra), len(cell.hh_own)
    rng = np.random.default_rng(0)

    def rows(*shape: int) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, shape)

    W_hh, W_hr = rows(G * H, P), (None if P == H else rows(P, H))
    q, h_prev, c_prev = rows(n_q * H), rows(B, P), rows(B, Hc)
    xa, b_ih, b_hh, dh0, dc0 = rows(B, G * H), rows(G * H), rows(G * H), rows(B, P), rows(B, Hc)

    given = {"xa": xa, "b_ih": b_ih, "b_hh": b_hh, "q": q, "h_prev": h_prev, "c_prev": c_prev}
    written: dict[str, list[str]] = {}  # forward/backward: the inputs a blockwise run wrote

    def once(aliased: bool, rows: bool = False) -> dict[str, np.ndarray]:
        # h, c and the tape start as NaN: in the loops they are whatever the memory held;
        # `rows`: each batch row apart, (n,) rows as the compiled loops pass them
        own = None if W_hr is None else np.full((B, H), np.nan)
        h, c, tape = np.full((B, P), np.nan), np.full((B, Hc), np.nan), np.full(
            (B, cell.tape * H), np.nan)
        dh, dc, dq = dh0.copy(), dc0.copy(), np.zeros((B, n_q * H))
        da, da_h = np.full((B, G * H), np.nan), np.full((B, n_own * H), np.nan)
        parts: Sequence[int | slice] = range(B) if rows else (slice(None),)
        mine = {k: v.copy() for k, v in given.items()}  # (a step that writes one is refused)
        xa_in, b_ih, b_hh, q, h_prev, c_prev = mine.values()
        if aliased and cell.tape >= G:  # as compiled (recurrence._projection_place): the
            tape[:, : G * H] = xa  # projection lies in the tape's first blocks, or where a
            xa_in = tape[:, : G * H]  # one-gate cell writes h
        elif aliased and G == 1:
            xa_in = own if own is not None else h
            xa_in[...] = xa
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in parts:
                recurrence.step_forward(cell, W_hh, q, xa_in[b], b_ih, b_hh, h_prev[b],
                                        c_prev[b], h[b], c[b], tape[b], W_hr=W_hr,
                                        own=None if own is None else own[b])  # fmt: skip
            out = {"h": h.copy(), "c": c.copy(), "tape": tape.copy()}
            kept = {**out, **({} if own is None else {"h": own.copy()})}  # (h̃_t: the cell's)
            if not aliased:
                written["forward"] = [k for k, v in given.items() if not _same(v, mine[k])]
            if aliased and cell.grads_over_tape:  # da and da_h: the tape's own first blocks
                da, da_h = tape[:, : G * H], tape[:, G * H : (G + n_own) * H]
            for b in parts:
                recurrence.step_backward(cell, W_hh, q, h_prev[b], c_prev[b], h[b], c[b],
                                         tape[b], dh[b], dc[b], da[b], da_h[b], dq[b],
                                         W_hr=W_hr, own=None if own is None else own[b],
                                         d_hr=None if W_hr is None else np.zeros((B, P))[b])
            if not aliased:
                now = {"h": h if own is None else own, "c": c, "tape": tape}
                written["backward"] = (
                    [k for k in ("q", "h_prev", "c_prev") if not _same(given[k], mine[k])]
                    + [k for k in kept if not _same(kept[k], now[k])])  # fmt: skip
        return {**out, "da": da.copy(), "da_h": da_h.copy(), "dq": dq, "dh": dh, "dc": dc}

    def activations() -> list[tuple[str, str, str, np.ndarray]]:
        """(symbol, place, activation, values) of each declared gate after one forward step whose
        input projection is 8 times the other runs': pre-activations that spread, so that
        a block left holding one falls outside an activation's range."""
        own = None if W_hr is None else np.zeros((B, H))
        h, c, tape = np.zeros((B, P)), np.zeros((B, Hc)), np.zeros((B, cell.tape * H))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recurrence.step_forward(cell, W_hh, q, 8.0 * xa, b_ih, b_hh, h_prev, c_prev, h, c,
                                    tape, W_hr=W_hr, own=own)  # fmt: skip
        mine = h if own is None else own
        return [(s, "h", a, mine) if k == "h" else
                (s, f"tape block {k}", a, tape[:, int(k) * H : (int(k) + 1) * H])
                for s, _, k, a in cell.gate_activations or ()]  # fmt: skip

    covered = {k for (lo, hi), _ in cell.products for k in range(lo, hi)}
    uncovered = [k for k in range(G) if k not in covered]

    def reads_uncovered_bias() -> bool:
        """Whether a forward step reads b_hh in a gate block no product covers (NaN there
        reaches h or c): that bias gets W_hh's side's gradient, none (recurrence)."""
        own = None if W_hr is None else np.zeros((B, H))
        h, c, tape = np.zeros((B, P)), np.zeros((B, Hc)), np.zeros((B, cell.tape * H))
        nan_hh = b_hh.copy()
        for k in uncovered:
            nan_hh[k * H : (k + 1) * H] = np.nan
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recurrence.step_forward(cell, W_hh, q, xa, b_ih, nan_hh, h_prev, c_prev, h, c,
                                    tape, W_hr=W_hr, own=own)  # fmt: skip
        return not (np.isfinite(h).all() and np.isfinite(c).all())

    def differ(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
        return [k for k in a if not np.allclose(a[k], b[k], rtol=1e-12, atol=1e-12,
                                                equal_nan=True)]  # fmt: skip

    try:
        blockwise = once(aliased=False)
        again = once(aliased=False)
        with pointwise.unit_by_unit():
            by_unit = once(aliased=False, rows=True)
            compiled = once(aliased=True, rows=True) if cell.in_place else by_unit
        squashed = activations() if cell.gate_activations else []
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            off = _step_derivatives(cell, B, H) if cell.exact_gradient else []
    except Exception as error:
        raised = (f"{type(cell).__name__}, whose {_failed_step(cell, error)} raised "
                  f"{type(error).__name__} ({error}) when run once on NumPy at H = {H}")
        if not _about_rows(error):
            _checks.fail("cell", "a cell whose steps run on NumPy's (B, n) blocks", raised,
                         "On NumPy a step's x[j] is the whole block, not a number (compiled "
                         "it is one): write the step with rnnlab.cells.pointwise's functions "
                         "or NumPy's (np.exp, not math.exp), `select` instead of an `if` on a "
                         "value, no float(...) or int(...) of one." if isinstance(
                             error, (TypeError, ValueError)) else "")  # fmt: skip
        _checks.fail(
            "cell",
            "a cell whose steps read and write only the rows it declares",
            raised,
            f"It declares gates={G}, tape={cell.tape} (tape rows of {cell.tape * H} values at "
            f"H = {H}), has_c={cell.has_c}, extra={cell.extra!r} (q of {n_q * H} values), "
            f"hh_own={cell.hh_own}, products={cell.products}"
            + ("" if P == H else f", reads_h_prev=False (h_prev of {P} values)")
            + "; compiled, a step that reaches past its rows writes over other memory"
            + ". Declare what the steps use (rnnlab.cells.base has the protocol)."
            + _empty_dsrc_hint(cell, error) + _failed_counting_hint(cell, error),
        )
    name = type(cell).__name__
    for stage, wrote in written.items():
        if wrote:
            _checks.fail("cell", "a cell whose steps write only what they compute (forward "
                         "stages: h, c, the tape row and the scratch ha; backward stages: dh, "
                         "dc, da, da_h, dq and the scratch dsrc)", f"{name}, whose {stage} "
                         f"stages write over {', '.join(wrote)}", "The others are the layer's "
                         "own arrays: its parameters (b_ih, b_hh, q), the states kept for BPTT "
                         "and the caller (h_prev, c_prev, h, c), the tape BPTT and W_hh's "
                         "gradient read, and the input projection xa, whose rows the compiled "
                         "loops share between steps after an Embedding. Keep a value of your "
                         "own in a local variable or a tape block you declare.")
    changed = differ(blockwise, again)
    if changed:
        _checks.fail("cell", "a cell whose steps give the same results from the same inputs",
                     f"{name}, whose {', '.join(changed)} differ between two runs of one "
                     "step", "A step that draws random numbers or keeps something between "
                     "calls gets wrong gradients: checkpointing runs the forward again in "
                     "BPTT, and gradcheck's finite differences compare forward runs. Draw "
                     "noise outside the cell (as Recurrent's recurrent_dropout and zoneout "
                     "draw theirs from forward's rng).")
    unset = [k for k in ("h", "c") if not np.isfinite(blockwise[k]).all()]
    if unset:
        _checks.fail("cell", "a cell whose forward stages write h (and c) from values of the "
                     "step itself", f"{name}, whose {unset[0]} holds NaN after a step that "
                     f"began with h, c and its tape row NaN", "In the loops a step's h, c and "
                     "tape row hold whatever the memory held until a stage writes them: every "
                     "unit of h (and c) must be written, and a tape block read (by a stage or as "
                     "a product's source) only after an earlier stage wrote it in the same step "
                     f"(`stages` run in the order of `products`: {cell.products}).")  # fmt: skip
    if uncovered and reads_uncovered_bias():
        _checks.fail("cell", "a cell whose steps read b_hh only in the gate blocks its "
                     "products cover", f"{name}, whose forward step reads b_hh in block(s) "
                     f"{uncovered}, which no product of {cell.products} covers", "W_hh's and "
                     "b_hh's rows there multiply nothing and get a zero gradient: add b_ih "
                     "alone in those blocks.")  # fmt: skip
    unwritten = [k for k in ("da", "da_h") if not np.isfinite(blockwise[k]).all()]
    if unwritten:
        _checks.fail("cell", "a cell whose backward stages write every gate gradient it "
                     "declares", f"{name}, whose backward stages leave part of {unwritten[0]} "
                     "unwritten (or write NaN or inf there)", f"It declares gates={G} (da of "
                     f"{G * H} values at H = {H}) "
                     f"and hh_own={cell.hh_own} (da_h of {n_own * H}); what a stage does not "
                     "write is whatever the memory held (as is a tape value no forward stage "
                     "wrote: it starts as NaN here).")  # fmt: skip
    changed = differ(blockwise, by_unit)
    if changed:
        _checks.fail("cell", "a cell whose steps give unit by unit (compiled) what they give on "
                     "whole blocks (NumPy)", f"{name}, whose {', '.join(changed)} differ",
                     _counting_hint(cell) + "On NumPy x[j] is a view of the whole block: a "
                     "value bound from a place the same loop writes later changes with it. "
                     "Compute every value a loop writes before its first write "
                     "(rnnlab.cells.pointwise's rules).")  # fmt: skip
    changed = differ(by_unit, compiled)
    if changed:
        _checks.fail("cell", "an in-place cell whose steps read each value before they "
                     "write over it", f"{name}, whose {', '.join(changed)} change when the "
                     "input projection lies in the tape's first blocks (or in h) and da and "
                     "da_h are those blocks, as the compiled loops place them (in_place = "
                     "True)", "Read xa, and a backward stage what it needs of the tape, before "
                     "the first write over them, or declare in_place = False.")  # fmt: skip
    for symbol, place, activation, values in squashed:
        lo, hi = ACTIVATIONS[activation]
        outside = values[(values < lo) | (values > hi)]  # (NaN: no value to place)
        if outside.size:
            _checks.fail("cell", "a cell whose gate_activations name where its forward step "
                         "writes the activations", f"{name}, whose gate {symbol!r} ({place}, "
                         f"{activation}) holds {outside[0]:.4g} after a step, outside "
                         f"{activation}'s range {describe_range(activation)}", "A block that "
                         "keeps the pre-activation (or a product's operand) is no activation: "
                         "name the block the step writes the squashed value to.")  # fmt: skip
    if off:
        (what, holds, a, n), others = off[0], [o[0] for o in off[1:]]
        _checks.fail("cell", "a cell whose backward stages give the derivative of its forward "
                     "stages", f"{name}, whose {what} gives {a:.6g} along a random direction "
                     f"where the forward step's central differences give {n:.6g}"
                     + (f", and {' and '.join(others)} are off too" if others else "")
                     + f" (one step in float64 at H = {H})", f"{what}: {holds}."
                     + (" The library forms dW_hh and the products' share of dh from da: "
                        "correct da first." if what == "da" and others else "")
                     + " A backward that is deliberately not the forward's derivative (a "
                     "straight-through estimator, a truncated gradient) declares "
                     "exact_gradient = False.")  # fmt: skip
    _STEPS_RUN.add(seen)


_DERIVATIVES = (
    ("da", ("xa", "b_ih"), "∂L/∂ each gate's pre-activation as W_ih and b_ih see it"),
    ("dW_hh, db_hh", ("W_hh", "b_hh"), "what W_hh and b_hh see (da, or da_h in the blocks "
     "of hh_own), times each product's source as the forward step left it"),
    ("dq", ("q",), "∂L/∂ the extra parameters, added to what dq holds (dq[j] = dq[j] + ...): "
     "it sums over the steps"),
    ("dh", ("h_prev",), "in ∂L/∂h_t, out the part of ∂L/∂h_{t-1} that does not go through "
     "W_hh: written by the step (zero(d) where the step reads h_{t-1} only through its "
     "products), with a product on the tape's share (dsrc) added by the stage before it"),
    ("dc", ("c_prev",), "in ∂L/∂c_t, out ∂L/∂c_{t-1}: written by the step"),
)
"""(what the check names, the step's inputs whose gradient it is, what it must hold)."""


def _step_derivatives(cell: Cell, B: int, H: int) -> list[tuple[str, str, float, float]]:
    """The gradients one backward step gives, each against central differences of the
    forward step in a random direction (float64, the carry H wide, L = Σ R ⊙ h + Σ R' ⊙ c):
    (name, what it must hold, ⟨gradient, direction⟩, finite difference) of those that
    disagree. W_hh's and b_hh's gradients are formed as recurrence forms them after the
    loop (the left factor of da and da_h, times each product's source); dq starts non-zero,
    as it holds the later steps' sums."""
    G, Hc, n_own = cell.gates, (H if cell.has_c else 0), len(cell.hh_own)
    n_q = sum(n for _, _, n in cell.extra_rows)
    rng = np.random.default_rng(1)

    def draw(*shape: int) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, shape)

    at = {"xa": draw(B, G * H), "b_ih": draw(G * H), "b_hh": draw(G * H), "q": draw(n_q * H),
          "h_prev": draw(B, H), "c_prev": draw(B, Hc), "W_hh": draw(G * H, H)}  # fmt: skip
    R_h, R_c, dq0 = draw(B, H), draw(B, Hc), draw(B, n_q * H)

    def forward(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, c, tape = np.zeros((B, H)), np.zeros((B, Hc)), np.zeros((B, cell.tape * H))
        p = {k: v.copy() for k, v in p.items()}
        recurrence.step_forward(cell, p["W_hh"], p["q"], p["xa"], p["b_ih"], p["b_hh"],
                                p["h_prev"], p["c_prev"], h, c, tape)  # fmt: skip
        return h, c, tape

    def loss(p: dict[str, np.ndarray]) -> float:
        h, c, _ = forward(p)
        return float(np.sum(R_h * h) + np.sum(R_c * c))

    h, c, tape = forward(at)
    dh, dc, dq = R_h.copy(), R_c.copy(), dq0.copy()
    da, da_h = np.zeros((B, G * H)), np.zeros((B, n_own * H))
    p = {k: v.copy() for k, v in at.items()}
    recurrence.step_backward(cell, p["W_hh"], p["q"], p["h_prev"], p["c_prev"], h, c, tape,
                             dh, dc, da, da_h, dq)  # fmt: skip
    grads = {"xa": da, "b_ih": da.sum(0), "q": (dq - dq0).sum(0), "h_prev": dh, "c_prev": dc,
             "W_hh": np.zeros_like(at["W_hh"]), "b_hh": np.zeros(G * H)}  # fmt: skip
    for (lo, hi), src in cell.products:
        left = recurrence._left_factor(cell, da, da_h, lo, hi, H)
        source = at["h_prev"] if src is None else tape[:, src * H : (src + 1) * H]
        grads["W_hh"][lo * H : hi * H] += left.T @ source
        grads["b_hh"][lo * H : hi * H] += left.sum(0)
    eps, wrong = 1e-6, []
    for name, inputs, holds in _DERIVATIVES:
        if not any(at[k].size for k in inputs):
            continue
        way = {k: rng.standard_normal(at[k].shape) for k in inputs}
        analytic = sum(float(np.sum(grads[k] * way[k])) for k in inputs)
        up = loss({**at, **{k: at[k] + eps * way[k] for k in inputs}})
        down = loss({**at, **{k: at[k] - eps * way[k] for k in inputs}})
        numeric = (up - down) / (2 * eps)
        if not abs(analytic - numeric) <= 1e-5 * max(abs(analytic), abs(numeric)) + 1e-7:
            wrong.append((name, holds, analytic, numeric))
    return wrong


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def _empty_dsrc_hint(cell: Cell, error: BaseException) -> str:
    """Where a backward stage that gets an empty dsrc failed on an empty row: the likely
    mistake is backward_stages listed in the order BPTT runs them (last first), which hands
    the stage that reads dsrc the slot of one that gets none; in a cell with no product on
    its tape, reading dsrc at all."""
    named = {fn.__code__: k for k, fn in enumerate(cell.backward_stages)}
    k, tb = None, error.__traceback__
    while tb is not None:
        k = named.get(tb.tb_frame.f_code, k)
        tb = tb.tb_next
    if k is None or (k + 1 < len(cell.products) and cell.products[k + 1][1] is not None):
        return ""  # (not a backward stage, or one whose dsrc is a tape block's gradient)
    if not re.search(r"\(\d+, ?0\)", str(error)):
        return ""
    hint = (f" Backward stage {k}'s dsrc is an empty row: no product on a tape block follows "
            f"forward stage {k}.")
    if all(src is None for _, src in cell.products):
        return hint + (" dsrc is ∂L/∂(a tape block a product takes), and none of this cell's "
                       f"products {cell.products} takes one: leave dsrc out of its steps.")
    return hint + (" backward_stages are listed in the order of `stages` (BPTT runs them "
                   "last first).")


def _failed_step(cell: Cell, error: BaseException) -> str:
    """Which of the cell's step functions the error came from (the innermost one)."""
    found = _failed_function(cell, error)
    return "step" if found is None else f"{found[0]} ({found[1].__qualname__})"


def _failed_function(cell: Cell, error: BaseException) -> tuple[str, Callable[..., Any]] | None:
    """("forward stage k" or "backward stage k", the function) the error came from (the
    innermost of the cell's step functions in its traceback), or None."""
    named: dict[Any, tuple[str, Callable[..., Any]]] = {}
    steps: tuple[tuple[str, Sequence[Callable[..., Any]]], ...] = (
        ("forward stage", cell.stages), ("backward stage", cell.backward_stages))
    for attr, fns in steps:
        for k, fn in enumerate(fns):
            named[fn.__code__] = (f"{attr} {k}", fn)
    found = None
    tb = error.__traceback__
    while tb is not None:
        found = named.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def _about_rows(error: BaseException) -> bool:
    """Whether a step's error is about the widths of its rows (an index past one, blocks that
    do not broadcast), not about what a step may compute on NumPy's blocks."""
    text = str(error)
    return isinstance(error, IndexError) or (
        isinstance(error, ValueError) and ("broadcast" in text or "shape" in text))


def _failed_counting_hint(cell: Cell, error: BaseException) -> str:
    """_counting_hint for the step an error came from."""
    found = _failed_function(cell, error)
    hint = "" if found is None else _counting_hint(cell, found[1]).rstrip()
    return " " + hint if hint else ""


def _counting_hint(cell: Cell, only: Callable[..., Any] | None = None) -> str:
    """Where a step counts units as the compiled loops' (n,) rows have them (range, len): on
    NumPy those count the batch's rows. `only`: the step that failed, else every step."""
    fns = [only] if only is not None else [*cell.stages, *cell.backward_stages]
    counting = [fn.__qualname__ for fn in fns if {"range", "len"} & set(fn.__code__.co_names)]
    if not counting:
        return ""
    verb = "counts" if len(counting) == 1 else "count"
    return (f"{' and '.join(counting)} {verb} with range or len: on NumPy every argument is a "
            "(B, n) block, where range(len(h)) and h[k] count and index the batch (compiled, "
            "a row's units). Loop with `for j in units(h)` and take widths from "
            "`.shape[-1]`. ")
