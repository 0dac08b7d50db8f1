"""The cell protocol: LSTM variants and a user-written cell, on both paths of the one
written form (the NumPy loop and the compiled loops), against float64 finite differences
and against the variants' equations written out here."""

import os
import pathlib
import runpy
import subprocess
import sys

import numpy as np
import pytest

import rnnlab
from rnnlab import fast, gradcheck, settings
from rnnlab.cells import Cell, LSTMCell
from rnnlab.layers import Recurrent

ROOT = pathlib.Path(__file__).resolve().parent.parent
VARIANTS = {
    "peephole": dict(peephole=True),
    "coupled": dict(coupled=True),
    "clip": dict(cell_clip=0.6),
    "peephole+coupled": dict(peephole=True, coupled=True),
    "all": dict(peephole=True, coupled=True, cell_clip=0.6),
    "layer_norm": dict(layer_norm=True),
    "layer_norm+peephole": dict(layer_norm=True, peephole=True),
    "layer_norm+all": dict(layer_norm=True, peephole=True, coupled=True, cell_clip=0.6),
}
B, T, I, H = 3, 6, 3, 4
LENGTHS = np.array([6, 2, 5])


def layer(options, L=2, bi=True, scale=0.8, seed=0, **kw):
    rng = np.random.default_rng(seed)
    m = Recurrent(LSTMCell(**options), I, H, L, bidirectional=bi, dtype=np.float64, rng=rng, **kw)
    for v in m.params.values():
        v[...] = rng.uniform(-scale, scale, v.shape)
    return m


# ----------------------------------------------------------------------------- the equations
def sigma(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(m, x):
    """One unidirectional layer of the variant, written out step by step (float64)."""
    cell, p = m.cell, m.params
    W_ih, W_hh = p["weight_ih_l0"], p["weight_hh_l0"]
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    h, c = np.zeros((x.shape[0], H)), np.zeros((x.shape[0], H))
    w = {n: p[f"{n}_l0"] for n, _, _ in cell.extra_rows}
    out = []

    def ln(v):
        mu = v.mean(axis=-1, keepdims=True)
        return (v - mu) / np.sqrt(((v - mu) ** 2).mean(axis=-1, keepdims=True) + 1e-5)

    for t in range(x.shape[1]):
        z = x[:, t] @ W_ih.T + h @ W_hh.T + b
        if cell.layer_norm:
            z = (
                p["ln_gain_ih_l0"] * ln(x[:, t] @ W_ih.T + p["bias_ih_l0"])
                + p["ln_gain_hh_l0"] * ln(h @ W_hh.T + p["bias_hh_l0"])
                + p["ln_bias_l0"]
            )
        if cell.coupled:
            z_f, z_g, z_o = np.split(z, 3, axis=1)
        else:
            z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)
        peep = cell.peephole
        f = sigma(z_f + (w["weight_cf"] * c if peep else 0))
        i = 1 - f if cell.coupled else sigma(z_i + (w["weight_ci"] * c if peep else 0))
        c = f * c + i * np.tanh(z_g)
        if cell.cell_clip is not None:
            c = np.clip(c, -cell.cell_clip, cell.cell_clip)
        o = sigma(z_o + (w["weight_co"] * c if peep else 0))
        if cell.layer_norm:
            h = o * np.tanh(p["ln_gain_c_l0"] * ln(c) + p["ln_bias_c_l0"])
        else:
            h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1), h, c


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_compute_their_equations(name, engine_path):
    m = layer(VARIANTS[name], L=1, bi=False)
    x = np.random.default_rng(1).standard_normal((B, T, I)) * 2
    f = m.forward(x)
    want, h, c = reference(m, x)
    np.testing.assert_allclose(f.output, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(f.state[1][0], c, rtol=1e-12, atol=1e-13)
    if m.cell.cell_clip is not None:  # the clip is active in this test
        assert np.any(np.isclose(np.abs(f.cache["tapes"][0].cs), 0.6, rtol=0, atol=0))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_gradients_are_exact(name, engine_path):
    m = layer(VARIANTS[name], initial_state="learned")
    x = np.random.default_rng(2).standard_normal((B, T, I))
    report = gradcheck(m, x, lengths=LENGTHS)
    report.assert_ok()
    assert report.max_error < 1e-7
    for extra, _, _ in m.cell.extra_rows:  # the cell's own parameters get their gradient
        assert report.norms[f"{extra}_l1_reverse"] > 0


@pytest.mark.skipif(not fast.available(), reason="needs the compiled loops")
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_compiled_equal_numpy(name, monkeypatch):
    m = layer(VARIANTS[name])
    rng = np.random.default_rng(3)
    x, d = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, 2 * H))
    f = m.forward(x, lengths=LENGTHS)
    b = m.backward(f, d)
    with settings.override(no_numba=True):
        f0 = m.forward(x, lengths=LENGTHS)
        b0 = m.backward(f0, d)
    np.testing.assert_allclose(f.output, f0.output, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.input, b0.input, rtol=1e-12, atol=1e-14)
    for k, v in b0.params.items():
        np.testing.assert_allclose(b.params[k], v, rtol=1e-12, atol=1e-13, err_msg=k)


def test_a_peephole_lstm_with_zero_peepholes_is_the_lstm():
    plain = layer({}, L=1, bi=False)
    peep = Recurrent(LSTMCell(peephole=True), I, H, dtype=np.float64)
    zeros = {f"{n}_l0": np.zeros(H) for n in peep.cell.extra}
    peep.load_state_dict({**plain.state_dict(), **zeros})
    x = np.random.default_rng(4).standard_normal((B, T, I))
    np.testing.assert_array_equal(peep.forward(x).output, plain.forward(x).output)


def test_variant_parameters_and_names():
    m = Recurrent(LSTMCell(peephole=True, coupled=True), I, H, bidirectional=True)
    assert m.params["weight_ih_l0"].shape == (3 * H, I)  # f, g, o
    assert {"weight_cf_l0", "weight_co_l0_reverse"} <= set(m.params)
    assert "weight_ci_l0" not in m.params
    assert repr(m.cell) == "LSTMCell(lstm (peephole, coupled))"
    forget = Recurrent(LSTMCell(coupled=True, forget_bias=1.0), I, H, dtype=np.float64)
    np.testing.assert_array_equal(forget.params["bias_ih_l0"][:H], 1.0)  # f is block 0


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(cell_clip=0), r"`cell_clip` must be a positive number"),
        (dict(cell_clip=float("inf")), r"`cell_clip` must be a finite number"),
        (dict(peephole="yes"), r"`peephole` must be True or False; got 'yes'"),
        (dict(coupled=1), r"`coupled` must be True or False; got 1"),
        (dict(init="irnn"), r"`init` must be 'uniform' or 'orthogonal' for an LSTM.*IRNN"),
        (dict(layer_norm="on"), r"`layer_norm` must be True or False"),
    ],
)
def test_bad_variant_options(options, match):
    with pytest.raises(ValueError, match=match):
        LSTMCell(**options)


def test_a_cell_is_required():
    with pytest.raises(ValueError, match=r"`cell` must be a cell \(rnnlab.cells"):
        Recurrent("lstm", I, H)


def test_an_incomplete_cell_is_refused():
    class Half(Cell):
        stages = (lambda *a: None,)

    with pytest.raises(TypeError, match=r"Half: one forward and one backward stage per product"):
        Half()


# ----------------------------------------------------------------------------- your own cell
def _example():
    return runpy.run_path(str(ROOT / "examples" / "custom_cell.py"), run_name="example")


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_the_custom_cell_example_is_exact(padded, engine_path):
    MGUCell = _example()["MGUCell"]
    rng = np.random.default_rng(5)
    m = Recurrent(MGUCell(), I, H, 2, bidirectional=True, dtype=np.float64, rng=rng,
                  initial_state="learned")  # fmt: skip
    for v in m.params.values():
        v[...] = rng.uniform(-0.8, 0.8, v.shape)
    x = rng.standard_normal((B, T, I))
    report = gradcheck(m, x, lengths=LENGTHS if padded else None)
    assert report.max_error < 1e-7, str(report)
    # checkpointing recomputes the tape: the same gradients
    f, g = m.forward(x, checkpoint_every=2), m.forward(x)
    d = rng.standard_normal(f.output.shape)
    b, b_full = m.backward(f, d), m.backward(g, d)
    for k, v in b_full.params.items():
        np.testing.assert_allclose(b.params[k], v, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.skipif(not fast.available(), reason="needs the compiled loops")
def test_the_custom_cell_example_runs_compiled():
    """The example script trains on the compiled path (its loops made from its own steps)."""
    from rnnlab.fast import loops

    MGUCell = _example()["MGUCell"]
    cell = MGUCell()
    seen = []
    backward_for = loops.backward_for

    m = Recurrent(cell, I, H, dtype=np.float32, rng=0)
    x = np.random.default_rng(6).standard_normal((B, T, I)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loops, "backward_for", lambda c, *a: seen.append(c) or backward_for(c, *a))
        f = m.forward(x)
        m.backward(f, np.ones_like(f.output))
    assert seen == [cell]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_cell.py")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("gradient check, float64: worst relative error")
    assert float(lines[0].split()[-1]) < 1e-7
    mse = [float(line.split()[-1]) for line in lines[1:-1]]
    assert mse[-1] < 0.5 * mse[0], lines  # it learns
    assert lines[-1].startswith("gate saturation: l0: forget (f) near 0 in "), lines
    assert "candidate (n) near −1 in " in lines[-1]


def test_variants_from_the_command_line(tmp_path):
    from rnnlab import cli

    run = tmp_path / "run"
    code = cli.main(["train", "adding", "--T", "20", "--steps", "6", "--eval-every", "3",
                     "--checkpoint-every", "3", "--hidden", "8", "--peephole", "--coupled",
                     "--cell-clip", "2.5", "--run-dir", str(run), "--quiet"])  # fmt: skip
    assert code in (0, None)
    text = (run / "config.json").read_text()
    assert '"peephole": true' in text and '"coupled": true' in text and "2.5" in text


def test_a_variant_of_another_cell_is_refused(capsys):
    from rnnlab import cli

    code = cli.main(["train", "adding", "--cell", "gru", "--peephole", "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "`--peephole` must be unset unless cell = 'lstm'" in err


def test_layers_show_their_cell():
    assert rnnlab.LSTM(2, 3).cell.describe() == "lstm"
    assert rnnlab.GRU(2, 3, reset_after=False).cell.name == "gru-orig"
    assert rnnlab.RNN(2, 3, nonlinearity="relu", init="irnn").cell.name == "irnn"


def test_layer_norm_parameters():
    m = Recurrent(LSTMCell(layer_norm=True), I, H, rng=0)
    assert m.params["ln_gain_ih_l0"].shape == (4 * H,)
    np.testing.assert_array_equal(m.params["ln_gain_ih_l0"], 1.0)  # LayerNorm's defaults
    np.testing.assert_array_equal(m.params["ln_bias_c_l0"], 0.0)
    assert repr(m.cell) == "LSTMCell(lstm (layer_norm))"


def test_a_cell_declaring_more_than_the_loops_take_is_refused():
    def step(*args):
        return None

    class Three(Cell):
        gates, tape = 3, 0
        products = (((0, 1), None), ((1, 2), None), ((2, 3), None))
        stages = backward_stages = (step, step, step)

    class Outside(Cell):
        gates, tape = 2, 1
        products = (((0, 3), None),)
        stages = backward_stages = (step,)

    class Half(Cell):
        gates, tape, in_place, hh_own = 2, 2, True, (1,)
        products = (((0, 2), None),)
        stages = backward_stages = (step,)

    with pytest.raises(TypeError, match=r"Three: one or two products a step; got 3"):
        Three()
    with pytest.raises(TypeError, match=r"Outside: product blocks \(0, 3\) outside the 2 gates"):
        Outside()
    with pytest.raises(TypeError, match=r"Half: a cell that runs in place keeps its gates"):
        Half()


def test_lstm_keywords_and_wrong_ones():
    m = rnnlab.LSTM(I, H, peephole=True, layer_norm=False, rng=0)
    assert m.cell.peephole and "weight_ci_l0" in m.params
    with pytest.raises(
        ValueError, match=r"`peephole` must be None for GRU \(it is an option of LSTM\)"
    ):
        rnnlab.GRU(I, H, peephole=True)
    with pytest.raises(ValueError, match=r"unknown keyword 'cell'.*Recurrent\(cell, ...\)"):
        rnnlab.LSTM(I, H, cell=LSTMCell())


def test_a_module_constant_of_a_step_is_part_of_its_compiled_key():
    """Editing a constant a step reads (a global of its module) compiles anew: numba's disk
    cache would otherwise hand back the machine code of the old value."""
    from rnnlab.fast import loops

    namespace = {"SLOPE": 0.5}
    exec("def step(x):\n    return x * SLOPE\n", namespace)  # noqa: S102
    before = loops._digest(namespace["step"])
    namespace["SLOPE"] = 3.0
    assert loops._digest(namespace["step"]) != before


def test_gate_saturation_reads_a_coupled_lstms_three_gates():
    from rnnlab import diagnostics as dg

    m = layer({"coupled": True}, L=1, bi=False)
    x = np.random.default_rng(7).standard_normal((B, T, I))
    sat = dg.gate_saturation(m, x)
    assert list(sat.gates) == ["f", "g", "o"]
    acts = m.forward(x).cache["tapes"][0].saved  # f, g, o
    o = acts[:, :, 2 * H :]
    np.testing.assert_allclose(sat.overall_high[0, 2], (o > 0.95).mean())


@pytest.mark.parametrize(
    "attrs,match",
    [
        (dict(products=(((0, 1), 0),), tape=1), r"the first product must be on h_\{t-1\}"),
        (dict(products=(((0, 1), None), ((1, 2), 3)), tape=1), r"product source 3 is not one"),
        (dict(hh_own=(5,)), r"hh_own \(5,\) outside the 2 gates"),
        (dict(stages=()), r"has no forward step"),
        # (raw TypeErrors of a comparison, "float cannot be interpreted as an integer",
        # NumPy's "negative dimensions", or blame put on products for an unhashable hh_own)
        (dict(gates="1"), r"`Bad.gates` must be an integer ≥ 1 \(blocks of H values\); got "
                          r"'1'"),
        (dict(gates=1.0), r"`Bad.gates` must be an integer ≥ 1"),
        (dict(tape=-1), r"`Bad.tape` must be an integer ≥ 0"),
        (dict(hh_own=[[0]]), r"`Bad.hh_own` must be a tuple of gate indices; got"),
        (dict(products=((0, 2),)), r"`Bad.products` must be a tuple of \(\(first, end\), "
                                   r"source\) tuples"),
    ],
)
def test_cell_declarations_are_checked(attrs, match):
    def step(*args):
        return None

    n = len(attrs.get("products", (None,)))  # one stage per product
    base = dict(gates=2, tape=0, products=(((0, 2), None),), stages=(step,) * n,
                backward_stages=(step,) * n)  # fmt: skip
    cell_type = type("Bad", (Cell,), {**base, **attrs})
    with pytest.raises(TypeError, match=match):
        cell_type()


def test_variant_settings_of_a_run_are_checked():
    from rnnlab import models
    from rnnlab.train import TrainConfig

    with pytest.raises(ValueError, match=r"`cell_clip` must be a non-negative number"):
        TrainConfig(task="adding", cell_clip=-1.0).validate()
    with pytest.raises(ValueError, match=r"`layer_norm` must be unset unless cell = 'lstm'"):
        TrainConfig(task="adding", cell="gru", layer_norm=True).validate()
    with pytest.raises(ValueError, match=r"`coupled` must be unset for cell 'rnn'"):
        models.make_recurrent("rnn", 2, 3, coupled=True)
