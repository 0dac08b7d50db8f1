"""A cell that breaks the protocol (rnnlab.cells.base) is refused by name when it is made or
handed to Recurrent: never a raw traceback from numba or the loops, silently wrong
gradients, or (compiled, where steps are not bounds-checked) memory written over."""

import functools

import numpy as np
import pytest

from rnnlab import cellcheck, gradcheck, recurrence, settings
from rnnlab.cells import Cell, ElmanCell, GRUCell, LSTMCell
from rnnlab.cells.pointwise import one, tanh, units
from rnnlab.layers import Recurrent


# ------------------------------------------------------- a valid cell: h = s ⊙ tanh(a), tape a
def scaled(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        a = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        tape[j] = a
        h[j] = q[j] * a


def scaled_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        a, d = tape[j], dh[j]
        dq[j] = dq[j] + d * a
        da[j] = d * q[j] * (one(a) - a * a)
        dh[j] = d - d


class Scaled(Cell):
    name = "scaled"
    tape = 1
    extra = ("s",)
    stages = (scaled,)
    backward_stages = (scaled_back,)

    def init(self, params, H, rng):
        params["s"][...] = 1.0 + 0.1 * rng.standard_normal(H)


def test_a_valid_custom_cell_still_works():
    rng = np.random.default_rng(0)
    with settings.override(no_numba=True):
        m = Recurrent(Scaled(), 3, 4, 2, bidirectional=True, dtype=np.float64, rng=rng)
        x = rng.standard_normal((3, 5, 3))
        report = gradcheck(m, x, lengths=np.array([5, 2, 4]))
    assert report.max_error < 1e-7, str(report)


# ------------------------------------------------ 1. steps that reach past the declared rows
def write_c(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        c[j] = tanh(xa[j] + ha[j])
        h[j] = c[j]
        tape[j] = c[j]


def read_h_prev(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        h[j] = tanh(xa[j] + ha[j]) + h_prev[j]
        tape[j] = h[j]


def wide_da(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    for j in units(h):
        da[..., H:][j] = dh[j]  # a second gate's block, on a one-gate cell
        da[..., :H][j] = dh[j]


class NoTape(Scaled):  # writes tape[j] but declares none
    tape = 0


class NoExtra(Scaled):  # reads q[j] but declares no parameter of its own
    extra = ()

    def init(self, params, H, rng):
        pass


class NoCellState(Scaled):  # writes c without has_c
    stages = (write_c,)


class ReadsHPrev(Scaled):  # reads h_{t-1} though it says it does not
    reads_h_prev = False
    extra = ()
    stages = (read_h_prev,)

    def init(self, params, H, rng):
        pass


class WideBackward(Scaled):  # its backward writes a gate block it does not have
    backward_stages = (wide_da,)


@pytest.mark.parametrize(
    "cell,step,declared",
    [
        (NoTape, r"forward stage 0 \(scaled\)", r"tape=0 \(tape rows of 0 values at H = 3\)"),
        (NoExtra, r"forward stage 0 \(scaled\)", r"extra=\(\) \(q of 0 values\)"),
        (NoCellState, r"forward stage 0 \(write_c\)", r"has_c=False"),
        (ReadsHPrev, r"forward stage 0 \(read_h_prev\)", r"reads_h_prev=False \(h_prev of 2"),
        (WideBackward, r"backward stage 0 \(wide_da\)", r"gates=1"),
    ],
    ids=["tape", "extra", "has_c", "reads_h_prev", "da"],
)
def test_a_step_past_its_declared_rows_is_refused(cell, step, declared):
    """Compiled, such a step wrote over other memory (garbage, or "free(): invalid next
    size" under gradcheck); on NumPy it was a broadcast error from inside the step."""
    with pytest.raises(ValueError) as caught:
        Recurrent(cell(), 3, 5, rng=0)
    text = str(caught.value)
    assert text.startswith(
        "`cell` must be a cell whose steps read and write only the rows it declares; "
        f"got {cell.__name__}, whose "
    ), text
    assert caught.match(step) and caught.match(declared)
    assert caught.match(r"raised ValueError \(.*broadcast.*\) when run once on NumPy")


def test_steps_are_run_once_per_cell_key(monkeypatch):
    calls = []
    step_forward = recurrence.step_forward
    monkeypatch.setattr(cellcheck, "_STEPS_RUN", set())
    monkeypatch.setattr(recurrence, "step_forward",
                        lambda *a, **k: calls.append(1) or step_forward(*a, **k))  # fmt: skip
    Recurrent(Scaled(), 3, 5, rng=0)
    once = len(calls)  # block by block twice (the same results?), then unit by unit and
    assert once == 2 + 2 + 1 + 2 * 4  # row by row (B = 2) as compiled; the derivative check:
    # one forward step, then two for each of da, dW_hh, dq and dh (Scaled has no c)
    Recurrent(Scaled(), 4, 7, 2, bidirectional=True, rng=0)
    assert len(calls) == once
    Recurrent(LSTMCell(peephole=True), 3, 5, rng=0)
    # (the LSTM: as many as Scaled; in place with da over the tape, row by row as compiled;
    # once more for its gate_activations; and dc in the derivative check)
    assert len(calls) == once + (once + 2 + 1 + 2)


BUILT_IN = {
    "lstm": LSTMCell,
    "peephole": functools.partial(LSTMCell, peephole=True),
    "coupled": functools.partial(LSTMCell, coupled=True),
    "clip": functools.partial(LSTMCell, cell_clip=0.5, forget_bias=1.0),
    "all": functools.partial(LSTMCell, peephole=True, coupled=True, cell_clip=0.6),
    "layer_norm": functools.partial(LSTMCell, layer_norm=True),
    "layer_norm+all": functools.partial(
        LSTMCell, layer_norm=True, peephole=True, coupled=True, cell_clip=0.6
    ),  # fmt: skip
    "gru": GRUCell,
    "gru-orig": functools.partial(GRUCell, reset_after=False),
    "elman": ElmanCell,
    "relu": functools.partial(ElmanCell, "relu"),
    "irnn": functools.partial(ElmanCell, "relu", init="irnn"),
}


@pytest.mark.parametrize("make", BUILT_IN.values(), ids=BUILT_IN.keys())
def test_the_built_in_cells_pass(make, monkeypatch):
    monkeypatch.setattr(cellcheck, "_STEPS_RUN", set(), raising=False)  # run them here
    cell = make()
    m = Recurrent(cell, 3, 5, rng=0)
    if not cell.reads_h_prev and getattr(cell, "init_name", None) != "irnn":
        Recurrent(cell, 3, 5, proj_size=2, zoneout=(0.0, 0.1) if cell.has_c else 0.0, rng=0)
    elif all(src is None for _, src in cell.products):
        Recurrent(cell, 3, 5, recurrent_dropout=0.2, zoneout=0.1, rng=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 3)).astype(np.float32)
    assert np.isfinite(m.forward(x).output).all()


def test_the_feedback_model_passes():
    """The output-feedback (Jordan) model runs an Elman cell with the carry fed back."""
    from rnnlab.feedback import OutputFeedback

    model = OutputFeedback(3, 4, 3, hidden_recurrence=True, rng=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 3)).astype(np.float32)
    y = np.random.default_rng(2).standard_normal((2, 3, 3)).astype(np.float32)
    assert np.isfinite(model.forward(x, targets=y).output).all()


# ------------------------------------------------------------ 2. declarations, checked by name
def test_duplicate_extra_names_are_refused():
    """("s", "s") built one s_l0, and a gradient check failed with relative error 1."""

    class Twice(Scaled):
        extra = ("s", "s")

    with pytest.raises(TypeError, match=r"`Twice.extra` must be distinct names .*; got 's' twice"):
        Twice()


@pytest.mark.parametrize("name", ["weight_hh", "weight_ih", "bias_ih", "bias_hh", "weight_hr",
                                  "h0", "c0"])  # fmt: skip
def test_extra_names_of_the_layers_own_parameters_are_refused(name):
    """("weight_hh",) replaced weight_hh_l0 with an (H,) vector: IndexError in recurrence."""

    class Clash(Scaled):
        extra = (name,)

    with pytest.raises(TypeError, match=rf"`Clash.extra` must be names other than .*'{name}'"):
        Clash()


@pytest.mark.parametrize(
    "extra,match",
    [
        (("a b",), r"a tuple of names.*\(each name a Python identifier\); got 'a b'"),
        ((3,), r"a tuple of names.*\(each name a Python identifier\); got 3 \(int\)"),
        ((("s", 0),), r"\(name, n\) with n a positive number"),
        ((("s", 1.5),), r"\(name, n\) with n a positive number"),
        ({"s": 1}, r"a tuple of names.*got \{'s': 1\} \(dict\)"),
    ],
    ids=["space", "int", "zero_rows", "float_rows", "dict"],
)
def test_malformed_extra_is_refused(extra, match):
    class Bad(Scaled):
        pass

    Bad.extra = extra
    with pytest.raises(TypeError, match=r"`Bad.extra` must be " + match):
        Bad()


def nine(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c):
    pass


def eleven(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h):
    pass


def keyword_only(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, *, tape):
    pass


@pytest.mark.parametrize(
    "attr,step,match",
    [
        (
            "stages",
            nine,
            r"`Bad.stages\[0\]` must be a Python function of 10 positional "
            r"parameters \(any more with a default\); got nine\(xa, .*, c\) instead",
        ),
        (
            "backward_stages",
            eleven,
            r"`Bad.backward_stages\[0\]` must be a Python function of "
            r"12 positional parameters \(any more with a default\); got eleven\(",
        ),
        ("stages", keyword_only, r"`Bad.stages\[0\]` .* got keyword_only\(.*\*, tape\)"),
        (
            "stages",
            "scaled",
            r"`Bad.stages\[0\]` must be a Python function .*; got 'scaled' "
            r"\(str\) instead",
        ),
        ("stages", lambda *a: None, r"`Bad.stages\[0\]` .*; got .*<lambda>\(\*a\) instead"),
        ("stages", functools.partial(scaled), r"`Bad.stages\[0\]` .*; got functools.partial"),
        ("backward_stages", np.add, r"`Bad.backward_stages\[0\]` .*; got <ufunc 'add'>"),
    ],
    ids=["nine", "eleven", "keyword_only", "string", "star_args", "partial", "ufunc"],
)
def test_a_step_of_the_wrong_form_is_refused(attr, step, match):
    """They met numba's TypingError, TypeError or NotImplementedError when compiled."""

    class Bad(Scaled):
        pass

    setattr(Bad, attr, (step,))
    with pytest.raises(TypeError, match=match):
        Bad()


def test_what_worked_before_the_checks_still_works():
    """The checks refuse what broke the loops, not what ran: lists for `stages` and `extra`
    (read as tuples), a stage with a defaulted parameter beyond the protocol's (a constant
    of its own), a subclass whose __init__ skips Cell.__init__ (Recurrent checks it), all
    trained before the checks and pass the float64 finite-difference check."""

    def leaky(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape, leak=0.0):
        for j in units(h):
            a = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j] + leak)
            tape[j] = a
            h[j] = q[j] * a

    class Listed(Scaled):
        stages = [leaky]
        extra = ["s"]

    class SkipsInit(Scaled):
        def __init__(self, alpha=0.5):
            self.alpha = alpha

    rng = np.random.default_rng(3)
    for cell in (Listed(), SkipsInit()):
        for no_numba in (True, False):
            with settings.override(no_numba=no_numba):
                layer = Recurrent(cell, 2, 3, dtype=np.float64, rng=0)
                gradcheck(layer, rng.standard_normal((2, 4, 2))).assert_ok()
    assert Listed().stages == (leaky,) and Listed().extra == ("s",)

    class Skipped(Cell):  # skips Cell.__init__ and declares no step: Recurrent says so
        def __init__(self, width=2):
            self.width = width

    with pytest.raises(TypeError, match=r"Skipped has no forward step \(stages\)"):
        Recurrent(Skipped(), 3, 4, rng=0)


def test_declarations_changed_after_init_are_checked_again():
    cell = Scaled()
    cell.extra = ("s", "s")
    with pytest.raises(TypeError, match=r"`Scaled.extra` must be distinct names"):
        Recurrent(cell, 3, 4, rng=0)


def test_a_hidden_size_below_the_cells_minimum_is_refused(monkeypatch):
    """A layer-normalised LSTM keeps three statistics in one H-wide tape block: at H = 1 or 2
    the compiled loops read past the row (silently wrong gradients) and NumPy's failed to
    broadcast. Recurrent refuses a hidden size below the cell's `min_hidden`, and the trial
    run of a cell's steps runs at its minimum."""
    from rnnlab import LSTM

    for H in (1, 2):
        with pytest.raises(ValueError, match=r"`hidden_size` must be at least 3 for LSTMCell.*"
                                             rf"got {H} instead"):  # fmt: skip
            LSTM(2, H, layer_norm=True)
    LSTM(2, 3, layer_norm=True)
    LSTM(2, 1)  # the plain LSTM has no such minimum

    class Wide(Scaled):  # keeps five values in its tape row
        min_hidden = 5

    seen = []
    original = recurrence.step_forward
    monkeypatch.setattr(recurrence, "step_forward",
                        lambda cell, *a, **k: seen.append(a[5].shape) or original(cell, *a, **k))
    monkeypatch.setattr(cellcheck, "_STEPS_RUN", set())
    with pytest.raises(ValueError, match=r"`hidden_size` must be at least 5"):
        Recurrent(Wide(), 2, 4)
    Recurrent(Wide(), 2, 5)
    assert set(seen) == {(2, 5), (5,)}  # h_prev of the trial runs: B = 2, H = 5 (and row
    # by row, as the compiled loops pass it)


# ----------------------------------------------------- gate activations (gate_saturation's)
SHAPE = r"None or a tuple of \(symbol, name, place, activation\) tuples, place a tape block or "
PLACE = r"entries whose place is a tape block in \[0, 1\) or \"h\" \(the output h_t\); got "
KIND = r"entries whose activation is one of 'sigmoid', 'tanh', 'relu'; got "
NAMED = r" \(symbol and name non-empty strings\); got "


@pytest.mark.parametrize(
    "declared,match",
    [
        ({"a": 0}, SHAPE + r"\"h\"; got \{'a': 0\} \(dict\)"),
        ((("a", "act", 0),), SHAPE + r"\"h\"" + NAMED + r"a tuple of length 3 in"),
        ((("", "act", 0, "tanh"),), SHAPE + r"\"h\"" + NAMED + r"a tuple of length 4 in"),
        (("a", "act", 0, "tanh"), SHAPE + r"\"h\"" + NAMED + r"'a' \(str\) in"),
        ((("a", "act", 1, "tanh"),), PLACE + r"1 \(int\) for 'a' instead"),
        ((("a", "act", -1, "tanh"),), PLACE + r"-1 \(int\) for 'a'"),
        ((("a", "act", True, "tanh"),), PLACE + r"True \(bool\) for 'a'"),
        ((("a", "act", 0.0, "tanh"),), PLACE + r"0.0 \(float\) for 'a'"),
        ((("a", "act", "c", "tanh"),), PLACE + r"'c' \(str\) for 'a'"),
        ((("a", "act", 0, "softsign"),), KIND + r"'softsign' \(str\) for 'a'"),
        ((("a", "act", 0, ["tanh"]),), KIND + r"a list of length 1 for 'a'"),
        ((("a", "act", 0, "tanh"), ("a", "out", "h", "tanh")),
         r"entries of distinct symbols \(one gate each\); got 'a' twice in"),
        ((("a", "act", 0, "tanh"), ("b", "act", "h", "tanh")),
         r"entries of distinct names \(one gate each\); got 'act' twice in"),
        ((("a", "act", 0, "tanh"), ("b", "out", 0, "sigmoid")),
         r"entries of distinct places \(one gate each\); got 0 twice in"),
    ],
    ids=["dict", "three", "empty_symbol", "flat", "past_tape", "negative", "bool", "float",
         "c", "unknown", "unhashable", "same_symbol", "same_name", "same_place"],
)
def test_malformed_gate_activations_are_refused(declared, match):
    class Bad(Scaled):
        pass

    Bad.gate_activations = declared
    with pytest.raises(TypeError, match=r"`Bad.gate_activations` must be " + match):
        Bad()


def test_gate_activations_of_a_cell_without_a_tape_can_only_be_h():
    class Plain(Scaled):
        tape = 0
        gate_activations = (("a", "act", 0, "tanh"),)

    with pytest.raises(TypeError, match=r"`Plain.gate_activations` must be entries whose place "
                       r"is \"h\" \(the output h_t; it declares tape = 0, no tape blocks\); got "
                       r"0 \(int\) for 'a'"):  # fmt: skip
        Plain()


def test_gate_activations_as_a_list_and_numpy_blocks_are_taken():
    class Listed(Scaled):
        gate_activations = [("a", "activation", np.int64(0), "tanh")]

    assert Listed().gate_activations == (("a", "activation", 0, "tanh"),)
    Recurrent(Listed(), 3, 4, rng=0)
    cell = Scaled()
    cell.gate_activations = (("a", "activation", 3, "tanh"),)  # changed after init
    with pytest.raises(TypeError, match=r"`Scaled.gate_activations` must be entries whose "
                                        r"place is a tape block in \[0, 1\)"):  # fmt: skip
        Recurrent(cell, 3, 4, rng=0)


def keeps_z(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        z = xa[j] + b_ih[j] + ha[j] + b_hh[j]
        tape[j] = z
        h[j] = tanh(z)


def keeps_z_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        a, d = h[j], dh[j]
        da[j] = d * (one(a) - a * a)
        dh[j] = d - d


class KeepsZ(Cell):
    """h = tanh(z) with z on the tape: its activation is h, not tape block 0."""

    name = "keeps-z"
    tape = 1
    stages = (keeps_z,)
    backward_stages = (keeps_z_back,)
    gate_activations = (("h", "hidden", 0, "tanh"),)


def test_a_declared_activation_that_is_a_pre_activation_is_refused():
    """Recurrent runs the step once with a spread input projection: the pre-activation the
    declaration names leaves tanh's range. Declared at "h", the cell is taken."""
    cellcheck._STEPS_RUN.clear()
    with pytest.raises(ValueError, match=(
            r"`cell` must be a cell whose gate_activations name where its forward step writes "
            r"the activations; got KeepsZ, whose gate 'h' \(tape block 0, tanh\) holds -?[\d.]+ "
            r"after a step, outside tanh's range \[−1, 1\] instead. A block that keeps the "
            r"pre-activation \(or a product's operand\) is no activation")):  # fmt: skip
        Recurrent(KeepsZ(), 3, 4, rng=0)

    class KeepsZAtH(KeepsZ):
        gate_activations = (("h", "hidden", "h", "tanh"),)

    Recurrent(KeepsZAtH(), 3, 4, rng=0)


# ------------------------------- in place: a tape value read after its gradient went over it
def scaled_back_late(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        a, d = tape[j], dh[j]
        da[j] = d * q[j] * (one(a) - a * a)
        dq[j] = dq[j] + d * tape[j]  # compiled, in place, tape[j] is da[j] by now
        dh[j] = d - d


def test_an_in_place_cell_that_reads_its_tape_after_writing_over_it_is_refused():
    """The compiled loops give an in-place cell's backward its tape's first blocks as da; the
    NumPy loop gave it a copy, so a stage that read the tape after writing da ran right on
    NumPy and wrong compiled (relative error 0.97), and no check saw it. The cell check now
    runs the backward both ways. The same steps declared not in place are fine."""
    late = type("Late", (Scaled,), {"backward_stages": (scaled_back_late,)})
    Recurrent(late(), 3, 4, dtype=np.float64, rng=0)
    in_place = type("LateInPlace", (late,), {"in_place": True})
    with pytest.raises(ValueError, match=r"`cell` must be an in-place cell whose steps read "
                       r"each value before they write over it; got LateInPlace, whose dq change "
                       r"when .*declare in_place = False"):
        Recurrent(in_place(), 3, 4, dtype=np.float64, rng=0)


def scaled_tape_first(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        tape[j] = h[j] - h[j]  # compiled, in place, the projection xa lies here
        a = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        tape[j] = a
        h[j] = q[j] * a


def test_an_in_place_forward_that_writes_its_tape_before_reading_xa_is_refused():
    """Compiled, an in-place cell's input projection lies in its tape's first blocks: a
    forward stage that wrote the tape before it read xa gave other outputs than on NumPy
    (gradcheck 1.0 compiled, 3e-10 on NumPy); the check ran only the backward that way
    (found by review of the day's diff)."""
    early = type("Early", (Scaled,), {"stages": (scaled_tape_first,), "in_place": True})
    with pytest.raises(ValueError, match=r"got Early, whose h, tape, .* change when the input "
                       r"projection lies in the tape's first blocks"):
        Recurrent(early(), 3, 4, dtype=np.float64, rng=0)


def scaled_back_aliased(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        a, d, g = tape[j], dh[j], dq[j]  # g: a view of dq on NumPy, a value compiled
        dq[j] = g + d * a
        da[j] = d * q[j] * (one(a) - a * a) + g  # (NumPy: the new dq[j])
        dh[j] = d - d


def test_a_step_whose_values_change_with_numpy_s_views_is_refused():
    """On NumPy x[j] is a view of the whole block: a value bound before a write to the same
    place changes with it, where the compiled loops keep the value. Such a step passed the
    rule "read everything before the first write" to the letter and gave the NumPy path
    wrong gradients (0.42 relative error) while the compiled path was right."""
    aliased = type("Aliased", (Scaled,), {"backward_stages": (scaled_back_aliased,)})
    with pytest.raises(ValueError, match=r"`cell` must be a cell whose steps give unit by unit "
                       r"\(compiled\) what they give on whole blocks \(NumPy\); got Aliased, "
                       r"whose da, dh differ instead. On NumPy x\[j\] is a view"):
        Recurrent(aliased(), 3, 4, dtype=np.float64, rng=0)


def test_a_gate_gradient_a_backward_never_writes_is_refused():
    """W_hh's own block declared (hh_own) and never written: the compiled loops' da_h held
    whatever the memory held (gradients of ~1e-309, or worse); gradcheck saw it, the cell
    check did not (it filled the outputs with zeros)."""
    unwritten = type("Unwritten", (Scaled,), {"hh_own": (0,)})
    with pytest.raises(ValueError, match=r"`cell` must be a cell whose backward stages write "
                       r"every gate gradient it declares; got Unwritten, whose backward stages "
                       r"leave part of da_h unwritten"):
        Recurrent(unwritten(), 3, 4, dtype=np.float64, rng=0)


def test_numpy_integers_declare_a_cell_as_python_integers_do():
    """gates, tape, hh_own and the products' blocks may be NumPy integers (the kind checks
    added for strings and floats refused them at first)."""
    i = np.int64
    cell = type("NumpyInts", (Scaled,), {"gates": i(1), "tape": i(1), "hh_own": (i(0),),
                                         "products": (((i(0), i(1)), None),)})  # fmt: skip
    with pytest.raises(ValueError, match=r"leave part of da_h unwritten"):  # (hh_own unused)
        Recurrent(cell(), 3, 4, dtype=np.float64, rng=0)
    Recurrent(type("NumpyInts2", (Scaled,), {"gates": i(1), "tape": i(1)})(), 3, 4, rng=0)


def _softsign(z):  # a plain Python helper: the compiled loops cannot call it
    return z / (one(z) + abs(z))


def softsign_step(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        h[j] = _softsign(xa[j] + b_ih[j] + ha[j] + b_hh[j])


def softsign_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        s = one(h[j]) - abs(h[j])
        da[j] = dh[j] * s * s
        dh[j] = dh[j] - dh[j]


def test_a_step_numba_cannot_compile_is_said_with_the_cell():
    """A step calling a plain Python helper runs on NumPy; compiled it met numba's
    TypingError (colour codes, "name '_softsign' is not defined", no word of the cell)."""
    cell = type("Softsign", (Cell,), {"name": "softsign", "stages": (softsign_step,),
                                      "backward_stages": (softsign_back,)})  # fmt: skip
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    with settings.override(no_numba=True):
        Recurrent(cell(), 3, 4, dtype=np.float64, rng=0).forward(x)
    with settings.override(no_numba=False):
        layer = Recurrent(cell(), 3, 4, dtype=np.float64, rng=0)
        with pytest.raises(ValueError, match=r"`cell` must be a cell whose steps the compiled "
                           r"loops can compile: .*; got Softsign, whose steps numba refused "
                           r"\(NameError: name '_softsign' is not defined\) instead\. A helper "
                           r"of plain Python runs on NumPy only \(RNNLAB_NO_NUMBA=1\)\.$"):
            layer.forward(x)


def test_recurrent_dropout_on_a_product_of_a_tape_block_is_refused_with_advice_that_fits():
    """The refusal told every cell to "use GRU(reset_after=True)": advice for the original
    GRU only; a cell of one's own with a product on its tape hears why alone. A projection
    refused for a cell that reads h_{t-1} names reads_h_prev, the way in for one's own."""
    original = GRUCell(reset_after=False)
    with pytest.raises(ValueError, match=r"`recurrent_dropout` must be 0 for gru-orig; got 0.2 "
                       r"instead\. .*which the mask would drop; use GRU\(reset_after=True\)\.$"):
        Recurrent(original, 3, 4, recurrent_dropout=0.2, rng=0)
    names = ("name", "gates", "tape", "products", "stages", "backward_stages", "hh_own",
             "in_place", "has_c", "extra", "reads_h_prev")  # fmt: skip
    mine = type("MyGRU", (Cell,), {k: getattr(original, k) for k in names})
    with pytest.raises(ValueError, match=r"`recurrent_dropout` must be 0 for .*; got 0.2 instead"
                       r"\. .*which the mask would drop\.$"):
        Recurrent(mine(), 3, 4, recurrent_dropout=0.2, rng=0)
    with pytest.raises(ValueError, match=r"`proj_size` must be 0 for .*reads_h_prev = False\)\."):
        Recurrent(mine(), 3, 4, proj_size=2, rng=0)


# --------------------------------- 3. steps that read what the step has not written (garbage)
def _mgu_with(**changes):
    from helpers import mgu_cell

    mgu = mgu_cell()
    names = ("name", "gates", "tape", "products", "stages", "backward_stages",
             "gate_activations")  # fmt: skip
    return type("MyMGU", (Cell,), {**{k: getattr(mgu, k) for k in names}, **changes})()


def half_h(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    n = h.shape[-1] - 1  # the last unit of h left unwritten
    first, s, a = h[..., :n], q[..., :n], tape[..., :n]
    for j in units(first):
        a[j] = tanh(xa[..., :n][j] + b_ih[..., :n][j] + ha[..., :n][j] + b_hh[..., :n][j])
        first[j] = s[j] * a[j]


@pytest.mark.parametrize("change", ["stages swapped", "source written later", "h half written"])
def test_a_forward_that_reads_before_it_writes_is_refused(change):
    """In the loops a step's tape row and h hold old memory until a stage writes them: the
    MGU with its two forward stages in the wrong order, or its second product on the
    candidate's block (written after that product), ran and gave outputs that changed with
    what the memory had held (by 3e20 compiled), silently."""
    mgu = _mgu_with()
    if change == "stages swapped":
        cell = _mgu_with(stages=mgu.stages[::-1])
    elif change == "source written later":
        cell = _mgu_with(products=(((0, 1), None), ((1, 2), 1)))
    else:
        cell = type("HalfH", (Scaled,), {"stages": (half_h,)})()
    with pytest.raises(ValueError, match=r"`cell` must be a cell whose forward stages write h "
                       r"\(and c\) from values of the step itself; got \w+, whose h holds "
                       r"NaN .*`stages` run in the order of `products`"):
        Recurrent(cell, 3, 4, rng=0)


def test_backward_stages_listed_in_the_order_bptt_runs_them_are_refused_saying_so():
    """The error named rows and declarations only (a broadcast of dsrc's empty row)."""
    mgu = _mgu_with()
    cell = _mgu_with(backward_stages=mgu.backward_stages[::-1])
    with pytest.raises(ValueError, match=r"Backward stage 1's dsrc is an empty row: no product "
                       r"on a tape block follows forward stage 1\. backward_stages are listed "
                       r"in the order of `stages` \(BPTT runs them last first\)\.$"):
        Recurrent(cell, 3, 4, rng=0)


def test_products_that_share_rows_of_w_hh_are_refused():
    """Each block of W_hh has one block of da a step for its gradient: a block in two
    products got the gradient of one of them (gradcheck: relative error 0.76)."""
    with pytest.raises(TypeError, match=r"share W_hh's block\(s\) \[1\]: each block"):
        _mgu_with(products=(((0, 2), None), ((1, 2), 2)))


def gate_bias_hh(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    for j in units(h):
        a = tanh(xa[..., :H][j] + b_ih[..., :H][j] + ha[j] + b_hh[..., :H][j])
        g = tanh(xa[..., H:][j] + b_ih[..., H:][j] + b_hh[..., H:][j])
        tape[..., :H][j] = a
        tape[..., H:][j] = g
        h[j] = a * g


def gate_bias_hh_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    for j in units(h):
        a, g, d = tape[..., :H][j], tape[..., H:][j], dh[j]
        da[..., :H][j] = d * g * (one(a) - a * a)
        da[..., H:][j] = d * a * (one(g) - g * g)
        dh[j] = d - d


def test_b_hh_read_in_a_block_no_product_covers_is_refused():
    """W_hh's and b_hh's rows outside every product get a zero gradient: a step that adds
    b_hh there had a wrong one."""
    cell = type("Gate", (Cell,), {"gates": 2, "tape": 2, "stages": (gate_bias_hh,),
                                  "backward_stages": (gate_bias_hh_back,)})()  # fmt: skip
    with pytest.raises(ValueError, match=r"reads b_hh in block\(s\) \[1\], which no product of "
                       r"\(\(\(0, 1\), None\),\) covers instead\. .*add b_ih alone"):
        Recurrent(cell, 3, 4, rng=0)
