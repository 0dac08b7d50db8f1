"""What the library does around any cell's step: a projection of the carry (PyTorch's
proj_size), recurrent (variational) dropout and zoneout. Against PyTorch where it has the
option, against float64 finite differences everywhere, against the equations written out
here, and the compiled loops against the NumPy loop."""

import numpy as np
import pytest
from helpers import oracle

from rnnlab import fast, gradcheck, settings
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.layers import LSTM, Recurrent

torch = oracle("torch")

B, T, I, H = 3, 6, 3, 4
LENGTHS = np.array([6, 2, 5])
CELLS = {
    "lstm": LSTMCell,
    "gru": GRUCell,
    "rnn": ElmanCell,
    "gru-orig": lambda: GRUCell(reset_after=False),
    "ln-peephole": lambda: LSTMCell(layer_norm=True, peephole=True),
}
CASES = {
    "lstm-proj": ("lstm", dict(proj_size=2)),
    "rnn-proj": ("rnn", dict(proj_size=2)),
    "lstm-zoneout": ("lstm", dict(zoneout=(0.3, 0.5))),
    "lstm-zoneout-c": ("lstm", dict(zoneout=(0.0, 0.5))),
    "lstm-zoneout-h": ("lstm", dict(zoneout=(0.4, 0.0))),
    "gru-zoneout": ("gru", dict(zoneout=0.3)),
    "rnn-zoneout": ("rnn", dict(zoneout=0.3)),
    "lstm-rdrop": ("lstm", dict(recurrent_dropout=0.4)),
    "gru-rdrop": ("gru", dict(recurrent_dropout=0.4)),
    "rnn-rdrop": ("rnn", dict(recurrent_dropout=0.4)),
    "lstm-all": ("lstm", dict(proj_size=3, zoneout=(0.0, 0.3), recurrent_dropout=0.2)),
    "gru-orig-zoneout": ("gru-orig", dict(zoneout=0.3)),
    "ln-peephole-proj": ("ln-peephole", dict(proj_size=2, zoneout=(0.0, 0.4))),
}


def layer(case, L=2, bi=True, seed=0, **kw):
    name, options = CASES[case]
    rng = np.random.default_rng(seed)
    m = Recurrent(CELLS[name](), I, H, L, bidirectional=bi, dtype=np.float64, rng=rng,
                  **options, **kw)  # fmt: skip
    for v in m.params.values():
        v[...] = rng.uniform(-0.8, 0.8, v.shape)
    return m


# ----------------------------------------------------------------------------- PyTorch
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("checkpoint", [0, 2])
def test_projection_matches_pytorch(bi, checkpoint, engine_path):
    """nn.LSTM(proj_size=P) loads by name, and outputs, final states and every gradient
    agree, with padding and given initial states, 2 layers."""
    L, P, D = 2, 2, 2 if bi else 1
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, L, batch_first=True, proj_size=P, bidirectional=bi).double()
    m = LSTM(I, H, L, proj_size=P, bidirectional=bi, dtype=np.float64)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    assert set(state) == set(m.params)
    m.load_state_dict(state)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((L * D, B, P)), rng.standard_normal((L * D, B, H))
    f = m.forward(x, state=(h0, c0), lengths=LENGTHS, checkpoint_every=checkpoint)
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        xt, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False
    )
    yt, (hn, cn) = ref(packed, (h0t, c0t))
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yt, batch_first=True, total_length=T)
    np.testing.assert_allclose(f.output, yt.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(f.state[0], hn.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(f.state[1], cn.detach().numpy(), rtol=0, atol=1e-10)
    infer = m.forward(x, state=(h0, c0), lengths=LENGTHS, grad=False)
    np.testing.assert_allclose(infer.output, yt.detach().numpy(), rtol=0, atol=1e-10)

    d, dh, dc = (rng.standard_normal(a.shape) for a in (f.output, f.state[0], f.state[1]))
    b = m.backward(f, d, (dh, dc))
    loss = (yt * torch.tensor(d)).sum() + (hn * torch.tensor(dh)).sum()
    (loss + (cn * torch.tensor(dc)).sum()).backward()
    grads = dict(ref.named_parameters())
    for name in state:
        np.testing.assert_allclose(b.params[name], grads[name].grad.numpy(), rtol=0, atol=1e-10,
                                   err_msg=name)  # fmt: skip
    np.testing.assert_allclose(b.input, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.state[0], h0t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.state[1], c0t.grad.numpy(), rtol=0, atol=1e-10)


def test_projection_shapes_and_names():
    m = LSTM(I, H, 2, proj_size=2, bidirectional=True, initial_state="learned")
    assert m.params["weight_hr_l1_reverse"].shape == (2, H)
    assert m.params["weight_hh_l0"].shape == (4 * H, 2)
    assert m.params["weight_ih_l1"].shape == (4 * H, 4)  # both directions' P
    assert m.params["h0_l0"].shape == (2,) and m.params["c0_l0"].shape == (H,)
    f = m.forward(np.zeros((B, T, I), np.float32))
    assert f.output.shape == (B, T, 4) and m.output_features == 4
    assert f.state[0].shape == (4, B, 2) and f.state[1].shape == (4, B, H)


# ----------------------------------------------------------------------------- exact
@pytest.mark.parametrize(
    "case,checkpoint,entries",
    [(case, 0, 10) for case in CASES] + [("lstm-all", 0, None), ("lstm-zoneout", 2, 10)],
)
def test_gradients_are_exact(case, checkpoint, entries, engine_path):
    """Training's draws fixed by the seed: every parameter, the input and the learned
    initial state against central differences, with padding, 2 layers, both directions
    (10 entries of each array, drawn at random; every entry for one case)."""
    m = layer(case, initial_state="learned")
    x = np.random.default_rng(2).standard_normal((B, T, I))
    report = gradcheck(m, x, lengths=LENGTHS, training=True, rng_seed=7,
                       checkpoint_every=checkpoint, max_entries=entries)  # fmt: skip
    report.assert_ok()
    assert report.max_error < 1e-7, str(report)


# every case in training; evaluation (no dropout mask: loops of their own) for a few, since
# each combination compiles its own loops (seconds each in a fresh checkout)
EQUAL = [(case, True) for case in CASES] + [
    (case, False) for case in ("lstm-all", "gru-rdrop", "lstm-zoneout")
]


@pytest.mark.skipif(not fast.available(), reason="needs the compiled loops")
@pytest.mark.parametrize("case,training", EQUAL)
def test_compiled_equal_numpy(case, training, monkeypatch):
    m = layer(case)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, I))
    d = rng.standard_normal((B, T, m.output_features))

    def run():
        f = m.forward(x, lengths=LENGTHS, training=training, rng=np.random.default_rng(9))
        infer = m.forward(x, lengths=LENGTHS, training=training, rng=np.random.default_rng(9),
                          grad=False)  # fmt: skip
        return f, m.backward(f, d), infer

    f, b, infer = run()
    with settings.override(no_numba=True):
        f0, b0, infer0 = run()
    np.testing.assert_allclose(f.output, f0.output, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(infer.output, f0.output, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.input, b0.input, rtol=1e-12, atol=1e-14)
    for k, v in b0.params.items():
        np.testing.assert_allclose(b.params[k], v, rtol=1e-12, atol=1e-13, err_msg=k)


# ----------------------------------------------------------------------------- the equations
def sigma(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_reference(m, x, keep=None, zone_h=None, zone_c=None):
    """One unidirectional LSTM layer with the masks applied as the papers write them."""
    p = m.params
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    h, c = np.zeros((x.shape[0], H)), np.zeros((x.shape[0], H))
    out = []
    for t in range(x.shape[1]):
        src = h if keep is None else h * keep
        z = x[:, t] @ p["weight_ih_l0"].T + src @ p["weight_hh_l0"].T + b
        i, f, g, o = (
            sigma(z[:, :H]),
            sigma(z[:, H : 2 * H]),
            np.tanh(z[:, 2 * H : 3 * H]),
            sigma(z[:, 3 * H :]),
        )
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        if zone_c is not None:
            c_new = zone_c[t] * c + (1 - zone_c[t]) * c_new
        if zone_h is not None:
            h_new = zone_h[t] * h + (1 - zone_h[t]) * h_new
        h, c = h_new, c_new
        out.append(h)
    return np.stack(out, axis=1)


def test_recurrent_dropout_is_one_mask_per_sequence(engine_path):
    m = Recurrent(LSTMCell(), I, H, dtype=np.float64, rng=0, recurrent_dropout=0.5)
    x = np.random.default_rng(4).standard_normal((B, T, I))
    f = m.forward(x, training=True, rng=np.random.default_rng(5))
    keep = (np.random.default_rng(5).random((B, H)) < 0.5) / 0.5  # the layer's one draw
    assert 0 < (keep == 0).sum() < keep.size
    np.testing.assert_allclose(f.output, lstm_reference(m, x, keep=keep), rtol=1e-12, atol=1e-14)
    # evaluation uses every unit, unscaled: the plain LSTM
    np.testing.assert_allclose(m.forward(x).output, lstm_reference(m, x), rtol=1e-12, atol=1e-14)


def test_zoneout_follows_its_equations(engine_path):
    m = Recurrent(LSTMCell(), I, H, dtype=np.float64, rng=0, zoneout=(0.3, 0.6))
    x = np.random.default_rng(6).standard_normal((B, T, I))
    f = m.forward(x, training=True, rng=np.random.default_rng(7))
    draws = np.random.default_rng(7)
    zone_h = (draws.random((T, B, H)) < 0.3).astype(float)
    zone_c = (draws.random((T, B, H)) < 0.6).astype(float)
    want = lstm_reference(m, x, zone_h=zone_h, zone_c=zone_c)
    np.testing.assert_allclose(f.output, want, rtol=1e-12, atol=1e-14)
    # evaluation: the expectation, d = p everywhere
    ev = lstm_reference(m, x, zone_h=np.full((T, B, H), 0.3), zone_c=np.full((T, B, H), 0.6))
    np.testing.assert_allclose(m.forward(x).output, ev, rtol=1e-12, atol=1e-14)


def test_full_zoneout_keeps_the_initial_state(engine_path):
    m = Recurrent(GRUCell(), I, H, dtype=np.float64, rng=0, zoneout=0.999999)
    h0 = np.random.default_rng(8).standard_normal((1, B, H))
    x = np.random.default_rng(9).standard_normal((B, T, I))
    f = m.forward(x, state=h0, training=True, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(f.output, np.broadcast_to(h0[0][:, None], f.output.shape))


def test_zero_rates_are_the_plain_layer():
    plain = Recurrent(LSTMCell(), I, H, dtype=np.float64, rng=0)
    off = Recurrent(LSTMCell(), I, H, dtype=np.float64, rng=0, zoneout=0.0, recurrent_dropout=0.0)
    x = np.random.default_rng(10).standard_normal((B, T, I))
    a = plain.forward(x, training=True, rng=np.random.default_rng(0)).output
    b = off.forward(x, training=True, rng=np.random.default_rng(0)).output
    np.testing.assert_array_equal(b, a)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "cell,options,match",
    [
        (LSTMCell, dict(proj_size=H), r"`proj_size` must be 0 or between 1 and hidden_size - 1"),
        (LSTMCell, dict(proj_size=-1), r"`proj_size` must be 0 or between 1"),
        (LSTMCell, dict(proj_size=2.5), r"`proj_size` must be an integer"),
        (GRUCell, dict(proj_size=2), r"`proj_size` must be 0 for gru.*reads h_\{t-1\} itself"),
        (
            lambda: GRUCell(reset_after=False),
            dict(recurrent_dropout=0.2),
            r"`recurrent_dropout` must be 0 for gru-orig.*reset_after=True",
        ),
        (LSTMCell, dict(recurrent_dropout=1.0), r"`recurrent_dropout` must be a number in \["),
        (LSTMCell, dict(zoneout=-0.1), r"`zoneout` must be a number in \[0, 1\)"),
        (LSTMCell, dict(zoneout=(0.1, 0.2, 0.3)), r"`zoneout` must be a probability or a pair"),
        (LSTMCell, dict(zoneout=0.1, proj_size=2), r"`zoneout` must be 0 for h with proj_size"),
        (GRUCell, dict(zoneout=(0.1, 0.2)), r"`zoneout` must be a single probability.*no cell"),
    ],
)
def test_bad_options(cell, options, match):
    with pytest.raises(ValueError, match=match):
        Recurrent(cell(), I, H, **options)


def test_training_with_masks_needs_a_generator():
    m = Recurrent(LSTMCell(), I, H, zoneout=0.2)
    with pytest.raises(ValueError, match=r"`rng` must be a numpy Generator or a seed when"):
        m.forward(np.zeros((B, T, I), np.float32), training=True)


# ----------------------------------------------------------------------------- from a run
def test_the_command_line_trains_and_resumes_bit_for_bit(tmp_path):
    """--proj-size --recurrent-dropout --zoneout from the CLI; the draws come from the
    step's generator, so a resumed run ends with the uninterrupted run's weights."""
    from rnnlab import cli
    from rnnlab.io import load_checkpoint

    common = ["train", "adding", "--T", "12", "--hidden", "8", "--proj-size", "3",
              "--recurrent-dropout", "0.3", "--zoneout", "0,0.2", "--eval-every", "4",
              "--checkpoint-every", "4", "--quiet"]  # fmt: skip
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert cli.main([*common, "--steps", "8", "--run-dir", str(whole)]) in (0, None)
    assert cli.main([*common, "--steps", "4", "--run-dir", str(part)]) in (0, None)
    assert cli.main(["train", "--resume", str(part), "--steps", "8", "--quiet"]) in (0, None)
    a, b = load_checkpoint(whole), load_checkpoint(part)
    assert a.step == b.step == 8
    assert any(name.endswith("weight_hr_l0") for name in a.model)
    for name, value in a.model.items():
        np.testing.assert_array_equal(value, b.model[name], err_msg=name)


def test_the_gradient_diagnostics_see_a_projected_carry():
    """The lag profile traces ∂L/∂h_t of the P-wide carry; the one-step Jacobians, which
    differentiate the cell's step alone, refuse a projected layer by name."""
    from rnnlab import diagnostics as dg

    m = LSTM(I, H, 2, proj_size=2, bidirectional=True, rng=0)
    x = np.random.default_rng(11).standard_normal((B, T, I)).astype(np.float32)
    prof = dg.gradient_by_lag(m, x, lengths=LENGTHS)
    assert np.isfinite(prof.mean[:, 0]).all()
    with pytest.raises(ValueError, match=r"`layer` must be a layer without proj_size or zoneout"):
        dg.step_jacobians(m, x)


def test_the_spectrum_and_gate_saturation_of_a_projected_layer():
    """The spectrum takes each gate's map from one step's h̃ to the next one's
    pre-activations, W_g W_hr (H × H); gate saturation reads the units' h̃, not the carry."""
    from rnnlab import diagnostics as dg
    from rnnlab.layers import RNN

    m = LSTM(I, H, proj_size=2, rng=0)
    spec = dg.recurrent_spectrum(m)
    W, W_hr = m.params["weight_hh_l0"], m.params["weight_hr_l0"]
    f_block = [b for b in spec.blocks if b.gate == "f"][0]
    want = np.linalg.svd((W[H : 2 * H] @ W_hr).astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(f_block.singular_values, want, rtol=1e-6, atol=1e-6)  # rank P
    history = dg.spectrum_over_checkpoints([(0, m.params), (1, m.params)])
    assert history is not None
    r = RNN(I, H, proj_size=2, rng=0, dtype=np.float64)
    for v in r.params.values():
        v[...] = np.random.default_rng(1).uniform(-3, 3, v.shape)  # saturating
    x = np.random.default_rng(2).standard_normal((B, T, I))
    sat = dg.gate_saturation(r, x)
    h = r.forward(x).cache["tapes"][0].own
    np.testing.assert_allclose(sat.overall_high[0, 0], np.mean((h + 1) / 2 > 0.95), rtol=1e-12)
    np.testing.assert_allclose(sat.overall_low[0, 0], np.mean((h + 1) / 2 < 0.05), rtol=1e-12)
    assert 0 < sat.overall_high[0, 0] < 1


def test_gradflow_skips_the_one_step_analyses_of_a_projected_layer():
    from rnnlab.diagnostics import analyses, subjects
    from rnnlab.modules import Linear, Sequential

    model = Sequential(LSTM(I, H, proj_size=2, rng=0), Linear(2, 3, rng=0))
    subject = subjects.Subject(model, None, None, None, None, None, {})
    why = analyses.applicable(subject)
    assert "proj_size=2" in why["jacobian"] and why["lag"] == ""


def test_a_projected_lstm_exports_to_pytorch(tmp_path):
    """`rnnlab export --format safetensors-torch` builds nn.LSTM(proj_size=P) for it; the
    ONNX and Keras exporters, whose operators have no projection, refuse it in one line."""
    from rnnlab import export, io
    from rnnlab.modules import Linear, Sequential

    model = Sequential(LSTM(I, H, 2, proj_size=2, bidirectional=True, rng=0), Linear(4, 3, rng=0))
    path = tmp_path / "m.safetensors"
    io.save_safetensors(path, export.torch_state_dict(model), {"format": "pt"})
    namespace: dict = {}
    exec(compile(export.torch_snippet(model, path), "snippet", "exec"), namespace)
    x = np.random.default_rng(12).standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([6, 2, 5])
    theirs, _ = namespace["model"](torch.tensor(x), torch.tensor(lengths))
    ours = model.forward(x, lengths=lengths).output
    mask = np.arange(T)[None, :] < lengths[:, None]
    np.testing.assert_allclose(theirs.detach().numpy()[mask], ours[mask], atol=1e-5)
    oracle("onnx")
    import rnnlab.onnx

    with pytest.raises(ValueError, match=r"proj_size=2 \(ONNX's RNN, LSTM and GRU operators "
                       r"have no projection\)"):  # fmt: skip
        rnnlab.onnx.export(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_run_settings_and_exports_refuse_what_they_cannot_take(tmp_path, capsys):
    from rnnlab import cli, export
    from rnnlab.modules import Linear, Sequential
    from rnnlab.train import TrainConfig

    with pytest.raises(ValueError, match=r"`proj_size` must be an integer from 0 \(none\) to "
                       r"hidden - 1 = 7"):  # fmt: skip
        TrainConfig.from_dict({"hidden": 8, "proj_size": 8})
    assert cli.main(["train", "adding", "--zoneout", "0.1,0.2,0.3", "--steps", "1"]) == 2
    err = capsys.readouterr().err  # one line, not argparse's usage before it
    assert err.count("\n") == 1 and err.startswith("rnnlab: error: "), err
    assert "expected one or two probabilities, got '0.1,0.2,0.3'" in err
    zoned = Sequential(LSTM(I, H, zoneout=0.1, rng=0), Linear(H, 2, rng=0))
    with pytest.raises(ValueError, match=r"zoneout=\(0.1, 0.1\) \(PyTorch has no zoneout\)"):
        export.torch_snippet(zoned, tmp_path / "m.safetensors")
    oracle("onnx")
    import rnnlab.onnx

    with pytest.raises(ValueError, match=r"zoneout=\(0.1, 0.1\) \(its expectation"):
        rnnlab.onnx.export(zoned, tmp_path / "z.onnx")


def test_a_checkpoint_with_a_wrong_projection_is_named():
    from rnnlab import diagnostics as dg

    p = LSTM(I, H, proj_size=2, rng=0).params
    bad = {**p, "weight_hr_l0": np.zeros((3, H), np.float32)}
    with pytest.raises(ValueError, match=r"`checkpoints\[0\]\['weight_hr_l0'\]` must be a "
                       r"projection of shape \(2, H\)"):  # fmt: skip
        dg.spectrum_over_checkpoints([(0, bad)])
