"""Export a model to ONNX, and run an exported file with onnxruntime.

    import rnnlab.onnx
    rnnlab.onnx.export(model, "model.onnx")                 # Sequential, Recurrent, ...
    m = rnnlab.onnx.Runtime("model.onnx")                   # onnxruntime behind rnnlab's API
    y = m.forward(x, lengths=lengths).output

The graph uses ONNX's own recurrent operators (RNN, LSTM, GRU, opset 17), so every runtime
that implements them runs it with its own fused kernels; nothing rnnlab-specific is needed
to load it. One operator per layer (ONNX's operators are one layer deep), both directions of
a bidirectional layer in one operator. Weights are float32 (onnxruntime's RNN, LSTM and GRU
have no float64 kernel); batch and time are dynamic axes. The weights are inside the file,
whose protobuf holds 2 GiB at most: a model past that is refused (no external data).

Graph inputs and outputs (names fixed, so a deployment can rely on them):

    x          float32 (batch, time, features), or int64 token ids (batch, time) when the
               model starts with an Embedding (after Dropouts, if any); (time, batch, ...)
               for a time-major layer
    lengths    int32 (batch,): each sequence's valid steps (`lengths=True`, the default);
               the recurrent operators' `sequence_lens`, and the readouts' masks
    h0, c0     float32 (layers·directions, batch, hidden), the initial state (`state=True`);
               without them the model's own (zeros, a constant, or learned) is built in
    y          the model's output, float32: (batch, time, features) in x's layout, or
               (batch, features) after LastStep or MeanOverTime; at padded steps what
               rnnlab's output holds there (a recurrent layer's 0, a Linear's bias)
    h_n, c_n   float32 (layers·directions, batch, hidden), the final states, as rnnlab's
               `Forward.state`

Every input's and output's shape is declared in full: batch and time are dynamic axes named
"batch" and "time" (the same names in every input and output), the feature sizes numbers
("features" names x's last axis only where no module fixes it: a model of readouts alone).
Each also carries a doc_string saying its dtype, its axes and what it holds (a state input:
the model's own start, to feed to compute as the model does), for a reader of the file
without rnnlab (Netron shows them).

With several recurrent layers in one model, their state inputs and outputs get the module's
index as a suffix (`h0_1`, `h_n_1`, ...).

Gate orders: rnnlab keeps PyTorch's (LSTM i, f, g, o; GRU r, z, n); ONNX's LSTM wants
i, o, f, c and its GRU z, r, h, so the blocks of every weight and bias are reordered here.
The GRU's two forms are ONNX's `linear_before_reset` 1 (reset-after, PyTorch's) and 0 (the
original). LSTM peepholes go to the input P in ONNX's order i, o, f. What the operators
cannot express is refused with a one-line error naming it: the cell-clipped and
layer-normalised LSTMs (ONNX's `clip` bounds the gates' pre-activations, not the cell
state), a layer's projection (proj_size, of an LSTM or an Elman layer) and zoneout,
output-feedback models and cells of one's own. The coupled LSTM (i = 1 − f) is
expressed exactly: its input gate's weights are the forget gate's, negated. Refused too: a
module of one's own, a subclass of one of rnnlab's modules (or of Sequential), whose forward
may compute otherwise, while the graph, built from its parameters, computes its base's.

This module is named like the `onnx` package; it imports it absolutely (a module never
imports itself by `import onnx` under Python 3), and lazily, so rnnlab needs neither onnx
nor onnxruntime unless they are used.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack, overload

import numpy as np
import numpy.typing as npt

from rnnlab import _checks
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.layers import Forward, Module, PassOptions, Recurrent, pass_options
from rnnlab.modules import (
    Dropout,
    Embedding,
    LastStep,
    Linear,
    MeanOverTime,
    Sequential,
    first_reader,
    input_features,
    readout_source,
    refuse_own_subclass,
)

if TYPE_CHECKING:  # (onnx is optional: imported where it is used)
    from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto

OPSET = 17
F32 = np.float32


class _RecurrentInfo(TypedDict):
    """What Runtime needs of a recurrent module, stored in the file's "rnnlab.structure"."""

    suffix: str  # of its state inputs and outputs (h0_1, h_n_1, ...)
    has_c: bool
    initial: list[list[list[float]]] | None  # its own initial states, for state inputs


def _require(module: str, extra: str = "onnx", purpose: str = "to export to ONNX") -> ModuleType:
    """Import an optional dependency, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed; pip install 'rnnlab[{extra}]' {purpose}"
        ) from None


# ---------------------------------------------------------------------- gate orders
# rnnlab's blocks (PyTorch's order) as ONNX's operators want them.
_LSTM_ORDER = (0, 3, 1, 2)  # i, f, g, o → i, o, f, c
_GRU_ORDER = (1, 0, 2)  # r, z, n → z, r, h
# The coupled LSTM (i = 1 − f) has three blocks, f, g, o; ONNX's four are filled with
# f, o, f, g and the first negated: σ(−z_f) = 1 − σ(z_f) is the input gate, exactly, with the
# standard operator (no `input_forget`, whose meaning the spec leaves to the runtime).
_COUPLED_ORDER = (0, 2, 0, 1)


def _reorder(a: np.ndarray, order: tuple[int, ...], H: int) -> np.ndarray:
    """The H-row blocks of a weight (G·H, ·) or a bias (G·H,) in another order."""
    return np.concatenate([a[g * H : (g + 1) * H] for g in order], axis=0)


def check_exportable(model: object) -> None:
    """Raise a one-line ValueError naming the first part of `model` ONNX cannot express."""
    for i, module in enumerate(_modules(model)):
        _check_module(module, f"module {i}")
    _checks.finite_weights(model, "ONNX")


# The module classes the graph is written for. A subclass of one of them is refused, as a
# cell of one's own is: its forward may compute otherwise (a residual connection, a scaled
# embedding), and the graph, built from the parameters, would compute its base's.
_KNOWN = (Recurrent, Embedding, Linear, Dropout, LastStep, MeanOverTime)


def _modules(model: object) -> list[Module]:
    if isinstance(model, Sequential):
        refuse_own_subclass(model, "model", "the graph")
        return list(model.modules)
    if type(model).__name__ == "FeedbackModel" or hasattr(model, "wants_targets"):
        _checks.fail(
            "model",
            "a model ONNX's recurrent operators can express",
            "an output-feedback (Jordan) model",
            "Its outputs feed back into its recurrence, which ONNX's RNN, LSTM and GRU "
            "cannot express.",
        )
    if isinstance(model, (Recurrent, Embedding, Linear, Dropout, LastStep, MeanOverTime)):
        return [model]
    kind = type(model).__name__
    _checks.fail(
        "model",
        "a Sequential or one of rnnlab's modules (Recurrent, Embedding, Linear, Dropout, "
        "LastStep, MeanOverTime)",
        {"Seq2Seq": "an encoder-decoder (Seq2Seq), whose export is not written yet",
         "OutputFeedback": "an output-feedback (Jordan) layer, whose outputs feed back into "
                           "its recurrence"}.get(kind, _checks.describe(model)),
    )  # fmt: skip
    raise AssertionError  # unreachable: fail raises


def _check_module(module: Module, where: str) -> None:
    refuse_own_subclass(module, f"model ({where})", "the graph")
    if isinstance(module, (Embedding, Linear, Dropout, LastStep, MeanOverTime)):
        return
    if not isinstance(module, Recurrent):
        _checks.fail(
            f"model ({where})",
            "made of rnnlab's modules (Recurrent, Embedding, Linear, Dropout, LastStep, "
            "MeanOverTime)",
            _checks.describe(module),
            "ONNX export knows only these.",
        )
    cell = module.cell
    what = None
    if type(cell) not in (ElmanCell, LSTMCell, GRUCell):
        what = f"a cell of its own ({type(cell).__name__})"
    elif isinstance(cell, LSTMCell):
        if cell.cell_clip is not None:
            what = (
                f"an LSTM with cell_clip={cell.cell_clip:g} (ONNX's `clip` bounds the "
                "gates' pre-activations, not the cell state)"
            )
        elif cell.layer_norm:
            what = "a layer-normalised LSTM"
    # options around the cell that change inference (recurrent dropout does not: it is off)
    if getattr(module, "proj_size", 0):
        what = (f"a layer with proj_size={module.proj_size} (ONNX's RNN, LSTM and GRU "
                "operators have no projection)")  # fmt: skip
    elif any(getattr(module, "zoneout", ())):
        what = f"a layer with zoneout={module.zoneout} (its expectation mixes in h_{{t-1}})"
    if what is None:
        # a parameter this exporter does not know would be silently dropped: refuse it
        expected = _expected_params(module)
        unknown = sorted(set(module.params) - expected)
        if unknown:
            what = f"a layer with parameters ONNX export does not know ({', '.join(unknown)})"
    if what is not None:
        _checks.fail(
            f"model ({where})",
            "a layer ONNX's RNN, LSTM and GRU operators can express",
            what,
        )


def _expected_params(layer: Recurrent) -> set[str]:
    names: set[str] = set()
    for k in range(layer.num_layers):
        for sfx in layer.directions:
            own = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
            own += [n for n, _, _ in layer.cell.extra_rows]
            if layer.initial_state == "learned":
                own += ["h0", "c0"] if layer.cell.has_c else ["h0"]
            names.update(f"{n}_l{k}{sfx}" for n in own)
    if layer.merge == "readout":
        names.update(("readout_weight", "readout_weight_reverse", "readout_bias"))
    return names


# ---------------------------------------------------------------------- the graph
@dataclass
class _Graph:
    """The nodes, initializers and interface of the graph being built, with unique names."""

    helper: Any
    numpy_helper: Any
    TensorProto: Any
    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    inputs: list[ValueInfoProto] = field(default_factory=list)
    outputs: list[ValueInfoProto] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    lengths: str | None = None
    opset: int = OPSET
    recurrent: dict[str, _RecurrentInfo] = field(default_factory=dict)  # by module index
    # each recurrent module's last layer's Y_h (directions, batch, hidden), by id(module):
    # what a LastStep after merge "sum" reads
    last_layer_h: dict[int, str] = field(default_factory=dict)

    def name(self, base: str) -> str:
        n, k = base, 1
        while n in self.used:
            k += 1
            n = f"{base}_{k}"
        self.used.add(n)
        return n

    def const(self, base: str, value: npt.ArrayLike) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(F32)
        name = self.name(base)
        # not ascontiguousarray: it makes a 0-d array (a scalar index) of shape (1,)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(arr, order="C"), name))
        return name

    def ints(self, base: str, *values: int) -> str:
        """A 1-D int64 constant (axes, shapes, slice bounds)."""
        return self.const(base, np.array(values, np.int64))

    @overload
    def op(
        self, op_type: str, inputs: list[str], base: str, n_out: Literal[1] = ..., **attrs: object
    ) -> str: ...

    @overload
    def op(
        self, op_type: str, inputs: list[str], base: str, n_out: Literal[2, 3], **attrs: object
    ) -> list[str]: ...

    def op(
        self, op_type: str, inputs: list[str], base: str, n_out: int = 1, **attrs: object
    ) -> str | list[str]:
        """A node's output name, or the list of its names for an operator with n_out > 1."""
        outs = [self.name(base if i == 0 else f"{base}_{i}") for i in range(n_out)]
        node_name = self.name(f"{op_type}_{base}")
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs[0] if n_out == 1 else outs


Dim = int | str  # an axis of a declared shape: its size, or the name of a dynamic axis


@dataclass
class _Flow:
    """The tensor flowing between modules: its name, its shape (the dynamic axes by the
    names the input `x` declares: "batch", "time", and "features" where no module fixes
    it), and whether it holds token ids."""

    name: str
    dims: list[Dim]
    tokens: bool = False


def export(
    model: object,
    path: str | PathLike[str],
    *,
    lengths: bool = True,
    state: bool = False,
    opset: int = OPSET,
    doc: str = "",
) -> Path:
    """Write `model` (a Sequential of rnnlab modules, or one module) to `path` as ONNX.

    `lengths=True` gives the graph an int32 `lengths` input (each sequence's valid steps,
    the recurrent operators' `sequence_lens`); `state=True` gives it initial-state inputs
    (`h0`, and `c0` for an LSTM) for carrying state across calls. The graph passes
    onnx.checker's full check (shape inference included) before the file is written, and
    the file is written atomically: an error leaves no file behind. Returns the path."""
    from rnnlab import io

    path = _checks.file_to_write(path, "path")
    lengths = _checks.boolean(lengths, "lengths")
    state = _checks.boolean(state, "state")
    check_exportable(model)  # (first, as the other exporters: no name makes it exportable)
    _checks.export_file_name(path, "onnx", "path")  # (rnnlab export --out's check too)
    check_path(path, "path")
    if not path.parent.is_dir():  # (the write's own error said "No such file or directory")
        _checks.fail("path", "a file path in an existing folder", f"'{path}', whose folder "
                     f"'{path.parent}' " + ("is not a folder" if path.parent.exists() else
                                            "does not exist"))  # fmt: skip
    io.atomic_write_bytes(path, to_bytes(model, lengths=lengths, state=state, opset=opset,
                                         doc=doc))  # fmt: skip
    return path


def to_bytes(model: object, *, lengths: bool = True, state: bool = False, opset: int = OPSET,
             doc: str = "") -> bytes:  # fmt: skip
    """The file `export` writes, as bytes (`rnnlab export --out -` writes them to stdout),
    after onnx.checker's full check (shape inference included)."""
    onnx = _require("onnx")
    lengths = _checks.boolean(lengths, "lengths")
    state = _checks.boolean(state, "state")
    proto = build_model(model, lengths=lengths, state=state, opset=opset, doc=doc)
    onnx.checker.check_model(proto, full_check=True)
    data: bytes = proto.SerializeToString()
    return data


def check_path(path: Path, name: str) -> None:
    """Refuse a file name that onnx.load or onnxruntime would read as another format than
    the binary graph `export` writes: onnx.load picks the format by the suffix (a '.json'
    file is read as JSON), and onnxruntime reads a file named '.ort' (in any case) as its
    own ORT format, refusing the graph ("ORT model verification failed"), rnnlab's Runtime
    too."""
    onnx = _require("onnx")
    if path.suffix.lower() == ".ort":
        _checks.fail(name, "a file name for a binary ONNX graph (such as model.onnx)",
                     f"'{path}', which onnxruntime reads as its own ORT format by its suffix",
                     "An ONNX graph is no ORT file (onnxruntime converts one into the other).")
    read_as = onnx.serialization.registry.get_format_from_file_extension(path.suffix)
    if read_as not in (None, "protobuf"):
        _checks.fail(name, "a file name for a binary ONNX graph (such as model.onnx)",
                     f"'{path}', which onnx.load reads as {read_as} by its suffix")  # fmt: skip


def build_model(model: object, *, lengths: bool = True, state: bool = False,
                opset: int = OPSET, doc: str = "") -> ModelProto:  # fmt: skip
    """The onnx.ModelProto of `model` (see `export`), shapes inferred, not yet written."""
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    newest = onnx.defs.onnx_opset_version()  # onnx's checker knows no later one
    if isinstance(opset, bool) or not isinstance(opset, int) or not OPSET <= opset <= newest:
        _checks.fail("opset", f"an integer from {OPSET} to {newest} (the newest onnx "
                     f"{onnx.__version__} knows)", _checks.describe(opset))  # fmt: skip
    if not isinstance(doc, str):  # (protobuf's own error names no argument)
        _checks.fail("doc", "a str", _checks.describe(doc))
    _checks.unicode_text(doc, "doc")  # (protobuf's "'utf-8' codec can't encode" named none)
    check_exportable(model)
    modules = _modules(model)
    if not modules:
        _checks.fail("model", "a Sequential of one module at least", "an empty Sequential")
    # the weights as float32 at least (before they are copied into the graph)
    _fits_one_file(4 * sum(v.size for m in modules for v in m.params.values()))
    g = _Graph(helper, numpy_helper, TensorProto, opset=opset)
    recurrent = [i for i, m in enumerate(modules) if isinstance(m, Recurrent)]
    batch_first = next((m.batch_first for m in modules if isinstance(m, Recurrent)), True)
    # token ids when the first module that reads them is an Embedding (a Dropout before it
    # passes them through at inference, as in rnnlab)
    first = first_reader(modules)
    tokens = isinstance(first, Embedding)  # (modules.reads_tokens)
    axes: list[Dim] = ["batch", "time"] if batch_first else ["time", "batch"]
    features = input_features(modules)
    dims = axes if tokens else [*axes, "features" if features is None else features]
    g.used.add("x")
    x_type = TensorProto.INT64 if tokens else TensorProto.FLOAT
    layout = "batch-first" if batch_first else "time-major"
    x_doc = (f"int64 {_shape_text(dims)}: token ids, each in [0, {first.num_embeddings}) "
             f"({layout})" if isinstance(first, Embedding) else
             f"float32 {_shape_text(dims)}: the model's input ({layout})")  # fmt: skip
    g.inputs.append(helper.make_tensor_value_info("x", x_type, dims, doc_string=x_doc))
    if lengths:
        g.lengths = "lengths"
        g.used.add("lengths")
        g.inputs.append(helper.make_tensor_value_info(
            "lengths", TensorProto.INT32, ["batch"], doc_string=LENGTHS_DOC))  # fmt: skip
    flow = _Flow("x", dims, tokens)
    for i, module in enumerate(modules):
        suffix = "" if len(recurrent) <= 1 else f"_{i}"
        # what a readout reads: the layer before it, through Dropouts (as Sequential reads)
        j = readout_source(modules, i) if isinstance(module, LastStep) else i - 1
        if isinstance(module, MeanOverTime):
            readout_source(modules, i)  # (it refuses a time-major layer before it, as Sequential)
        previous = modules[j] if j is not None and j >= 0 else None
        flow = _module(g, module, flow, index=i, suffix=suffix, state=state, previous=previous)
    _fits_one_file(sum(len(t.raw_data) for t in g.initializers))  # (a coupled LSTM's grow)
    out = g.op("Identity", [flow.name], "y")
    # every output's shape declared in full (shape inference leaves the axes it cannot
    # follow through Shape, Reshape or Expand as unk__0, ...): the input's dynamic axes by
    # their names, the features as a number
    y_doc = f"float32 {_shape_text(flow.dims)}: the model's output" + (
        " (one row per sequence)" if len(flow.dims) == 2 else f" at every step ({layout})")
    g.outputs.insert(0, helper.make_tensor_value_info(out, TensorProto.FLOAT, flow.dims,
                                                      doc_string=y_doc))  # fmt: skip
    graph = helper.make_graph(g.nodes, "rnnlab", g.inputs, g.outputs, g.initializers)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="rnnlab",
        producer_version=_version(),
        doc_string=doc or "exported by rnnlab (see rnnlab.onnx for the inputs and outputs)",
    )
    # the oldest IR version of the opset, so that older runtimes load the file too
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    structure = {
        "batch_first": batch_first,
        "tokens": tokens,
        # Runtime refuses ids out of range: ONNX's Gather wraps a negative one silently
        "num_embeddings": first.num_embeddings if isinstance(first, Embedding) else 0,
        "sequential": isinstance(model, Sequential),
        "modules": len(modules),
        "recurrent": g.recurrent,
        # each module's kind and dtype, for Runtime to take the x the model takes
        "input": [_input_rule(m) for m in modules],
    }
    helper.set_model_props(proto, {"rnnlab.structure": json.dumps(structure)})
    # Shape inference fills in every output's type and shape (and checks the graph).
    inferred: ModelProto = onnx.shape_inference.infer_shapes(proto, check_type=True,
                                                             strict_mode=True)  # fmt: skip
    return inferred


LENGTHS_DOC = ("int32 (batch,): each sequence's valid steps, from 1 to time; the steps past "
               "them are padding, which the recurrent layers skip (their outputs there are "
               "zero, their final states those of the last valid step) and the readouts leave "
               "out")


def _shape_text(dims: list[Dim]) -> str:
    """A declared shape as the docs write it: (batch, time, 3)."""
    return "(" + ", ".join(str(d) for d in dims) + ")"


def _state_doc(layer: Recurrent, which: str, index: int, suffix: str, given: bool) -> str:
    """The doc_string of a recurrent layer's state input (h0, c0) or output (h_n, c_n): its
    layout, and for an input the model's own start, which a caller without rnnlab's Runtime
    must feed to compute as the model does."""
    L, D, H = layer.num_layers, len(layer.directions), layer.hidden_size
    kind = "hidden" if which[0] == "h" else "cell"
    of = f" of module {index}" if suffix else ""
    rows = "its rows layer by layer" + (", forward then reverse in each" if D == 2 else "")
    shape = f"float32 ({L * D}, batch, {H})"
    if which.endswith("0"):
        start = layer.initial_state
        own = ("zeros" if start in ("zeros", 0) else
               "learned, its values in the metadata 'rnnlab.structure'" if start == "learned"
               else f"the constant {float(start):g}")  # fmt: skip
        return f"{shape}: the initial {kind} state{of}, {rows}; the model's own is {own}"
    back = f"; feed it back as {which[0]}0{suffix} to go on" if given else ""
    reverse = " (the reverse direction's after step 0)" if D == 2 else ""
    return (f"{shape}: the final {kind} state{of}, each sequence's after its last valid step"
            f"{reverse}, {rows}{back}")


# Protobuf's largest message, so the largest ONNX file whose weights are inside it; past it
# protobuf's serialisation failed with "EncodeError: Failed to serialize proto", a gigabyte
# or two of copies later. 1 MiB of it is left for the graph's nodes, names and metadata.
PROTOBUF_LIMIT = 2**31 - 1
_GRAPH_MARGIN = 2**20


def _fits_one_file(weight_bytes: int) -> None:
    """Refuse a model whose float32 weights one ONNX file cannot hold (rnnlab writes none of
    ONNX's external data files)."""
    if weight_bytes + _GRAPH_MARGIN > PROTOBUF_LIMIT:
        _checks.fail("model", "a model whose float32 weights fit in one ONNX file (under "
                     f"{_checks.describe_bytes(PROTOBUF_LIMIT + 1)}, protobuf's limit; rnnlab "
                     "writes no external data)",
                     f"{_checks.describe_bytes(weight_bytes)} of weights")  # fmt: skip


def _version() -> str:
    from rnnlab import __version__

    return __version__


def _input_rule(module: Module) -> list[str | None]:
    """[kind, dtype] of a module, how it takes its input (Runtime._input_dtype): a recurrent
    layer wants its own dtype, a Linear promotes, a readout keeps, a Dropout passes through."""
    if isinstance(module, Recurrent):
        return ["recurrent", module.dtype.name]
    if isinstance(module, (Linear, Embedding)):
        kind = "linear" if isinstance(module, Linear) else "embedding"
        return [kind, module.params["weight"].dtype.name]
    return ["dropout" if isinstance(module, Dropout) else "readout", None]


def _reads(module: Module, flow: _Flow, where: str) -> None:
    """Refuse, as rnnlab's forward would at every call, a module that cannot read what the
    one before it writes (its rank or its features): the graph would be one that no input
    runs, or one shape inference refuses in its own words."""
    kind = "recurrent layer" if isinstance(module, Recurrent) else type(module).__name__
    if isinstance(module, Embedding):
        if not flow.tokens:
            _checks.fail(where, "an Embedding at the start (after Dropouts only)",
                         "one after a module with float outputs",
                         "An Embedding reads token ids.")  # fmt: skip
        return
    if isinstance(module, Dropout):
        return
    ranks = (2, 3) if isinstance(module, Linear) else (3,)
    if len(flow.dims) not in ranks:
        shape = "(batch, features)" if len(flow.dims) == 2 else f"{len(flow.dims)}-d"
        _checks.fail(where, f"a {kind} reading (batch, time, features)",
                     f"one after {shape} outputs",
                     "rnnlab's forward refuses them too.")  # fmt: skip
    want = (module.input_size if isinstance(module, Recurrent)
            else module.in_features if isinstance(module, Linear) else None)  # fmt: skip
    have = flow.dims[-1]
    if want is not None and isinstance(have, int) and have != want:
        _checks.fail(where, f"a {kind} reading the {have} features of the module before it",
                     f"one of {want} input features")  # fmt: skip


def _module(
    g: _Graph,
    module: Module,
    flow: _Flow,
    *,
    index: int,
    suffix: str,
    state: bool,
    previous: Module | None,
) -> _Flow:
    _reads(module, flow, f"model (module {index})")
    dims = flow.dims
    if isinstance(module, Embedding):
        w = g.const("embedding_weight", module.params["weight"])
        return _Flow(g.op("Gather", [w, flow.name], "embedded"), [*dims, module.embedding_dim])
    if isinstance(module, Linear):
        w = g.const("linear_weight_t", module.params["weight"].T)
        y = g.op("MatMul", [flow.name, w], "linear")
        if "bias" in module.params:
            y = g.op("Add", [y, g.const("linear_bias", module.params["bias"])], "linear")
        return _Flow(y, [*dims[:-1], module.out_features])
    if isinstance(module, Dropout):  # the identity at inference
        return flow
    # the readouts read (batch, time, features): readout_source refuses a time-major layer
    if isinstance(module, LastStep):
        return _Flow(_last_step(g, flow.name, previous), [dims[0], dims[2]])
    if isinstance(module, MeanOverTime):
        return _Flow(_mean_over_time(g, flow.name), [dims[0], dims[2]])
    assert isinstance(module, Recurrent)  # (check_exportable let no other module through)
    return _recurrent(g, module, flow, index=index, suffix=suffix, state=state)


def _last_step(g: _Graph, x: str, previous: Module | None) -> str:
    """LastStep: (B, T, F) → (B, F), as rnnlab.modules.LastStep: the features at each
    sequence's last valid step; after a bidirectional layer (`previous`) with the "concat"
    merge, the reverse direction's half at step 0, where it has read the whole sequence;
    after "sum", where the halves are not apart in the output, the sum of the last layer's
    two final states (ONNX's Y_h: the forward's at each sequence's last valid step, the
    reverse's after the whole sequence)."""
    if (isinstance(previous, Recurrent) and previous.bidirectional
            and previous.merge == "sum"):  # fmt: skip
        return g.op("ReduceSum", [g.last_layer_h[id(previous)], g.ints("axes_0", 0)], "last",
                    keepdims=0)  # fmt: skip
    picked = _last_valid(g, x)
    if not (isinstance(previous, Recurrent) and previous.bidirectional):
        return picked
    if previous.merge != "concat":
        _checks.fail(
            "model",
            "a LastStep after a bidirectional layer with merge 'concat' or 'sum' for ONNX",
            f"one after merge={previous.merge!r} (LastStep reads each direction's final "
            "state, which that merge does not keep apart in the output)",
        )
    half = previous.output_features // 2
    forward = g.op("Slice", [picked, g.ints("zero_1d", 0), g.ints("half", half),
                             g.ints("axes_1d", 1)], "last_forward")  # fmt: skip
    first = g.op("Gather", [x, g.const("first_index", np.array(0, np.int64))], "first", axis=1)
    backward = g.op("Slice", [first, g.ints("half", half), g.ints("full", 2 * half),
                              g.ints("axes_1d", 1)], "first_reverse")  # fmt: skip
    return g.op("Concat", [forward, backward], "last", axis=1)


def _last_valid(g: _Graph, x: str) -> str:
    """(B, T, F) → (B, F): each sequence's features at its last valid step."""
    if g.lengths is None:
        index = g.const("last_index", np.array(-1, np.int64))
        return g.op("Gather", [x, index], "last", axis=1)
    lengths = g.op("Cast", [g.lengths], "lengths64", to=g.TensorProto.INT64)
    last = g.op("Sub", [lengths, g.const("one", np.array(1, np.int64))], "last_index")
    last = g.op("Unsqueeze", [last, g.ints("axes_1_2", 1, 2)], "last_index")
    batch = g.op("Shape", [x], "batch", start=0, end=1)
    features = g.op("Shape", [x], "features", start=2, end=3)
    b1f = g.op("Concat", [batch, g.ints("one_1d", 1), features], "b1f", axis=0)
    last = g.op("Expand", [last, b1f], "last_index")  # (B, 1, F)
    picked = g.op("GatherElements", [x, last], "last", axis=1)
    return g.op("Squeeze", [picked, g.ints("axes_1", 1)], "last")


def _mask(g: _Graph, x: str, time_axis: int) -> str:
    """A float32 mask, 1 at valid steps: (B, T) for time_axis 1, (T, B) for time_axis 0."""
    assert g.lengths is not None  # (asked only of a graph with lengths)
    T = g.op("Shape", [x], "time", start=time_axis, end=time_axis + 1)
    T = g.op("Squeeze", [T, g.ints("axes_0", 0)], "time")
    zero, one = g.const("zero_i", np.array(0, np.int32)), g.const("one_i", np.array(1, np.int32))
    steps = g.op("Range", [zero, g.op("Cast", [T], "time32", to=g.TensorProto.INT32), one],
                 "steps")  # fmt: skip
    if time_axis == 1:
        a = g.op("Unsqueeze", [steps, g.ints("axes_0", 0)], "steps")
        b = g.op("Unsqueeze", [g.lengths, g.ints("axes_1", 1)], "len")
    else:
        a = g.op("Unsqueeze", [steps, g.ints("axes_1", 1)], "steps")
        b = g.op("Unsqueeze", [g.lengths, g.ints("axes_0", 0)], "len")
    return g.op("Cast", [g.op("Less", [a, b], "valid")], "mask", to=g.TensorProto.FLOAT)


def _mean_over_time(g: _Graph, x: str) -> str:
    """MeanOverTime: (B, T, F) → (B, F), the mean over each sequence's valid steps."""
    if g.lengths is None:  # ReduceMean takes its axes as an attribute before opset 18
        if g.opset < 18:
            return g.op("ReduceMean", [x], "mean", axes=[1], keepdims=0)
        return g.op("ReduceMean", [x, g.ints("axes_1", 1)], "mean", keepdims=0)
    axes = g.ints("axes_1", 1)
    m = g.op("Unsqueeze", [_mask(g, x, 1), g.ints("axes_2", 2)], "mask")
    total = g.op("ReduceSum", [g.op("Mul", [x, m], "masked"), axes], "sum", keepdims=0)
    n = g.op("Cast", [g.op("Unsqueeze", [g.lengths, axes], "len")], "len", to=g.TensorProto.FLOAT)
    return g.op("Div", [total, n], "mean")


def _recurrent(
    g: _Graph, layer: Recurrent, flow: _Flow, *, index: int, suffix: str, state: bool
) -> _Flow:
    H, L, D = layer.hidden_size, layer.num_layers, len(layer.directions)
    cell = layer.cell
    has_c = cell.has_c
    x = flow.name
    batch_dim = flow.dims[0] if layer.batch_first else flow.dims[1]
    if layer.batch_first:
        x = g.op("Transpose", [x], "time_major", perm=[1, 0, 2])
    batch = g.op("Shape", [x], "batch", start=1, end=2)
    g.recurrent[str(index)] = {
        "suffix": suffix,
        "has_c": has_c,
        "initial": _default_states(layer) if state else None,
    }
    if state:
        names = [f"h0{suffix}"] + ([f"c0{suffix}"] if has_c else [])
        for n in names:
            g.used.add(n)
            g.inputs.append(
                g.helper.make_tensor_value_info(n, g.TensorProto.FLOAT, [L * D, "batch", H],
                                                doc_string=_state_doc(layer, n[:2], index,
                                                                      suffix, state))
            )  # fmt: skip
    order: tuple[int, ...]
    attrs: dict[str, object]
    if isinstance(cell, LSTMCell):
        op_type, order, attrs = "LSTM", _LSTM_ORDER, {}
    elif isinstance(cell, GRUCell):
        op_type, order = "GRU", _GRU_ORDER
        attrs = {"linear_before_reset": 1 if cell.reset_after else 0}
    else:
        assert isinstance(cell, ElmanCell)  # (_check_module let these three cells through only)
        op_type, order = "RNN", (0,)
        act = "Tanh" if cell.nonlinearity == "tanh" else "Relu"
        attrs = {"activations": [act] * D}
    direction = "bidirectional" if D == 2 else "forward"
    seq = g.lengths or ""
    finals_h: list[str] = []
    finals_c: list[str] = []
    Y = ""  # the last layer's output (L ≥ 1)
    inp = x
    coupled = isinstance(cell, LSTMCell) and cell.coupled
    if coupled:
        order = _COUPLED_ORDER

    def blocks(name: str, k: int, s: str) -> np.ndarray:
        a = _reorder(layer.params[f"{name}_l{k}{s}"], order, H)
        if coupled:  # the input gate's block is the forget gate's, negated: i = 1 − f
            a[:H] *= -1
        return a

    for k in range(L):
        p = layer.params
        W = np.stack([blocks("weight_ih", k, s) for s in layer.directions])
        R = np.stack([blocks("weight_hh", k, s) for s in layer.directions])
        B = np.stack([np.concatenate([blocks("bias_ih", k, s), blocks("bias_hh", k, s)])
                      for s in layer.directions])  # fmt: skip
        ins = [inp, g.const(f"W_l{k}", W), g.const(f"R_l{k}", R), g.const(f"B_l{k}", B), seq]
        h0, c0 = _initial(g, layer, k, batch, state, suffix)
        ins.append(h0)
        if op_type == "LSTM":
            ins.append(c0)
            if isinstance(cell, LSTMCell) and cell.peephole:  # ONNX's P: i, o, f
                P = np.stack([_peepholes(p, k, s, coupled) for s in layer.directions])
                ins.append(g.const(f"P_l{k}", P))
        while ins and ins[-1] == "":
            ins.pop()
        outs = g.op(op_type, ins, f"{op_type.lower()}_l{k}", n_out=3 if has_c else 2,
                    direction=direction, hidden_size=H, **attrs)  # fmt: skip
        Y, Y_h = outs[0], outs[1]
        finals_h.append(Y_h)
        if has_c:
            finals_c.append(outs[2])
        if k < L - 1:  # (T, D, B, H) → (T, B, D·H); dropout between layers: none at inference
            inp = _concat_directions(g, Y)
    g.last_layer_h[id(layer)] = Y_h
    # the last layer's directions, merged
    if D == 1:
        out = g.op("Squeeze", [Y, g.ints("axes_1", 1)], "rnn_out")
    elif layer.merge == "concat":
        out = _concat_directions(g, Y)
    elif layer.merge == "sum":
        out = g.op("ReduceSum", [Y, g.ints("axes_1", 1)], "rnn_out",
                   keepdims=0)  # fmt: skip
    else:  # readout: o_t = V h_t + V' h'_t + c, zero at padded steps
        out = _readout(g, layer, Y)
    if layer.batch_first:
        out = g.op("Transpose", [out], "batch_major", perm=[1, 0, 2])
    for name, finals in (("h_n", finals_h), ("c_n", finals_c)):
        if not finals:
            continue
        n = name + suffix
        g.used.add(n)
        g.nodes.append(
            g.helper.make_node(
                "Concat" if len(finals) > 1 else "Identity",
                finals,
                [n],
                name=g.name(f"final_{n}"),
                **({"axis": 0} if len(finals) > 1 else {}),
            )
        )
        g.outputs.append(
            g.helper.make_tensor_value_info(n, g.TensorProto.FLOAT, [L * D, batch_dim, H],
                                            doc_string=_state_doc(layer, name, index, suffix,
                                                                  state))
        )  # fmt: skip
    return _Flow(out, [*flow.dims[:2], layer.output_features])


def _readout(g: _Graph, layer: Recurrent, Y: str) -> str:
    """The readout merge of ONNX's Y (T, 2, B, H): o_t = V h_t + V' h'_t + c, (T, B, K), zero
    at padded steps as rnnlab's."""
    p = layer.params
    out = None
    for d, sfx in enumerate(("", "_reverse")):
        y = g.op("Gather", [Y, g.const(f"index_{d}", np.array(d, np.int64))], "direction", axis=1)
        v = g.const(f"readout_weight{sfx}_t", p[f"readout_weight{sfx}"].T)
        o = g.op("MatMul", [y, v], "readout")
        out = o if out is None else g.op("Add", [out, o], "readout")
    assert out is not None
    out = g.op("Add", [out, g.const("readout_bias", p["readout_bias"])], "readout")
    if g.lengths is None:
        return out
    m = g.op("Unsqueeze", [_mask(g, out, 0), g.ints("axes_2", 2)], "mask")
    return g.op("Mul", [out, m], "readout")


def _peepholes(p: dict[str, np.ndarray], k: int, s: str, coupled: bool) -> np.ndarray:
    """ONNX's P for layer k, direction s: the peephole weights in the order i, o, f (a
    coupled LSTM's input gate sees c_{t-1} through −w_cf, as its pre-activation is −z_f)."""
    w_cf, w_co = p[f"weight_cf_l{k}{s}"], p[f"weight_co_l{k}{s}"]
    w_ci = -w_cf if coupled else p[f"weight_ci_l{k}{s}"]
    return np.concatenate([w_ci, w_co, w_cf])


def _concat_directions(g: _Graph, Y: str) -> str:
    """ONNX's Y (T, D, B, H) as rnnlab's layer output (T, B, D·H)."""
    t = g.op("Transpose", [Y], "directions_last", perm=[0, 2, 1, 3])
    return g.op("Reshape", [t, g.ints("shape_0_0_m1", 0, 0, -1)], "concat")


def _initial(
    g: _Graph, layer: Recurrent, k: int, batch: str, state: bool, suffix: str
) -> tuple[str, str]:
    """The names of layer k's initial_h and initial_c (D, B, H); "" for ONNX's zeros."""
    H, D, has_c = layer.hidden_size, len(layer.directions), layer.cell.has_c
    if state:
        starts, ends = g.ints(f"start_l{k}", k * D), g.ints(f"end_l{k}", (k + 1) * D)
        axes = g.ints("axes_0", 0)
        h0 = g.op("Slice", [f"h0{suffix}", starts, ends, axes], f"h0_l{k}")
        c0 = g.op("Slice", [f"c0{suffix}", starts, ends, axes], f"c0_l{k}") if has_c else ""
        return h0, c0
    if layer.initial_state == "zeros" or layer.initial_state == 0:
        return "", ""
    shape = g.op("Concat", [g.ints("D", D), batch, g.ints("H", H)], "state_shape", axis=0)
    out = []
    for which in ("h0", "c0") if has_c else ("h0",):
        if layer.initial_state == "learned":
            v = np.stack([layer.params[f"{which}_l{k}{s}"] for s in layer.directions])[:, None]
        else:
            v = np.full((D, 1, H), float(layer.initial_state), F32)
        out.append(g.op("Expand", [g.const(f"{which}_l{k}", v), shape], f"{which}_l{k}"))
    return out[0], out[1] if has_c else ""


def _default_states(layer: Recurrent) -> list[list[list[float]]]:
    """The layer's own initial states, (L·D, H) as nested lists, for Runtime to feed when a
    graph with state inputs is called without a state (JSON holds float32 exactly)."""
    H, has_c = layer.hidden_size, layer.cell.has_c
    out: list[list[list[float]]] = []
    for which in ("h0", "c0") if has_c else ("h0",):
        rows = []
        for k in range(layer.num_layers):
            for s in layer.directions:
                if layer.initial_state == "learned":
                    rows.append(layer.params[f"{which}_l{k}{s}"].astype(F32))
                else:
                    value = 0.0 if layer.initial_state == "zeros" else float(layer.initial_state)
                    rows.append(np.full(H, value, F32))
        out.append(np.stack(rows).astype(float).tolist())
    return out


# ---------------------------------------------------------------------- running
def _structure(text: str, path: object) -> dict[str, Any]:
    """The "rnnlab.structure" metadata `build_model` writes, checked: a damaged or foreign
    value is refused naming the file, not met later as a KeyError."""

    def is_int(v: object, least: int) -> bool:
        return type(v) is int and v >= least

    try:
        s = json.loads(text)
    except (ValueError, RecursionError):
        s = None
    recurrent = s.get("recurrent") if isinstance(s, dict) else None
    rules = s.get("input") if isinstance(s, dict) else None
    ok = (
        isinstance(s, dict)
        and all(type(s.get(k)) is bool for k in ("batch_first", "tokens", "sequential"))
        and is_int(s.get("modules"), 1)
        and is_int(s.get("num_embeddings", 0), 0)
        and isinstance(recurrent, dict)
        and all(k.isascii() and k.isdigit() and int(k) < s["modules"] and isinstance(r, dict)
                and isinstance(r.get("suffix"), str) and type(r.get("has_c")) is bool
                and (r.get("initial") is None or isinstance(r.get("initial"), list))
                for k, r in recurrent.items())
        and (rules is None or (isinstance(rules, list) and len(rules) == s["modules"]
                               and all(_is_input_rule(r) for r in rules)))
    )  # fmt: skip
    if not ok:
        _checks.fail("path", "an ONNX file exported by rnnlab",
                     f"'{path}', whose rnnlab.structure metadata is damaged or not rnnlab's")
    assert isinstance(s, dict)
    return s


def _is_input_rule(rule: object) -> bool:
    """Whether `rule` is one of _input_rule's [kind, dtype] pairs."""
    if not (isinstance(rule, list) and len(rule) == 2):
        return False
    kind, dtype = rule
    if kind in ("dropout", "readout"):
        return dtype is None
    try:
        return (kind in ("recurrent", "linear", "embedding") and isinstance(dtype, str)
                and np.dtype(dtype).kind == "f")  # fmt: skip
    except (TypeError, ValueError):  # (not a dtype's name)
        return False


def _graph_float(value: np.ndarray, name: str) -> np.ndarray:
    """A finite float array as the graph's float32, refusing a value float32 cannot hold: a
    float64 model takes x and a state past ±3.4e38, which the cast made inf (with NumPy's
    overflow warning), and the graph computed inf or NaN where the model does not."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(value, dtype=F32)
    if value.dtype.itemsize > 4 and not _checks.all_finite(out):
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
        _checks.fail(name, f"values float32 holds (|v| ≤ {_checks.F32_MAX:.3g}: the exported "
                     "graph computes in float32)", f"{float(value[at]):g} at index {at}")
    return out


class Runtime:
    """An exported file run by onnxruntime, behind rnnlab's module API: `forward(x, lengths=,
    state=)` returns a Forward with the output and the final state in rnnlab's form (for a
    Sequential, a list with one entry per module), so a task's `evaluate` runs it as it runs
    the model itself. `threads` sets onnxruntime's intra-op threads (its default: all cores).

    It takes the x the model takes and refuses, in the model's words, the x it refuses: a
    recurrent layer first takes its own dtype (and float32, the graph's own: the file of a
    float64 model takes float64 and float32 x), a Linear or a readout first any float dtype
    (then a recurrent layer the dtypes the Linear's product gives it), an Embedding integer
    ids in range. What is taken is converted to the graph's float32 (int64 ids); the outputs
    are float32. Unlike the model it refuses a NaN or inf in x or the state whatever `check`
    says: onnxruntime's LSTM and GRU turn a NaN into finite outputs.
    """

    def __init__(self, path: str | PathLike[str], *, threads: int | None = None) -> None:
        ort = _require("onnxruntime", "onnxruntime", "to run ONNX files")
        from rnnlab import io

        path = io.as_path(path, "path")
        if path.is_dir():
            _checks.fail("path", "an ONNX file", f"'{path}', a directory")
        if not path.is_file():
            _checks.fail("path", "an ONNX file", f"'{path}', which does not exist")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = _checks.positive_int(threads, "threads")
            opts.inter_op_num_threads = 1
        source: str | bytes = str(path)
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:  # a name whose bytes are not UTF-8 (m\xff.onnx), which
            # onnxruntime's path argument refused as "incompatible constructor arguments"
            # (said as a file it cannot run): the file's bytes, which it takes too
            source = path.read_bytes()
        try:
            self.session = ort.InferenceSession(
                source, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own types for a bad file
            raise ValueError(f"'{path}' is not an ONNX model onnxruntime can run: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "rnnlab.structure" not in meta:
            _checks.fail("path", "an ONNX file exported by rnnlab", f"'{path}'")
        s = _structure(meta["rnnlab.structure"], path)
        self.batch_first, self.tokens = s["batch_first"], s["tokens"]
        self.sequential, self.n_modules = s["sequential"], s["modules"]
        self.recurrent: dict[int, _RecurrentInfo] = {int(i): r for i, r in s["recurrent"].items()}
        self.num_embeddings: int = s.get("num_embeddings", 0)  # (0: unknown, older files)
        # each module's [kind, dtype] (None: a file from before rnnlab recorded them)
        self.input_rules: list[list[str | None]] | None = s.get("input")
        self.input_names = [i.name for i in self.session.get_inputs()]
        # the inputs' fixed dimensions (features, layers·directions, hidden), None where free
        self._dims = {
            i.name: [d if isinstance(d, int) else None for d in i.shape]
            for i in self.session.get_inputs()
        }

    def __call__(self, x: npt.ArrayLike, **options: Unpack[PassOptions]) -> Forward:
        return self.forward(x, **options)

    def forward(self, x: npt.ArrayLike, **options: Unpack[PassOptions]) -> Forward:
        """The graph's output and final states, with `state` (and the final state returned)
        in rnnlab's form: a list with an entry per module for a Sequential, h or (h, c) for a
        recurrent layer. Without `state`, a graph with state inputs gets the model's own
        initial state. Padding comes as `lengths` (a `mask` is refused). The other pass
        options (training, rng, check, grad) change nothing in an inference graph; a keyword
        that is no pass option is refused, as by every module's forward."""
        o = pass_options(options, "Runtime.forward")
        lengths, mask, state = o["lengths"], o["mask"], o["state"]
        if mask is not None:
            _checks.fail("mask", "None for an ONNX model (pass lengths)", _checks.describe(mask))
        x = self._input(x)
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        feeds: dict[str, np.ndarray] = {"x": x}
        if lengths is not None:
            lengths = _checks.int_array(lengths, "lengths", ndim=1)
            if lengths.shape != (B,):
                _checks.fail("lengths", f"{B} lengths between 1 and {T}",
                             _checks.describe(lengths))  # fmt: skip
            if lengths.min() < 1 or lengths.max() > T:
                bad = int(lengths[(lengths < 1) | (lengths > T)][0])
                _checks.fail("lengths", f"{B} lengths between 1 and {T}", f"the length {bad}")
        has_state = any("h0" + r["suffix"] in self.input_names for r in self.recurrent.values())
        # (a Sequential's list of None entries gives no state, as the model takes it)
        none_given = state is None or (self.sequential and isinstance(state, (list, tuple))
                                       and all(s is None for s in state))  # fmt: skip
        if not none_given and not has_state:
            # without state inputs the graph starts from the model's own state: refuse to
            # ignore a given one
            _checks.fail("state", "None for a graph exported without state=True",
                         _checks.describe(state))  # fmt: skip
        if "lengths" in self.input_names:
            feeds["lengths"] = (
                np.full(B, T, np.int32) if lengths is None else lengths.astype(np.int32)
            )
        elif lengths is not None and lengths.min() < T:
            _checks.fail(
                "lengths",
                "None or full lengths for a graph exported with lengths=False",
                "shorter sequences",
            )
        if state is not None and self.sequential and (
            not isinstance(state, (list, tuple)) or len(state) != self.n_modules
        ):
            _checks.fail("state", f"a list of {self.n_modules} entries (one per module, None if "
                         "stateless)", _checks.describe(state))  # fmt: skip
        for i, r in self.recurrent.items():
            if "h0" + r["suffix"] not in self.input_names:
                continue
            given = None if state is None else (state[i] if self.sequential else state)
            if given is None:
                assert r["initial"] is not None  # (stored for every graph with state inputs)
                given = tuple(
                    np.broadcast_to(np.asarray(v, F32)[:, None, :], (len(v), B, len(v[0])))
                    for v in r["initial"]
                )
            else:
                where = f"state[{i}]" if self.sequential else "state"
                given = self._state(given, r, B, where)
            for which, v in zip(("h0", "c0"), given, strict=False):
                feeds[which + r["suffix"]] = np.ascontiguousarray(v, dtype=F32)
        names = [o.name for o in self.session.get_outputs()]
        try:
            results = self.session.run(None, feeds)
        except Exception as e:  # what the checks above did not foresee: onnxruntime's words
            raise ValueError(f"onnxruntime could not run the graph on these inputs: {e}") from None
        outs = dict(zip(names, results, strict=True))
        finals: list[np.ndarray | tuple[np.ndarray, np.ndarray] | None] = [None] * self.n_modules
        for i, r in self.recurrent.items():
            h = outs["h_n" + r["suffix"]]
            finals[i] = (h, outs["c_n" + r["suffix"]]) if r["has_c"] else h
        return Forward(outs["y"], finals if self.sequential else finals[0], None)

    def _input(self, x: object) -> np.ndarray:
        """`x` checked as the model checks it, in the model's words, then converted to the
        graph's input type: onnxruntime aborts the process on an empty batch, wraps negative
        token ids and truncates float ones, and names its own internals for a wrong feature
        count. The dtype is taken where the model takes it (_input_dtype). A float x is
        checked finite whatever `check` says, and behind a Dropout too (where rnnlab's first
        module does not look): onnxruntime's LSTM and GRU operators turn a NaN into finite
        outputs, where the model's are NaN."""
        if self.tokens:
            ids = _checks.int_array(x, "x", ndim=2)
            _checks.batch_of_steps(ids if self.batch_first else ids.T)
            _checks.token_ids(ids, "x", self.num_embeddings or None)
            self._input_dtype(ids.dtype)
            return ids.astype(np.int64)
        value = _checks.float_array(x, "x", ndim=3)
        _checks.batch_of_steps(value if self.batch_first else np.swapaxes(value, 0, 1))
        features = self._dims["x"][2]
        if features is not None and value.shape[2] != features:
            _checks.fail("x", f"an array with {features} features in its last axis",
                         f"shape {value.shape}")  # fmt: skip
        self._input_dtype(value.dtype)
        return _graph_float(value, "x")

    def _input_dtype(self, dtype: np.dtype) -> None:
        """Refuse an x of a dtype the model refuses, in its words: the dtype followed through
        the modules as rnnlab's forward computes it (an Embedding gives its own, a recurrent
        layer takes only its own, a Linear promotes it with its weights', a readout or a
        Dropout keeps it). Any other float dtype the model takes is converted to the graph's
        float32, as the model converts it to its own. A file from before the modules'
        dtypes were recorded takes every float dtype. float32, the graph's own dtype, is
        taken first in line too: the file of a float64 model computes in float32 whatever
        it is given, and refusing the one dtype its graph declares would only puzzle."""
        first = True
        for kind, own in self.input_rules or ():
            if kind == "embedding":
                dtype = np.dtype(own)
            elif kind == "linear":
                dtype = np.result_type(dtype, np.dtype(own))
            elif kind == "recurrent":
                if dtype != np.dtype(own) and not (first and dtype == np.float32):
                    _checks.fail("x", f"of dtype {own} like the layer's parameters",  # (its
                                 f"dtype {dtype}", f"Convert with x.astype(np.{own}).")  # words)
                dtype = np.dtype(own)
            first = first and kind == "dropout"

    def _state(
        self, given: object, r: _RecurrentInfo, B: int, where: str
    ) -> tuple[np.ndarray, ...]:
        """A recurrent module's given state, h0 or (h0, c0), checked against its inputs, and
        finite as a layer checks it (`check` is about x alone)."""
        if r["has_c"] and (not isinstance(given, (tuple, list)) or len(given) != 2):
            _checks.fail(where, "a pair (h0, c0) for an LSTM", _checks.describe(given))
        parts = list(given) if r["has_c"] else [given]  # type: ignore[call-overload]
        out = []
        for which, v in zip(("h0", "c0"), parts, strict=False):
            n, _, H = self._dims[which + r["suffix"]]
            name = f"{where}[{0 if which == 'h0' else 1}] ({which})" if r["has_c"] else where
            out.append(_graph_float(_checks.float_array(v, name, shape=(n, B, H)), name))
        return tuple(out)
