"""A review of rnnlab.modules by use: float64 finite differences of every module at the edge
shapes, PyTorch on copied weights (nn.Linear, nn.Embedding, an nn.Sequential chain), and
hostile inputs (ragged lists, masked arrays, Dropout's rate and what it passes through)."""


import numpy as np
import pytest
from helpers import oracle

from rnnlab import gradcheck
from rnnlab.layers import GRU
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

torch = oracle("torch")


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 4, 3), (3, 1, 3), (5, 3), (1, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_against_finite_differences_and_torch(shape, bias):
    rng = np.random.default_rng(0)
    lin = Linear(3, 2, bias=bias, dtype=np.float64, rng=rng)
    x = rng.standard_normal(shape)
    gradcheck(lin, x).assert_ok()
    ref = torch.nn.Linear(3, 2, bias=bias).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    xt = torch.from_numpy(x).requires_grad_()
    f = lin.forward(x)
    d = rng.standard_normal(f.output.shape)
    out = ref(xt)
    out.backward(torch.from_numpy(d))
    b = lin.backward(f, d)
    np.testing.assert_allclose(f.output, out.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(b.input, xt.grad.numpy(), rtol=1e-13, atol=1e-15)
    for k, p in ref.named_parameters():
        np.testing.assert_allclose(b.params[k], p.grad.numpy(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (4, 1), (3, 5)])
def test_embedding_against_finite_differences_and_torch(shape):
    rng = np.random.default_rng(1)
    emb = Embedding(7, 3, dtype=np.float64, rng=rng)
    ids = rng.integers(0, 7, shape)
    gradcheck(emb, ids).assert_ok()
    ref = torch.nn.Embedding(7, 3).double()
    ref.load_state_dict({"weight": torch.from_numpy(emb.params["weight"].copy())})
    f = emb.forward(ids)
    d = rng.standard_normal(f.output.shape)
    out = ref(torch.from_numpy(ids))
    out.backward(torch.from_numpy(d))
    np.testing.assert_array_equal(f.output, out.detach().numpy())
    np.testing.assert_allclose(emb.backward(f, d).params["weight"], ref.weight.grad.numpy(),
                               rtol=1e-14, atol=1e-15)  # fmt: skip


def test_a_sequential_chain_against_torch_in_evaluation_and_finite_differences_in_training():
    rng = np.random.default_rng(2)
    model = Sequential(Embedding(7, 4, dtype=np.float64, rng=rng),
                       Linear(4, 5, dtype=np.float64, rng=rng), Dropout(0.3),
                       Linear(5, 3, bias=False, dtype=np.float64, rng=rng))  # fmt: skip
    ref = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 5),
                              torch.nn.Dropout(0.3), torch.nn.Linear(5, 3, bias=False))
    ref = ref.double().eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    ids = rng.integers(0, 7, (2, 5))
    f = model.forward(ids)
    d = rng.standard_normal(f.output.shape)
    out = ref(torch.from_numpy(ids))
    out.backward(torch.from_numpy(d))
    b = model.backward(f, d)
    np.testing.assert_allclose(f.output, out.detach().numpy(), rtol=1e-13, atol=1e-15)
    for k, p in ref.named_parameters():
        np.testing.assert_allclose(b.params[k], p.grad.numpy(), rtol=1e-13, atol=1e-14)
    gradcheck(model, ids, training=True, rng_seed=4).assert_ok()
    x = rng.standard_normal((1, 1, 4))  # batch 1, one step, through every readout
    for readout in (LastStep(), MeanOverTime()):
        chain = Sequential(Linear(4, 4, dtype=np.float64, rng=rng), Dropout(0.5), readout,
                           Linear(4, 2, dtype=np.float64, rng=rng))  # fmt: skip
        gradcheck(chain, x, training=True, rng_seed=5).assert_ok()


def test_dropout_in_training_and_at_inference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 50, 8))
    drop = Dropout(0.25)
    assert drop.forward(x).output is x  # (inference: x itself)
    f = drop.forward(x, training=True, rng=0)
    kept = f.output != 0
    np.testing.assert_allclose(f.output[kept], x[kept] / 0.75, rtol=1e-15)
    assert abs(kept.mean() - 0.75) < 0.03
    d = rng.standard_normal(x.shape)
    np.testing.assert_allclose(drop.backward(f, d).input, np.where(kept, d / 0.75, 0),
                               rtol=1e-15)
    assert Dropout(0).forward(x, training=True).output is x  # (no rng needed)


@pytest.mark.parametrize("module", ["Linear", "Embedding", "GRU", "LastStep", "Dropout"])
def test_ragged_nested_lists_are_refused_by_name(module):
    """A ragged list as x was NumPy's "setting an array element with a sequence. The
    requested array has an inhomogeneous shape...", naming no argument."""
    m, ragged = {
        "Linear": (Linear(3, 2, rng=0), [[1.0, 2.0, 3.0], [1.0]]),
        "Embedding": (Embedding(5, 2, rng=0), [[1, 2], [1]]),
        "GRU": (GRU(3, 2, rng=0, batch_first=True), [[[1.0, 2.0, 3.0]], [[1.0, 2.0]]]),
        "LastStep": (LastStep(), [[[1.0, 2.0]], [[1.0]]]),
        "Dropout": (Dropout(0.5), [[1.0, 2.0], [1.0]]),
    }[module]
    with pytest.raises(ValueError, match=r"`x` must be an array.*; got ragged nested lists "
                       r"\(a list of length 2\)"):  # fmt: skip
        m.forward(ragged)


@pytest.mark.parametrize("module", ["Linear", "Embedding", "GRU", "MeanOverTime"])
def test_a_masked_array_input_is_refused_by_name(module):
    """Its mask is read by none of them: a GRU and an Embedding read the values under it
    silently (a masked id read as the id it hides), a Linear failed inside NumPy with
    "operands could not be broadcast together with shapes (6,3) (3,2)"."""
    rng = np.random.default_rng(4)
    floats = rng.standard_normal((2, 3, 3))
    m, x = {
        "Linear": (Linear(3, 2, rng=0), floats),
        "Embedding": (Embedding(5, 2, rng=0), np.array([[1, 4, 2]])),
        "GRU": (GRU(3, 2, dtype=np.float64, rng=0, batch_first=True), floats),
        "MeanOverTime": (MeanOverTime(), floats),
    }[module]
    masked = np.ma.masked_array(x, mask=np.zeros(x.shape, bool))
    masked.mask.flat[-1] = True
    with pytest.raises(ValueError, match=r"`x` must be a plain NumPy array \(numpy.ndarray\); "
                       r"got a numpy.ma.MaskedArray .* Its mask is not read here"):  # fmt: skip
        m.forward(masked)
    m.forward(np.asarray(x))  # (what the hint says: the values as an array)


def test_dropout_takes_a_numpy_integer_rate():
    """np.int64(0) was refused as "must be a number in [0, 1); got np.int64(0)": 0 is."""
    assert Dropout(np.int64(0)).p == 0.0
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\); got np.int64\(1\)"):
        Dropout(np.int64(1))


@pytest.mark.parametrize("x", [None, "abc", {"a": 1}, np.array(["a", "b"]),
                               np.ones((2, 2), complex)])  # fmt: skip
def test_dropout_at_inference_refuses_what_is_no_array_of_numbers(x):
    """At inference (or p = 0) x passed through unchecked: None, a string or a dict came back
    as a 0-d array of objects, for the next module or the caller to stumble on. Floats, and
    ids before an Embedding, still pass."""
    for drop, kw in ((Dropout(0.5), {}), (Dropout(0.0), {"training": True})):
        with pytest.raises(ValueError, match=r"`x` must be an array of floats \(or of token "
                           r"ids, which pass through at inference\); got "):  # fmt: skip
            drop.forward(x, **kw)
    ids = np.array([[1, 2]])
    assert Dropout(0.5).forward(ids).output is ids
    np.testing.assert_array_equal(Dropout(0.5).forward([[1, 2]]).output, ids)
