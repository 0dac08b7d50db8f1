"""`rnnlab export`: a run of every built-in task exported to ONNX gives the held-out metrics of
`rnnlab evaluate` under onnxruntime, and exported for PyTorch gives them under torch's own
modules (built by the printed code, loading the file with strict=True); bad input is one line.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import RefusingStdout, keras_oracle, oracle

from rnnlab import tasks
from rnnlab.cli import main
from rnnlab.layers import Forward
from rnnlab.runs import load_run

oracle("onnxruntime")
torch = oracle("torch")

import rnnlab.onnx as rx  # noqa: E402

TINY = ["--hidden", "8", "--embed", "4", "--batch-size", "8", "--quiet", "--steps", "3"]

# (task, options): every built-in task, and between them every cell ONNX expresses
RUNS = {
    "charlm": ["--seq-len", "16", "--data", "CORPUS", "--cell", "gru", "--layers", "2"],
    "digits": ["--cell", "lstm", "--initial-state", "learned", "--bidirectional"],
    "pytokens": ["--seq-len", "20", "--train-size", "3000", "--bidirectional", "--cell", "rnn"],
    "adding": ["--T", "8", "--cell", "relu", "--layers", "2"],
    "copy": ["--T", "5", "--cell", "gru-orig", "--initial-state", "learned"],
    "temporal-order": ["--T", "20", "--peephole", "--coupled", "--bidirectional"],
}
TORCH_REFUSES = {"copy": "original GRU", "temporal-order": "an LSTM variant"}


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    corpus = base / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 300, encoding="utf-8")
    made = {}
    for task, options in RUNS.items():
        options = [str(corpus) if o == "CORPUS" else o for o in options]
        assert run_cli("train", task, *TINY, *options, "--run-dir", base / task) == 0
        made[task] = base / task
    return made


def evaluate_cli(run, capsys) -> dict:
    capsys.readouterr()
    assert run_cli("evaluate", run, "--split", "valid", "--json") == 0
    return json.loads(capsys.readouterr().out)


def same_metrics(ours: dict, theirs: dict, n_items: int):
    """Equal to float32's rounding: losses to a relative 1e-4, accuracies to one item."""
    for key, value in ours.items():
        if isinstance(value, float):
            tol = 1.0 / n_items + 1e-12 if "accuracy" in key else 1e-4 * max(abs(value), 1e-3)
            assert abs(theirs[key] - value) <= tol, f"{key}: {theirs[key]} against {value}"


def held_out_items(task, split="valid") -> int:
    if task.name == "charlm":
        return len(task.ids[split])
    return len(task.split(split)[1])


@pytest.mark.parametrize("task", list(RUNS))
def test_onnx_export_gives_the_metric_of_evaluate(task, runs, capsys, tmp_path):
    run = runs[task]
    out = tmp_path / "m.onnx"
    state = ["--state"] if task == "charlm" else []  # charlm is evaluated as a stream
    assert run_cli("export", run, "--format", "onnx", "--out", out, *state) == 0
    assert "inputs: x, lengths" in capsys.readouterr().out
    ours = evaluate_cli(run, capsys)
    _, cfg, _, data = load_run(run)
    t = tasks.make_task(cfg, data)
    baselines = {"baselines": True} if task == "charlm" else {}  # as `rnnlab evaluate` asks
    theirs = t.evaluate(rx.Runtime(out), "valid", **baselines)
    assert set(theirs) == set(ours)
    same_metrics(ours, theirs, held_out_items(t))


class TorchModel:
    """The exported torch modules behind rnnlab's forward, for a task's evaluate."""

    def __init__(self, namespace):
        self.model = namespace["model"]

    def forward(self, x, *, lengths=None, state=None, **_):
        x = torch.from_numpy(np.asarray(x))
        if lengths is not None:
            lengths = torch.from_numpy(np.asarray(lengths, np.int64))
        if state is not None:
            state = [None if s is None else _to_torch(s) for s in state]
        with torch.no_grad():
            y, states = self.model(x, lengths, state)
        return Forward(y.numpy(), [None if s is None else _to_numpy(s) for s in states])


def _to_torch(s):
    return tuple(map(torch.from_numpy, s)) if isinstance(s, tuple) else torch.from_numpy(s)


def _to_numpy(s):
    return tuple(v.numpy() for v in s) if isinstance(s, tuple) else s.numpy()


@pytest.mark.parametrize("task", list(RUNS))
def test_safetensors_torch_export_loads_strictly_and_gives_the_metric(task, runs, capsys, tmp_path):
    run = runs[task]
    out = tmp_path / "m.safetensors"
    capsys.readouterr()
    code = run_cli("export", run, "--format", "safetensors-torch", "--out", out)
    captured = capsys.readouterr()
    if task in TORCH_REFUSES:
        assert code == 2 and not out.exists()
        assert TORCH_REFUSES[task] in captured.err and captured.err.count("\n") == 1
        return
    assert code == 0
    namespace: dict = {}
    exec(compile(captured.out, "snippet", "exec"), namespace)  # loads with strict=True
    from safetensors.torch import load_file

    assert set(load_file(str(out))) == set(namespace["model"].state_dict())
    ours = evaluate_cli(run, capsys)
    _, cfg, _, data = load_run(run)
    t = tasks.make_task(cfg, data)
    same_metrics(ours, t.evaluate(TorchModel(namespace), "valid"), held_out_items(t))


def test_bad_input_is_one_line_and_leaves_no_file(runs, capsys, tmp_path):
    run = runs["adding"]
    cases = [
        (["export", run, "--format", "tflite"], "`--format` must be one of onnx"),
        (["export", tmp_path / "nowhere"], "must be a run directory"),
        (["export", run, "--out", tmp_path / "no" / "dir" / "m.onnx"],
         "`--out` must be a file path in an existing folder; got"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert run_cli(*args) == 2
        err = capsys.readouterr().err
        assert err.startswith("rnnlab: error:") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "reader"), [("m.json", "onnx.load"), ("m.textproto", "onnx.load"),
                                            ("m.onnxtxt", "onnx.load"), ("m.ort", "onnxruntime")])
def test_an_onnx_out_read_as_another_format_is_refused_by_name(name, reader, runs, capsys,
                                                               tmp_path):  # fmt: skip
    """onnx.load picks the format by the suffix: a binary graph written as m.json was read
    back as JSON, and the export failed after writing the file (a UTF-8 error naming nothing);
    onnxruntime reads m.ort as its ORT format, and refused the graph written under it."""
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--out", tmp_path / name) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out` must be a file name for a binary ONNX graph" in err
    assert f"which {reader} reads as" in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "safetensors-torch", "keras"])
@pytest.mark.parametrize("own", ["config.json", "model.safetensors", "checkpoints/latest/x.h5",
                                 ".rnnlab-lock", "train.log"])  # (train.log: reproduce's rows)
def test_an_out_over_the_run_s_own_files_is_refused(fmt, own, tmp_path, capsys):
    """An export does not write over what training wrote (its configuration, weights, logs,
    checkpoints): `--out R/config.json` replaced the run's config with the graph."""
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--run-dir", run, *TINY) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_cli("export", run, "--format", fmt, "--out", run / own) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out` must be a file path that is not one of the run" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert run_cli("export", run, "--format", fmt, "--out", run / ("mine" + {
        "onnx": ".onnx", "safetensors-torch": ".torch.safetensors", "keras": ".weights.h5"}[fmt]
    )) == 0  # beside them: written


def test_a_default_out_that_is_a_link_into_the_run_says_so(tmp_path, capsys):
    """RUN/model.onnx a link to the run's metrics.jsonl: refused, and the message said to
    write "beside them, e.g. RUN/model.onnx", the very path refused."""
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--run-dir", run, *TINY) == 0
    (run / "model.onnx").symlink_to(run / "metrics.jsonl")
    capsys.readouterr()
    assert run_cli("export", run) == 2
    err = capsys.readouterr().err
    assert (f"`--out` must be a file path that is not one of the run's own files; got "
            f"'{run / 'model.onnx'}', a link to '{(run / 'metrics.jsonl').resolve()}' instead. "
            "Remove the link, or give --out elsewhere.") in err


def test_a_keras_out_without_its_suffix_names_out(runs, capsys, tmp_path):
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", "keras", "--out", tmp_path / "x.h5") == 2
    err = capsys.readouterr().err
    assert "`--out` must be a file name ending in .weights.h5" in err and err.count("\n") == 1


@pytest.mark.parametrize("fmt", ["onnx", "safetensors-torch", "keras"])
def test_out_a_directory_is_refused_by_name(fmt, runs, capsys, tmp_path):
    """--out naming a directory: one line naming --out, not the rename's error about
    rnnlab's temporary file."""
    (tmp_path / "outdir").mkdir()
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", tmp_path / "outdir") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out` must be a file path; got '" in err, err
    assert "a directory" in err and ".tmp" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["outdir"]
    assert not any((tmp_path / "outdir").iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
@pytest.mark.parametrize("fmt", ["onnx", "safetensors-torch", "keras"])
@pytest.mark.parametrize("link", [False, True], ids=["fifo", "link_to_fifo"])
def test_out_a_named_pipe_is_refused_and_left_in_place(fmt, link, runs, capsys, tmp_path):
    """The write is atomic, a new file renamed over the name: a FIFO at --out (or a link to
    one, as /dev/stdout is) was deleted and a regular file left in its place, its reader
    waiting forever; as root, `--out /dev/stdout` replaced the system's link."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    if link:
        out.symlink_to(fifo)
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", out if link else fifo) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out` must be a regular file's path (or a new one)" in err
    assert "a FIFO (named pipe)" in err
    assert fifo.is_fifo() and (not link or out.resolve() == fifo.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out", "pipe"] if link else ["pipe"])


@pytest.mark.parametrize("fmt", ["onnx", "safetensors-torch", "keras"])
@pytest.mark.parametrize("out", ["exports/", ""], ids=["folder", "empty"])
def test_out_naming_a_folder_or_nothing_is_refused(fmt, out, runs, capsys, tmp_path, monkeypatch):
    """`--out exports/` (a folder meant, not there yet) wrote a file named `exports`, without
    a suffix; `--out ''` was refused as "got '.', a directory"."""
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out` must be a file path; got " in err
    assert ("a folder's path (it ends in a separator)" if out else "an empty path") in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options, note",
    [
        ([], "# inputs: x, lengths; outputs: y, h_n\n"),
        (["--no-lengths"], "# inputs: x; outputs: y, h_n\n"),
        (["--no-lengths", "--state"], "# inputs: x, h0; outputs: y, h_n\n"),
    ],
    ids=["default", "no_lengths", "state"],
)
def test_onnx_note_names_the_graphs_inputs(options, note, runs, capsys, tmp_path):
    """The printed note lists the inputs the written graph has (it said "x, lengths" after
    --no-lengths)."""
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--out", tmp_path / "m.onnx", *options) == 0
    assert capsys.readouterr().out == note


def test_onnx_note_of_several_recurrent_modules(tmp_path):
    from rnnlab import export
    from rnnlab.layers import GRU, LSTM
    from rnnlab.modules import Linear, Sequential

    model = Sequential(LSTM(3, 4), GRU(4, 5), Linear(5, 2))
    path = rx.export(model, tmp_path / "m.onnx", state=True)
    assert export._onnx_note(path) == (
        "# inputs: x, lengths, h0_0, c0_0, h0_1; outputs: y, h_n_0, c_n_0, h_n_1\n"
    )


@pytest.mark.parametrize("fmt", ["safetensors-torch", "keras"])
@pytest.mark.parametrize("flag", ["--state", "--no-lengths"])
def test_onnx_only_options_are_refused_with_other_formats(fmt, flag, runs, capsys, tmp_path):
    """--state and --no-lengths shape an ONNX graph's inputs; a weights file has none to
    shape, and ignoring them silently would hide a mistake."""
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", tmp_path / "m", flag) == 2
    err = capsys.readouterr().err
    assert f"`{flag}` must be left out with --format {fmt}" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_unexportable_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "adding", "--T", "6", *TINY, "--cell-clip", "3", "--run-dir", run) == 0
    out = tmp_path / "m.onnx"
    capsys.readouterr()
    assert run_cli("export", run, "--out", out) == 2
    err = capsys.readouterr().err
    assert "cell_clip=3" in err and err.count("\n") == 1
    assert not out.exists() and not [p for p in Path(tmp_path).iterdir() if p.suffix == ".tmp"]


def test_default_output_goes_in_the_run(runs, capsys):
    run = runs["adding"]
    assert run_cli("export", run) == 0
    assert "wrote" in capsys.readouterr().err
    assert (run / "model.onnx").is_file()
    (run / "model.onnx").unlink()




@pytest.mark.filterwarnings(  # Keras 3.15 on NumPy 2 (see test_keras.py)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
@pytest.mark.parametrize("task", ["adding", "pytokens", "digits"])
def test_keras_export_gives_the_metric(task, runs, capsys, tmp_path):
    """--format keras: the printed code builds the Keras model, loads the file, and the
    model gives evaluate's held-out metrics (Keras with the torch backend, as an oracle);
    digits' bidirectional LSTM with a learned initial state too (it was refused)."""
    keras = keras_oracle()
    run = runs[task]
    out = tmp_path / "m.weights.h5"
    capsys.readouterr()
    code = run_cli("export", run, "--format", "keras", "--out", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    namespace: dict = {}
    exec(compile(captured.out, "snippet", "exec"), namespace)
    model = namespace["model"]
    masked = (keras.layers.RNN, keras.layers.Bidirectional, keras.layers.GlobalAveragePooling1D)

    class KerasModel:
        def forward(self, x, *, lengths=None, **_):
            y, T = x, x.shape[1]
            mask = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
            for layer in model.layers:
                y = layer(y, mask=mask) if isinstance(layer, masked) else layer(y)
            return Forward(keras.ops.convert_to_numpy(y), None)

    ours = evaluate_cli(run, capsys)
    _, cfg, _, data = load_run(run)
    t = tasks.make_task(cfg, data)
    same_metrics(ours, t.evaluate(KerasModel(), "valid"), held_out_items(t))


def test_output_feedback_run_is_refused_by_every_format(tmp_path, capsys):
    run = tmp_path / "jordan"
    assert run_cli("train", "copy", "--T", "5", "--cell", "jordan", *TINY, "--run-dir", run) == 0
    for fmt in ("onnx", "safetensors-torch", "keras"):
        capsys.readouterr()
        assert run_cli("export", run, "--format", fmt, "--out", tmp_path / "m.out") == 2
        err = capsys.readouterr().err
        assert "output-feedback (Jordan) model" in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.out").exists()


@pytest.mark.parametrize("fmt", ["safetensors-torch", "keras"])
def test_the_printed_code_loads_from_any_directory(fmt, runs, capsys, tmp_path, monkeypatch):
    """An --out given relative to where the export ran: the printed code names the file by its
    absolute path, so it loads from another directory too (it named 'runs/...' as given)."""
    monkeypatch.chdir(tmp_path)
    name = "m.torch.safetensors" if fmt == "safetensors-torch" else "m.weights.h5"
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", name) == 0
    code = capsys.readouterr().out
    assert repr(str(tmp_path / name)) in code or f'"{tmp_path / name}"' in code, code


@pytest.mark.parametrize("fmt", ["safetensors-torch", "keras"])
def test_the_printed_code_loads_the_file_written_over_a_link(fmt, runs, capsys, tmp_path):
    """--out a link to an older export: the write replaces the link with the new file, and
    the printed code named the link's target, the older file: strict loading of same-shaped
    stale weights succeeds, a wrong model without a word."""
    import ast
    import re

    suffix = ".torch.safetensors" if fmt == "safetensors-torch" else ".weights.h5"
    (tmp_path / "store").mkdir()
    stale = tmp_path / "store" / ("old" + suffix)
    stale.write_bytes(b"stale")
    link = tmp_path / ("link" + suffix)
    link.symlink_to(stale)
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", link) == 0
    code = capsys.readouterr().out
    named = Path(ast.literal_eval(re.search(r"load_(?:file|weights)\((.+?)\)", code)[1]))
    assert named.read_bytes() == link.read_bytes() != b"stale"


def test_out_dash_writes_the_onnx_graph_to_stdout(runs, capsysbinary, tmp_path, monkeypatch):
    """`--out -` wrote a file named "-"; the graph is one file, so it goes to stdout (the
    bytes `--out FILE` writes), and the note, which would corrupt it there, to stderr."""
    monkeypatch.chdir(tmp_path)
    assert run_cli("export", runs["adding"], "--out", tmp_path / "m.onnx") == 0
    capsysbinary.readouterr()
    assert run_cli("export", runs["adding"], "--out", "-") == 0
    out, err = capsysbinary.readouterr()
    assert out == (tmp_path / "m.onnx").read_bytes()
    assert err.decode() == ("# inputs: x, lengths; outputs: y, h_n\n"
                            "wrote the ONNX graph to stdout\n")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no file "-"
    assert run_cli("export", runs["adding"], "--out", "./-") == 0  # a file named "-"
    assert (tmp_path / "-").read_bytes() == out


@pytest.mark.parametrize("fmt", ["safetensors-torch", "keras"])
def test_out_dash_is_refused_where_the_printed_code_needs_a_file(fmt, runs, capsys, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", "-") == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert (f"`--out` must be a file path for --format {fmt} ('-', stdout, is for the ONNX "
            "graph alone); got '-' instead.") in err
    assert list(tmp_path.iterdir()) == []


def test_out_dash_is_refused_on_a_terminal(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--out", "-") == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert ("`--out` must be '-' with stdout redirected to a file or a pipe; got '-' with "
            "stdout a terminal instead. An ONNX graph is binary") in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fmt", "name", "message"),
    [
        ("onnx", "x.torch.safetensors", "whose suffix .torch.safetensors names a PyTorch "
         "state_dict instead. Give --format safetensors-torch to write that, or a name ending "
         "in .onnx."),
        ("onnx", "X.SafeTensors", "whose suffix .safetensors names safetensors weights"),
        ("onnx", "x.weights.h5", "whose suffix .weights.h5 names Keras weights instead. Give "
         "--format keras"),
        ("onnx", "x.keras", "whose suffix .keras names a whole Keras model (rnnlab writes the "
         "weights, .weights.h5) instead. Give a name ending in .onnx."),
        ("safetensors-torch", "x.onnx", "whose suffix .onnx names an ONNX graph instead. Give "
         "--format onnx to write that, or a name ending in .torch.safetensors."),
        ("safetensors-torch", "x.weights.h5", "names Keras weights"),
        ("keras", "x.torch.safetensors", "names a PyTorch state_dict"),
        # (what a PyTorch user opens with torch.load: a graph there, or safetensors, was
        # written without a word)
        ("onnx", "x.pt", "whose suffix .pt names a pickled PyTorch file (torch.save's; rnnlab "
         "writes no pickle) instead. Give a name ending in .onnx."),
        ("safetensors-torch", "X.PTH", "whose suffix .pth names a pickled PyTorch file "
         "(torch.save's; rnnlab writes no pickle) instead. Give a name ending in "
         ".torch.safetensors."),
        ("keras", "x.pt", "names a pickled PyTorch file"),
    ],
)  # fmt: skip
def test_an_out_named_for_another_format_is_refused(fmt, name, message, runs, capsys, tmp_path):
    """`--format onnx --out x.torch.safetensors` wrote a graph under a state_dict's name."""
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", tmp_path / name) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    own = {"onnx": ".onnx", "safetensors-torch": ".torch.safetensors", "keras": ".weights.h5"}
    assert (f"`--out` must be a file name for --format {fmt}, such as model{own[fmt]}; got "
            f"'{tmp_path / name}', ") in err
    assert message in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "safetensors-torch", "keras"])
def test_out_and_the_python_writers_share_one_name_check(fmt, runs, capsys, tmp_path,
                                                         monkeypatch):  # fmt: skip
    """--out's name is refused by rnnlab._checks.export_file_name, the check of the Python
    exporters' `path` too (tests/test_export_names.py), under its own name."""
    from rnnlab import _checks

    asked = []

    def refuse(path, fmt, name):
        asked.append((path, fmt, name))
        _checks.fail(name, "a name the check takes", f"'{path}'")

    monkeypatch.setattr(_checks, "export_file_name", refuse)
    capsys.readouterr()
    assert run_cli("export", runs["adding"], "--format", fmt, "--out", tmp_path / "m.x") == 2
    assert asked == [(tmp_path / "m.x", fmt, "--out")]
    assert "`--out` must be a name the check takes" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_dash_with_stdout_closed_is_refused(runs, capsys, tmp_path, monkeypatch):
    """`rnnlab export RUN --out - >&-`: Python's sys.stdout is None, and asking it isatty()
    ended in an AttributeError's traceback."""
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", None)
    assert run_cli("export", runs["adding"], "--out", "-") == 2
    err = capsys.readouterr().err
    assert err == ("rnnlab: error: `--out` must be '-' with stdout redirected to a file or a "
                   "pipe; got '-' with stdout closed instead. Give --out a file.\n")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("errno", "words"), [(32, "Broken pipe"), (28, "No space left on device")])
def test_out_dash_stdout_refusing_the_graph_is_said(errno, words, runs, capsys, monkeypatch):
    """A stdout that fails in the write was said in Python's words alone ("rnnlab: error:
    [Errno 32] Broken pipe"), naming neither stdout nor --out, nor that what reached the
    reader is not a whole graph."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", RefusingStdout(OSError(errno, words)))
    assert run_cli("export", runs["adding"], "--out", "-") == 2
    err = capsys.readouterr().err
    assert err == (f"rnnlab: error: `--out` must be '-' with stdout taking the whole graph; got "
                   f"'-' with stdout refusing it ({words}) instead. What reached stdout is not "
                   "a whole graph: write it again, or give --out a file.\n")  # fmt: skip


def test_a_run_named_in_bytes_that_are_not_utf8_exports(runs, tmp_path):
    """A run folder whose name is not UTF-8 (b"run\\xff") failed to export to ONNX with "'utf-8'
    codec can't encode character '\\udcff'", naming nothing: its name goes into the graph's
    doc_string, a protobuf string. The byte is now written \\xff there."""
    import shutil

    import onnx

    run = tmp_path / os.fsdecode(b"run\xff")
    shutil.copytree(runs["adding"], run)
    assert run_cli("export", run, "--out", tmp_path / "m.onnx") == 0
    assert onnx.load(str(tmp_path / "m.onnx")).doc_string == "rnnlab run run\\xff"
