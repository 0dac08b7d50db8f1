"""The three exporters (ONNX, PyTorch, Keras) refuse a model whose weights diverged, through
one check (rnnlab._checks.finite_weights): a NaN anywhere, an infinite weight other than a bias's.
Loading a run refused them already; a model trained in Python was written silently."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import oracle

from rnnlab import _checks, export
from rnnlab import keras as rk
from rnnlab import onnx as rx
from rnnlab.layers import GRU, LSTM
from rnnlab.modules import Embedding, LastStep, Linear, Sequential


def _onnx(model, tmp_path):
    oracle("onnx")
    return rx.export(model, tmp_path / "m.onnx")


def _torch_state(model, tmp_path):
    return export.torch_state_dict(model)


def _torch_code(model, tmp_path):
    return export.torch_snippet(model, tmp_path / "m.torch.safetensors")


def _keras(model, tmp_path):
    oracle("h5py")
    return rk.save_weights(model, tmp_path / "m.weights.h5")


EXPORTERS = {"ONNX": _onnx, "PyTorch": _torch_state, "PyTorch code": _torch_code,
             "Keras": _keras}  # fmt: skip


def _model():
    return Sequential(Embedding(7, 3, rng=0), LSTM(3, 4, rng=0), Linear(4, 7, rng=0))


@pytest.mark.parametrize("fmt", EXPORTERS)
@pytest.mark.parametrize(
    ("module", "name", "bad", "at"),
    [(1, "weight_hh_l0", np.nan, "(2, 1)"), (1, "weight_ih_l0", -np.inf, "(2, 1)"),
     (0, "weight", np.inf, "(2, 1)"), (2, "bias", np.nan, "(2,)"),
     (1, "bias_hh_l0", np.nan, "(2,)")],
)  # fmt: skip
def test_a_non_finite_weight_is_refused_naming_it(fmt, module, name, bad, at, tmp_path):
    model = _model()
    p = model.modules[module].params[name]
    p[(2, 1) if p.ndim == 2 else (2,)] = bad
    kind = {0: "Embedding", 1: "Recurrent, LSTMCell", 2: "Linear"}[module]
    with pytest.raises(ValueError, match=(
        r"^`model` must be a model with finite weights for the "
        + ("PyTorch" if fmt.startswith("PyTorch") else fmt)
        + r" export \(no NaN; inf only in a bias\); got -?(nan|inf) in parameter "
        + f"'{name}' of module {module} \\({kind}\\) at index \\{at[:-1]}\\) instead\\. "
        r"Its weights have diverged")):  # fmt: skip
        EXPORTERS[fmt](model, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no file written


@pytest.mark.parametrize("fmt", EXPORTERS)
def test_a_lone_layer_is_named_by_its_class(fmt, tmp_path):
    layer = GRU(3, 4, rng=0, initial_state="learned")
    layer.params["h0_l0"][1] = np.nan
    with pytest.raises(ValueError, match=r"got nan in parameter 'h0_l0' of the "
                       r"Recurrent, GRUCell at index \(1,\)"):  # fmt: skip
        EXPORTERS[fmt](layer, tmp_path)


@pytest.mark.parametrize("fmt", EXPORTERS)
def test_an_infinite_bias_still_exports(fmt, tmp_path):
    """A bias of −inf masks a class off and computes as in rnnlab (tests/test_onnx.py runs
    one): still exported by each format."""
    model = Sequential(GRU(2, 3, rng=0), LastStep(), Linear(3, 2, rng=0))
    model.modules[2].params["bias"][0] = -np.inf
    EXPORTERS[fmt](model, tmp_path)


@pytest.mark.parametrize("fmt", EXPORTERS)
def test_each_exporter_asks_the_one_check(fmt, tmp_path, monkeypatch):
    """The check is rnnlab._checks.finite_weights (a check, not ONNX code), and each
    exporter asks it with its own format's name, before anything is written."""
    asked = []

    def refuse(model, export):
        asked.append(export)
        raise ValueError("refused by the check")

    monkeypatch.setattr(_checks, "finite_weights", refuse)
    with pytest.raises(ValueError, match="^refused by the check$"):
        EXPORTERS[fmt](_model(), tmp_path)
    assert asked == ["PyTorch" if fmt.startswith("PyTorch") else fmt]
    assert list(tmp_path.iterdir()) == []
