"""Review of the PyTorch interop as a user who trains with the rnnlab command and ships to
PyTorch meets it: `rnnlab export RUN --format safetensors-torch`'s printed code run in a fresh
process on runs the command trained (float32 to float32's rounding, float64 exactly: padded
batches, initial states, projections, learned states, stacks both ways); and what went wrong
around it: an --out that cannot be written or is a link loop, a stdout that is closed or
fails, a run's config.json of a newer format, the printed code off the CPU.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import RefusingStdout, keras_oracle, oracle

from rnnlab import export, io, models, runs
from rnnlab.cli import main
from rnnlab.layers import LSTM, Recurrent
from rnnlab.modules import Embedding, LastStep, Linear, MeanOverTime, Sequential

torch = oracle("torch")
oracle("safetensors")

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

TINY = ["--steps", "2", "--hidden", "6", "--batch-size", "8", "--quiet"]
SUFFIX = {"onnx": ".onnx", "safetensors-torch": ".torch.safetensors", "keras": ".weights.h5"}


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "adding"
    assert run_cli("train", "adding", "--T", 6, *TINY, "--run-dir", path) == 0
    return path


# ------------------------------------------------------------ the printed code, end to end
_THEIRS = r'''
import importlib.util, json, sys
import numpy as np, torch
spec = importlib.util.spec_from_file_location("printed", sys.argv[1])
printed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(printed)
given = np.load(sys.argv[2])
ri = int(given["rec_i"])
out = {}
for dt, tdt in (("32", torch.float32), ("64", torch.float64)):
    model = printed.model if dt == "32" else printed.Model().eval().double()
    if dt == "64":  # the file's float32 weights, exactly, in float64
        model.load_state_dict({k: v.double() for k, v in printed.model.state_dict().items()})
    x = torch.from_numpy(given["x"])
    x = x.to(tdt) if x.dtype.is_floating_point else x
    for padded in (False, True):
        for stated in (False, True):
            state = None
            if stated:
                state = [None] * len(model._modules)
                h0 = torch.from_numpy(given["h0"]).to(tdt)
                lstm = isinstance(model._modules[str(ri)], torch.nn.LSTM)
                state[ri] = (h0, torch.from_numpy(given["c0"]).to(tdt)) if lstm else h0
            lengths = torch.from_numpy(given["lengths"]) if padded else None
            with torch.no_grad():
                y, states = model(x, lengths, state)
            s = states[ri] if isinstance(states[ri], tuple) else (states[ri],)
            out[f"{dt} {padded} {stated}"] = [y.tolist()] + [t.tolist() for t in s]
print(json.dumps(out))
'''

# (task, options): each cell PyTorch has, one to three layers, one or two directions, a
# projection and learned initial states, a readout of each kind
E2E = [
    ("adding", ["--T", "6", "--cell", "lstm", "--layers", "2", "--bidirectional",
                "--proj-size", "3", "--initial-state", "learned"]),
    ("digits", ["--cell", "gru", "--layers", "3", "--bidirectional"]),
    ("copy", ["--T", "4", "--cell", "relu", "--layers", "2", "--embed", "5"]),
    ("pytokens", ["--cell", "rnn", "--seq-len", "12", "--train-size", "2000",
                  "--bidirectional", "--initial-state", "learned"]),
]  # fmt: skip


def _ours(run_dir: Path, rng: np.random.Generator):
    """Inputs for the run's model, and its outputs on them in float32 (the run's model) and
    float64 (the same float32 weights in a float64 model built from the run's spec)."""
    _, _, model, _ = runs.load_run(run_dir)
    spec = json.loads((run_dir / "config.json").read_text())["model"]
    m64 = models.build(spec, dtype=np.float64, rng=0)
    m64.load_state_dict({k: v.astype(np.float64) for k, v in model.params.items()})
    mods = model.modules
    ri = next(i for i, m in enumerate(mods) if isinstance(m, Recurrent))
    rec = mods[ri]
    B, T = 4, 7
    if isinstance(mods[0], Embedding):
        x = rng.integers(0, mods[0].num_embeddings, (B, T))
    else:
        x = rng.standard_normal((B, T, rec.input_size))
    D, L = (2 if rec.bidirectional else 1), rec.num_layers
    h0 = 0.5 * rng.standard_normal((L * D, B, getattr(rec, "proj_size", 0) or rec.hidden_size))
    c0 = 0.5 * rng.standard_normal((L * D, B, rec.hidden_size))
    given = {"x": x, "lengths": np.array([7, 3, 5, 1]), "h0": h0, "c0": c0, "rec_i": ri}
    ours = {}
    for dt, m, ft in (("32", model, np.float32), ("64", m64, np.float64)):
        xx = x if x.dtype.kind == "i" else x.astype(ft)
        for padded in (False, True):
            for stated in (False, True):
                state = None
                if stated:
                    state = [None] * len(mods)
                    state[ri] = (h0.astype(ft), c0.astype(ft)) if rec.cell.has_c else h0.astype(ft)
                kw = {"lengths": given["lengths"]} if padded else {}
                f = m.forward(xx, state=state, **kw)
                s = f.state[ri] if isinstance(f.state[ri], tuple) else (f.state[ri],)
                ours[f"{dt} {padded} {stated}"] = [f.output, *s]
    return given, ours


@pytest.mark.parametrize("task, options", E2E, ids=[t for t, _ in E2E])
def test_the_printed_code_in_a_fresh_process_computes_the_run_s_model(task, options, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("train", task, *TINY, *options, "--run-dir", run_dir) == 0
    weights = tmp_path / "m.torch.safetensors"
    code = subprocess.run([sys.executable, "-m", "rnnlab", "export", run_dir, "--format",
                           "safetensors-torch", "--out", weights], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    (tmp_path / "printed.py").write_text(code)
    given, ours = _ours(run_dir, np.random.default_rng(5))
    np.savez(tmp_path / "given.npz", **given)
    done = subprocess.run([sys.executable, "-c", _THEIRS, tmp_path / "printed.py",
                           tmp_path / "given.npz"], capture_output=True, text=True,
                          cwd=tmp_path / "..")  # fmt: skip (elsewhere: the path is absolute)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    assert set(theirs) == set(ours)
    for key, arrays in ours.items():
        tol = 2e-6 if key.startswith("32") else 1e-12
        for a, b in zip(arrays, theirs[key], strict=True):
            np.testing.assert_allclose(np.asarray(b), a, rtol=0, atol=tol * max(1, abs(a).max()),
                                       err_msg=key)  # fmt: skip


# ------------------------------------------------------------------- --out's refusals
@pytest.mark.parametrize("fmt", list(SUFFIX))
@pytest.mark.parametrize("where", ["at", "on the way"])
def test_an_out_in_a_link_loop_is_refused_by_name(fmt, where, run, tmp_path, capsys):
    """A symbolic link loop at --out ended in Path.resolve's "Symlink loop from '...'", a
    RuntimeError: status 1, and --out not named."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    out = tmp_path / "a" if where == "at" else tmp_path / "a" / ("m" + SUFFIX[fmt])
    capsys.readouterr()
    assert run_cli("export", run, "--format", fmt, "--out", out) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"rnnlab: error: `--out` must be a file path, or a link to one; got "
                            f"'{out}', whose symbolic links lead round in a loop instead. "
                            "Remove the link, or give --out elsewhere.\n")  # fmt: skip
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder the export may not write in: its mode 0o555, and (since root writes there
    all the same) os.open refusing to create a file in it, as the kernel refuses a user."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    real = os.open

    def refusing(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(os.path.abspath(path)).parent == folder:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_an_out_in_a_read_only_folder_names_out(fmt, run, read_only, capsys):
    """rnnlab.io's "[Errno 13] cannot write 'ro/m.onnx' (Permission denied)" named the file,
    not --out, nor a way out."""
    out = read_only / ("m" + SUFFIX[fmt])
    capsys.readouterr()
    assert run_cli("export", run, "--format", fmt, "--out", out) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"rnnlab: error: `--out` must be a file path that can be written; got '{out}' (which "
        "could not be written: Permission denied) instead. Give --out a file in a folder you "
        "may write to.\n")  # fmt: skip
    assert captured.out == "" and list(read_only.iterdir()) == []


# ------------------------------------------------------------------------ stdout
@pytest.mark.parametrize("fmt", ["safetensors-torch", "keras"])
def test_a_closed_stdout_is_refused_where_the_code_is_printed(fmt, run, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    """`rnnlab export RUN --format safetensors-torch >&-`: the code that loads the file went
    nowhere (print to Python's None stdout writes nothing), and the command said "wrote
    PATH" with status 0. Refused before the file is written."""
    out = tmp_path / ("m" + SUFFIX[fmt])
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", None)
    assert run_cli("export", run, "--format", fmt, "--out", out) == 2
    assert capsys.readouterr().err == (
        f"rnnlab: error: `stdout` must be open, to take the code --format {fmt} prints "
        "(> model.py; > /dev/null to keep only the file); got a closed stdout instead. Nothing "
        "was written.\n")  # fmt: skip
    assert not out.exists()


def test_an_onnx_export_to_a_file_takes_a_closed_stdout(run, tmp_path, capsys, monkeypatch):
    """The ONNX graph is the whole export; what goes to stdout beside it is a note."""
    oracle("onnx")
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", None)
    assert run_cli("export", run, "--out", tmp_path / "m.onnx") == 0
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize(("error", "words"), [(BrokenPipeError(32, "Broken pipe"), "Broken pipe"),
                                              (OSError(28, "No space left on device"),
                                               "No space left on device")])  # fmt: skip
def test_a_stdout_refusing_the_code_is_said(error, words, run, tmp_path, capsys, monkeypatch):
    """A broken pipe ended the command silently with status 141 (as if it had died of
    SIGPIPE), a full disk as "[Errno 28] No space left on device": neither said that the
    file was written but the code that loads it was cut."""
    out = tmp_path / "m.torch.safetensors"
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", RefusingStdout(error))
    assert run_cli("export", run, "--format", "safetensors-torch", "--out", out) == 2
    assert capsys.readouterr().err == (
        "rnnlab: error: `stdout` must be what takes the whole of the code --format "
        f"safetensors-torch prints; got a stdout refusing it ({words}) instead. '{out}' is "
        "written, but what reached stdout is not the whole code that loads it: export again "
        "with stdout taking it (> model.py).\n")  # fmt: skip
    assert out.is_file()


# -------------------------------------------------------- a run's config of a newer format
def test_a_run_whose_config_is_of_a_newer_format_is_refused(run, tmp_path, capsys):
    """The run's config.json saying "format": 99 exported all the same (and `evaluate`
    scored it): only the checkpoint's copy was read for its format, while its settings were
    compared with the run's as today's; `train --resume` refused it."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    top = copy / "config.json"
    top.write_text(json.dumps({**json.loads(top.read_text()), "format": 99}))
    out = tmp_path / "m.torch.safetensors"
    for argv in (("export", copy, "--format", "safetensors-torch", "--out", out),
                 ("evaluate", copy)):  # fmt: skip
        capsys.readouterr()
        assert run_cli(*argv) == 2
        captured = capsys.readouterr()
        assert captured.err == (f"rnnlab: error: '{top}' is of format 99, written by a newer "
                                "rnnlab than this one (which reads up to 5): upgrade rnnlab to "
                                "read it\n")  # fmt: skip
        assert captured.out == ""
    assert not out.exists()


# ---------------------------------------------------------- the printed code off the CPU
def _snippet_namespace(model, tmp_path):
    path = tmp_path / "m.torch.safetensors"
    io.save_safetensors(path, export.torch_state_dict(model), {"format": "pt"})
    namespace: dict = {}
    exec(compile(export.torch_snippet(model, path), "snippet", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("bi", [False, True])
def test_a_constant_initial_state_follows_the_input_s_device(bi, tmp_path):
    """The constant initial state was made on the CPU (torch.full without a device): after
    model.to("cuda"), "Input and hidden tensors are not at the same device". Tested on the
    meta device, which has no GPU's needs: the same mismatch."""
    model = Sequential(LSTM(3, 4, initial_state=0.25, bidirectional=bi), MeanOverTime(),
                       Linear(8 if bi else 4, 2))  # fmt: skip
    tm = _snippet_namespace(model, tmp_path)["model"].to("meta")
    y, states = tm(torch.zeros(2, 5, 3, device="meta"))
    assert y.device.type == "meta" and tuple(y.shape) == (2, 2)
    assert all(s.device.type == "meta" for s in states[0])


def test_the_readouts_follow_the_input_s_device(tmp_path):
    """LastStep and MeanOverTime built their step indices on the CPU (torch.arange without a
    device): a CUDA x with CUDA lengths failed in the comparison, or in the indexing."""
    model = Sequential(LSTM(3, 4, bidirectional=True), LastStep(), Linear(8, 2))
    ns = _snippet_namespace(model, tmp_path)
    x = torch.zeros(2, 5, 8, device="meta")
    lengths = torch.tensor([5, 3])  # (on the CPU, as pack_padded_sequence wants them)
    assert ns["_last_step"](x, lengths, 4).device.type == "meta"
    assert ns["_last_step"](x, None).device.type == "meta"
    assert ns["_mean_over_time"](x, lengths).device.type == "meta"


def test_the_code_printed_for_a_run_named_in_bytes_that_are_not_utf8_loads(run, tmp_path):
    """A run folder named b"run\\xff" exported, but the printed code's last line failed:
    safetensors' load_file takes a UTF-8 path only ("Path ... is not valid UTF-8")."""
    import shutil

    copy = tmp_path / os.fsdecode(b"run\xff")
    shutil.copytree(run, copy)
    # (in a process of its own: its stderr writes the name as \xff, pytest's would refuse it)
    code = subprocess.run([sys.executable, "-m", "rnnlab", "export", copy, "--format",
                           "safetensors-torch"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    namespace: dict = {}
    exec(compile(code, "printed", "exec"), namespace)  # strict=True
    _, _, model, _ = runs.load_run(copy)
    x = np.random.default_rng(0).standard_normal((3, 6, 2)).astype(np.float32)
    with torch.no_grad():
        y, _ = namespace["model"](torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), model.forward(x).output, rtol=0, atol=1e-6)


@pytest.mark.parametrize("given", [list, np.array, torch.tensor])
def test_the_printed_model_takes_lengths_as_pack_padded_sequence_does(given, tmp_path):
    """`model(x, [5, 3])`, as pack_padded_sequence takes lengths: "'list' object has no
    attribute 'cpu'" (and a NumPy array's the same)."""
    model = Sequential(LSTM(3, 4, batch_first=True, bidirectional=True), LastStep(),
                       Linear(8, 2))  # fmt: skip
    tm = _snippet_namespace(model, tmp_path)["model"]
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        y, _ = tm(torch.from_numpy(x), given([5, 3]))
    want = model.forward(x, lengths=np.array([5, 3])).output
    np.testing.assert_allclose(y.numpy(), want, rtol=0, atol=1e-6)


def test_a_run_trained_reversed_says_so_in_its_printed_code(run, tmp_path, capsys):
    """--reverse-input is the task's: it reverses each sequence before the model, and the
    exported model (rnnlab's forward) was given no word of it: a PyTorch user fed the rows
    of a digit in their order to a model trained on them reversed."""
    from rnnlab.tasks._sequence import _reverse_within

    rev = tmp_path / "rev"
    assert run_cli("train", "digits", "--reverse-input", *TINY, "--run-dir", rev) == 0
    capsys.readouterr()
    assert run_cli("export", rev, "--format", "safetensors-torch") == 0
    code = capsys.readouterr().out
    assert code.startswith("# This run was trained with --reverse-input")
    namespace: dict = {}
    exec(compile(code, "printed", "exec"), namespace)
    reverse_within = namespace["reverse_within"]
    _, _, model, _ = runs.load_run(rev)
    rng = np.random.default_rng(0)
    x, lengths = rng.standard_normal((3, 8, 8)).astype(np.float32), np.array([8, 5, 2])
    with torch.no_grad():
        y, _ = namespace["model"](reverse_within(torch.from_numpy(x), lengths), lengths)
    want = model.forward(_reverse_within(x, lengths), lengths=lengths).output
    np.testing.assert_allclose(y.numpy(), want, rtol=0, atol=1e-6)
    ids = rng.integers(0, 9, (3, 6))  # (token ids, as an embedding reads them)
    for given in (None, np.array([6, 4, 1])):
        np.testing.assert_array_equal(reverse_within(torch.from_numpy(ids), given).numpy(),
                                      _reverse_within(ids, given))  # fmt: skip
    capsys.readouterr()
    assert run_cli("export", run, "--format", "safetensors-torch") == 0  # (not reversed)
    code = capsys.readouterr().out
    assert "reverse_within" not in code and "--reverse-input" not in code


def test_a_run_trained_reversed_says_so_in_its_onnx_graph_and_keras_code(tmp_path, capsys):
    """The ONNX graph (its doc_string and the printed note) and the printed Keras code of a
    --reverse-input run said nothing of the reversal either (the PyTorch code did, above):
    now each says it, and the Keras code defines the reversal in NumPy, equal to the task's;
    the ONNX graph on the reversed input gives rnnlab's forward on the task's reversal."""
    onnx, ort = oracle("onnx"), oracle("onnxruntime")
    keras_oracle()
    from rnnlab.tasks._sequence import _reverse_within

    rev = tmp_path / "rev"
    assert run_cli("train", "digits", "--reverse-input", *TINY, "--run-dir", rev) == 0
    capsys.readouterr()
    assert run_cli("export", rev, "--out", tmp_path / "m.onnx") == 0
    note = capsys.readouterr().out
    assert "# This run was trained with --reverse-input" in note, note
    doc = onnx.load(str(tmp_path / "m.onnx")).doc_string
    assert doc.endswith("trained with --reverse-input, it reads each sequence reversed within "
                        "its length (padding left at the end)"), doc  # fmt: skip
    _, _, model, _ = runs.load_run(rev)
    rng = np.random.default_rng(0)
    x, lengths = rng.standard_normal((3, 8, 8)).astype(np.float32), np.array([8, 5, 2])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    feeds = {"x": _reverse_within(x, lengths), "lengths": lengths.astype(np.int32)}
    y = session.run(None, feeds)[0]
    want = model.forward(_reverse_within(x, lengths), lengths=lengths).output
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5)
    assert run_cli("export", rev, "--format", "keras", "--out", tmp_path / "m.weights.h5") == 0
    code = capsys.readouterr().out
    assert code.startswith("# This run was trained with --reverse-input"), code[:200]
    namespace: dict = {}
    exec(compile(code, "printed", "exec"), namespace)  # (the model built and loaded too)
    reverse_within = namespace["reverse_within"]
    for given in (None, lengths):
        np.testing.assert_array_equal(reverse_within(x, given), _reverse_within(x, given))
    y = np.asarray(namespace["model"](reverse_within(x)).detach().cpu())  # full lengths
    want = model.forward(_reverse_within(x, None)).output
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5)
    ids = rng.integers(0, 9, (3, 6))
    np.testing.assert_array_equal(reverse_within(ids, [6, 4, 1]),
                                  _reverse_within(ids, np.array([6, 4, 1])))  # fmt: skip


@pytest.mark.parametrize("fmt,said", [
    ("safetensors-torch", "`model (module 0)` must be a module PyTorch's modules hold; got an "
     "LSTM variant (lstm (peephole)) instead. nn.LSTM has none."),
    ("keras", "`model (module 0)` must be a layer Keras' SimpleRNN, LSTM and GRU hold; got an "
     "LSTM variant (lstm (peephole)) instead. Keras' LSTM has none."),
])  # fmt: skip
def test_a_run_an_export_cannot_hold_is_refused_naming_the_run(fmt, said, tmp_path, capsys):
    """`rnnlab export RUN` of a peephole LSTM said "`model (module 0)` must be ...; got an LSTM
    variant (lstm (peephole)); nn.LSTM has none instead.": an argument the command's user never
    gave, and its reason cut by "instead". Now the run is named first, the reason after."""
    rev = tmp_path / "pp"
    assert run_cli("train", "adding", "--T", 6, "--peephole", *TINY, "--run-dir", rev) == 0
    capsys.readouterr()
    assert run_cli("export", rev, "--format", fmt) == 2
    err = capsys.readouterr().err
    assert err == f"rnnlab: error: `run` '{rev}' cannot be exported as {fmt}: {said}\n", err
    assert not list(rev.glob("model.torch*")) and not list(rev.glob("model.weights*"))
