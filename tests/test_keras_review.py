"""The Keras export as a user meets it (review 139): save_weights' refusal of a path in a
missing folder (as rnnlab.onnx.export's), what the printed code says of padded steps, and a
`.keras` file of a model with a start of its own read back by `keras.saving.load_model` in a
fresh process.

keras and h5py are in the test extra; locally the module is skipped without them, under CI
a missing one is an error.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import keras_oracle

keras = keras_oracle()

import rnnlab.keras as rk  # noqa: E402
from rnnlab.layers import GRU, LSTM, RNN  # noqa: E402
from rnnlab.modules import Linear, Sequential  # noqa: E402

# Keras 3.15's Variable.numpy() (get_weights) trips NumPy 2's __array__ copy deprecation
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def test_save_weights_in_a_missing_folder_is_refused_naming_path(tmp_path):
    """The write's own OSError ("cannot write ... (No such file or directory)") named no
    argument; rnnlab.onnx.export refuses the same path in these words."""
    with pytest.raises(ValueError, match=r"^`path` must be a file path in an existing folder; "
                       r"got '.*nowhere/m\.weights\.h5', whose folder '.*nowhere' does not "
                       r"exist instead\.$"):  # fmt: skip
        rk.save_weights(LSTM(3, 4), tmp_path / "nowhere" / "m.weights.h5")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"whose folder '.*file' is not a folder instead\.$"):
        rk.save_weights(LSTM(3, 4), tmp_path / "file" / "m.weights.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def _keras_model(model, path):
    namespace: dict = {}
    code = rk.snippet(model, rk.save_weights(model, path))
    exec(code, namespace)
    return namespace["model"], code


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_the_code_says_what_keras_gives_at_padded_steps(bi, tmp_path):
    """The printed code said Keras repeats the last valid output at padded steps: a
    Bidirectional gives zeros there (as rnnlab), its own layers repeat it."""
    rng = np.random.default_rng(0)
    model = GRU(3, 4, bidirectional=bi, rng=rng)
    kmodel, code = _keras_model(model, tmp_path / "m.weights.h5")
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    valid = np.arange(5)[None, :] < np.array([5, 2])[:, None]
    y = keras.ops.convert_to_numpy(kmodel.layers[0](x, mask=valid))  # (as the code says)
    assert np.abs(model.forward(x, lengths=np.array([5, 2])).output[valid] - y[valid]).max() < 1e-5
    if bi:
        assert np.array_equal(y[1, 2:], np.zeros_like(y[1, 2:]))
    else:
        assert np.array_equal(y[1, 2:], np.broadcast_to(y[1, 1], y[1, 2:].shape))
    comment = " ".join(line[2:] for line in code.splitlines() if line.startswith("# "))
    assert (
        "at padded steps Keras' SimpleRNN, LSTM and GRU repeat their last valid output "
        "where rnnlab has zeros (a Bidirectional's are zeros there, as rnnlab's)"
    ) in comment


FRESH = """
import os, sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, keras
if sys.argv[2]:
    exec(open(sys.argv[2]).read().split("model = keras.Sequential")[0])  # the definitions
x = np.load(sys.argv[1] + ".x.npy")
y = keras.ops.convert_to_numpy(keras.saving.load_model(sys.argv[1])(x))
print(float(np.abs(y - np.load(sys.argv[1] + ".y.npy")).max()))
"""


@pytest.mark.parametrize("make", [
    lambda rng: Sequential(GRU(3, 4, bidirectional=True, initial_state="learned", rng=rng),
                           Linear(8, 2, rng=rng)),
    lambda rng: RNN(3, 4, initial_state=0.5, nonlinearity="relu", rng=rng),
], ids=["learned", "constant"])  # fmt: skip
def test_a_keras_file_of_a_model_with_a_start_loads_in_a_fresh_process(make, tmp_path):
    """A `.keras` file names the snippet's <Kind>WithStart classes, which Keras finds only
    where they are defined: a fresh process's load_model fails without them (as the code's
    note says) and, with the printed definitions run first, gives rnnlab's outputs."""
    rng = np.random.default_rng(1)
    model = make(rng)
    for v in model.params.values():
        v[...] = rng.uniform(-0.6, 0.6, v.shape)
    kmodel, code = _keras_model(model, tmp_path / "m.weights.h5")
    assert "keras.saving.load_model('m.keras') in another process" in code
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    saved = tmp_path / "m.keras"
    kmodel.save(saved)
    np.save(f"{saved}.x.npy", x)
    np.save(f"{saved}.y.npy", model.forward(x).output)
    (tmp_path / "code.py").write_text(code)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    run = [sys.executable, "-W", "ignore", "-c", FRESH, str(saved)]
    without = subprocess.run([*run, ""], capture_output=True, text=True, env=env)
    assert without.returncode != 0 and "could not be deserialized" in without.stderr
    done = subprocess.run([*run, str(tmp_path / "code.py")], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    assert float(done.stdout) < 1e-5


def test_export_out_in_a_folder_that_is_a_file_says_so(tmp_path, capsys):
    """`rnnlab export --out F/m.weights.h5` with F a file said F "does not exist"; the
    Python writers (rnnlab.onnx.export, save_weights) say "is not a folder"."""
    from rnnlab.cli import main

    run = tmp_path / "run"
    argv = ["train", "adding", "--T", "6", "--hidden", "4", "--batch-size", "4", "--steps", "2"]
    assert main([*argv, "--quiet", "--run-dir", str(run)]) == 0
    (tmp_path / "file").write_text("")
    capsys.readouterr()
    out = tmp_path / "file" / "m.weights.h5"
    assert main(["export", str(run), "--format", "keras", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(f"whose folder '{out.parent}' is not a folder "
                                                 "instead.\n"), err  # fmt: skip
    assert (tmp_path / "file").read_text() == ""
