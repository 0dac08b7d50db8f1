"""The Python exporters refuse a file name of another format's, as `rnnlab export --out` does
and through the same check (rnnlab._checks.export_file_name), naming their `path` argument:
rnnlab.onnx.export(model, "m.torch.safetensors") wrote an ONNX graph a PyTorch user takes
for a state_dict, rnnlab.keras.save_weights wrote Keras weights under m.onnx (it refused
only names without .weights.h5: m.onnx.weights.h5 is a Keras name), and the snippets printed
code loading such a name."""

from __future__ import annotations

import re

import pytest
from helpers import oracle

from rnnlab import _checks, export
from rnnlab import keras as rk
from rnnlab import onnx as rx
from rnnlab.layers import GRU
from rnnlab.modules import Embedding, Linear, Sequential


def _model():
    return Sequential(Embedding(7, 3, rng=0), GRU(3, 4, rng=0), Linear(4, 7, rng=0))


def _onnx(model, path):
    oracle("onnx")
    return rx.export(model, path)


def _torch_code(model, path):
    return export.torch_snippet(model, path)


def _keras(model, path):
    oracle("h5py")
    return rk.save_weights(model, path)


def _keras_code(model, path):
    return rk.snippet(model, path)


WRITERS = {"onnx": _onnx, "torch_snippet": _torch_code, "save_weights": _keras,
           "keras.snippet": _keras_code}  # fmt: skip
FORMAT = {"onnx": "onnx", "torch_snippet": "safetensors-torch", "save_weights": "keras",
          "keras.snippet": "keras"}  # fmt: skip
EXPORT = {"onnx": "the ONNX export, such as model.onnx",
          "safetensors-torch": "the PyTorch export, such as model.torch.safetensors",
          "keras": "the Keras export, such as model.weights.h5"}  # fmt: skip


@pytest.mark.parametrize(
    ("writer", "name", "got", "hint"),
    [
        ("onnx", "m.torch.safetensors", ".torch.safetensors names a PyTorch state_dict",
         "rnnlab.export.torch_state_dict (saved with safetensors) writes that; give a name "
         "ending in .onnx."),
        ("onnx", "M.SafeTensors", ".safetensors names safetensors weights", None),
        ("onnx", "m.weights.h5", ".weights.h5 names Keras weights",
         "rnnlab.keras.save_weights writes that; give a name ending in .onnx."),
        ("onnx", "m.h5", ".h5 names Keras weights", None),
        ("onnx", "m.keras", ".keras names a whole Keras model (rnnlab writes the weights, "
         ".weights.h5)", "Give a name ending in .onnx."),
        ("torch_snippet", "m.onnx", ".onnx names an ONNX graph",
         "rnnlab.onnx.export writes that; give a name ending in .torch.safetensors."),
        ("torch_snippet", "m.weights.h5", ".weights.h5 names Keras weights", None),
        ("save_weights", "m.onnx", ".onnx names an ONNX graph",
         "rnnlab.onnx.export writes that; give a name ending in .weights.h5."),
        ("save_weights", "m.torch.safetensors", ".torch.safetensors names a PyTorch state_dict",
         None),
        ("keras.snippet", "m.onnx", ".onnx names an ONNX graph", None),
        ("keras.snippet", "m.safetensors", ".safetensors names safetensors weights", None),
    ],
)  # fmt: skip
def test_a_path_named_for_another_format_is_refused(writer, name, got, hint, tmp_path):
    path = tmp_path / name
    expected = (f"`path` must be a file name for {EXPORT[FORMAT[writer]]}; got '{path}', "
                f"whose suffix {got} instead.")  # fmt: skip
    with pytest.raises(ValueError, match="^" + re.escape(expected)) as e:
        WRITERS[writer](_model(), path)
    if hint is not None:
        assert str(e.value) == f"{expected} {hint}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", ["save_weights", "keras.snippet"])
@pytest.mark.parametrize("name", ["m.bin", "m.onnx.weights.H5"])
def test_a_keras_path_must_end_in_weights_h5(writer, name, tmp_path):
    """keras.snippet printed `model.load_weights('m.bin')`, which Keras refuses; save_weights
    refused it already (now the shared check)."""
    with pytest.raises(ValueError, match=re.escape(
            f"`path` must be a file name ending in .weights.h5 (Keras insists); got "
            f"'{tmp_path / name}' instead.")):  # fmt: skip
        WRITERS[writer](_model(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("writer", "name"),
    [("onnx", "m.onnx"), ("onnx", "M.ONNX"), ("onnx", "m.pb"), ("onnx", "model"),
     ("torch_snippet", "m.torch.safetensors"), ("torch_snippet", "m.safetensors"),
     ("torch_snippet", "m.bin"), ("save_weights", "m.weights.h5"),
     ("keras.snippet", "m.weights.h5")],
)  # fmt: skip
def test_a_name_of_its_own_format_or_of_none_is_taken(writer, name, tmp_path):
    out = WRITERS[writer](_model(), tmp_path / name)
    if isinstance(out, str):  # a snippet: the code loads the file by that name
        assert repr(str(tmp_path / name)) in out
    else:
        assert out == tmp_path / name and out.is_file()


@pytest.mark.parametrize("writer", WRITERS)
def test_each_python_writer_asks_the_one_check(writer, tmp_path, monkeypatch):
    """The Python exporters and `rnnlab export --out` (tests/test_export_cli.py) share one
    check, each naming its own argument."""
    asked = []

    def refuse(path, fmt, name):
        asked.append((path, fmt, name))
        raise ValueError("refused by the check")

    monkeypatch.setattr(_checks, "export_file_name", refuse)
    with pytest.raises(ValueError, match="^refused by the check$"):
        WRITERS[writer](_model(), tmp_path / "m.x")
    assert asked == [(tmp_path / "m.x", FORMAT[writer], "path")]
    assert list(tmp_path.iterdir()) == []


def test_a_snippet_path_that_is_no_path_is_refused():
    for code in (lambda p: export.torch_snippet(_model(), p), lambda p: rk.snippet(_model(), p)):
        with pytest.raises(ValueError, match=r"^`path` must be a path \(str or pathlib.Path\); "
                           r"got 3 \(int\) instead.$"):  # fmt: skip
            code(3)
