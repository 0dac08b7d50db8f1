"""`rnnlab export RUN --format F`: a trained run's model in another framework's format.

    onnx               RUN/model.onnx, the standard RNN/LSTM/GRU operators (rnnlab.onnx)
    safetensors-torch  RUN/model.torch.safetensors, a state_dict PyTorch's modules load with
                       strict=True, and (printed) the code that builds those modules
    keras              RUN/model.weights.h5, the weights of the matching Keras 3 layers,
                       and (printed) the code that builds that Keras model and loads them
                       (rnnlab.keras)

Every file is written atomically (rnnlab.io): an error leaves no file behind. `--out` never
writes over the run's own files (its configuration, weights, logs, checkpoints, plots), nor
over a named pipe or a device, which the atomic rename would replace with a regular file,
and its name is not one of another format's (`--format onnx --out m.torch.safetensors`
wrote a graph a PyTorch user would take for a state_dict; the Python writers' `path` is
refused the same way, by _checks.export_file_name). `--out -` writes the ONNX graph
to stdout (one file, nothing printed beside it on stdout: the note goes to stderr; not to a
terminal or a closed stdout, and a write that fails is said as --out's); the two
other formats print code that loads the file by its path, so `-` is refused for them, and
a file named "-" is `./-`; `rnnlab export` refuses a closed stdout for them before writing
(cli/trained.py). An --out that cannot be written, or whose links loop, is said as --out's.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike, fspath
from pathlib import Path

import numpy as np

from rnnlab import _checks, io, runs
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.layers import Module, Recurrent
from rnnlab.modules import (
    Dropout,
    Embedding,
    LastStep,
    Linear,
    MeanOverTime,
    Sequential,
    _Module,
    readout_source,
    refuse_own_subclass,
)

FORMATS = ("onnx", "safetensors-torch", "keras")
SUFFIXES = _checks.EXPORT_SUFFIXES

Model = Module | _Module
"""What is exported: a built model (a Sequential, as rnnlab.runs loads a run's) or one
module; each exporter checks at the door that its format holds every module."""


STDOUT = "-"
"""`--out -`: the ONNX graph's bytes to stdout (export_run)."""

def export_run(
    run: str | PathLike[str],
    fmt: str,
    out: str | PathLike[str] | None = None,
    *,
    lengths: bool = True,
    state: bool = False,
) -> tuple[Path | None, str]:
    """Export the latest weights of the run directory `run`; returns (path written, text to
    print). `out` "-" writes the ONNX graph to stdout instead (path None; the text then
    belongs on stderr). `lengths` and `state` are rnnlab.onnx.export's (ONNX only)."""
    fmt = _checks.choice(fmt, "--format", FORMATS)
    lengths = _checks.boolean(lengths, "lengths")
    state = _checks.boolean(state, "state")
    if fmt != "onnx" and (state or not lengths):  # the other formats hold weights only
        flag = "--state" if state else "--no-lengths"
        _checks.fail(flag, "left out with --format " + fmt,
                     f"{flag}, which only an ONNX graph's inputs have")  # fmt: skip
    to_stdout = isinstance(out, (str, PathLike)) and fspath(out) == STDOUT
    if to_stdout:
        _check_stdout(fmt)
    run_dir, cfg, model, _ = runs.load_run(run)  # the stored data record: not needed here
    if getattr(model, "net", None) is not None:  # rnnlab.tasks.transduction.Trainee
        _checks.fail("run", "a run of one recurrent network (the exporters' model)",
                     f"a {cfg.task} run, an encoder-decoder",
                     "Its export is not written yet.")  # fmt: skip
    reversed_ = bool(cfg.reverse_input)  # (the task reverses x before the model: so must
    # its user, in every format)
    if to_stdout:
        from rnnlab import onnx

        data = onnx.to_bytes(model, lengths=lengths, state=state,
                             doc=_onnx_doc(run_dir, reversed_))  # fmt: skip
        note = _onnx_note(data, reversed_)
        try:
            sys.stdout.flush()  # (anything printed before goes first)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as e:  # a reader gone (| head), a full disk: Python's "[Errno 32]
            # Broken pipe" named neither stdout nor --out
            _checks.fail("--out", "'-' with stdout taking the whole graph",
                         f"'-' with stdout refusing it ({e.strerror or e})",
                         "What reached stdout is not a whole graph: write it again, or give "
                         "--out a file.")  # fmt: skip
        return None, note
    # (each writer refuses these too, under its own argument's name)
    path = _checks.file_to_write(run_dir / ("model" + SUFFIXES[fmt]) if out is None else out,
                                 "--out")  # fmt: skip
    _not_a_link_loop(path)
    if _run_own(path, run_dir):
        if path.is_symlink():  # (the default path itself may be such a link)
            _checks.fail("--out", "a file path that is not one of the run's own files",
                         f"'{path}', a link to '{path.resolve()}'",
                         "Remove the link, or give --out elsewhere.")  # fmt: skip
        _checks.fail("--out", "a file path that is not one of the run's own files",
                     f"'{path}'", f"Write the export beside them, e.g. {run_dir / 'model'}"
                     f"{SUFFIXES[fmt]}.")  # fmt: skip
    if not path.parent.is_dir():  # (a file there is "not a folder", as the writers say it)
        _checks.fail("--out", "a file path in an existing folder", f"'{path}', whose folder "
                     f"'{path.parent}' " + ("is not a folder" if path.parent.exists() else
                                            "does not exist"))  # fmt: skip
    # After the run's own files (that refusal matters more) and, as in the Python writers,
    # after the format's refusal of the model (no name makes that model exportable); each
    # writer checks the name again, as `path`.
    try:
        _check_model(model, fmt)
    except ValueError as e:  # (said of the model, which the command's user never named)
        raise ValueError(f"`run` '{run_dir}' cannot be exported as {fmt}: "
                         f"{' '.join(str(e).split())}") from None  # fmt: skip
    _checks.export_file_name(path, fmt, "--out")
    if fmt == "onnx":
        from rnnlab import onnx

        onnx.check_path(path, "--out")

        with _writing(path, out is None):
            onnx.export(model, path, lengths=lengths, state=state,
                        doc=_onnx_doc(run_dir, reversed_))  # fmt: skip
        return path, _onnx_note(path, reversed_)
    if fmt == "safetensors-torch":
        tensors = torch_state_dict(model)
        # absolute, so that it loads from any directory; not resolved: the write replaces a
        # link at `path` (rnnlab.io), and the code named the link's old target, stale weights
        snippet = torch_snippet(model, path.absolute())
        if reversed_:
            snippet = _TORCH_REVERSED_NOTE + snippet + _TORCH_REVERSED
        with _writing(path, out is None):
            io.save_safetensors(path, tensors, {"format": "pt"})
        return path, snippet
    from rnnlab import keras

    # (it checks first that Keras holds every module; the absolute path loads from anywhere,
    # the link's own name as for PyTorch)
    snippet = keras.snippet(model, path.absolute())
    if reversed_:
        snippet = _KERAS_REVERSED_NOTE + snippet + _NUMPY_REVERSED
    with _writing(path, out is None):
        keras.save_weights(model, path)
    return path, snippet


def _not_a_link_loop(path: Path) -> None:
    """Refuse an --out whose symbolic links lead round in a loop (at its name or on the way
    to it), as `cp` and a shell's `>` refuse it: Path.resolve's "Symlink loop from
    '/tmp/loop'" (a RuntimeError in Python 3.11) ended the command with status 1, naming
    no argument."""
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            _checks.fail("--out", "a file path, or a link to one",
                         f"'{path}', whose symbolic links lead round in a loop",
                         "Remove the link, or give --out elsewhere.")  # fmt: skip


@contextmanager
def _writing(path: Path, default: bool) -> Iterator[None]:
    """The export's write, a failure of which (a read-only folder, a full disk) is said as
    --out's: rnnlab.io's "[Errno 13] cannot write 'ro/m.onnx' (Permission denied)" named
    the file but not the option that chose it, nor the way out. `default`: `path` is the
    default one, in the run's folder."""
    try:
        yield
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno is not None and why == f"cannot write '{path}' ({os.strerror(e.errno)})":
            why = os.strerror(e.errno)  # (rnnlab.io's words: the path is said already)
        where = "the default, in the run's folder, " if default else ""
        hint = ("Give --out a file in a folder you may write to." if e.errno in (
            errno.EACCES, errno.EPERM, errno.EROFS) else "Nothing was written.")  # fmt: skip
        _checks.fail("--out", "a file path that can be written",
                     f"'{path}' ({where}which could not be written: {why})", hint)  # fmt: skip


RUN_OWN_FILES = ("config.json", "result.json", "metrics.jsonl", "model.safetensors",
                 "best.safetensors", "train.log", io.LOCK_NAME)  # fmt: skip (train.log: a
# reproduce row's)
RUN_OWN_FOLDERS = ("checkpoints", "plots")


def _run_own(path: Path, run_dir: Path) -> bool:
    """Whether `path` is one of the run's own files (what training wrote: its configuration,
    weights, logs, checkpoints, plots), which an export must not write over."""
    try:
        inside = path.resolve().relative_to(run_dir.resolve())
    except ValueError:
        return False
    parts = inside.parts
    return bool(parts) and (parts[0] in RUN_OWN_FOLDERS
                            or (len(parts) == 1 and parts[0] in RUN_OWN_FILES))  # fmt: skip


def _check_model(model: Model, fmt: str) -> None:
    """The `fmt` exporter's refusal of `model` (a module it cannot hold, a diverged weight),
    before the file's name is looked at."""
    if fmt == "onnx":
        from rnnlab import onnx

        onnx.check_exportable(model)
    elif fmt == "safetensors-torch":
        _torch_check(model)
    else:
        from rnnlab import keras

        keras.check_exportable(model)


def _check_stdout(fmt: str) -> None:
    """Refuse `--out -` where stdout cannot take the export: a format of two parts (the file,
    and the code printed on stdout that loads it by its path), or a terminal (an ONNX graph
    is binary)."""
    if fmt != "onnx":
        _checks.fail("--out", f"a file path for --format {fmt} ('-', stdout, is for the ONNX "
                     "graph alone)", "'-'",
                     f"The {fmt} export prints, on stdout, the code that loads the file by its "
                     f"path: give a file, e.g. --out model{SUFFIXES[fmt]} (a file named '-' is "
                     "./-).")  # fmt: skip
    if sys.stdout is None:  # (`>&-`: Python's sys.stdout is None, and isatty() failed)
        _checks.fail("--out", "'-' with stdout redirected to a file or a pipe",
                     "'-' with stdout closed", "Give --out a file.")  # fmt: skip
    if sys.stdout.isatty():
        _checks.fail("--out", "'-' with stdout redirected to a file or a pipe",
                     "'-' with stdout a terminal",
                     "An ONNX graph is binary: redirect it (> model.onnx, | ...), or give "
                     "--out a file.")  # fmt: skip


def _onnx_doc(run_dir: Path, reversed_: bool = False) -> str:
    """The graph's doc_string, naming the run: a folder name's bytes that are not UTF-8 (on
    the command line, as lone surrogates) written \\xff, since a protobuf string is UTF-8 (the
    export of such a run failed with "'utf-8' codec can't encode character '\\udcff'").
    A run trained with --reverse-input says so there too: the graph travels without the
    note printed beside it."""
    name = run_dir.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    said = (": trained with --reverse-input, it reads each sequence reversed within its "
            "length (padding left at the end)") if reversed_ else ""  # fmt: skip
    return f"rnnlab run {name}{said}"


def _onnx_note(graph_file: Path | bytes, reversed_: bool = False) -> str:
    """The written graph's inputs and outputs, as it names them: read from the file (or its
    bytes, written to stdout), since they depend on the options (lengths, state) and on the
    modules (a suffix _i each with several recurrent modules); a run trained with
    --reverse-input, that its input must be reversed as the task reversed it."""
    import onnx

    data = graph_file if isinstance(graph_file, bytes) else graph_file.read_bytes()
    graph = onnx.load_from_string(data).graph
    ins = ", ".join(i.name for i in graph.input)
    outs = ", ".join(o.name for o in graph.output)
    return f"# inputs: {ins}; outputs: {outs}\n" + (_ONNX_REVERSED_NOTE if reversed_ else "")


# ---------------------------------------------------------------------- PyTorch
def _torch_check(model: Model) -> list[Module | _Module]:
    """The modules of `model`, after checking that PyTorch's modules hold each of them."""
    if hasattr(model, "wants_targets"):
        _checks.fail("model", "a model PyTorch's modules hold",
                     "an output-feedback (Jordan) model", "PyTorch has no such layer.")  # fmt: skip
    code = "the PyTorch code"
    refuse_own_subclass(model, "model", code)
    mods = model.modules if isinstance(model, Sequential) else [model]
    for i, m in enumerate(mods):
        if isinstance(model, Sequential):
            refuse_own_subclass(m, f"model (module {i})", code)
        what, why = None, ""
        if isinstance(m, Recurrent):
            cell = m.cell
            if type(cell) not in (ElmanCell, LSTMCell, GRUCell):
                what = f"a cell of its own ({type(cell).__name__})"
            elif isinstance(cell, LSTMCell) and (
                cell.peephole or cell.coupled or cell.layer_norm or cell.cell_clip is not None
            ):
                what, why = f"an LSTM variant ({cell.describe()})", "nn.LSTM has none."
            elif isinstance(cell, GRUCell) and not cell.reset_after:
                what = "the original GRU (reset_after=False)"
                why = "nn.GRU is the reset-after form."
            elif m.merge == "readout":
                what = "the bidirectional readout merge"
            elif getattr(m, "proj_size", 0) and not isinstance(cell, LSTMCell):
                what = "an Elman layer with proj_size (PyTorch projects LSTMs only)"
            elif any(getattr(m, "zoneout", ())):
                what = f"a layer with zoneout={m.zoneout} (PyTorch has no zoneout)"
        elif isinstance(m, MeanOverTime):
            readout_source(mods, i)  # (it refuses a time-major layer before it, as Sequential)
        elif not isinstance(m, (Embedding, Linear, Dropout, LastStep)):
            what = _checks.describe(m)
        if what is not None:
            _checks.fail(f"model (module {i})", "a module PyTorch's modules hold", what, why)
    _checks.finite_weights(model, "PyTorch")
    return list(mods)


def torch_state_dict(model: Model) -> dict[str, np.ndarray]:
    """The state_dict of `torch_snippet`'s modules: rnnlab's own names (they are PyTorch's,
    a Sequential's modules numbered as in torch.nn.Sequential), float32."""
    _torch_check(model)
    prefix = "" if isinstance(model, Sequential) else "0."  # a lone module is module 0
    return {prefix + k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.params.items()}


_TORCH_HELPERS = '''
def _recurrent(rnn, x, lengths, state, merge, initial):
    """rnnlab's recurrent layer on torch.nn.RNN/LSTM/GRU: padding by packing, its initial
    state (zeros, a constant, or the learned h0_l*/c0_l* parameters) and its merge."""
    bf, lstm = rnn.batch_first, isinstance(rnn, torch.nn.LSTM)
    B, T = (x.shape[0], x.shape[1]) if bf else (x.shape[1], x.shape[0])
    D = 2 if rnn.bidirectional else 1
    if state is None and initial != "zeros":
        sfx = ("", "_reverse")[:D]
        def make(w):
            if initial == "learned":
                v = torch.stack([getattr(rnn, f"{w}_l{k}{s}") for k in range(rnn.num_layers)
                                 for s in sfx])
            else:  # h has proj_size features in a projecting LSTM, c hidden_size
                size = (rnn.proj_size or rnn.hidden_size) if w == "h0" else rnn.hidden_size
                v = torch.full((rnn.num_layers * D, size), float(initial), dtype=x.dtype,
                               device=x.device)
            return v[:, None].expand(-1, B, -1).contiguous()
        state = (make("h0"), make("c0")) if lstm else make("h0")
    if lengths is not None:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=bf,
                                                    enforce_sorted=False)
    y, state = rnn(x, state)
    if lengths is not None:
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=bf, total_length=T)
    if merge == "sum" and D == 2:
        half = y.shape[-1] // 2  # each direction's features: proj_size when it projects
        y = y[..., :half] + y[..., half:]
    return y, state


def _last_step(x, lengths, split=None):
    """x at each sequence's last valid step; after a bidirectional layer its reverse half
    (from feature `split` on) at step 0, where that direction has read the whole sequence."""
    last = (torch.full((x.shape[0],), x.shape[1] - 1) if lengths is None
            else lengths - 1).to(x.device)
    out = x[torch.arange(x.shape[0], device=x.device), last]
    if split is None:
        return out
    return torch.cat([out[:, :split], x[:, 0, split:]], dim=1)


def _final_states_summed(state):
    """After merge 'sum': the last layer's two final states added (h, not an LSTM's c)."""
    h = state[0] if isinstance(state, tuple) else state
    return h[-2] + h[-1]


def _mean_over_time(x, lengths):
    if lengths is None:
        return x.mean(dim=1)
    lengths = lengths.to(x.device)
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    return (x * valid[:, :, None]).sum(dim=1) / lengths[:, None].to(x.dtype)

'''


_ONNX_REVERSED_NOTE = """\
# This run was trained with --reverse-input: its task fed the model each sequence reversed
# within its length (padding left at the end), and so must you feed the graph.
"""

_KERAS_REVERSED_NOTE = """\
# This run was trained with --reverse-input: its task fed the model each sequence reversed
# within its length (padding left at the end), and so must you: feed it reverse_within(x,
# lengths), x batch-first (a NumPy version is defined at the end of the printed code).
"""

_NUMPY_REVERSED = '''

import numpy as np


def reverse_within(x, lengths=None):
    """Each sequence of x (batch-first, a NumPy array) reversed within its length, padding
    left at the end: what the run's task fed the model (--reverse-input)."""
    x = np.asarray(x)
    if lengths is None:
        return x[:, ::-1].copy()
    t = np.arange(x.shape[1])[None, :]
    n = np.asarray(lengths)[:, None]
    idx = np.where(t < n, n - 1 - t, t)
    return np.take_along_axis(x, idx.reshape(*idx.shape, *([1] * (x.ndim - 2))), axis=1)
'''

_TORCH_REVERSED_NOTE = """\
# This run was trained with --reverse-input: its task fed the model each sequence reversed
# within its length, and so must you: model(reverse_within(x, lengths), lengths), with
# reverse_within as defined at the end (x batch-first, as the run's model reads it).
"""

_TORCH_REVERSED = '''

def reverse_within(x, lengths=None):
    """Each sequence of x (batch-first) reversed within its length, padding left at the end:
    what the run's task fed the model (--reverse-input)."""
    if lengths is None:
        return x.flip(1)
    lengths = torch.as_tensor(lengths).to(x.device)
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x))
'''
"""A run trained with --reverse-input (rnnlab.tasks' _reverse_within): the exported model
computes rnnlab's forward, and the reversal, which is the task's, was said nowhere; a
PyTorch user fed it the sequences in their order and got another model's answers."""


def torch_snippet(model: Model, path: str | PathLike[str]) -> str:
    """Python that builds PyTorch modules holding `model` and loads the exported file into
    them with strict=True; `model(x, lengths=None, state=None)` then returns (output,
    states) as rnnlab's forward does: for a Sequential, `state` and `states` are lists of
    one entry a module (None for a module without state); for a module given alone, its own
    state, as torch.nn.RNN/LSTM/GRU take and give it: h0 (h_n), or (h0, c0) ((h_n, c_n))
    for an LSTM (a one-entry list before, which a PyTorch user's (h0, c0) broke)."""
    mods = _torch_check(model)
    _checks.export_file_name(io.as_path(path, "path"), "safetensors-torch", "path")
    lone = not isinstance(model, Sequential)
    init, body = [], []
    for i, m in enumerate(mods):
        key = f'm["{i}"]'
        if isinstance(m, Embedding):
            init.append(f"torch.nn.Embedding({m.num_embeddings}, {m.embedding_dim})")
            body.append(f"x = {key}(x)")
        elif isinstance(m, Linear):
            bias = "" if "bias" in m.params else ", bias=False"
            init.append(f"torch.nn.Linear({m.in_features}, {m.out_features}{bias})")
            body.append(f"x = {key}(x)")
        elif isinstance(m, Dropout):
            init.append(f"torch.nn.Dropout({m.p})")
            body.append(f"x = {key}(x)")
        elif isinstance(m, LastStep):
            init.append("torch.nn.Identity()")  # LastStep is in forward
            j = readout_source(mods, i)  # (through Dropouts, as Sequential reads)
            before = mods[j] if j is not None else None
            if isinstance(before, Recurrent) and before.bidirectional and before.merge == "sum":
                body.append(f"x = _final_states_summed(states[{j}])")  # (j = i - 1: Sequential)
            else:
                split = (before.output_features // 2 if isinstance(before, Recurrent)
                         and before.bidirectional else None)  # fmt: skip
                body.append(f"x = _last_step(x, lengths, {split})")
        elif isinstance(m, MeanOverTime):
            init.append("torch.nn.Identity()")  # MeanOverTime is in forward
            body.append("x = _mean_over_time(x, lengths)")
        else:
            assert isinstance(m, Recurrent)  # (_torch_check let no other module through)
            cell = m.cell
            cls = {LSTMCell: "LSTM", GRUCell: "GRU", ElmanCell: "RNN"}[type(cell)]
            extra = f', nonlinearity="{cell.nonlinearity}"' if isinstance(cell, ElmanCell) else ""
            init.append(
                f"torch.nn.{cls}({m.input_size}, {m.hidden_size}, {m.num_layers}{extra}"
                + (f", proj_size={m.proj_size}" if getattr(m, "proj_size", 0) else "") + ", "
                f"batch_first={m.batch_first}, bidirectional={m.bidirectional}"
                # (between layers only: PyTorch warns at every import of a one-layer model)
                + (f", dropout={m.dropout}" if m.num_layers > 1 and m.dropout else "") + ")"
            )
            initial = repr(m.initial_state)
            given = "state" if lone else f"None if state is None else state[{i}]"
            body.append(
                f"x, states[{i}] = _recurrent({key}, x, lengths, {given}, {m.merge!r}, {initial})"
            )
    text = str(path)
    imports = ["import torch", "from safetensors.torch import load_file"]
    load = f"load_file({text!r})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a name in bytes that are not UTF-8 (as lone surrogates)
        # safetensors' load_file refuses it ("Path ... is not valid UTF-8"), and the code
        # printed for such a run failed at its last line: Python's own reading takes the
        # name back to its bytes, and safetensors loads what it read
        imports = ["from pathlib import Path", "", "import torch",
                   "from safetensors.torch import load"]  # fmt: skip
        load = f"load(Path({text!r}).read_bytes())"
    lines = [
        *imports,
        _TORCH_HELPERS,
        "class Model(torch.nn.Module):",
        '    """The rnnlab model as PyTorch modules, numbered as rnnlab numbers them."""',
        "",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    for i, text in enumerate(init):
        lines.append(f'        self.add_module("{i}", {text})')
    for i, m in enumerate(mods):
        if isinstance(m, Recurrent) and m.initial_state == "learned":
            names = [f"{w}_l{k}{s}" for k in range(m.num_layers) for s in m.directions
                     for w in (("h0", "c0") if m.cell.has_c else ("h0",))]  # fmt: skip
            P = getattr(m, "proj_size", 0) or m.hidden_size  # h0's size; c0's is hidden_size
            lines.append(f"        for name in {names!r}:")
            lines.append(
                f'            self._modules["{i}"].register_parameter(name, torch.nn.Parameter('
                f'torch.zeros({P} if name.startswith("h0") else {m.hidden_size})))'
            )
    lines += [
        "",
        "    def forward(self, x, lengths=None, state=None):",
        "        m, states = self._modules, [None] * len(self._modules)",
        # (a list or a NumPy array, as pack_padded_sequence takes them: .cpu() and `- 1`
        # failed on them with an AttributeError or a TypeError)
        "        lengths = None if lengths is None else torch.as_tensor(lengths)",
        *[f"        {b}" for b in body],
        "        return x, " + ("states[0]  # the module's own: h_n, or (h_n, c_n)" if lone
                              else "states"),  # fmt: skip
        "",
        "",
        "model = Model().eval()",
        f"model.load_state_dict({load}, strict=True)",
    ]
    return "\n".join(lines) + "\n"
