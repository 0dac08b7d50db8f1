"""Sequence models described by a small JSON-able spec, so a run directory can rebuild them.

A spec is a plain dict, saved in a run's config.json beside the weights (never a pickle):

    {"input": {"type": "tokens", "vocab_size": 96, "embed_dim": 32}      # or
              {"type": "vectors", "size": 8},
     "rnn": {"cell": "lstm", "hidden_size": 256, "num_layers": 1, "bidirectional": false,
             "dropout": 0.0, "initial_state": "zeros", "forget_bias": 1.0},
     "readout": "steps",          # an output at every step | "last" valid step | "mean"
     "output_size": 96,
     "output_dropout": 0.0}

and builds Sequential([Embedding], RNN/LSTM/GRU, [LastStep | MeanOverTime], [Dropout], Linear).
A key the spec does not know (SPEC_KEYS, RNN_KEYS, the input type's own) is refused with its
name and the keys it may have, as TrainConfig refuses an unknown setting.
Cells: "rnn" (tanh), "relu", "irnn" (relu with the identity initialisation), "lstm" (with
the variants "peephole", "coupled", "cell_clip", "layer_norm" in the spec), "gru"
(reset-after, PyTorch's form), "gru-orig" (the original form); and the output-feedback
(Jordan) models "jordan" (h_t = φ(U x_t + R y_{t-1} + b)) and "jordan-elman" (plus W h_{t-1}),
built as a FeedbackModel: one unidirectional layer, readout "steps", and the spec's own key
"feedback" (what y_{t-1} is: "softmax", the default, of classes; "identity" or "sigmoid").
"""

from __future__ import annotations

import copy
from typing import Any, Unpack

import numpy as np
from numpy.typing import DTypeLike

from rnnlab import _checks
from rnnlab.cells import LSTMCell
from rnnlab.feedback import OutputFeedback
from rnnlab.layers import (
    GRU,
    RNN,
    Backward,
    Forward,
    Module,
    PassOptions,
    Recurrent,
    RngLike,
    _rng,
    pass_options,
)
from rnnlab.modules import (
    Dropout,
    Embedding,
    LastStep,
    Linear,
    MeanOverTime,
    Sequential,
    _Module,
)

CELLS = ("rnn", "relu", "irnn", "lstm", "gru", "gru-orig")
FEEDBACK_CELLS = ("jordan", "jordan-elman")  # output-feedback models (rnnlab.feedback)
READOUTS = ("steps", "last", "mean")
# The keys a spec may hold (what `with_defaults` fills in, and "feedback" for the
# output-feedback cells); any other is refused, as TrainConfig refuses unknown settings.
SPEC_KEYS = ("input", "rnn", "readout", "output_size", "output_dropout")
RNN_KEYS = ("cell", "hidden_size", "num_layers", "bidirectional", "dropout", "initial_state",
            "forget_bias", "peephole", "coupled", "cell_clip", "layer_norm", "proj_size",
            "recurrent_dropout", "zoneout")  # fmt: skip


def _known_keys(table: dict[str, Any], name: str, known: tuple[str, ...]) -> None:
    """Refuse a key of `table` that is not in `known` (a typo such as 'hiden_size' would
    otherwise be ignored and the default used without a word)."""
    unknown = [k for k in table if k not in known]
    if unknown:
        _checks.fail(name, "a dict of the keys " + ", ".join(known),
                     f"the unknown key {unknown[0]!r}")  # fmt: skip


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    initial_state: str | float = "zeros",
    forget_bias: float | None = None,
    peephole: bool = False,
    coupled: bool = False,
    cell_clip: float | None = None,
    layer_norm: bool = False,
    proj_size: int = 0,
    recurrent_dropout: float = 0.0,
    zoneout: float | tuple[float, float] = 0.0,
    dtype: DTypeLike = np.float32,
    rng: RngLike = None,
) -> Recurrent:
    """The recurrent layer for a cell name (see the module docstring); `peephole`, `coupled`,
    `cell_clip` and `layer_norm` are the LSTM's variants (rnnlab.cells.lstm), refused for
    other cells; `proj_size`, `recurrent_dropout` and `zoneout` are Recurrent's, for the
    cells that take them."""
    cell = _checks.choice(cell, "cell", CELLS)  # output-feedback cells are built by `build`
    common: dict[str, Any] = dict(
        bidirectional=bidirectional,
        dropout=dropout,
        initial_state=initial_state,
        proj_size=proj_size,
        recurrent_dropout=recurrent_dropout,
        zoneout=tuple(zoneout) if isinstance(zoneout, list) else zoneout,
        dtype=dtype,
        rng=rng,
    )
    variants: dict[str, Any] = {"peephole": peephole, "coupled": coupled,
                                "cell_clip": cell_clip, "layer_norm": layer_norm}  # fmt: skip
    if cell == "lstm":
        lstm = LSTMCell(forget_bias=forget_bias, **variants)
        return Recurrent(lstm, input_size, hidden_size, num_layers, **common)
    for name, value in {"forget_bias": forget_bias, **variants}.items():
        if value is not False and value is not None:  # (`in (False, None)` let 0 and 0.0 by)
            _checks.fail(name, f"unset for cell {cell!r} (an option of the LSTM)", repr(value))
    if cell == "rnn":
        return RNN(input_size, hidden_size, num_layers, **common)
    if cell == "relu":
        return RNN(input_size, hidden_size, num_layers, nonlinearity="relu", **common)
    if cell == "irnn":
        return RNN(input_size, hidden_size, num_layers, nonlinearity="relu", init="irnn", **common)
    return GRU(input_size, hidden_size, num_layers, reset_after=cell == "gru", **common)


def build(
    spec: dict[str, Any], *, dtype: DTypeLike = np.float32, rng: RngLike = None
) -> Sequential | FeedbackModel:
    """Build the model a spec describes, with freshly initialised weights."""
    if not isinstance(spec, dict):
        _checks.fail("spec", "a dict (see rnnlab.models)", _checks.describe(spec))
    rng = _rng(rng)
    try:
        inp, r = spec["input"], spec["rnn"]
        readout, K = spec.get("readout", "steps"), spec["output_size"]
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"`spec` must have 'input', 'rnn' and 'output_size'; missing {e}"
        ) from None
    for key, value in (("input", inp), ("rnn", r)):
        if not isinstance(value, dict):
            _checks.fail(f"spec[{key!r}]", "a dict (see rnnlab.models)", _checks.describe(value))
    _known_keys(spec, "spec", SPEC_KEYS + (("feedback",) if r.get("cell") in FEEDBACK_CELLS
                                           else ()))  # fmt: skip
    _known_keys(r, "spec['rnn']", RNN_KEYS)
    if inp.get("type") not in ("tokens", "vectors"):
        _checks.fail("spec['input']['type']", "'tokens' or 'vectors'",
                     repr(inp["type"]) if "type" in inp else "no 'type'")  # fmt: skip
    need = {"tokens": ("vocab_size", "embed_dim"), "vectors": ("size",)}[inp["type"]]
    _known_keys(inp, "spec['input']", ("type", *need))
    for key in need:
        if key not in inp:
            _checks.fail("spec['input']", f"a dict with {' and '.join(map(repr, need))}",
                         f"one without {key!r}")  # fmt: skip
    if "cell" not in r or "hidden_size" not in r:
        _checks.fail("spec['rnn']", "a dict with 'cell' and 'hidden_size'", _checks.describe(r))
    _checks.choice(r["cell"], "spec['rnn']['cell']", CELLS + FEEDBACK_CELLS)
    # the sizes whose keys the modules call otherwise, named as the spec has them (the error
    # spoke of `out_features`, `num_embeddings`, `embedding_dim` or `input_size`)
    for key in need:
        _checks.positive_int(inp[key], f"spec['input'][{key!r}]")
    _checks.positive_int(K, "spec['output_size']")
    _checks.probability(spec.get("output_dropout", 0.0), "spec['output_dropout']")
    if r.get("cell") in FEEDBACK_CELLS:
        return _build_feedback(spec, dtype, rng)
    modules: list[Module] = []
    if inp["type"] == "tokens":
        modules.append(Embedding(inp["vocab_size"], inp["embed_dim"], dtype=dtype, rng=rng))
        features = inp["embed_dim"]
    else:
        features = inp["size"]
    rnn = make_recurrent(
        r["cell"],
        features,
        r["hidden_size"],
        r.get("num_layers", 1),
        bidirectional=r.get("bidirectional", False),
        dropout=r.get("dropout", 0.0),
        initial_state=r.get("initial_state", "zeros"),
        forget_bias=r.get("forget_bias"),
        peephole=r.get("peephole", False),
        coupled=r.get("coupled", False),
        cell_clip=r.get("cell_clip"),
        layer_norm=r.get("layer_norm", False),
        proj_size=r.get("proj_size", 0),
        recurrent_dropout=r.get("recurrent_dropout", 0.0),
        zoneout=r.get("zoneout", 0.0),
        dtype=dtype,
        rng=rng,
    )
    modules.append(rnn)
    readout = _checks.choice(readout, "spec['readout']", READOUTS)
    if readout == "last":
        modules.append(LastStep())
    elif readout == "mean":
        modules.append(MeanOverTime())
    if spec.get("output_dropout", 0.0) > 0:
        modules.append(Dropout(spec["output_dropout"]))
    modules.append(Linear(rnn.output_features, K, dtype=dtype, rng=rng))
    return Sequential(modules)


FEEDBACK_HAS_NOT = {"dropout": 0.0, "initial_state": "zeros"}
"""The options of Recurrent a spec may carry that an output-feedback model has not, and
their values without effect (with output_dropout 0): what `build` accepts for it."""


def without_feedback_extras(spec: dict[str, Any]) -> dict[str, Any]:
    """An output-feedback spec with FEEDBACK_HAS_NOT (and output_dropout) at their values
    without effect: a new run's task default (charlm's dropout 0.2) and a run saved before
    `build` refused them are built as they train; other specs are returned as they are."""
    r = spec.get("rnn") if isinstance(spec, dict) else None
    if not isinstance(r, dict) or r.get("cell") not in FEEDBACK_CELLS:
        return spec
    out = {**spec, "rnn": {**r, **FEEDBACK_HAS_NOT}}
    if "output_dropout" in out:
        out["output_dropout"] = 0.0
    return out


def _build_feedback(spec: dict[str, Any], dtype: DTypeLike, rng: RngLike) -> FeedbackModel:
    inp, r = spec["input"], spec["rnn"]
    if spec.get("readout", "steps") != "steps":
        _checks.fail(
            "spec['readout']",
            "'steps' for an output-feedback (Jordan) model",
            repr(spec.get("readout")),
            "Its outputs feed back at every step.",
        )
    # typed as the other cells take them (True was one layer, 0 unidirectional, 'false' said
    # as bidirectional=false), then one unidirectional layer
    layers = _checks.positive_int(r.get("num_layers", 1), "spec['rnn']['num_layers']")
    both = _checks.boolean(r.get("bidirectional", False), "spec['rnn']['bidirectional']")
    if both or layers != 1:
        _checks.fail(
            "spec['rnn']",
            "one unidirectional layer for an output-feedback model",
            f"num_layers={layers}, bidirectional={both}",
        )
    # the options of Recurrent and the LSTM, which this layer does not have: refused unless
    # at their defaults (what with_defaults writes into a run's config.json), of the type
    # the other cells take (0 for False or 0.0 for the integer 0 passed here, refused there;
    # a zoneout list of any length, [] or [0, 0, 0], passed as [p_h, p_c] at 0)
    defaults = with_defaults({"rnn": {}})["rnn"]

    def zero(v: object) -> bool:
        return (not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer,
                np.floating)) and v == 0)  # fmt: skip

    def at_default(key: str) -> bool:
        value, default = r[key], defaults[key]
        if key == "zoneout" and isinstance(value, (list, tuple)):  # [p_h, p_c]
            return len(value) == 2 and all(zero(v) for v in value)
        if default is None:
            return value is None
        if isinstance(default, bool):
            return isinstance(value, (bool, np.bool_)) and bool(value) == default
        if isinstance(default, float):
            return zero(value)
        if isinstance(default, int):  # (proj_size: an integer, as Recurrent takes it)
            return zero(value) and isinstance(value, (int, np.integer))
        return isinstance(value, str) and value == default  # (initial_state)

    unused = [k for k in RNN_KEYS if k in r and k not in ("cell", "hidden_size", "num_layers",
              "bidirectional") and not at_default(k)]  # fmt: skip
    if spec.get("output_dropout", 0.0):
        unused.append("output_dropout")
    if unused:
        key = unused[0]
        where = "spec" if key == "output_dropout" else "spec['rnn']"
        _checks.fail(f"{where}[{key!r}]",
                     f"left out or at its default for cell {r['cell']!r} (an output-feedback "
                     f"model has no {key})",
                     repr(spec[key] if key == "output_dropout" else r[key]),
                     f"Its default: {0.0 if key == 'output_dropout' else defaults[key]!r}"
                     + (", or [0.0, 0.0]." if key == "zoneout" else "."))  # fmt: skip
    emb = None
    features = inp.get("size", 0)
    if inp["type"] == "tokens":
        emb = Embedding(inp["vocab_size"], inp["embed_dim"], dtype=dtype, rng=rng)
        features = inp["embed_dim"]
    layer = OutputFeedback(
        features,
        r["hidden_size"],
        spec["output_size"],
        feedback=_checks.choice(spec.get("feedback", "softmax"), "spec['feedback']",
                                ("identity", "softmax", "sigmoid")),  # fmt: skip
        hidden_recurrence=r["cell"] == "jordan-elman",
        dtype=dtype,
        rng=rng,
    )
    return FeedbackModel(emb, layer)


class FeedbackModel(_Module):
    """[Embedding] + OutputFeedback: the notes' output-to-hidden (Jordan) pattern as a model.

    Trained with teacher forcing (`teacher=1`), scheduled sampling (`0 < teacher < 1`: the
    truth is fed with that probability) or free running (`teacher=0`, or no targets: the
    prediction f(o_{t-1}) fed back). Its state is [h_T or None, the value to feed at the next
    step], so windows of a stream and sampling continue where the previous call stopped;
    `fed_back` sets that value to a known class (rnnlab.generate feeds back what it sampled).
    """

    wants_targets = True

    def __init__(self, embedding: Embedding | None, layer: OutputFeedback):
        self.embedding, self.layer = embedding, layer
        self.modules = [m for m in (embedding, layer) if m is not None]
        self.params = {
            f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in m.params.items()
        }

    def forward(
        self, x: Any, *, targets: Any = None, teacher: float = 1.0,
        **options: Unpack[PassOptions],
    ) -> Forward:
        """`targets` and `teacher` choose the mode (the class's docstring); `training`
        changes nothing here (no dropout; scheduled sampling follows `teacher`); `grad=False`
        keeps no tape, as in the other modules (it kept one: sampling, which asks grad=False,
        held the whole prime's tape for no backward)."""
        o = pass_options(options, "FeedbackModel.forward")
        lengths, mask, state, rng, check = o["lengths"], o["mask"], o["state"], o["rng"], o["check"]
        fe = None
        inp = x
        if self.embedding is not None:
            fe = self.embedding.forward(x, check=check)
            inp = fe.output
        teacher = _checks.probability(teacher, "teacher", allow_one=True)
        if targets is None or teacher <= 0.0:
            mode = "free"
        elif teacher >= 1.0:
            mode = "teacher"
        else:
            mode = "scheduled"
        h0, y0 = self._state(state, "state", np.shape(inp)[0] if np.ndim(inp) == 3 else None)
        f = self.layer.forward(
            inp,
            targets=targets,
            mode=mode,
            p=teacher,
            lengths=lengths,
            mask=mask,
            state=h0,
            rng=rng,
            y0=y0,
            check=check,
            grad=o["grad"],
        )
        return Forward(f.output, [f.state, f.cache["y_last"]], (fe, f))

    @property
    def feeds_back_classes(self) -> bool:
        """Whether what is fed back is a class (feedback='softmax'), which `fed_back` sets."""
        return self.layer.feedback == "softmax"

    def fed_back(self, state: Any, ids: Any) -> list[Any]:
        """`state` with the value fed at the next step replaced by the one-hot vectors of
        `ids` (B,): what teacher forcing feeds once the last step's true class is known. In
        generation that is the class just sampled, as the notes run the model free on its own
        outputs; feeding the prediction f(o) there instead (free mode) would show a model
        trained with teacher forcing a soft vector it never saw."""
        if self.layer.feedback != "softmax":
            _checks.fail("model", "an output-feedback model with feedback='softmax' (classes)",
                         f"feedback={self.layer.feedback!r}")  # fmt: skip
        K = self.layer.output_size
        ids = _checks.int_array(ids, "ids", ndim=1)
        if ids.size and (ids.min() < 0 or ids.max() >= K):
            _checks.fail("ids", f"class ids in [0, {K})", _checks.describe(ids.tolist()))
        h, _ = _state_pair(state, "state")
        return [h, self.layer._targets(ids[:, None], ids.shape[0], 1)[:, 0]]  # (one-hot)

    def _state(self, state: Any, name: str, batch: int | None) -> tuple[Any, Any]:
        """`state` (or `d_state`) as the pair [h, y], each checked under its place in the
        pair: a y of the wrong shape was said to be `y0`, and an h given to a model without
        hidden recurrence `state`, names the caller never used. `batch`: the batch size
        (None: x is refused by the layer, which says so)."""
        h, y = _state_pair(state, name)
        L = self.layer
        if h is not None:
            if not L.hidden_recurrence:
                _checks.fail(f"{name}[0]", "None (this model has no hidden-to-hidden "
                             "recurrence: its state is [None, y])",
                             _checks.describe(h))  # fmt: skip
            if batch is not None:
                h = _checks.float_array(h, f"{name}[0]", shape=(batch, L.hidden_size),
                                        dtype=L.dtype)  # fmt: skip
        if y is not None and batch is not None:
            y = _checks.float_array(y, f"{name}[1]", shape=(batch, L.output_size),
                                    dtype=L.dtype)  # fmt: skip
        return h, y

    def backward(
        self, fwd: Forward, d_output: Any, d_state: Any = None, *, input_grad: bool = True,
        overwrite_d_output: bool = False,
    ) -> Backward:
        """`input_grad=False` skips ∂L/∂x for vector inputs (it was computed anyway); token
        inputs need it for the embedding's gradient."""
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        cache = getattr(fwd, "cache", None)
        if not (isinstance(fwd, Forward) and isinstance(cache, tuple) and len(cache) == 2
                and isinstance(cache[1], Forward) and (cache[0] is None) == (self.embedding
                                                                          is None)):  # fmt: skip
            # (another module's result failed with "too many values to unpack")
            _checks.fail("fwd", "the result of this FeedbackModel's forward",
                         "the result of another module's forward" if isinstance(fwd, Forward)
                         else _checks.describe(fwd))  # fmt: skip
        fe, f = cache
        d_h, d_y = self._state(d_state, "d_state", np.shape(f.output)[0])
        b = self.layer.backward(f, d_output, d_h, d_y_last=d_y,
                                input_grad=input_grad or fe is not None)  # fmt: skip
        grads = {f"{len(self.modules) - 1}.{k}": v for k, v in b.params.items()}
        d_input = b.input
        if fe is not None and self.embedding is not None:
            be = self.embedding.backward(fe, b.input)
            grads.update({f"0.{k}": v for k, v in be.params.items()})
            d_input = None
        return Backward(d_input, [b.state, b.y0], {k: grads[k] for k in self.params})


def _state_pair(state: Any, name: str) -> tuple[Any, Any]:
    """An output-feedback model's state, [h, y]: the hidden state (None without hidden
    recurrence) and the value fed back (a bare array was unpacked row by row, and the error
    then spoke of y0's shape)."""
    if state is None:
        return None, None
    if not isinstance(state, (list, tuple)) or len(state) != 2:
        _checks.fail(name, "None or a pair [h, y] (the hidden state, None without hidden "
                     "recurrence, and the value fed back)", _checks.describe(state))  # fmt: skip
    return state[0], state[1]


def recurrent_layer(model: Sequential) -> Recurrent:
    """The recurrent layer inside a built model (a Sequential: an output-feedback model's
    layer is `model.layer`, an OutputFeedback, no Recurrent)."""
    modules = getattr(model, "modules", None)
    for m in modules if isinstance(modules, list) else []:  # (AttributeError for no model)
        if isinstance(m, Recurrent):
            return m
    _checks.fail("model", "a model with a recurrent layer (RNN, LSTM, GRU)",
                 f"{_checks.a(type(model).__name__)} without one"
                 + (" (an output-feedback model)" if isinstance(model, FeedbackModel)
                    else ""))  # fmt: skip


def with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A complete copy of `spec` with every optional field filled in (what config.json stores).
    It reads spec['rnn'] alone: a spec that is not a dict, or whose 'rnn' is missing or not a
    dict, is refused here in the words `build` uses for them (it met a TypeError, a KeyError
    or an AttributeError); a spec's other errors are `build`'s to say."""
    if not isinstance(spec, dict):
        _checks.fail("spec", "a dict (see rnnlab.models)", _checks.describe(spec))
    if "rnn" not in spec:
        _checks.fail("spec", "a dict with 'rnn' (see rnnlab.models)", "one without 'rnn'")
    if not isinstance(spec["rnn"], dict):
        _checks.fail("spec['rnn']", "a dict (see rnnlab.models)", _checks.describe(spec["rnn"]))
    s = copy.deepcopy(spec)
    r = s["rnn"]
    r.setdefault("num_layers", 1)
    r.setdefault("bidirectional", False)
    r.setdefault("dropout", 0.0)
    r.setdefault("initial_state", "zeros")
    r.setdefault("forget_bias", None)
    r.setdefault("peephole", False)
    r.setdefault("coupled", False)
    r.setdefault("cell_clip", None)
    r.setdefault("layer_norm", False)
    r.setdefault("proj_size", 0)
    r.setdefault("recurrent_dropout", 0.0)
    r.setdefault("zoneout", 0.0)
    s.setdefault("readout", "steps")
    s.setdefault("output_dropout", 0.0)
    return s
