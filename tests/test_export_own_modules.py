"""A module of one's own (a subclass of one of rnnlab's modules, or of Sequential) is refused
by every exporter, not written as its base: the PyTorch code and the Keras model, built from
its parameters, computed the base's forward (a residual GRU written as nn.GRU), as the ONNX
graph did before tests/test_onnx_review.py's fix."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Residual, Softmaxed, TanhLinear

from rnnlab import export, keras
from rnnlab.cells import GRUCell
from rnnlab.layers import GRU
from rnnlab.modules import Linear, Sequential

OWN = [
    ("residual", lambda: Residual(GRUCell(), 3, 3, rng=0, batch_first=True), "model",
     "Residual", "Recurrent"),
    ("residual in a Sequential", lambda: Sequential(Residual(GRUCell(), 3, 3, rng=0,
     batch_first=True)), r"model \(module 0\)", "Residual", "Recurrent"),
    ("linear", lambda: Sequential(GRU(3, 4, rng=0, batch_first=True), TanhLinear(4, 3, rng=0)),
     r"model \(module 1\)", "TanhLinear", "Linear"),
    ("sequential", lambda: Softmaxed(GRU(3, 4, rng=0, batch_first=True), Linear(4, 3, rng=0)),
     "model", "Softmaxed", "Sequential"),
]  # fmt: skip

EXPORTERS = [
    ("torch_snippet", lambda m, p: export.torch_snippet(m, p), "the PyTorch code"),
    ("torch_state_dict", lambda m, p: export.torch_state_dict(m), "the PyTorch code"),
    ("keras.check_exportable", lambda m, p: keras.check_exportable(m), "the Keras model"),
    ("keras.snippet", lambda m, p: keras.snippet(m, p), "the Keras model"),
    ("keras.save_weights", lambda m, p: keras.save_weights(m, p), "the Keras model"),
]


@pytest.mark.parametrize("exporter,call,written", EXPORTERS, ids=[e[0] for e in EXPORTERS])
@pytest.mark.parametrize("name,make,where,kind,base", OWN, ids=[o[0] for o in OWN])
def test_every_exporter_refuses_a_module_of_one_s_own(name, make, where, kind, base, exporter,
                                                      call, written, tmp_path):
    model = make()
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    model.forward(x)  # (rnnlab runs it)
    an = "an" if base[0] in "AEIOU" else "a"
    with pytest.raises(ValueError, match=rf"^`{where}` must be one of rnnlab's own modules "
                       rf"\({an} {base}, not a subclass\); got a {kind}, a subclass of {base} "
                       rf"of one's own instead\. Its forward may compute what its base's does "
                       rf"not, and {written}, built from its parameters"):  # fmt: skip
        call(model, tmp_path / "m.weights.h5")
    assert not list(tmp_path.iterdir())


def test_the_modules_themselves_are_still_exported(tmp_path):
    """The check refuses subclasses only: rnnlab's own modules (the LSTM, GRU and RNN
    factories make Recurrent itself) export as before."""
    model = Sequential(GRU(3, 4, rng=0, batch_first=True), Linear(4, 3, rng=0))
    assert set(export.torch_state_dict(model)) == set(model.params)
    assert "nn.GRU(" in export.torch_snippet(model, tmp_path / "w.safetensors")
    keras.check_exportable(model)
