"""Keras 3 weights both ways: SimpleRNN, LSTM, GRU (both forms), Bidirectional, stacked.

    rnnlab.keras.load_weights(layer, "model.keras")        # or .weights.h5, or Keras layers
    rnnlab.keras.load_weights(sequential, "model.keras")   # Embedding, recurrent, Dense too
    rnnlab.keras.save_weights(model, "model.weights.h5")   # what keras' load_weights reads
    print(rnnlab.keras.snippet(model, "model.weights.h5")) # the Keras model it fits

Files are read and written with h5py alone (Keras' own layout: `layers/<key>/cell/vars/0..2`
for a recurrent layer, `forward_layer`/`backward_layer` inside a Bidirectional); Keras is
not needed, and the tests use it only as an oracle. rnnlab's Recurrent with L layers is L
Keras layers (each a Bidirectional when bidirectional), with a Dropout between them when
the stack has dropout= (rnnlab's drops each element of a layer's input, as Keras' Dropout).

The mapping, per layer and direction (Keras stores x·K, rnnlab W·x, so every matrix is
transposed):

    SimpleRNN  kernel (I, H), recurrent_kernel (H, H), bias (H,)
    LSTM       kernel (I, 4H) in i, f, c, o: PyTorch's i, f, g, o, so no reordering;
               one bias (4H,) = b_ih + b_hh
    GRU        kernel (I, 3H) in z, r, h against rnnlab's r, z, n; reset_after=True: bias
               (2, 3H), rows b_ih and b_hh; reset_after=False: one bias (3H,) = b_ih + b_hh
               (the original form adds its two candidate biases too, so nothing is lost)

Loading a Keras bias puts it in b_ih and zeros in b_hh (the sum is what both compute).
Keras' layers start from zeros and take another state only as an argument of each call: a
learned or constant initial state is the snippet's <Kind>WithStart (LSTMWithStart, ...), a
subclass of Keras' layer whose own weights h0 (and c0) are the start, trainable when
learned; in a file they are the layer's `vars`, beside its `cell`. What Keras cannot hold is
refused in one line: LSTM variants, projection, zoneout, the readout merge, time-major
layers. LastStep after a recurrent layer is Keras' return_sequences=False, bidirectional
layers included (each direction's final state), with the Dropout and Linear modules between
them after it in Keras (they act on each step alone; not a Linear after a bidirectional
layer, where LastStep reads the backward direction at the last step). The same rule holds
both ways: a LastStep Keras has no form of is refused by load_weights too.
"""

from __future__ import annotations

import importlib
import io as _io
import json
import re
import sys
import zipfile
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from rnnlab import _checks, io
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.layers import Recurrent, _cast_weight
from rnnlab.modules import (
    Dropout,
    Embedding,
    LastStep,
    Linear,
    MeanOverTime,
    Sequential,
    input_features,
    readout_source,
    reads_tokens,
    refuse_own_subclass,
)

F32 = np.float32
_KINDS = {ElmanCell: "SimpleRNN", LSTMCell: "LSTM", GRUCell: "GRU"}
_GRU_ORDER = (1, 0, 2)  # r, z, n ↔ z, r, h (its own inverse)

# h5py and Keras ship no type information: their objects are Any to mypy, named here for
# what they are.
H5Group = Any  # an h5py.Group (or File)
KerasLayer = Any  # a keras.layers.SimpleRNN, LSTM, GRU or Bidirectional

_Holder = Embedding | Linear | tuple[Recurrent, int] | None
"""What holds a Keras layer's weights: the module, layer k of a Recurrent, or nothing."""

_Direction = tuple[list[np.ndarray], list[np.ndarray]]
"""One direction of a Keras recurrent layer as read: its cell's weights (kernel,
recurrent_kernel, bias) and its start (h0, c0: a <Kind>WithStart's; none for Keras' own)."""

_Shape = tuple[int | None, ...] | None
"""A Keras layer's input or output shape, batch first, None where unknown (Keras' None), or
None when not known at all."""

_Found = tuple[str, bool, list[_Direction], dict[str, Any]]
"""A Keras recurrent layer as read: (kind, bidirectional, its directions, the options of
its configuration that rnnlab checks)."""


def _h5py() -> ModuleType:
    try:
        return importlib.import_module("h5py")
    except ImportError:
        raise ImportError(
            "h5py is not installed; pip install 'rnnlab[keras]' to read or write Keras weights"
        ) from None


def _snake(name: str) -> str:
    """Keras' naming.to_snake_case: the key of a layer of this class in a weights file."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _reorder(a: np.ndarray, order: tuple[int, ...], H: int, axis: int) -> np.ndarray:
    return np.concatenate(
        [np.take(a, range(g * H, (g + 1) * H), axis=axis) for g in order], axis=axis
    )


def _check_layer(layer: object, where: str = "layer") -> str:
    """The Keras class name for rnnlab's Recurrent `layer`, or a one-line error."""
    if not isinstance(layer, Recurrent):
        _checks.fail(where, "an rnnlab recurrent layer (RNN, LSTM, GRU)", _checks.describe(layer))
    cell = layer.cell
    what, why = None, ""
    if type(cell) not in _KINDS:
        what = f"a cell of its own ({type(cell).__name__})"
    elif isinstance(cell, LSTMCell) and cell.describe() != "lstm":
        what, why = f"an LSTM variant ({cell.describe()})", "Keras' LSTM has none."
    elif layer.merge == "readout":
        what = "the bidirectional readout merge"
    elif getattr(layer, "proj_size", 0):
        what = f"a layer with proj_size={layer.proj_size} (Keras' layers have no projection)"
    elif any(getattr(layer, "zoneout", ())):
        what = f"a layer with zoneout={layer.zoneout} (Keras' layers have no zoneout)"
    if what is not None:
        _checks.fail(where, "a layer Keras' SimpleRNN, LSTM and GRU hold", what, why)
    return _KINDS[type(cell)]


def _starts(layer: Recurrent) -> bool:
    """Whether `layer` starts from a state of its own (learned, or a constant other than 0),
    which Keras' layers, starting from zeros, hold only as the snippet's <Kind>WithStart."""
    return layer.initial_state != "zeros" and layer.initial_state != 0


def _kind(layer: Recurrent) -> str:
    """The Keras class of `layer`'s layers in one direction, as the snippet names it."""
    return _KINDS[type(layer.cell)] + ("WithStart" if _starts(layer) else "")


# ---------------------------------------------------------------------- rnnlab → Keras
def layer_weights(layer: Recurrent, k: int, sfx: str = "") -> list[np.ndarray]:
    """Keras' [kernel, recurrent_kernel, bias] of layer k, direction sfx ("" or "_reverse")."""
    p, H, cell = layer.params, layer.hidden_size, layer.cell
    W, R = p[f"weight_ih_l{k}{sfx}"], p[f"weight_hh_l{k}{sfx}"]
    b_ih, b_hh = p[f"bias_ih_l{k}{sfx}"], p[f"bias_hh_l{k}{sfx}"]
    if isinstance(cell, GRUCell):
        W, R = _reorder(W, _GRU_ORDER, H, 0), _reorder(R, _GRU_ORDER, H, 0)
        b_ih, b_hh = _reorder(b_ih, _GRU_ORDER, H, 0), _reorder(b_hh, _GRU_ORDER, H, 0)
        bias = np.stack([b_ih, b_hh]) if cell.reset_after else b_ih + b_hh
    else:
        bias = b_ih + b_hh
    return [np.ascontiguousarray(a, dtype=F32) for a in (W.T, R.T, bias)]


def start_weights(layer: Recurrent, k: int, sfx: str = "") -> list[np.ndarray]:
    """The <Kind>WithStart weights of layer k, direction sfx: [h0] ([h0, c0] for an LSTM),
    the learned vectors or the constant; [] for a layer that starts from zeros."""
    if not _starts(layer):
        return []
    names = ("h0", "c0") if layer.cell.has_c else ("h0",)
    if layer.initial_state == "learned":
        return [np.ascontiguousarray(layer.params[f"{n}_l{k}{sfx}"], dtype=F32) for n in names]
    return [np.full(layer.hidden_size, layer.initial_state, F32) for _ in names]


def _layer_spec(layer: Recurrent, k: int, last: bool, return_sequences: bool) -> str:
    """The Keras constructor of layer k of `layer`, as Python."""
    _check_layer(layer)
    cell = layer.cell
    args = [str(layer.hidden_size)]
    if isinstance(cell, ElmanCell) and cell.nonlinearity == "relu":  # (kind "SimpleRNN")
        args.append('activation="relu"')
    if isinstance(cell, GRUCell):  # (kind "GRU")
        args.append(f"reset_after={cell.reset_after}")
    if layer.recurrent_dropout:  # h_{t-1} ⊙ m, a mask a sequence (Keras: one for each gate)
        args.append(f"recurrent_dropout={layer.recurrent_dropout}")
    if _starts(layer):
        args.append(f"learned={layer.initial_state == 'learned'}")
    args.append(f"return_sequences={return_sequences or not last}")
    inner = f"{'' if _starts(layer) else 'keras.layers.'}{_kind(layer)}({', '.join(args)})"
    if not layer.bidirectional:
        return inner
    merge = "concat" if (not last or layer.merge == "concat") else "sum"
    return f'keras.layers.Bidirectional({inner}, merge_mode="{merge}")'


def check_exportable(model: object) -> None:
    """Raise a one-line ValueError naming the first part of `model` Keras' layers cannot
    hold (or a weight the float32 file cannot: rnnlab._checks.finite_weights), as
    save_weights and snippet do before they look at their `path`."""
    _keras_layers(model)


def _keras_layers(model: object) -> list[tuple[str, str, _Holder]]:
    """(Keras class, constructor as Python, what holds the weights) for every Keras layer of
    the model, in order."""
    mods: Sequence[object] = model.modules if isinstance(model, Sequential) else [model]
    if hasattr(model, "wants_targets"):
        _checks.fail("model", "a model Keras' layers hold", "an output-feedback (Jordan) model")
    if not mods:  # (as ONNX's export says it: Keras' model would have no input size)
        _checks.fail("model", "a Sequential of one module at least", "an empty Sequential")
    refuse_own_subclass(model, "model", "the Keras model")
    out: list[tuple[str, str, _Holder]] = []
    for i, m in enumerate(mods):
        if isinstance(model, Sequential):
            refuse_own_subclass(m, f"model (module {i})", "the Keras model")
        if isinstance(m, Embedding):
            out.append(("Embedding", f"keras.layers.Embedding({m.num_embeddings}, "
                        f"{m.embedding_dim})", m))  # fmt: skip
        elif isinstance(m, Recurrent):
            _check_layer(m, f"model (module {i})")
            if not m.batch_first:
                _checks.fail(f"model (module {i})", "batch-first for Keras", "a time-major layer",
                             "Keras' layers read (batch, time, features); the same weights "
                             "export from a layer made with batch_first=True "
                             "(new.load_state_dict(layer.params)).")  # fmt: skip
            sequences = _last_step_after(mods, i) is None
            kind = "Bidirectional" if m.bidirectional else _kind(m)
            for k in range(m.num_layers):
                if k and m.dropout:  # the stack's dropout=, elementwise between its layers
                    out.append(("Dropout", f"keras.layers.Dropout({m.dropout})", None))
                out.append((kind, _layer_spec(m, k, k == m.num_layers - 1, sequences), (m, k)))
        elif isinstance(m, LastStep):
            _last_step_source(mods, i, f"model (module {i})")
        elif isinstance(m, MeanOverTime):
            out.append(("GlobalAveragePooling1D", "keras.layers.GlobalAveragePooling1D()", None))
        elif isinstance(m, Dropout):
            out.append(("Dropout", f"keras.layers.Dropout({m.p})", None))
        elif isinstance(m, Linear):
            bias = "" if "bias" in m.params else ", use_bias=False"
            out.append(("Dense", f"keras.layers.Dense({m.out_features}{bias})", m))
        else:
            _checks.fail(f"model (module {i})", "a module Keras holds", _checks.describe(m))
    _checks.finite_weights(model, "Keras")
    return out


# LastStep is Keras' return_sequences=False of the recurrent layer it reads: each direction's
# final state, which is what rnnlab's LastStep reads (a bidirectional layer's reverse
# direction at step 0), for the concat and sum merges alike. Dropout and Linear modules
# between them act on each step alone, so they commute with picking a step and follow it in
# Keras; but after a Linear, rnnlab's LastStep reads a bidirectional layer's features all at
# the last step (rnnlab.modules.readout_source), which return_sequences=False does not give.
_PER_STEP = (Dropout, Linear)


def _last_step_after(mods: Sequence[object], i: int) -> int | None:
    """The index of the LastStep that reads recurrent module i (through Dropout and Linear
    modules), or None: that layer is Keras' return_sequences=False."""
    j = i + 1
    while j < len(mods) and isinstance(mods[j], _PER_STEP):
        j += 1
    return j if j < len(mods) and isinstance(mods[j], LastStep) else None


def _last_step_source(mods: Sequence[object], i: int, where: str, load: bool = False) -> int:
    """The index of the recurrent module whose return_sequences=False is LastStep i, or a
    one-line error (naming the LastStep as `where`) saying why Keras has none. The rule is
    one for both ways: what the export cannot write, no Keras model loads into either, as
    rnnlab would compute something else from the loaded weights. `load`: the hint says what
    rnnlab model to build (load_weights) rather than which export takes it."""
    readout_source(mods, i)  # (what Sequential refuses: after merge 'sum' through a Dropout)
    j = i - 1
    while j >= 0 and isinstance(mods[j], _PER_STEP):
        j -= 1
    if j < 0 or not isinstance(mods[j], Recurrent):
        what = ("one with no recurrent layer before it" if j < 0
                else f"one after module {j}, {_checks.a(type(mods[j]).__name__)}")
        fix = ("no Keras layer loads as it: build the rnnlab model without it, or with a "
               "recurrent module before it." if load else "the ONNX and PyTorch exports take it.")
        _checks.fail(where, "a LastStep after a recurrent layer (through Dropout and Linear "
                     "modules) for Keras", what,
                     "Keras picks the last valid step only as a recurrent layer's "
                     f"return_sequences=False; {fix}")  # fmt: skip
    layer = mods[j]
    assert isinstance(layer, Recurrent)  # (for mypy: the loop stopped at one)
    linear = next((k for k in range(j + 1, i) if isinstance(mods[k], Linear)), None)
    if layer.bidirectional and linear is not None:
        fix = (f"build the rnnlab model with the LastStep right after the recurrent module {j} "
               "(before the Linear) to compute Keras' Bidirectional(return_sequences=False) "
               "and Dense." if load
               else "put the LastStep before the Linear, or use the ONNX or PyTorch export.")
        _checks.fail(where, "a LastStep after a bidirectional layer with no Linear between "
                     "them for Keras", f"one after module {linear}, a Linear",
                     "rnnlab's LastStep then reads the backward direction at the last step "
                     f"(after one step of module {j}'s backward pass), Keras' "
                     "return_sequences=False each direction's final state (the backward one's "
                     f"after the whole sequence); {fix}")  # fmt: skip
    return j


def save_weights(model: object, path: str | PathLike[str]) -> Path:
    """Write `model`'s weights as Keras 3's `.weights.h5` for the Keras model `snippet`
    builds (keras' `model.load_weights(path)` reads it); atomically. Returns the path."""
    h5py = _h5py()
    path = _checks.file_to_write(path, "path")
    layers = _keras_layers(model)
    _checks.export_file_name(path, "keras", "path")  # (rnnlab export --out's check too)
    if not path.parent.is_dir():  # (as rnnlab.onnx.export: the write's own error was an
        # OSError, "cannot write ... (No such file or directory)", naming no argument)
        _checks.fail("path", "a file path in an existing folder", f"'{path}', whose folder "
                     f"'{path.parent}' " + ("is not a folder" if path.parent.exists() else
                                            "does not exist"))  # fmt: skip
    buffer = _io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("vars").attrs["name"] = "sequential"
        group = f.create_group("layers")
        used: dict[str, int] = {}
        for kind, _, holder in layers:
            key = _snake(kind)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            g = group.create_group(key)
            if isinstance(holder, tuple):
                m, k = holder
                if m.bidirectional:
                    g.create_group("vars").attrs["name"] = key
                    for side, sfx in (("forward_layer", ""), ("backward_layer", "_reverse")):
                        _write_rnn(g.create_group(side), m, k, sfx)
                else:
                    _write_rnn(g, m, k, "")
                continue
            v = g.create_group("vars")
            v.attrs["name"] = key
            if isinstance(holder, Embedding):
                v["0"] = holder.params["weight"].astype(F32)
            elif isinstance(holder, Linear):
                v["0"] = np.ascontiguousarray(holder.params["weight"].T, dtype=F32)
                if "bias" in holder.params:
                    v["1"] = holder.params["bias"].astype(F32)
    io.atomic_write_bytes(path, buffer.getvalue())
    return path


def _write_rnn(g: H5Group, layer: Recurrent, k: int, sfx: str) -> None:
    own = g.create_group("vars")  # (a <Kind>WithStart's start; a Keras layer's own: none)
    own.attrs["name"] = _snake(_kind(layer))
    for j, a in enumerate(start_weights(layer, k, sfx)):
        own[str(j)] = a
    kind = _KINDS[type(layer.cell)]
    v = g.create_group("cell").create_group("vars")
    v.attrs["name"] = _snake(kind) + "_cell"
    for j, a in enumerate(layer_weights(layer, k, sfx)):
        v[str(j)] = a


_WITH_START = '''
def with_start(base):
    """`base` (keras.layers.SimpleRNN, LSTM or GRU) starting from rnnlab's initial state
    instead of zeros: a vector per state (h; h and c for an LSTM), the same for every
    sequence, learned or (learned=False) kept constant. A state given at call overrides it."""

    class WithStart(base):
        def __init__(self, *args, learned=True, **kwargs):
            if base is not keras.layers.SimpleRNN:
                # Keras' fused cuDNN path for a Bidirectional starts from zeros without
                # calling `call` below: on a GPU the start would be skipped silently
                kwargs.setdefault("use_cudnn", False)
            super().__init__(*args, **kwargs)
            self.learned = learned

        def build(self, sequences_shape, initial_state_shape=None):
            super().build(sequences_shape, initial_state_shape)
            sizes = self.cell.state_size
            sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
            self.starts = [self.add_weight(shape=(n,), initializer="zeros", name=name,
                                           trainable=self.learned)
                           for name, n in zip(("h0", "c0"), sizes)]

        def call(self, sequences, initial_state=None, mask=None, training=False):
            if initial_state is None:
                batch = keras.ops.shape(sequences)[0]
                initial_state = [keras.ops.broadcast_to(s, (batch, s.shape[0]))
                                 for s in self.starts]
            return super().call(sequences, initial_state=initial_state, mask=mask,
                                training=training)

        def get_config(self):
            return {**super().get_config(), "learned": self.learned}

    # (a weights file names a layer by its class: lstm_with_start, ...)
    WithStart.__name__ = WithStart.__qualname__ = base.__name__ + "WithStart"
    return keras.saving.register_keras_serializable("rnnlab")(WithStart)

'''


def snippet(model: object, path: str | PathLike[str]) -> str:
    """Python that builds the Keras 3 model matching `model` and loads `path` into it. A
    layer with an initial state of its own is a <Kind>WithStart, a subclass of Keras' layer
    defined in the snippet: Keras' layers start from zeros, and take another state only as
    an argument of each call."""
    layers = _keras_layers(model)
    _checks.export_file_name(io.as_path(path, "path"), "keras", "path")
    mods: Sequence[object] = model.modules if isinstance(model, Sequential) else [model]
    starting = dict.fromkeys(_KINDS[type(m.cell)] for m in mods
                             if isinstance(m, Recurrent) and _starts(m))  # fmt: skip
    if reads_tokens(mods):
        inp = 'keras.Input((None,), dtype="int32")'
    else:
        inp = f"keras.Input((None, {input_features(mods)}))"
    lines = [
        "import os",
        'os.environ.setdefault("KERAS_BACKEND", "torch")',
        "import keras",
        *([_WITH_START] if starting else []),
        *[f"{kind}WithStart = with_start(keras.layers.{kind})" for kind in starting],
        "",
        "model = keras.Sequential([",
        f"    {inp},",
        *[f"    {code}," for _, code, _ in layers],
        "])",
        f"model.load_weights({str(path)!r})",
        "# padding: valid = (batch, time) booleans; call the layers in turn, the recurrent",
        "# and pooling ones with mask=valid (an Embedding drops a mask given to the model);",
        "# at padded steps Keras' SimpleRNN, LSTM and GRU repeat their last valid output where",
        "# rnnlab has zeros (a Bidirectional's are zeros there, as rnnlab's)",
        *(_LOAD_MODEL_NOTE if starting else []),
    ]
    return "\n".join(lines) + "\n"


_LOAD_MODEL_NOTE = [
    "# model.save('m.keras') writes the <Kind>WithStart layers by their registered names",
    "# (rnnlab>LSTMWithStart, ...): keras.saving.load_model('m.keras') in another process",
    "# reads it once with_start and the <Kind>WithStart lines above have run there",
]
"""The snippet's note where it defines <Kind>WithStart: a `.keras` file of its model names
classes that Keras finds only where they are defined and registered (a fresh process's
load_model failed with "could not be deserialized properly")."""


# ---------------------------------------------------------------------- Keras → rnnlab
def load_weights(
    layer: Recurrent | Sequential,
    source: str | PathLike[str] | KerasLayer | list[KerasLayer],
    *,
    keys: Sequence[str] | None = None,
) -> None:
    """Load Keras weights into rnnlab's recurrent `layer`, or into every module with weights
    of a Sequential (Embedding, Recurrent, Linear: the Keras model rnnlab's export builds,
    Embedding → recurrent layers → Dense, loads back whole). `source`: a Keras layer
    (SimpleRNN, LSTM, GRU or Bidirectional), a list of them (one per stacked layer; for a
    Sequential, the Keras model's layers, or the Keras model), or a `.keras` /
    `.weights.h5` file, whose recurrent layers are taken in the model's order (for a
    `.weights.h5` holding several kinds, name them in order with `keys`, e.g.
    ["lstm", "lstm_1"]). Into a Sequential, each kind of layer loads in order into the
    modules of that kind: the Embedding modules take the Embedding layers, the Recurrent
    modules the recurrent layers (num_layers each), the Linear modules the Dense layers; the
    counts must match, and a layer with weights of another kind is refused, so that no
    weight is left behind. A <Kind>WithStart's start loads into a learned initial state; a
    layer that starts from zeros or a constant takes only a start equal to it. A LastStep
    must read a recurrent module as Keras' return_sequences=False does (through Dropout and
    Linear modules, but no Linear after a bidirectional one, where rnnlab's LastStep reads
    the backward direction at the last step and Keras' each direction's final state): the
    export's rule, so that the loaded model computes Keras'; else refused, whatever the source.

    The options that change what a layer computes (activation, recurrent_activation,
    go_backwards, stateful, a Bidirectional's merge_mode; a recurrent layer's
    return_sequences, True below another layer of a stack and, into a Sequential, False
    exactly where a LastStep reads the layer, through Dropout and Linear modules; a Dense's
    activation, which rnnlab's Linear has not; an Embedding's mask_zero, which rnnlab's
    Embedding has not) are checked against rnnlab's modules from Keras layer objects and a
    `.keras` file's config.json (into a bare recurrent layer, its last layer's
    return_sequences is not: the layer gives every step and the final state). A
    `.weights.h5` holds weights only, so from one they are not: a SimpleRNN(activation=
    "relu") loads into a tanh RNN, a softmax Dense into a Linear, an Embedding(mask_zero=True)
    into an Embedding, and only the weights' shapes and counts (a GRU's reset_after, a
    Dense's bias among them) are checked. Nor can a square
    kernel given transposed be told apart. Prefer the `.keras` file. A file's arrays must
    agree with what it says of them (a `.keras` file's config.json, a `.weights.h5`'s keys,
    which name each layer's class), as Keras' own load requires: a recurrent layer's class
    with its arrays' kind (their gate count, from the kernel's shape: a GRU's arrays under
    an LSTM's config are refused, not loaded into a GRU), a Bidirectional with its
    forward_layer and backward_layer, a <Kind>WithStart with its start and Keras' own
    layer with none; a config's units, reset_after and use_bias (a Dense's units and
    use_bias, an Embedding's input_dim and output_dim) with the arrays' shapes and count. A
    layer holding arrays besides its own, and (a `.keras` file) arrays under a key its
    config.json does not list, are refused too, where Keras' load ignores them: no weight
    is left behind. An activation given as a Keras layer counts for what it computes:
    ReLU() with its defaults is "relu", Activation("tanh") "tanh"; a function by its name
    only when it is Keras' own (a function of one's own named "tanh" is refused, from the
    layer objects wherever it stands: an Activation inside a TimeDistributed, an Activation
    given as activation=; a .keras file saved by Keras 3.15 names it "tanh" alone, which
    Keras too loads as its own tanh). Likewise a layer counts by
    its class name only when the class is Keras' own (or the snippet's <Kind>WithStart,
    registered as 'rnnlab><Kind>WithStart' with 'learned' in its config): a class of one's
    own named Dropout, Dense, LSTM or LSTMWithStart, or wrapped in a TimeDistributed or
    Bidirectional, is refused, from the objects and from a .keras file (which writes its
    module, or null, and its registered name).

    Keras layers without weights, which rnnlab's Sequential holds nothing for, are judged by
    what they compute at inference: those that return their input load (Dropout,
    SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout, AlphaDropout: noise in training
    only; ActivityRegularization: a loss; InputLayer, Identity, a linear Activation, a
    Flatten of (batch, features), a Reshape whose target_shape is its input's shape, a
    TimeDistributed of a dropout, a noise or a linear Activation), a GlobalAveragePooling1D is a
    MeanOverTime (as many of one as of the other), and any other (Activation("softmax"),
    Softmax, ReLU, Masking, Lambda, Rescaling, a Reshape that changes the shape or may, a
    Flatten of steps, GlobalMaxPooling1D, a layer of one's own) is refused: rnnlab's model
    would compute without it. A Reshape's input shape is the layer object's input in its
    model, in a .keras file's Sequential the output of the layer before it, in a functional
    model's file the shape its inbound node records (where it agrees with the output of the
    layer it names); its target may differ from it on one axis, as -1 or where the input's
    size is unknown (there Keras reshapes only inputs of the target's size), not on two,
    which could trade sizes (steps merged); an unknown input shape (a layer never called, a
    recorded shape the graph contradicts) is refused. A `.weights.h5` names each layer's
    class (its key) but not its config, so there an Activation's function, a Flatten's
    input and a TimeDistributed's layer go unchecked, and a Reshape is refused. Every layer
    is checked before any weight is written: a refused source leaves the model as it was."""
    if keys is not None and (
        isinstance(keys, str)
        or not isinstance(keys, Sequence)
        or not all(isinstance(k, str) for k in keys)
    ):  # a str is a sequence too, of letters
        _checks.fail("keys", 'None or a list of layer names, e.g. ["lstm", "lstm_1"]',
                     _checks.describe(keys))  # fmt: skip
    if isinstance(layer, Sequential):
        _load_sequential(layer, source, keys)
        return
    _check_layer(layer)
    if isinstance(source, (str, PathLike)):
        # (an error names the file, and each layer by its key in it)
        path = io.as_path(source, "source")
        named = _read_file(path, keys)
        whole = f"source ('{path}')"
        labels = [f"source ('{path}', layer {k!r})" for k, _ in named]
        found = [f for _, f in named]
    else:
        found = [_from_keras_layer(x) for x in (source if isinstance(source, list) else [source])]
        whole, labels = "source", [f"source (layer {k})" for k in range(len(found))]
    _count(whole, layer.num_layers, "recurrent layer", "num_layers of the rnnlab layer",
           labels if isinstance(source, (str, PathLike)) else None, len(found),
           "Pass keys=[...] to pick them from a file.")  # fmt: skip
    # (its last layer's return_sequences unchecked: rnnlab's layer gives every step and the
    # final state, Keras' return_sequences=True and False)
    for name, value in _recurrent_values(layer, found, labels, "rnnlab's layer").items():
        layer.params[name][...] = value  # only once every layer was checked


def _count(whole: str, want: int, what: str, why: str, keys: list[str] | None, got: int,
           more: str = "") -> None:  # fmt: skip
    """Refuse a source with another number of layers of a kind than the rnnlab model has."""
    if got == want:
        return
    if keys is not None:  # (a file's: said by their keys)
        names = [k.rsplit("layer ", 1)[1].rstrip(")") for k in keys]
        said = f"{got}" + (f" ({', '.join(names)})" if names else "")
    else:
        said = f"{got}"
    _checks.fail(whole, f"{want} {what}{'s' if want != 1 else ''} ({why})", said,
                 more if got > want else "")  # fmt: skip


def _recurrent_values(layer: Recurrent, found: Sequence[_Found], labels: Sequence[str],
                      owner: str, last: tuple[bool, str, str] | None = None,
                      ) -> dict[str, np.ndarray]:  # fmt: skip
    """The parameters of `layer` (`owner` in errors) from its Keras layers `found` (one per
    stacked layer, each named by its label in errors), checked; nothing is written. `last`:
    the return_sequences its last layer must have, why, and a hint (None: either)."""
    kind = _check_layer(layer)
    loaded: dict[str, np.ndarray] = {}
    for k, (where, (ckind, bi, directions, options)) in enumerate(
        zip(labels, found, strict=True)
    ):
        if ckind != kind:
            _checks.fail(where, f"a Keras {kind} for rnnlab's {layer.cell.name}", _an(ckind))
        if bi != layer.bidirectional:
            want = "a Bidirectional" if layer.bidirectional else "a unidirectional layer"
            _checks.fail(where, want, "a Bidirectional" if bi else "a unidirectional layer")
        _check_options(layer, k, options, where)
        n = layer.num_layers
        if k < n - 1:
            _check_sequences(options, (True, f"layer {k} of {owner}, a stack of {n}, feeds "
                                       "every step to the next", ""), where)  # fmt: skip
        elif last is not None:
            _check_sequences(options, last, where)
        sides = [options, options.get("backward", {})] if bi else [options]
        for side, (w, _), label in zip(sides, directions, ("", " backward layer"),
                                       strict=False):  # fmt: skip
            if "use_bias" in side:  # (a .keras file's config, or the layer's)
                _check_bias_count(side["use_bias"], len(w), 3, where + label)
        for sfx, (w, start) in zip(layer.directions, directions, strict=True):
            loaded.update(_to_rnnlab(layer, k, sfx, w, where))
            loaded.update(_start_to_rnnlab(layer, k, sfx, start, where))
    return loaded


# The Keras layers with weights that rnnlab's modules other than Recurrent hold.
_OTHERS = {"embedding": "Embedding", "dense": "Dense"}


def _load_sequential(model: Sequential, source: object, keys: Sequence[str] | None) -> None:
    """load_weights into a Sequential: its Embedding, Recurrent and Linear modules, each
    kind in order from the Keras layers of that kind (Embedding, recurrent, Dense)."""
    mods = list(model.modules)
    for i, m in enumerate(mods):
        if m.params and not isinstance(m, (Embedding, Recurrent, Linear)):
            _checks.fail(f"layer (module {i})", "a module whose weights Keras' layers hold "
                         "(Embedding, a recurrent layer, Linear)", _checks.describe(m))  # fmt: skip
        if isinstance(m, Recurrent):
            _check_layer(m, f"layer (module {i})")
        elif isinstance(m, LastStep):  # (the export's rule: no Keras layer computes the rest)
            _last_step_source(mods, i, f"layer (module {i})", load=True)
    if isinstance(source, (str, PathLike)):
        path = io.as_path(source, "source")
        recurrent, others = _read_model_file(path, keys)
        whole = f"source ('{path}')"
        labels = [f"source ('{path}', layer {k!r})" for k, _ in recurrent]
        named: list[str] | None = labels
        found = [f for _, f in recurrent]
        other_labels = {kind: [f"source ('{path}', layer {k!r})" for k, _ in got]
                        for kind, got in others.items()}  # fmt: skip
        other_arrays = {kind: [a for _, a in got] for kind, got in others.items()}
        ask = "Pass keys=[...] to pick them from a file."
    else:
        layers = getattr(source, "layers", source)  # a Keras model, or its layers
        if not isinstance(layers, list):
            _checks.fail("source", "a .keras or .weights.h5 file, a Keras model or a list of "
                         "its layers for a Sequential", _checks.describe(source))  # fmt: skip
        found, labels, named, ask = [], [], None, ""
        other_arrays = {kind: [] for kind in _OTHERS.values()}
        other_labels = {kind: [] for kind in (*_OTHERS.values(), _MEAN)}
        whole = "source"
        for j, x in enumerate(layers):
            name = type(x).__name__
            if not _is_layer(x):  # (it met an AttributeError)
                _checks.fail(f"source (layer {j})", "a Keras layer", _checks.describe(x))
            _check_object_class(x, f"source (layer {j}, {x.name!r})")
            if name in _OTHERS.values():
                _check_other_options(name, _config(x), f"source (layer {j}, {x.name!r})")
                other_arrays[name].append([np.asarray(a) for a in x.get_weights()])
                other_labels[name].append(f"source (layer {j}, {x.name!r})")
            elif name == "Bidirectional" or name.removesuffix("WithStart") in _KERAS_KINDS:
                found.append(_from_keras_layer(x))
                labels.append(f"source (layer {j}, {x.name!r})")
            elif x.get_weights():
                _checks.fail(f"source (layer {j}, {x.name!r})", "a layer rnnlab's modules hold "
                             "(Embedding, SimpleRNN, LSTM, GRU, Bidirectional, Dense) or one "
                             "without weights", f"{_an(name)} with weights")  # fmt: skip
            elif _weightless_step(name, _config(x), _input_shape(x),
                                  f"source (layer {j}, {x.name!r})") == _MEAN:  # fmt: skip
                other_labels[_MEAN].append(f"source (layer {j}, {x.name!r})")
    recs = [m for m in mods if isinstance(m, Recurrent)]
    _count(whole, sum(m.num_layers for m in recs), "recurrent layer",
           "num_layers of the model's recurrent modules, summed", named, len(found),
           ask)  # fmt: skip
    writes: list[tuple[np.ndarray, np.ndarray]] = []
    at = 0
    for m in recs:
        n, i = m.num_layers, next(i for i, x in enumerate(mods) if x is m)
        step = _last_step_after(mods, i)
        last = ((True, f"rnnlab's module {i} outputs every step: no LastStep reads it",
                 "Add a LastStep after the recurrent module (or after its Dropout and Linear "
                 "modules) to compute Keras' model.") if step is None else
                (False, f"rnnlab's module {i} is read at its last step by the LastStep, module "
                 f"{step}", "Build the rnnlab model without the LastStep to compute Keras' model, "
                 "which outputs every step."))  # fmt: skip
        values = _recurrent_values(m, found[at : at + n], labels[at : at + n],
                                   f"rnnlab's module {i}", last)  # fmt: skip
        writes += [(m.params[k], v) for k, v in values.items()]
        at += n
    for kind, cls in (("Embedding", Embedding), ("Dense", Linear)):
        targets = [m for m in mods if isinstance(m, cls)]
        arrays, where = other_arrays[kind], other_labels[kind]
        _count(whole, len(targets), f"{kind} layer", f"the model's {cls.__name__} modules",
               where if named is not None else None, len(arrays))  # fmt: skip
        for m, w, label in zip(targets, arrays, where, strict=True):
            writes += _other_values(m, w, label)
    # A GlobalAveragePooling1D is rnnlab's MeanOverTime: as many of one as of the other. Where
    # it stands among the Dense and Dropout layers after the recurrent ones does not matter
    # (a mean over the steps commutes with x·K + b), and before a recurrent layer Keras
    # cannot put it (its output has no steps left).
    _count(whole, sum(isinstance(m, MeanOverTime) for m in mods), f"{_MEAN} layer",
           "the model's MeanOverTime modules", other_labels[_MEAN] if named is not None else
           None, len(other_labels[_MEAN]))  # fmt: skip
    for target, value in writes:  # only once every layer was checked
        target[...] = value


def _other_values(m: Embedding | Linear, w: list[np.ndarray],
                  where: str) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """(parameter, value) of an Embedding from Keras' Embedding (embeddings (N, D)) or of a
    Linear from Keras' Dense (kernel (I, O), x·K, transposed; bias (O,)), checked."""
    dtype = m.params["weight"].dtype
    names = ("embeddings",) if isinstance(m, Embedding) else ("kernel", "bias")
    if not 1 <= len(w) <= len(names):
        _checks.fail(where, f"a Keras {'Embedding' if len(names) == 1 else 'Dense'} layer "
                     f"({', '.join(names)})", f"{len(w)} arrays")  # fmt: skip
    a = [_cast_weight(_checks.float_array(np.asarray(v), f"{where} {n}"), dtype, f"{where} {n}")
         for v, n in zip(w, names, strict=False)]  # fmt: skip
    if isinstance(m, Embedding):
        want = (m.num_embeddings, m.embedding_dim)
        if a[0].shape != want:
            _checks.fail(f"{where} embeddings", f"an array of shape {want} (the Embedding's "
                         "num_embeddings, embedding_dim)", f"shape {a[0].shape}")  # fmt: skip
        return [(m.params["weight"], a[0])]
    want = (m.in_features, m.out_features)
    if a[0].shape != want:
        _checks.fail(f"{where} kernel", f"an array of shape {want} (the Linear's in_features, "
                     "out_features)", f"shape {a[0].shape}")  # fmt: skip
    out = [(m.params["weight"], a[0].T)]
    if "bias" in m.params:  # (a Dense without one: zeros, what it adds)
        bias = a[1] if len(a) == 2 else np.zeros(m.out_features, dtype)
        if bias.shape != (m.out_features,):
            _checks.fail(f"{where} bias", f"an array of shape {(m.out_features,)}",
                         f"shape {bias.shape}")  # fmt: skip
        out.append((m.params["bias"], bias))
    elif len(a) == 2:
        _checks.fail(where, "a Dense without a bias (use_bias=False), for a Linear without "
                     "one", "a Dense with a bias",
                     "Build the Linear with bias=True to load it.")  # fmt: skip
    return out


def _check_options(layer: Recurrent, k: int, options: dict[str, Any], where: str) -> None:
    """What a Keras layer's configuration (when known) must say for rnnlab to compute it."""
    cell = layer.cell
    want = {"recurrent_activation": "sigmoid", "go_backwards": False}
    want["activation"] = getattr(cell, "nonlinearity", "tanh")
    if isinstance(cell, GRUCell):
        want["reset_after"] = cell.reset_after
    if layer.bidirectional and k == layer.num_layers - 1:
        want["merge_mode"] = layer.merge
    elif layer.bidirectional:
        want["merge_mode"] = "concat"
    _check_values(cell, want, options, where)
    if layer.bidirectional:
        # A Bidirectional's backward layer is a layer of its own (Keras' `backward_layer=`),
        # with options that need not be the forward one's: it must compute rnnlab's reverse
        # direction, the same cell reading the sequence from its end.
        del want["merge_mode"]
        want["go_backwards"] = True
        _check_values(cell, want, options.get("backward", {}), f"{where} backward layer")
    _check_values(cell, {"stateful": False}, options, where,
                  "rnnlab's layer starts every call from its initial state, a stateful Keras "
                  "layer each batch from the previous batch's final state: save the Keras "
                  "model with stateful=False (its weights are the same).")  # fmt: skip


def _check_sequences(options: dict[str, Any], last: tuple[bool, str, str], where: str) -> None:
    """A Keras recurrent layer's return_sequences (when its config is known) against what
    rnnlab computes from it: every step (a layer of a stack below another, one no LastStep
    reads), or the last step only (rnnlab's LastStep after it, Keras' return_sequences=False).
    Otherwise a Dense after it is applied to other steps than Keras', without a word."""
    if "return_sequences" not in options:  # (a .weights.h5: no config)
        return
    want, why, hint = last
    got = bool(options["return_sequences"])
    if got != want:
        said = {True: "every step", False: "the last step only"}
        _checks.fail(where, f"a Keras layer with return_sequences={want} ({why})",
                     f"return_sequences={got} ({said[got]})", hint)  # fmt: skip


def _check_other_options(kind: str, config: dict[str, Any], where: str) -> None:
    """What a Keras Embedding's or Dense's configuration (a .keras file's config.json, or the
    layer object's get_config(); a .weights.h5 has none) must say for rnnlab's Embedding or
    Linear to compute what it computes. Only what changes the outputs is refused: a Dense's
    activation (rnnlab's Linear is x·Wᵀ + b alone, so a softmax Dense loaded as logits), an
    Embedding's mask_zero (Keras then skips the steps whose id is 0 in the layers after it;
    rnnlab's Embedding masks nothing, padding is forward's `lengths`). Constraints,
    regularizers and initializers act in training only; a Dense's use_bias=False loads
    zeros into a Linear's bias, which computes the same (the arrays' count says it)."""
    if kind == "Dense":
        options = dict(config)
        if options.get("activation", "linear") is None:  # (Keras writes None as "linear")
            options["activation"] = "linear"
        _check_values(None, {"activation": "linear"}, options, where,
                      "rnnlab's Linear has no activation, so its outputs would lack it: load a "
                      "Dense whose activation is linear, and apply the activation to the "
                      "model's outputs.")  # fmt: skip
    else:
        _check_values(None, {"mask_zero": False}, config, where,
                      "rnnlab's Embedding masks nothing, where Keras' skips the steps whose "
                      "id is 0 in the layers after it: load an Embedding with mask_zero=False, "
                      "and give the model's forward the sequences' lengths.")  # fmt: skip


# Keras layers without weights that pass their input on unchanged at inference, which rnnlab's
# Sequential (at inference) computes by leaving them out: the dropouts and the noises act in
# training only (GaussianDropout and AlphaDropout too: at inference they return the input),
# ActivityRegularization adds a loss and returns its input, InputLayer and Identity are x.
_IDENTITY = ("InputLayer", "Identity", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
             "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
             "ActivityRegularization")  # fmt: skip
# Keras layers that are an activation function (applied to a layer's outputs where they
# stand, or given as a layer's activation=): named by what they compute, "linear" passing.
_ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "Softmax", "ELU")
_MEAN = "GlobalAveragePooling1D"  # (rnnlab's MeanOverTime)
_CLASS_OF_KEY = {_snake(c): c for c in (*_IDENTITY, *_ACTIVATION_LAYERS, _MEAN, "Masking",
                                        "TimeDistributed", "Flatten", "Reshape")}  # fmt: skip
_STEPS = ("a layer rnnlab's Sequential computes (Embedding, SimpleRNN, LSTM, GRU, Bidirectional, "
          "Dense; GlobalAveragePooling1D as MeanOverTime) or one that is identity at inference "
          f"({', '.join(_IDENTITY[1:])}, Activation('linear'), a Reshape to its input's "
          "shape)")  # fmt: skip


def _weightless_step(cls: str, config: dict[str, Any] | None, shape: _Shape, where: str) -> str:
    """What a Keras layer without weights computes at inference, for rnnlab's Sequential,
    which holds none of its own for it: "identity" (left out: _IDENTITY, a linear
    activation, a Flatten of (batch, features), a Reshape to its input's shape, a
    TimeDistributed of an _IDENTITY layer or a linear activation) or _MEAN (a
    GlobalAveragePooling1D, rnnlab's MeanOverTime). Any other is refused, saying what rnnlab
    would compute instead: loaded, the model would compute it without the layer. `shape`:
    the layer's input's, batch first (None where unknown; None when not known at all).
    `config` None: a .weights.h5, which names a layer's class (its key) but holds no
    config, so an Activation's function, a Flatten's input and a TimeDistributed's layer go
    unchecked there (a Reshape, which changes the shape unless its target is its input's,
    is refused)."""
    if cls in _IDENTITY:
        return "identity"
    if cls == _MEAN:
        if config is not None and (config.get("data_format", "channels_last") != "channels_last"
                                   or config.get("keepdims", False)):  # fmt: skip
            _checks.fail(where, "a GlobalAveragePooling1D with data_format='channels_last' and "
                         "keepdims=False (rnnlab's MeanOverTime)", f"data_format="
                         f"{config.get('data_format')!r}, keepdims={config.get('keepdims')!r}",
                         "rnnlab's MeanOverTime averages over the steps, keeping the "
                         "features: (B, T, F) -> (B, F).")  # fmt: skip
        return _MEAN
    if config is None and cls in ("Activation", "Flatten", "TimeDistributed"):
        return "identity"  # (a .weights.h5: unchecked, as the docstring of load_weights says)
    if cls in _ACTIVATION_LAYERS:
        name = _activation_name({"class_name": cls, "config": config or {},
                                 "module": "keras.layers"})  # fmt: skip
        if name == "linear":
            return "identity"
        got = f"an Activation({name!r})" if cls == "Activation" else f"{_an(cls)} ({name})"
        hint = (f"rnnlab's model would compute its input without the {name}: load the model "
                f"without this layer and apply the {name} to rnnlab's outputs.")  # fmt: skip
    elif cls == "Flatten" and shape is not None and len(shape) == 2:
        return "identity"  # (batch, features) flattened is itself
    elif cls == "Reshape" and config is not None:
        target = config.get("target_shape")
        if _reshapes_to_itself(target, shape):
            return "identity"
        target = tuple(target) if isinstance(target, list) else target
        got = (f"a Reshape with target_shape={target} of inputs of "
               + (f"shape {shape}" if shape is not None else "unknown shape"))
        hint = ("rnnlab's model would keep its input's shape where Keras' Reshape changes it "
                "(or may: a Reshape loads only when its target_shape is its input's shape "
                "without the batch axis, allowing -1, or a size the input leaves unknown, on "
                "one axis).")
    elif cls == "TimeDistributed" and isinstance(config, dict):
        given = config.get("layer")
        inner: dict[str, Any] = given if isinstance(given, dict) else {}
        inner_cls = str(inner.get("class_name", ""))
        # (its module as written: Keras' own layer, or one of one's own named so, whose
        # class name says nothing of what it computes)
        own = _keras_module(inner.get("module"))
        computes = _activation_name(inner) if inner_cls in _ACTIVATION_LAYERS else None
        if own and (inner_cls in _IDENTITY or computes == "linear"):
            return "identity"
        said = f"Activation({computes!r})" if inner_cls == "Activation" else inner_cls or "?"
        got = f"a TimeDistributed({said})"
        hint = "rnnlab's model would pass its input on unchanged, without the layer it wraps."
    elif cls == "Masking":
        got, hint = "a Masking layer", (
            "rnnlab's model masks nothing: it would compute the steps Keras skips (those whose "
            "features all equal mask_value). Load the model without it and give forward the "
            "sequences' lengths.")
    elif cls == "Flatten":
        got, hint = "a Flatten", ("rnnlab's model would keep its input's shape where Keras' "
                                  "Flatten changes it.")  # fmt: skip
    elif cls == "Reshape":  # (config None: a .weights.h5)
        got, hint = "a Reshape (a .weights.h5 holds no target_shape)", (
            "rnnlab's model would keep its input's shape where Keras' Reshape may change it: "
            "load the .keras file or the Keras model, whose config says whether it does.")
    else:
        got = _an(cls) if cls else "a layer without a class name"
        hint = "rnnlab's model holds no module for it: it would pass its input on unchanged."
    _checks.fail(where, _STEPS, got, hint)


def _reshapes_to_itself(target: object, shape: _Shape) -> bool:
    """Whether Keras' Reshape(target) returns its input unchanged on every input of `shape`
    (batch first, None where unknown) that it reshapes. A reshape keeps the elements'
    order, so it is the identity exactly when its output's shape is its input's: when the
    target is the input's shape (batch left out) on every axis but one at most, and there it
    is -1 (Keras sets it from the input's size: the input's own, the other axes being equal)
    or the input's is unknown (an input of another size there has another count of elements,
    which Keras refuses to reshape). Two such axes could trade sizes, merging or splitting
    steps: (None, None) to (-1, 5) is not the identity on (6, 10); nor is an unknown shape."""
    if shape is None or not isinstance(target, (list, tuple)):
        return False
    steps = shape[1:]
    if len(target) != len(steps) or not all(isinstance(d, int) and (d == -1 or d > 0)
                                            for d in target):  # fmt: skip
        return False
    apart = [(t, s) for t, s in zip(target, steps, strict=True) if s is None or t != s]
    return len(apart) == 0 or (len(apart) == 1 and (apart[0][0] == -1 or apart[0][1] is None))


def _check_bias_count(use_bias: object, count: int, with_bias: int, where: str) -> None:
    """A layer's use_bias (its config) against how many arrays it holds (`with_bias` with a
    bias, one fewer without): they disagree in a file whose config.json and weights do not
    belong together, and the bias would be taken, or zeros, against the config."""
    want = with_bias if use_bias else with_bias - 1
    if count != want:
        _checks.fail(where, f"{want} array{'s' if want != 1 else ''}, as its config's "
                     f"use_bias={use_bias!r} says", f"{count}", "The file's config.json "
                     "and its weights disagree: save the Keras model again.")  # fmt: skip


def _check_values(cell: object, want: dict[str, Any], options: dict[str, Any], where: str,
                  hint: str = "") -> None:  # fmt: skip
    for name, value in want.items():
        got = _serialized_name(options.get(name, value))
        if name == "recurrent_activation" and isinstance(cell, ElmanCell):
            continue
        if got != value:
            _checks.fail(where, f"a Keras layer with {name}={value!r}", f"{name}={got!r}", hint)


def _serialized_name(value: object) -> object:
    """An option as Keras serializes it, by its name: an activation is a str ("tanh"), a
    function of one's own {"class_name": "function", "config": "my_act", ...}, a layer
    (keras.layers.ReLU()) {"class_name": "ReLU", "config": {...}}; the name then is
    "my_act", or what the layer computes (_activation_name)."""
    if not isinstance(value, dict):
        return value
    inner = value.get("config")
    if isinstance(inner, str):
        module = value.get("module")
        if _keras_module(module):
            return inner
        return _Foreign(inner, module)  # (its name may be Keras' own: "tanh", "relu")
    return _activation_name(value)


def _keras_module(module: object) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def _check_own_class(cls: str, module: object, registered: object, config: object, where: str,
                     outer: str = "") -> None:  # fmt: skip
    """Refuse a layer whose class is not Keras' own (nor the snippet's <Kind>WithStart:
    _is_with_start). The load reads a layer by its class name and config, which say what
    Keras' own layer of that name computes: a Dropout of one's own may scale its input at
    inference, a Dense of one's own apply a function, an LSTMWithStart of one's own start
    otherwise, and would load as Keras' (or the export's) without a word. `registered`,
    `config`: the class's registered name and the layer's config (read for a <Kind>WithStart
    only; None where not); `outer`: the layers wrapping it, as the error says them
    ("a TimeDistributed of ")."""
    if _keras_module(module) or _is_with_start(cls, registered, config):
        return
    said = f"module {module!r}" if module or not registered else f"registered_name {registered!r}"
    more = ""
    if cls in _WITH_STARTS:
        said = f"registered_name {registered!r}" + (
            ", no 'learned' in its config" if registered == _registered_as(cls) else "")
        more = (f" The export's {cls} is registered as {_registered_as(cls)!r}, with "
                "'learned' in its config.")  # fmt: skip
    _checks.fail(where, "a layer of Keras' own (keras.layers), or the export's <Kind>WithStart",
                 f"{outer}{_an(cls or '?')} of one's own ({said})",
                 "rnnlab reads a Keras layer by its class name and config, which say what "
                 "Keras' layer of that name computes, not what a class of one's own does: "
                 "build the Keras model with Keras' layers to load it." + more)  # fmt: skip


def _registered_as(cls: str) -> str:
    """The registered name of the snippet's class `cls` (`register_keras_serializable("rnnlab")`
    in _WITH_START), which a .keras file writes as its registered_name."""
    return f"rnnlab>{cls}"


def _is_with_start(cls: str, registered: object, config: object) -> bool:
    """Whether a layer is the snippet's <Kind>WithStart, by what a .keras file records of it:
    the class name, the registered name the snippet gives it (its module is where the
    snippet ran: null for a script, the module's name where imported, 'builtins' under
    exec, so it says nothing) and a config with the boolean 'learned' the snippet adds to
    Keras' <Kind>'s. A class of one's own of that name has another registered name (its
    package's, or its class name when unregistered). (_direction checks besides that a
    layer object's class subclasses Keras' <Kind>.)"""
    return (cls in _WITH_STARTS and registered == _registered_as(cls)
            and isinstance(config, dict) and isinstance(config.get("learned"), bool))  # fmt: skip


def _registered_name(cls: type) -> object:
    """The name Keras has `cls` registered under ('package>Name', or its class name when
    unregistered), as a .keras file writes it; None where Keras is not imported (a class of
    a layer object is Keras' subclass, so Keras is)."""
    saving = getattr(sys.modules.get("keras"), "saving", None)
    return saving.get_registered_name(cls) if saving is not None else None


def _check_object_class(x: KerasLayer, where: str, outer: str = "") -> None:
    """_check_own_class for a Keras layer object and the layers it wraps (a TimeDistributed's
    `layer`, a Bidirectional's `forward_layer` and `backward_layer`: Keras 3's Bidirectional
    keeps no `layer`, and its forward layer is of the class given, whatever the backward
    layer's). Not a layer at all: the caller's refusal says what it expected."""
    if not _is_layer(x):
        return
    cls = type(x)
    starts = cls.__name__ in _WITH_STARTS  # (what a <Kind>WithStart is: _is_with_start)
    _check_own_class(cls.__name__, cls.__module__, _registered_name(cls) if starts else None,
                     x.get_config() if starts else None, where, outer)  # fmt: skip
    for name in ("layer", "forward_layer", "backward_layer"):
        inner = getattr(x, name, None)
        if _is_layer(inner):
            _check_object_class(inner, where, f"{outer}{_an(type(x).__name__)} of ")


def _check_entry_class(entry: object, where: str, outer: str = "") -> None:
    """_check_own_class for a layer of a .keras file's config.json, as Keras writes it
    ({"module", "class_name", "config", "registered_name"}; a layer of one's own has the
    module null and its registered name), and the layers it wraps."""
    if not isinstance(entry, dict):
        return  # (a foreign config.json: its layers are refused as what they are not)
    cls = str(entry.get("class_name", ""))
    config = entry.get("config")
    _check_own_class(cls, entry.get("module"), entry.get("registered_name"), config, where,
                     outer)  # fmt: skip
    for name in ("layer", "backward_layer"):
        inner = config.get(name) if isinstance(config, dict) else None
        if isinstance(inner, dict):
            _check_entry_class(inner, where, f"{outer}{_an(cls)} of ")


class _Foreign:
    """A function of one's own by its name and module: named "tanh", it need not compute
    Keras' tanh, so it equals no name an rnnlab layer computes."""

    def __init__(self, name: str, module: object) -> None:
        self.name, self.module = name, module

    def __repr__(self) -> str:
        return f"{self.name!r} (a function of module {self.module!r}, not Keras' own)"


def _config(x: KerasLayer) -> dict[str, Any]:
    """A Keras layer object's config, judged by the objects it holds where their config
    says less: Keras' get_config names a function by its name alone when Keras has one of
    that name (a function of one's own named "tanh" is "tanh", and would pass for Keras'
    own), so a function not of Keras' modules is written with its module (_Foreign); a
    layer given as an activation, and the layer a TimeDistributed wraps, by their own
    _config, with the module of their class (an Activation(f) inside holds f)."""
    config = dict(x.get_config())
    for name in ("activation", "recurrent_activation"):
        f = getattr(x, name, None)
        if name not in config or f is None:
            continue
        if _is_layer(f):
            config[name] = _layer_config(f, config[name])
        elif not _keras_module(getattr(f, "__module__", None)):  # (torch.tanh too: not Keras')
            config[name] = {"class_name": "function", "module": getattr(f, "__module__", None),
                            "config": getattr(f, "__name__", type(f).__name__)}  # fmt: skip
    inner = getattr(x, "layer", None)  # (a TimeDistributed's; a Bidirectional's is read apart)
    if _is_layer(inner) and isinstance(config.get("layer"), dict):
        config["layer"] = _layer_config(inner, config["layer"])
    return config


def _is_layer(x: object) -> bool:
    return hasattr(x, "get_config") and hasattr(x, "get_weights")


def _layer_config(x: KerasLayer, serialized: object) -> dict[str, Any]:
    """A layer held by another, as Keras serializes it ({"class_name", "module", "config"}),
    its config and module from the object."""
    given = serialized if isinstance(serialized, dict) else {}
    return {**given, "class_name": type(x).__name__, "module": type(x).__module__,
            "config": _config(x)}  # fmt: skip


def _activation_name(value: dict[str, Any]) -> object:
    """The activation a Keras activation layer computes, as Keras names the function:
    ReLU() with its defaults (no max_value, negative_slope 0, threshold 0) and LeakyReLU
    (negative_slope=0) are "relu", Activation(f) is f, Identity() is "linear", Softmax over
    the last axis "softmax", ELU(alpha=1) "elu"; any other, or a layer of one's own (outside
    keras.layers), is named by its class, which no rnnlab layer computes."""
    cls, cfg = value.get("class_name"), value.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    if not str(value.get("module", "keras.layers")).startswith("keras."):
        return cls
    if cls == "Activation":
        f = cfg.get("activation", "linear")
        return "linear" if f is None else _serialized_name(f)
    if cls == "Identity":
        return "linear"
    if cls == "ReLU" and cfg.get("max_value") is None and not cfg.get("negative_slope", 0.0) \
            and not cfg.get("threshold", 0.0):  # fmt: skip
        return "relu"
    if cls == "LeakyReLU" and cfg.get("negative_slope", 0.3) == 0:
        return "relu"
    if cls == "Softmax" and cfg.get("axis", -1) in (-1, [-1]):
        return "softmax"
    if cls == "ELU" and cfg.get("alpha", 1.0) == 1.0:
        return "elu"
    return cls


def _to_rnnlab(
    layer: Recurrent, k: int, sfx: str, w: list[np.ndarray], where: str
) -> dict[str, np.ndarray]:
    H, I = layer.hidden_size, layer.params[f"weight_ih_l{k}"].shape[1]
    G = layer.cell.gates
    cell = layer.cell
    if len(w) == 2:  # use_bias=False
        w = [*w, np.zeros((2, G * H) if getattr(cell, "reset_after", False) else G * H)]
    # NaN or inf in a weight would only show up later as NaN outputs (load_state_dict refuses
    # them too); checked here, before load_weights assigns anything
    # (and within the layer's float range: a float64 1e300 would be inf in a float32 layer)
    kernel, recurrent, bias = (
        _cast_weight(_checks.float_array(np.asarray(a), f"{where} {name}"), layer.dtype,
                     f"{where} {name}")
        for a, name in zip(w, ("kernel", "recurrent_kernel", "bias"), strict=True)
    )
    for name, a, shape in (("kernel", kernel, (I, G * H)), ("recurrent_kernel", recurrent,
                                                            (H, G * H))):  # fmt: skip
        if a.shape != shape:
            _checks.fail(f"{where} {name}", f"an array of shape {shape}", f"shape {a.shape}")
    W, R = kernel.T, recurrent.T
    if isinstance(cell, GRUCell):
        W, R = _reorder(W, _GRU_ORDER, H, 0), _reorder(R, _GRU_ORDER, H, 0)
    want = (2, G * H) if getattr(cell, "reset_after", False) else (G * H,)
    if bias.shape != want:
        _checks.fail(f"{where} bias", f"an array of shape {want}", f"shape {bias.shape}")
    if bias.ndim == 2:
        b_ih, b_hh = bias[0], bias[1]
    else:
        b_ih, b_hh = bias, np.zeros_like(bias)
    if isinstance(cell, GRUCell):
        b_ih, b_hh = _reorder(b_ih, _GRU_ORDER, H, 0), _reorder(b_hh, _GRU_ORDER, H, 0)
    return {
        f"weight_ih_l{k}{sfx}": W,
        f"weight_hh_l{k}{sfx}": R,
        f"bias_ih_l{k}{sfx}": b_ih,
        f"bias_hh_l{k}{sfx}": b_hh,
    }


def _start_to_rnnlab(
    layer: Recurrent, k: int, sfx: str, start: list[np.ndarray], where: str
) -> dict[str, np.ndarray]:
    """The learned initial state of layer k, direction sfx, from a Keras layer's start (zeros
    from a layer of Keras' own, which starts there); for a layer that starts from zeros or a
    constant, the start must be that constant: loaded, it would compute something else."""
    names = ("h0", "c0") if layer.cell.has_c else ("h0",)
    if start and len(start) != len(names):
        _checks.fail(f"{where} start", f"{len(names)} vectors ({', '.join(names)})",
                     f"{len(start)} arrays")  # fmt: skip
    H = layer.hidden_size
    arrays = [_cast_weight(_checks.float_array(np.asarray(a), f"{where} {n}", shape=(H,)),
                           layer.dtype, f"{where} {n}")
              for a, n in zip(start, names, strict=False)]  # fmt: skip
    if layer.initial_state == "learned":
        if not arrays:
            arrays = [np.zeros(H) for _ in names]
        return {f"{n}_l{k}{sfx}": a for n, a in zip(names, arrays, strict=True)}
    value = 0.0 if layer.initial_state == "zeros" else float(layer.initial_state)
    if all(np.all(a.astype(F32) == F32(value)) for a in arrays) and (arrays or value == 0):
        return {}
    low = min((float(a.min()) for a in arrays), default=0.0)
    high = max((float(a.max()) for a in arrays), default=0.0)
    if not arrays:
        got = "one starting from zeros (Keras' own layer)"
    elif low == high:
        got = f"one starting from {low:.7g}"
    else:
        got = f"one starting from a state of its own (from {low:.3g} to {high:.3g})"
    also = f" (or initial_state={low:.7g})" if low == high else ""
    _checks.fail(where, f"a Keras layer starting from {value!r} for rnnlab's initial_state="
                 f"{layer.initial_state!r}", got, "Build the rnnlab layer with initial_state="
                 f"'learned'{also} to load the Keras layer's start.")  # fmt: skip


_KERAS_KINDS = ("SimpleRNN", "LSTM", "GRU")
_WITH_STARTS = tuple(f"{kind}WithStart" for kind in _KERAS_KINDS)


def _input_shape(x: KerasLayer) -> _Shape:
    """The shape of the input a Keras layer object was built on, batch first (None where
    unknown): its input in the model it was called in, else its build config's; None when
    it was never built (a layer of a Sequential without an Input is built on its first
    call)."""
    try:
        shape = _shape(list(x.input.shape))
    except (AttributeError, ValueError, TypeError, IndexError, RuntimeError):
        shape = None  # (Keras: "The layer has never been called and thus has no defined input")
    if shape is None:
        build = x.get_build_config()
        shape = _shape(build.get("input_shape")) if isinstance(build, dict) else None
    return shape


def _from_keras_layer(x: KerasLayer) -> _Found:
    """(kind, bidirectional, its directions, options) of a Keras layer object."""
    _check_object_class(x, "source")
    if type(x).__name__ == "Bidirectional":
        kind, forward = _direction(x.forward_layer)
        back_kind, backward = _direction(x.backward_layer)
        if back_kind != kind:
            _checks.fail("source", f"a Bidirectional whose backward layer is {_an(kind)} too",
                         _an(back_kind))  # fmt: skip
        options = _options(x.forward_layer)
        options["merge_mode"] = x.merge_mode
        options["backward"] = _options(x.backward_layer)
        return kind, True, [forward, backward], options
    kind, direction = _direction(x)
    return kind, False, [direction], _options(x)


def _direction(x: KerasLayer) -> tuple[str, _Direction]:
    """The kind of a Keras SimpleRNN, LSTM or GRU (or the snippet's <Kind>WithStart of one)
    and its weights: its cell's, and its start (a <Kind>WithStart's own weights, which Keras
    lists before its cell's)."""
    name = type(x).__name__
    kind = name.removesuffix("WithStart")
    # (Keras' own layer, or the snippet's <Kind>WithStart subclassing it: _check_own_class)
    keras_base = any(c.__name__ == kind and _keras_module(c.__module__) for c in type(x).__mro__)
    if kind not in _KERAS_KINDS or not keras_base:
        _checks.fail("source", "Keras SimpleRNN, LSTM, GRU or Bidirectional layers (or the "
                     "export's <Kind>WithStart), or a .keras/.weights.h5 file",
                     _checks.describe(x))  # fmt: skip
    weights = x.get_weights()
    n = len(x.cell.get_weights())
    if not 2 <= n <= 3:  # (Keras creates them on the first call)
        _checks.fail("source", "a built Keras recurrent layer (kernel, recurrent_kernel and "
                     "bias: call it, or build it, once)",
                     f"{x.name!r} with {n} arrays")  # fmt: skip
    return kind, (weights[len(weights) - n :], weights[: len(weights) - n])


def _options(x: KerasLayer) -> dict[str, Any]:
    config = _config(x)
    return {k: config[k] for k in ("activation", "recurrent_activation", "reset_after",
                                   "go_backwards", "use_bias", "return_sequences",
                                   "stateful") if k in config}  # fmt: skip


def _read_file(path: Path, keys: Sequence[str] | None) -> list[tuple[str, _Found]]:
    """The recurrent layers of the file at `path`, each with its key in the file."""
    return _read_model_file(path, keys, others=False)[0]


def _read_model_file(
    path: Path, keys: Sequence[str] | None, others: bool = True
) -> tuple[list[tuple[str, _Found]], dict[str, list[tuple[str, list[np.ndarray]]]]]:
    """The recurrent layers of the file at `path`, each with its key in the file, and (with
    `others`) its Embedding and Dense layers' arrays by kind, in the model's order; a layer
    with weights of another kind is refused."""
    h5py = _h5py()
    if path.is_dir():
        _checks.fail("source", "a .keras or .weights.h5 file", f"'{path}', a directory")
    if not path.is_file():
        _checks.fail("source", "a .keras or .weights.h5 file", f"'{path}', which does not exist")
    config = None
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
                data = z.read("model.weights.h5")
        else:
            data = path.read_bytes()
        f = h5py.File(_io.BytesIO(data), "r")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"'{path}' is not a Keras 3 .keras or .weights.h5 file: {e}") from None
    with f:
        layers = f.get("layers")
        if not isinstance(layers, h5py.Group):
            raise ValueError(f"'{path}' is not a Keras 3 weights file (no 'layers' group)")
        arg = "source" if keys is None else "keys"
        try:  # (written by Keras, or not: a foreign config.json must not meet an AttributeError)
            if keys is None:
                keys = _recurrent_keys(layers, config, path)
            configs = _layer_configs(config) if config is not None else {}
            entries = _entries(config) if config is not None else {}
            for key in entries if others else keys:  # (the layers read)
                if key in entries:
                    _check_entry_class(entries[key].raw, f"source ('{path}', layer {key!r})")
            declared = {key: _declared(key, entries.get(key) if config is not None else None)
                        for key in keys}  # fmt: skip
        except (AttributeError, TypeError):
            raise ValueError(f"'{path}' is not a Keras 3 .keras file: its config.json does not "
                             "describe a Keras model") from None  # fmt: skip
        if config is not None:
            _check_listed(layers, entries, path)
        out = []
        for key in keys:
            if key not in layers:
                if key in entries:  # (its config.json lists it: its weights are missing)
                    _checks.fail(f"source ('{path}', layer {key!r})", "arrays in the file's "
                                 f"model.weights.h5, as {declared[key].says}",
                                 f"no group {key!r} there", _DISAGREE)  # fmt: skip
                _checks.fail("keys", f"names of layers in '{path}'", repr(key))
            out.append((key, _read_group(layers[key], configs.get(key, {}), declared[key], arg,
                                         key, path)))  # fmt: skip
        return out, (_read_others(layers, config, entries, path) if others else {})


_DISAGREE = "The file's config.json and its weights disagree: save the Keras model again."


def _check_listed(layers: H5Group, entries: dict[str, _Entry], path: Path) -> None:
    """Refuse arrays in a .keras file's weights under a key its config.json does not list
    (a file put together from two saves, or edited): no layer of the model would hold them,
    and the load would leave them behind without a word. (Keras' own load ignores them.)"""
    h5py = _h5py()
    for name in layers:
        g = layers.get(name)
        held = (len(_dataset_names(g)) if isinstance(g, h5py.Group)
                else int(isinstance(g, h5py.Dataset)))  # fmt: skip
        if name in entries or not held:
            continue
        listed = [repr(k) for k in entries]
        said = ", ".join(listed[:6]) + (", ..." if len(listed) > 6 else "")
        _checks.fail(f"source ('{path}', layer {name!r})", "a layer the file's config.json "
                     f"lists ({said or 'none'})", f"{held} array{'s' if held != 1 else ''} "
                     "under a key it does not list", _DISAGREE)  # fmt: skip


def _dataset_names(g: H5Group) -> list[str]:
    """The paths of every array under the h5 group `g`."""
    h5py = _h5py()
    held: list[str] = []
    g.visititems(lambda name, obj: held.append(name) if isinstance(obj, h5py.Dataset) else None)
    return held


def _read_others(layers: H5Group, config: dict[str, Any] | None, entries: dict[str, _Entry],
                 path: Path) -> dict[str, list[tuple[str, list[np.ndarray]]]]:  # fmt: skip
    """The Embedding and Dense layers of a file's `layers` group: (key, arrays) by kind, in
    the model's order (a .keras file's config.json; in a .weights.h5, by their keys'
    numbers, Keras' order within a kind). Any other layer holding arrays is refused."""
    h5py = _h5py()
    configs = _layer_configs(config) if config is not None else {}
    order = list(configs) if config is not None else sorted(
        layers, key=lambda k: (_base(k), 0 if k == _base(k) else int(k.rsplit("_", 1)[1]) + 1))
    out: dict[str, list[tuple[str, list[np.ndarray]]]] = {
        kind: [] for kind in (*_OTHERS.values(), _MEAN)}
    for key in order:
        g = layers.get(key)
        base = _base(key)
        where = f"source ('{path}', layer {key!r})"
        if base in _RECURRENT:
            continue
        held = _dataset_names(g) if isinstance(g, h5py.Group) else []
        if base not in _OTHERS:
            if held:
                _checks.fail(where, "a layer rnnlab's modules hold (Embedding, SimpleRNN, "
                             "LSTM, GRU, Bidirectional, Dense) or one without weights",
                             f"one holding {len(held)} arrays")  # fmt: skip
            if key in entries:  # (a .keras file: its class, config and input's shape)
                cls, cfg, shape, _ = entries[key]
            elif config is None and isinstance(g, h5py.Group):  # (a .weights.h5: its key)
                cls, cfg, shape = _CLASS_OF_KEY.get(base, base), None, None
            else:
                continue
            if _weightless_step(cls, cfg, shape, where) == _MEAN:
                out[_MEAN].append((key, []))
            continue
        if not isinstance(g, h5py.Group):
            continue
        v = g.get("vars")
        names = [str(j) for j in range(len(v))] if isinstance(v, h5py.Group) else []
        if not names or len(held) != len(names) or not all(
                isinstance(v.get(n), h5py.Dataset) for n in names):  # fmt: skip
            _checks.fail(where, f"a built Keras {_OTHERS[base]} layer (its arrays in vars/0, "
                         "vars/1)", f"{len(held)} arrays elsewhere" if held else "no arrays")
        _check_other_options(_OTHERS[base], configs.get(key, {}), where)  # (none: .weights.h5)
        if base == "dense" and "use_bias" in configs.get(key, {}):
            _check_bias_count(configs[key]["use_bias"], len(names), 2, where)
        arrays = [np.asarray(v[n]) for n in names]
        _check_other_sizes(_OTHERS[base], configs.get(key, {}), arrays, where)
        out[_OTHERS[base]].append((key, arrays))
    return out


def _check_other_sizes(kind: str, config: dict[str, Any], w: list[np.ndarray],
                       where: str) -> None:  # fmt: skip
    """A .keras file's Dense (units) or Embedding (input_dim, output_dim) config against its
    arrays' shapes: only the arrays are compared with rnnlab's module, so a config.json
    saying units=10 over a kernel of 12 columns (a file put together by hand, or from two
    saves, which Keras' own load refuses) loaded as the arrays say. A .weights.h5 has no
    config (an empty `config`: nothing to compare)."""

    def size(name: str) -> int | None:
        value = config.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    if kind == "Dense":
        units = size("units")
        if units is None:
            return
        for name, a in zip(("kernel", "bias"), w, strict=False):
            # (the kernel's rows, and its axes, are rnnlab's Linear's to check: _other_values)
            if (a.shape[-1:] if name == "kernel" else a.shape) != (units,):
                want = f"{units} columns" if name == "kernel" else f"shape {(units,)}"
                _checks.fail(f"{where} {name}", f"an array of {want}, as the file's config.json "
                             f"says (units={units})", f"shape {a.shape}", _DISAGREE)  # fmt: skip
        return
    rows, columns = size("input_dim"), size("output_dim")
    if rows is None or columns is None:
        return
    if w[0].shape != (rows, columns):
        _checks.fail(f"{where} embeddings", f"an array of shape {(rows, columns)}, as the file's "
                     f"config.json says (input_dim={rows}, output_dim={columns})",
                     f"shape {w[0].shape}", _DISAGREE)  # fmt: skip


_RECURRENT = ("simple_rnn", "lstm", "gru", "bidirectional", "simple_rnn_with_start",
              "lstm_with_start", "gru_with_start")


def _recurrent_keys(layers: H5Group, config: dict[str, Any] | None, path: Path) -> list[str]:
    if config is not None:  # a .keras file: the model's own order
        return [k for k in _layer_configs(config) if _base(k) in _RECURRENT]
    keys = [k for k in layers if _base(k) in _RECURRENT]
    kinds = {_base(k) for k in keys}
    if len(kinds) > 1:
        raise ValueError(
            f"'{path}' holds recurrent layers of several kinds ({', '.join(sorted(keys))}) and "
            "a .weights.h5 file does not say their order; pass keys=[...] in the model's order "
            "or load the .keras file"
        )
    return sorted(keys, key=lambda k: 0 if k in _RECURRENT else int(k.rsplit("_", 1)[1]) + 1)


def _base(key: str) -> str:
    head, _, tail = key.rpartition("_")
    return head if tail.isdigit() and head else key


class _Entry(NamedTuple):
    """A layer of a .keras file's model: its class name, config, the shape of its input
    (batch first, None where unknown; None when not known at all) and its entry as written."""

    cls: str
    config: dict[str, Any]
    shape: _Shape
    raw: dict[str, Any]


def _entries(config: dict[str, Any]) -> dict[str, _Entry]:
    """The h5 key of every layer of a .keras file's model, in order, with what the file says
    of it (the keys as Keras' saving makes them: snake_case class names, numbered by
    order). Input shapes: a layer's build config holds its own (a Dense's, an LSTM's); a
    Reshape, a Flatten, a Dropout have none, and take along a Sequential the output of the
    layer before them, in a functional model their inbound node's (_inbound_shape)."""
    model = config.get("config", {})
    layers = model.get("layers", [])
    chain = config.get("class_name") == "Sequential"
    shape = _shape(model.get("build_input_shape")) if chain else None
    used: dict[str, int] = {}
    out: dict[str, _Entry] = {}
    outputs: dict[str, _Shape] = {}  # (a functional model's: each layer's output, by name)
    for entry in layers:
        cls = entry.get("class_name", "")
        key = _snake(cls)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        cfg = dict(entry.get("config", {}))
        build = entry.get("build_config")
        if isinstance(build, dict) and _shape(build.get("input_shape")) is not None:
            shape = _shape(build.get("input_shape"))
        elif cls == "InputLayer":
            shape = _shape(cfg.get("batch_shape"))
        elif not chain:
            shape = _inbound_shape(entry.get("inbound_nodes"), outputs)
        out[key] = _Entry(cls, cfg, shape, entry)
        shape = _output_shape(cls, cfg, shape)
        if not chain:
            outputs[str(entry.get("name", cfg.get("name")))] = shape
    return out


def _inbound_shape(nodes: object, outputs: dict[str, _Shape]) -> _Shape:
    """The input shape of a layer of a functional model's .keras file without a build
    config, from its inbound nodes (one for each call of the layer in the model,
    {"args": [its input tensor], "kwargs": {...}}): the shape Keras recorded of the input
    tensor, which must agree with the output of the layer that made it (the tensor's
    keras_history names it; `outputs`: those of the layers before, None where unknown) on
    every axis whose size that output knows. Keras' load computes the tensor again from that
    layer, the recorded shape aside, so a recorded shape that the graph contradicts (a file
    edited) proves nothing. None (unknown: a Reshape is then refused) for a layer called on
    anything but one tensor, on tensors of other shapes in other calls, or on a tensor of a
    layer not listed before it."""
    if not isinstance(nodes, list) or not nodes:
        return None
    shapes: set[tuple[int | None, ...]] = set()
    for node in nodes:
        args = node.get("args") if isinstance(node, dict) else None
        kwargs = node.get("kwargs", {}) if isinstance(node, dict) else None
        if (not isinstance(args, list) or len(args) != 1 or not isinstance(kwargs, dict)
                or any(isinstance(v, (dict, list)) for v in kwargs.values())):  # fmt: skip
            return None  # (tensors in the kwargs too: a mask, an initial state)
        tensor = args[0] if isinstance(args[0], dict) else {}
        inner = tensor.get("config") if tensor.get("class_name") == "__keras_tensor__" else None
        history = inner.get("keras_history") if isinstance(inner, dict) else None
        source = history[0] if isinstance(history, list) and history else None
        recorded = _shape(inner.get("shape")) if isinstance(inner, dict) else None
        if recorded is None or not isinstance(source, str) or source not in outputs:
            return None
        made = outputs[source]
        if made is not None and (len(made) != len(recorded) or any(
                m not in (None, r) for m, r in zip(made, recorded, strict=True))):  # fmt: skip
            return None
        shapes.add(recorded)
    return shapes.pop() if len(shapes) == 1 else None


def _shape(value: object) -> _Shape:
    """A shape as Keras writes it (a list of ints and None, batch first), or None."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    if not all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in value):
        return None
    return tuple(value)


def _output_shape(cls: str, config: dict[str, Any], shape: _Shape) -> _Shape:
    """The output shape of a layer of a .keras file's model that load_weights reads, from its
    input's and its config; None where unknown. A layer load_weights takes only where it returns its
    input (a Reshape, a Flatten, a TimeDistributed, the dropouts, a linear Activation) keeps
    the shape: where it does not, the load refuses it before a later layer's shape counts."""
    if shape is None:
        return None
    units = config.get("units")
    if cls in (*_IDENTITY, *_ACTIVATION_LAYERS, "Reshape", "Flatten", "TimeDistributed"):
        return shape
    if cls == "Embedding" and isinstance(config.get("output_dim"), int):
        return (*shape, config["output_dim"])
    if cls == "Dense" and isinstance(units, int):
        return (*shape[:-1], units)
    if cls == _MEAN and len(shape) == 3:
        return (shape[0], shape[2])
    if cls == "Bidirectional":
        given = config.get("layer")
        layer: dict[str, Any] = given if isinstance(given, dict) else {}
        merge = config.get("merge_mode")
        inner = layer.get("config")
        cls, config = str(layer.get("class_name", "")), inner if isinstance(inner, dict) else {}
        units = config.get("units")
        if merge not in ("concat", "sum", "mul", "ave"):  # (None: a list of two outputs)
            return None
        units = 2 * units if merge == "concat" and isinstance(units, int) else units
    if cls.removesuffix("WithStart") in _KERAS_KINDS and isinstance(units, int) and len(shape) == 3:
        return (*shape[:2], units) if config.get("return_sequences") else (shape[0], units)
    return None


def _layer_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The h5 key of every layer of a .keras file's model, in order, with its config (a
    Bidirectional's: its forward layer's, with merge_mode and its backward layer's)."""
    out: dict[str, dict[str, Any]] = {}
    for key, (cls, cfg, _, _) in _entries(config).items():
        if cls == "Bidirectional":
            inner = cfg.get("layer", {}).get("config", {})
            # without a `backward_layer` of its own, Keras builds the forward layer's copy
            # reading backwards
            given = cfg.get("backward_layer")
            backward = (given.get("config", {}) if isinstance(given, dict)
                        else {**inner, "go_backwards": not inner.get("go_backwards", False)})
            cfg = {**inner, "merge_mode": cfg.get("merge_mode"), "backward": _subset(backward)}
        out[key] = cfg
    return out


class _Declared(NamedTuple):
    """What a file says of a recurrent layer besides its arrays, which must agree with them
    (Keras builds the layer from the first and refuses arrays of another shape, or missing):
    its class (a .keras file's config.json, or a .weights.h5's key; None when neither names
    one), `says` (where it is said, for errors) and each direction's class, config and
    `says` (a Bidirectional's forward and backward layers; unknown, None, from a
    .weights.h5, whose key says "bidirectional" alone); `hint`: the errors' advice."""

    cls: str | None
    says: str
    directions: list[tuple[str | None, dict[str, Any], str]]
    hint: str


# The Keras class of a recurrent layer's key (Keras names a layer's weights by its class)
_CLASS_OF_RECURRENT_KEY = {_snake(c): c for c in ("SimpleRNN", "LSTM", "GRU", "Bidirectional",
                                                  "SimpleRNNWithStart", "LSTMWithStart",
                                                  "GRUWithStart")}  # fmt: skip


def _declared(key: str, entry: _Entry | None) -> _Declared:
    """What the file says of the recurrent layer at `key`: its entry in a .keras file's
    config.json, or (`entry` None: a .weights.h5) its key."""
    if entry is None:
        cls = _CLASS_OF_RECURRENT_KEY.get(_base(key))
        says = f"its key {key!r} says (Keras names a layer's weights by its class)"
        hint = "The file's keys and its arrays disagree: save the Keras model's weights again."
        if cls == "Bidirectional":
            return _Declared(cls, says, [(None, {}, says), (None, {}, says)], hint)
        return _Declared(cls, says, [(cls, {}, says)], hint)
    cls, cfg = entry.cls, entry.config
    says = f"the file's config.json says (class_name {cls!r})"
    if cls != "Bidirectional":
        return _Declared(cls, says, [(cls, cfg, says)], _DISAGREE)
    sides = []
    for name in ("layer", "backward_layer"):  # (no backward_layer: the forward one's copy)
        given = cfg.get(name) if isinstance(cfg.get(name), dict) else cfg.get("layer")
        inner = given if isinstance(given, dict) else {}
        inner_cls = inner.get("class_name")
        inner_cfg = inner.get("config")
        sides.append((inner_cls if isinstance(inner_cls, str) else None,
                      inner_cfg if isinstance(inner_cfg, dict) else {},
                      f"the file's config.json says (a Bidirectional whose {name} has "
                      f"class_name {inner_cls!r})"))  # fmt: skip
    return _Declared(cls, says, sides, _DISAGREE)


def _read_group(g: H5Group, config: dict[str, Any], declared: _Declared, arg: str, key: str,
                path: Path) -> _Found:  # fmt: skip
    """A recurrent layer's arrays (the h5 group `g`, at `key`), checked against what the
    file says of the layer (`declared`): a Bidirectional holds forward_layer and
    backward_layer groups and one direction holds neither; each direction holds its cell's
    arrays (their gate count, from the kernel's shape, the class's; its units the config's;
    a GRU's bias of reset_after's shape) and a start (vars) exactly when a <Kind>WithStart;
    and no other arrays. A file whose config and weights disagree otherwise loads into a
    layer of the weights' kind with options said of another (a GRU's arrays under an LSTM's
    config: its options pass by default), or leaves arrays behind."""
    h5py = _h5py()
    where = f"source ('{path}', layer {key!r})"

    def not_one() -> None:
        _checks.fail(arg, f"names of built Keras recurrent layers in '{path}'",
                     f"{key!r}, which is not one")  # fmt: skip

    def datasets(group: object, least: int, most: int) -> list[np.ndarray] | None:
        names = [str(j) for j in range(most)]
        if (
            not isinstance(group, h5py.Group)
            or not least <= len(group) <= most
            or not all(isinstance(group.get(n), h5py.Dataset) for n in names[: len(group)])
        ):
            return None
        return [np.asarray(group[n]) for n in names[: len(group)]]

    def arrays(layer_group: H5Group) -> tuple[_Direction, str]:
        # a recurrent layer's weights are its cell's: kernel, recurrent_kernel and bias (no
        # bias with use_bias=False); any other layer (a Dense, say) has no `cell` group. Its
        # own (`vars`) are a <Kind>WithStart's start, h0 (and c0): none in Keras' layers
        is_group = isinstance(layer_group, h5py.Group)
        v = layer_group.get("cell/vars") if is_group else None
        cell = datasets(v, 2, 3)
        own = layer_group.get("vars") if is_group else None
        start = [] if own is None else datasets(own, 0, 2)
        if cell is None or start is None:
            not_one()
        assert v is not None and cell is not None and start is not None  # (for mypy)
        name = v.attrs.get("name", "")
        return (cell, start), name.decode() if isinstance(name, bytes) else str(name)

    if not isinstance(g, h5py.Group):
        not_one()
    sides = [s for s in ("forward_layer", "backward_layer") if s in g]
    bi = declared.cls == "Bidirectional" if declared.cls in _CLASS_OF_RECURRENT_KEY.values() \
        else bool(sides)  # fmt: skip
    if bi and len(sides) < 2:
        _checks.fail(where, "a Bidirectional's arrays (under forward_layer and backward_layer)"
                     + (f", as {declared.says}" if declared.cls == "Bidirectional" else ""),
                     f"a {sides[0]} alone" if sides else "one direction's (no forward_layer "
                     "or backward_layer group)", declared.hint if declared.cls else "")  # fmt: skip
    if not bi and sides:
        _checks.fail(where, f"{_an(str(declared.cls))}'s arrays, one direction's (no "
                     f"forward_layer or backward_layer group), as {declared.says}",
                     f"a Bidirectional's (a {' and a '.join(sides)})", declared.hint)  # fmt: skip
    prefixes = ("forward_layer/", "backward_layer/") if bi else ("",)
    read: list[_Direction] = []
    kinds: list[str] = []
    held: set[str] = set()
    for prefix, (cls, cfg, says) in zip(prefixes, declared.directions, strict=False):
        (w, start), name = arrays(g[prefix] if prefix else g)
        label = where + (" backward layer" if prefix == "backward_layer/" else "")
        _check_arrays(w, start, name, cls, cfg, says, label, declared.hint)
        held.update(f"{prefix}cell/vars/{j}" for j in range(len(w)))
        held.update(f"{prefix}vars/{j}" for j in range(len(start)))
        read.append((w, start))
        kinds.append(_kind_of(name))
    extra = sorted(set(_dataset_names(g)) - held)
    if extra:
        layout = ("under forward_layer/ and backward_layer/, each its cell's in cell/vars and "
                  "a start in vars" if bi else "its cell's in cell/vars, a start in vars")
        _checks.fail(where, f"a Keras recurrent layer's arrays alone ({layout})",
                     f"{len(extra)} more: {', '.join(map(repr, extra[:3]))}"
                     + (", ..." if len(extra) > 3 else ""),
                     "Keras' layer holds no others, and rnnlab's would load without "
                     "them.")  # fmt: skip
    if bi and kinds[0] != kinds[1]:
        _checks.fail(where, f"a Bidirectional whose backward layer is {_an(kinds[0])} too",
                     _an(kinds[1]))  # fmt: skip
    return kinds[0], bi, read, _subset(config)


_GATES = {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}


def _an(name: str) -> str:
    """A Keras class name with its article as said aloud: "an LSTM", "an RNN", "a GRU",
    "an ELU", "a UnitNormalization" (where _checks.a's first-letter rule would say "a LSTM",
    "a RNN", "an UnitNormalization")."""
    if name.startswith(("LSTM", "RNN")):
        return "an " + name
    return ("a " + name) if name.startswith("Uni") else _checks.a(name)


def _arrays_kind(w: list[np.ndarray]) -> tuple[str, str] | None:
    """The kind of Keras recurrent layer whose cell holds `w` (kernel (I, G·H),
    recurrent_kernel (H, G·H): G gates of H units each) and its arrays as said in errors;
    None for shapes no kind has (the load refuses them against rnnlab's layer)."""
    k, r = w[0], w[1]
    if k.ndim != 2 or r.ndim != 2 or not r.shape[0] or r.shape[1] != k.shape[1]:
        return None
    G, H = k.shape[1] // r.shape[0], r.shape[0]
    if k.shape[1] % H or G not in _GATES:
        return None
    kind = _GATES[G]
    gates = f"{G} gates of {H} units" if G > 1 else f"{H} units, no gates"
    return kind, (f"{_an(kind)}'s (kernel {k.shape}, recurrent_kernel {r.shape}: "
                  f"{gates})")  # fmt: skip


def _check_arrays(w: list[np.ndarray], start: list[np.ndarray], cell_name: str,
                  cls: str | None, config: dict[str, Any], says: str, where: str,
                  hint: str) -> None:  # fmt: skip
    """One direction's arrays (its cell's `w`, its `start`) against what the file says of
    it: its class `cls` (None: unsaid) and `config`, and its cell's name. The kind of the
    arrays is their gate count (_arrays_kind)."""
    found = _arrays_kind(w)
    named = _kind_of(cell_name)
    base = cls.removesuffix("WithStart") if cls is not None else None
    if base in _KERAS_KINDS:
        assert cls is not None and base is not None  # (for mypy)
        if found is not None and found[0] != base:
            _checks.fail(where, f"{_an(base)}'s arrays, as {says}", found[1], hint)
        names = ("h0", "c0") if base == "LSTM" else ("h0",)
        if cls == base and start:
            _checks.fail(where, f"no start (Keras' {cls} starts from zeros and holds none in "
                         f"vars), as {says}", f"{len(start)} array{'s' if len(start) > 1 else ''}"
                         " in vars", hint)  # fmt: skip
        if cls != base and len(start) != len(names):
            _checks.fail(where, f"{len(names)} array{'s' if len(names) > 1 else ''} in vars "
                         f"({cls}'s start: {', '.join(names)}), as {says}",
                         f"{len(start)}", hint)  # fmt: skip
        units, H = config.get("units"), int(w[1].shape[0]) if w[1].ndim else 0
        if isinstance(units, int) and found is not None and H != units:
            _checks.fail(where, f"arrays of {units} units, as {says} (units={units})",
                         found[1], hint)  # fmt: skip
        reset_after = config.get("reset_after")
        if base == "GRU" and found is not None and len(w) == 3 and isinstance(reset_after, bool):
            want = (2, 3 * H) if reset_after else (3 * H,)
            if w[2].shape != want:
                _checks.fail(f"{where} bias", f"an array of shape {want}, as {says} "
                             f"(reset_after={reset_after})", f"shape {w[2].shape}",
                             hint)  # fmt: skip
    if found is not None and named in _KERAS_KINDS and named != found[0]:
        _checks.fail(where, f"{_an(named)}'s arrays, as its cell's name {cell_name!r} "
                     "says", found[1], "The file's names and its arrays disagree: save the "
                     "Keras model again.")  # fmt: skip


def _kind_of(cell_name: object) -> str:
    name = cell_name.decode() if isinstance(cell_name, bytes) else str(cell_name)
    for kind in ("SimpleRNN", "LSTM", "GRU"):
        if name.startswith(_snake(kind) + "_cell"):
            return kind
    return f"layer whose cell is named {name!r}" if name else "layer whose cell has no name"


def _subset(config: dict[str, Any]) -> dict[str, Any]:
    keep = ("activation", "recurrent_activation", "reset_after", "go_backwards", "merge_mode",
            "backward", "use_bias", "return_sequences", "stateful")
    return {k: config[k] for k in keep if k in config}
