"""Review of the PyTorch interop as a user who trains with the rnnlab command and ships to
PyTorch meets it: `rnnlab export RUN --format safetensors-torch`'s printed code run in a fresh
process on runs the command trained (float32 to float32's rounding, float64 exactly: padded
batches, initial states, projections, learned states, stacks both ways); and what went wrong
around it: an --out that cannot be written or is a link loop, a stdout that is closed or
fails, a run's config.json of a newer format, the printed code off the CPU.
"""

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import oracle

from rnnlab.cli import main

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


class _Refusing:
    """A stdout whose reader is gone (`| true`) or whose disk is full (`> /dev/full`)."""

    def __init__(self, error):
        self.error = error

    def isatty(self):
        return False

    def flush(self):
        pass

    def write(self, data):
        raise self.error


@pytest.mark.parametrize(("error", "words"), [(BrokenPipeError(32, "Broken pipe"), "Broken pipe"),
                                              (OSError(28, "No space left on device"),
                                               "No space left on device")])  # fmt: skip
def test_a_stdout_refusing_the_code_is_said(error, words, run, tmp_path, capsys, monkeypatch):
    """A broken pipe ended the command silently with status 141 (as if it had died of
    SIGPIPE), a full disk as "[Errno 28] No space left on device": neither said that the
    file was written but the code that loads it was cut."""
    out = tmp_path / "m.torch.safetensors"
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _Refusing(error))
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
