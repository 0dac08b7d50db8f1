"""rnnlab.diagnostics as a researcher meets it (review 143): Jacobian products against a
float64 finite difference of the end state with respect to an earlier one, spectra against
np.linalg, and the bad input that came out as a traceback or a silently wrong number."""

import numpy as np
import pytest

from rnnlab import diagnostics as dg
from rnnlab.layers import GRU, LSTM, RNN

H = 4


def _end_state(layer, xs, s):
    """The state after running `xs` (1, n, I) from the state s (h, or h and c side by side)."""
    if layer.cell.has_c:
        f = layer.forward(xs, state=(s[None, None, :H], s[None, None, H:]))
        return np.concatenate([f.state[0][0, 0], f.state[1][0, 0]])
    return layer.forward(xs, state=s[None, None]).state[0, 0]


LAYERS = {
    "tanh": lambda: RNN(3, H, dtype=np.float64, rng=0),
    "irnn": lambda: RNN(3, H, nonlinearity="relu", init="irnn", dtype=np.float64, rng=0),
    "lstm": lambda: LSTM(3, H, dtype=np.float64, rng=0),
    "gru": lambda: GRU(3, H, dtype=np.float64, rng=0),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_jacobian_products_are_finite_differences_of_the_end_state(name):
    """‖∂s_T/∂s_k‖₂ at every lag against the SVD of a central difference of the layer's own
    forward pass started from s_k (the layer, not the step the products are built from)."""
    layer = LAYERS[name]()
    layer.params = {k: 1.5 * v if "hh" in k else v for k, v in layer.params.items()}
    x = np.random.default_rng(2).standard_normal((2, 7, 3))
    xs, T = x[1:2], 7
    S = 2 * H if layer.cell.has_c else H
    states, s = [], np.zeros(S)
    for t in range(T):
        s = _end_state(layer, xs[:, t : t + 1], s)
        states.append(s)
    prof = dg.jacobian_products(layer, x, sample=1)
    assert list(prof.lags) == list(range(1, T + 1))
    for ell in prof.lags:
        start = T - 1 - ell
        s0 = np.zeros(S) if start < 0 else states[start]
        J = np.empty((S, S))
        for i in range(S):
            e = np.zeros(S)
            e[i] = 1e-6
            J[:, i] = (_end_state(layer, xs[:, start + 1 :], s0 + e)
                       - _end_state(layer, xs[:, start + 1 :], s0 - e)) / 2e-6  # fmt: skip
        want = np.linalg.svd(J, compute_uv=False)[0]
        assert prof.measured[ell - 1] == pytest.approx(want, rel=1e-6), ell
    assert np.all(prof.measured <= prof.bound * (1 + 1e-12))


@pytest.mark.parametrize("name", list(LAYERS))
def test_spectrum_is_numpy_s_eigenvalues_and_singular_values(name):
    layer = LAYERS[name]()
    W = layer.params["weight_hh_l0"]
    blocks = dg.recurrent_spectrum(layer).blocks
    assert len(blocks) == W.shape[0] // H
    for g, blk in enumerate(blocks):
        Wg = W[g * H : (g + 1) * H]
        assert blk.spectral_radius == pytest.approx(np.abs(np.linalg.eigvals(Wg)).max())
        assert blk.spectral_norm == pytest.approx(np.linalg.norm(Wg, 2))


ANALYSES = {
    "gradient_by_lag": lambda layer, x: dg.gradient_by_lag(layer, x),
    "gradient_map": lambda layer, x: dg.gradient_map(layer, x),
    "jacobian_products": lambda layer, x: dg.jacobian_products(layer, x),
    "step_jacobians": lambda layer, x: dg.step_jacobians(layer, x),
    "gate_saturation": lambda layer, x: dg.gate_saturation(layer, x),
}


@pytest.mark.parametrize("analysis", list(ANALYSES))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_layer_whose_weights_are_not_finite_is_refused_naming_the_weight(analysis, bad):
    """Its states are NaN from the first step: the lag profile was "undetermined", the map
    "overflows float64 (exploding)", the gates "near 0 in 0%", none naming the weights."""
    layer = LSTM(3, H, dtype=np.float64, rng=0)
    layer.params["weight_hh_l0"][1, 2] = bad
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    with pytest.raises(ValueError, match=rf"`layer` must be a layer with finite weights \(no "
                       rf"NaN; inf only in a bias\); got {bad} in 'weight_hh_l0' at index "
                       r"\(1, 2\)"):  # fmt: skip
        ANALYSES[analysis](layer, x)


def test_an_infinite_bias_shuts_a_gate_and_is_analysed():
    layer = LSTM(3, H, dtype=np.float64, rng=0)
    layer.params["bias_ih_l0"][H : 2 * H] = -np.inf  # the forget gate shut
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    sat = dg.gate_saturation(layer, x)
    assert sat.overall_low[0, sat.gates.index("f")] == 1.0
    assert np.all(np.isfinite(dg.gradient_by_lag(layer, x).mean))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_the_spectrum_of_a_layer_with_a_weight_not_finite_names_it(bad):
    """It was LAPACK's LinAlgError ("SVD did not converge"), a traceback."""
    layer = RNN(3, H, dtype=np.float64, rng=0)
    layer.params["weight_hh_l0"][0, 3] = bad
    with pytest.raises(ValueError, match=rf"`source.params\['weight_hh_l0'\]` must be finite "
                       rf"\(no NaN or inf\); got {bad} at index \(0, 3\)"):  # fmt: skip
        dg.recurrent_spectrum(layer)


def _rnn():
    return RNN(3, H, dtype=np.float64, rng=0)


BAD_CALLS = [
    # an empty batch was "`sample` must be an integer in [0, 0)"; the shapes said were those
    # of the one sequence cut out of x, not of the x given
    (lambda: dg.jacobian_products(_rnn(), np.zeros((0, 5, 3))),
     r"`x` must be an array of one sequence and one step at least; got shape \(0, 5, 3\)"),
    (lambda: dg.step_jacobians(_rnn(), np.zeros((2, 0, 3))),
     r"`x` must be an array of one sequence and one step at least; got shape \(2, 0, 3\)"),
    (lambda: dg.jacobian_products(_rnn(), np.zeros((2, 5, 4))),
     r"`x` must be an array with 3 features in its last axis \(input_size\); got shape "
     r"\(2, 5, 4\)"),
    # an empty matrix was ZeroDivisionError ("integer modulo by zero")
    (lambda: dg.recurrent_spectrum(np.zeros((0, 0))),
     r"`source` must be a recurrent weight of shape \(G·H, H\).*; got shape \(0, 0\)"),
    (lambda: dg.recurrent_spectrum(np.zeros((0, 3))),
     r"`source` must be a recurrent weight of shape \(G·H, H\).*; got shape \(0, 3\)"),
    (lambda: dg.spectrum_over_checkpoints(
        [(0, {"weight_hh_l0": np.zeros((4, 2)), "weight_hr_l0": np.zeros((2, 0))})]),
     r"`checkpoints\[0\]\['weight_hr_l0'\]` must be a projection of shape \(2, H\)"),
    # the same names with other shapes: "(['weight_hh_l0']); got ['weight_hh_l0']"
    (lambda: dg.spectrum_over_checkpoints(
        [(0, {"weight_hh_l0": np.eye(3)}), (1, {"weight_hh_l0": np.eye(4)})]),
     r"`checkpoints\[1\]` must be the same recurrent weights as checkpoint 0 \(weight_hh_l0 "
     r"3×3\); got weight_hh_l0 4×4 instead"),
    # IndexError, "cannot convert float NaN to integer", "could not convert string to float"
    (lambda: dg.fit_rate([0, 1, 2], [1.0, 0.1]),
     r"`values` must be one value per lag \(3\); got 2 instead"),
    (lambda: dg.fit_rate([0, np.nan, 2], [1.0, 0.1, 0.01]),
     r"`lags` must be finite numbers; got nan among them"),
    (lambda: dg.fit_rate("abc", [1.0, 0.1, 0.01]),
     r"`lags` must be a 1-D array of real numbers; got 'abc' \(str\)"),
    (lambda: dg.fit_rate([0, 1, 2], [[1.0, 0.1, 0.01]]),
     r"`values` must be a 1-D array of real numbers; got a list of length 1"),
    (lambda: dg.fit_rate([0, 1], [[1.0], [0.1, 0.01]]),
     r"`values` must be a 1-D array of real numbers; got a list of length 2"),
]


@pytest.mark.parametrize("case", range(len(BAD_CALLS)))
def test_bad_input_is_named_not_a_traceback(case):
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_fit_rate_takes_integer_lags_and_leaves_out_what_is_not_positive():
    fit = dg.fit_rate(np.arange(5), np.array([1.0, 0.1, 0.0, np.inf, 1e-4]))
    assert fit.points == 3 and fit.slope == pytest.approx(-1.0) and fit.trend == "vanishing"


def test_a_gradient_whose_squares_pass_float64_is_clipped_to_max_norm():
    """‖g‖ = √2·1e200 was said inf (its squares overflowed), the clipped step NaN (inf·0)
    with a RuntimeWarning, and the clipped loss was taken at θ itself (a scale of 0)."""
    g = {"a": np.array([1e200, -1e200])}
    theta = {"a": np.array([1.0, 2.0])}
    with np.errstate(all="raise"):
        c = dg.clipped_vs_unclipped_step(g, 0.1, 1.0, loss_fn=lambda p: float(p["a"][0]),
                                         params=theta)  # fmt: skip
    assert c.grad_norm == pytest.approx(np.sqrt(2) * 1e200, rel=1e-15)
    assert c.clipped_step_norm == pytest.approx(0.1)
    assert c.unclipped_step_norm == pytest.approx(np.sqrt(2) * 1e199, rel=1e-15)
    assert c.loss_clipped == pytest.approx(1.0 - 0.1 / np.sqrt(2))
    assert "‖g‖ = 1.414e+200" in c.verdict() and "→ 0.1)" in c.verdict()


def test_the_clipped_step_is_lr_max_norm_along_g():
    g = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    theta = {"a": np.array([1.0]), "b": np.array([[1.0]])}
    c = dg.clipped_vs_unclipped_step(
        g, 0.5, 2.0, loss_fn=lambda p: float(p["a"][0] + 10 * p["b"][0, 0]), params=theta
    )
    assert c.grad_norm == 5.0 and c.scale == pytest.approx(0.4)
    assert c.clipped_step_norm == pytest.approx(1.0) and c.unclipped_step_norm == 2.5
    # θ − 0.5·(0.4·g) = (1 − 0.6, 1 − 0.8); unclipped θ − 0.5·g = (−0.5, −1)
    assert c.loss_clipped == pytest.approx(0.4 + 10 * 0.2)
    assert c.loss_unclipped == pytest.approx(-0.5 - 10.0)


def test_gradients_given_as_lists_are_read_as_arrays():
    """They were checked, then read as lists: "'list' object has no attribute 'shape'"."""
    c = dg.clipped_vs_unclipped_step({"a": [3.0, 4.0]}, 0.1, 1.0,
                                     loss_fn=lambda p: float(np.sum(p["a"])),
                                     params={"a": [0.0, 0.0]})  # fmt: skip
    assert c.grad_norm == 5.0 and c.loss_clipped == pytest.approx(-0.1 * 1.4)


@pytest.mark.parametrize("params,direction,message", [
    # 1/√0: a direction of inf (a RuntimeWarning), every loss the same, "smooth"
    ({"a": np.ones(0), "b": np.ones(2)}, "a",
     r"`direction` must be a parameter with at least one entry to move; got 'a', of shape "
     r"\(0,\)"),
    ({"a": np.ones(0)}, "random",
     r"`params` must be a dict holding at least one entry to move along 'random'; got arrays "
     r"of size 0 only"),
    # L(θ) at every α, said "smooth"
    ({"a": np.ones(2)}, {"a": np.zeros(2)},
     r"`direction` must be a dict of arrays not all zero \(a direction to move along\); got "
     r"zeros only"),
    ({"a": np.ones(2)}, {},
     r"`direction` must be a dict of arrays not all zero .*; got an empty dict"),
])  # fmt: skip
def test_a_slice_along_no_direction_is_refused(params, direction, message):
    with pytest.raises(ValueError, match=message), np.errstate(all="raise"):
        dg.loss_slice(lambda p: 0.0, params, direction, [0.0, 1.0, 2.0])


def test_basins_meet_where_two_basins_do_not_where_starts_have_not_settled():
    """The start on h ← tanh(2h)'s unstable fixed point made two meeting points of one
    (h ≈ -0.005, 0.005), and a single basin beside starts that had not settled yet was said
    to meet something (h ≈ 0.495, 0.845)."""
    two = dg.iterated_map(2.0, 0.0).verdict()
    assert "basins meet at h ≈ 0\n" in two
    one = dg.iterated_map(1.0, 0.0, phi="sigmoid", n_iter=5)
    assert (one.basin == 0).any() and (one.basin < 0).any()
    assert "basins meet" not in one.verdict()
    # two basins with starts between them that do not settle: one meeting point, between
    # the last start of one and the first of the other
    m = dg.iterated_map(2.0, 0.1, n_points=41, n_iter=6)
    settled = np.nonzero(m.basin >= 0)[0]
    left = settled[m.basin[settled] == m.basin[settled[0]]][-1]
    right = settled[m.basin[settled] != m.basin[settled[0]]][0]
    assert right - left > 2  # (several starts between them have not settled in 6 steps)
    assert m.verdict().count("basins meet") == 1
    assert f"basins meet at h ≈ {(m.axis[left] + m.axis[right]) / 2:.3g}\n" in m.verdict()


@pytest.mark.parametrize("ctor", [LSTM, GRU])
def test_max_dphi_of_a_gated_cell_is_refused_not_ignored(ctor):
    x = np.zeros((1, 3, 3))
    with pytest.raises(ValueError, match=r"`max_dphi` must be 'trajectory' for a layer of .*: "
                       r"β enters only the Elman cell's bound .*; got 1.0 \(float\)"):  # fmt: skip
        dg.jacobian_products(ctor(3, H, dtype=np.float64, rng=0), x, max_dphi=1.0)
    assert dg.jacobian_products(RNN(3, H, dtype=np.float64, rng=0), x, max_dphi=1.0).beta == 1.0


def test_a_plot_whose_folder_cannot_be_made_names_the_png(tmp_path):
    """A parent that is a file was "[Errno 17] File exists: '…/notes.txt'", the PNG unnamed."""
    (tmp_path / "notes.txt").write_text("")
    png = tmp_path / "notes.txt" / "figs" / "lag.png"
    prof = dg.gradient_by_lag(_rnn(), np.zeros((1, 3, 3)))
    with pytest.raises(OSError, match=rf"cannot write '{png}': its folder cannot be made "
                       r"\(.*: '.*notes.txt"):  # fmt: skip
        dg.plot_lag_profile(prof, png)


@pytest.mark.parametrize("odd", [[1.0, 2.0], "abc", None])
def test_a_per_layer_norm_entry_that_is_no_object_is_not_drawn(odd, tmp_path, monkeypatch):
    """rnnlab plot on a metrics.jsonl whose last gradient record's per-layer norms are a list
    or a string: "'list' object has no attribute 'get'", a traceback."""
    import json

    from rnnlab.diagnostics import report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    records = [
        {"kind": "gradients", "step": 2, "grad_norm_before": 1.0,
         "layer_norms_before": {"rnn": 0.5, "head": 0.25}, "layer_norms_after": odd},
        {"kind": "gradients", "step": 4, "grad_norm_before": 2.0, "layer_norms_before": odd,
         "layer_norms_after": {"rnn": 0.75}},
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    drawn = {}

    def capture(path, panels):
        drawn[path.name] = panels
        return path

    monkeypatch.setattr(report, "plot_curves", capture)
    report.plot_run(run, tmp_path / "plots")
    before, after = drawn["grad-layers.png"]
    assert [(n, list(s), list(v)) for n, s, v in before[1]] == [
        ("rnn", [2.0], [0.5]), ("head", [2.0], [0.25])]  # fmt: skip
    assert [(n, list(s), list(v)) for n, s, v in after[1]] == [("rnn", [4.0], [0.75])]


def test_keep_products_is_a_boolean():
    """keep_products="no" kept the (T, S, S) products: any truthy value did."""
    with pytest.raises(ValueError, match=r"`keep_products` must be .*; got 'no' \(str\)"):
        dg.jacobian_products(_rnn(), np.zeros((1, 3, 3)), keep_products="no")
    kept = dg.jacobian_products(_rnn(), np.zeros((1, 3, 3)), keep_products=True).products
    assert kept is not None and kept.shape == (3, H, H)


@pytest.mark.parametrize("kind", ["a directory", "a symbolic link to nothing",
                                  "a FIFO, device or socket"])  # fmt: skip
def test_a_metrics_jsonl_that_is_no_file_is_said_so(kind, tmp_path):
    """It was "has logged no metrics yet (no metrics.jsonl)", of a run that has one."""
    import os

    from rnnlab import io
    from rnnlab.diagnostics import report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    metrics = run / "metrics.jsonl"
    if kind == "a directory":
        metrics.mkdir()
    elif kind == "a symbolic link to nothing":
        metrics.symlink_to(tmp_path / "gone")
    else:
        os.mkfifo(metrics)
    with pytest.raises(io.RunDirError, match=rf"'{metrics}' is {kind}, not the metrics file "
                       r"rnnlab writes \(a damaged run directory\)"):  # fmt: skip
        report.plot_run(run, tmp_path / "plots")


def test_gradflow_out_that_is_empty_is_refused(tmp_path, capsys, monkeypatch):
    """--out "" was read as not given: a new runs/gradflow-... directory, unasked (plot's
    --out "" is refused already)."""
    from rnnlab import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["gradflow", "dynamics", "--w", "1", "--b", "0", "--out", ""]) == 2
    err = capsys.readouterr().err
    assert "`--out` must be the path of a directory (not empty); got '' instead." in err
    assert not (tmp_path / "runs").exists()


def test_a_jacobian_that_is_exactly_0_under_a_bound_that_is_not_is_said_so():
    """Saturated tanh units (φ′ = 1 − h² = 0 in float64) pass no gradient: the verdict said
    only "too few non-zero values to fit a rate (0): undetermined"."""
    layer = RNN(3, H, dtype=np.float64, rng=0)
    layer.params["weight_hh_l0"] *= 1e10
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    h_last = layer.forward(x).output[0, -1]
    assert np.all(1.0 - h_last * h_last == 0.0)  # (every unit saturated at the last step)
    jp = dg.jacobian_products(layer, x)
    assert np.all(jp.measured == 0.0) and np.all(np.isfinite(jp.log10_bound))
    assert jp.verdict().endswith(
        "the measured norm is exactly 0 from lag 1 on, under a bound that is not: no gradient "
        "reaches back that far (units with φ′ = 0, saturated or dead, pass none)"
    )


def test_the_lag_profile_s_verdict_says_the_lags_the_fit_leaves_out():
    """From Python the verdict was the fitted rate alone: "too few non-zero values to fit a
    rate (1): undetermined" of a gradient exactly 0 past lag 0, and a fit over the finite
    lags of one that overflows float64 at the others (rnnlab gradflow said both)."""
    layer = RNN(1, 1, dtype=np.float64, rng=0)
    for k in ("bias_ih_l0", "bias_hh_l0", "weight_hh_l0"):
        layer.params[k][...] = 0.0
    x = np.zeros((2, 4, 1))
    assert dg.gradient_by_lag(layer, x, lengths=[4, 2]).verdict() == (
        "l0: ‖∂L/∂h_k‖: too few non-zero values to fit a rate (1): undetermined; exactly 0 "
        "at 3 of the 4 lags, from lag 1 (no gradient reaches back that far)"
    )
    layer.params["weight_hh_l0"][...] = 1e200  # (states stay 0 at zero input and biases)
    with np.errstate(all="raise"):
        prof = dg.gradient_by_lag(layer, x)
    assert prof.verdict().endswith(
        "(×1e+200 per step, fitted over lags 0–1): exploding; overflows float64 at 2 of the "
        "4 lags, from lag 2 (exploding)"
    )


@pytest.mark.parametrize("kind", ["a file", "a symbolic link"])
def test_a_run_s_plots_that_is_no_directory_is_said_of_the_run(kind, tmp_path):
    """rnnlab plot RUN (and the end of rnnlab train) write into RUN/plots, which no option
    names: a link there was "`--out` must be a directory", of a command given no --out, and a
    file "[Errno 17] File exists"."""
    import json

    from rnnlab import io
    from rnnlab.diagnostics import report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    if kind == "a file":
        (run / "plots").write_text("")
    else:
        (tmp_path / "elsewhere").mkdir()
        (run / "plots").symlink_to(tmp_path / "elsewhere")
    said = (rf"`run` must be a run directory whose plots is a directory .*; got '{run}', "
            rf"whose plots is {kind} instead. Remove it, or plot into another directory "
            r"\(rnnlab plot RUN --out DIR\).")
    with pytest.raises(io.RunDirError, match=said):
        report.plot_run(run)
    if kind == "a symbolic link":
        assert not list((tmp_path / "elsewhere").iterdir())  # (nothing written through it)


@pytest.fixture
def drawn(monkeypatch):
    """The figures plots.save_png saves during the test, in order, for it to read."""
    from rnnlab.diagnostics import plots

    figures = []
    real = plots.save_png

    def keep(fig, path, dpi=110):
        figures.append(fig)
        return real(fig, path, dpi)

    monkeypatch.setattr(plots, "save_png", keep)
    return figures


def test_the_cliff_figure_of_an_exploding_model_is_drawn(tmp_path, drawn):
    """An IRNN with W_hh × 1e5: along −∇L the loss reaches 1e297, and matplotlib's log ticks
    overflowed ("cannot convert float infinity to integer"): rnnlab gradflow's cliff ended
    in a traceback. What lies beyond the log axes' range is left out and said now."""
    from rnnlab.diagnostics import analyses, subjects

    sub = subjects.task_subject("adding", cell="irnn", hidden=4, T=12, batch=4, init_scale=1e5)
    with np.errstate(all="ignore"):
        out = analyses.analyse_cliff(sub, 2.0, None, 1.0)
    ((draw, data, name),) = out.figures
    assert np.nanmax(data[2].losses) > 1e150  # (past LOG_RANGE: no log axis ticks it)
    assert draw(data, tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    title = drawn[0].axes[2].get_title()
    assert "values beyond 1e-150..1e+150 not drawn)" in title


@pytest.mark.parametrize("lr", [1e-300, 1e300])
def test_the_cliff_figure_of_steps_far_from_1_is_drawn(lr, tmp_path):
    """With every distance along −∇L near 1e-300 (or 1e300) a log axis has nothing within
    LOG_RANGE: made log with nothing on it, it failed ("Data cannot be log-scaled")."""
    from rnnlab.diagnostics import analyses, subjects

    sub = subjects.task_subject("adding", cell="rnn", hidden=3, T=8, batch=3)
    with np.errstate(all="ignore"):
        out = analyses.analyse_cliff(sub, 2.0, lr, 1.0)
    ((draw, data, name),) = out.figures
    assert data[3].clipped_step_norm == pytest.approx(lr)  # (‖g‖ ≥ 1: clipped to lr·1)
    assert draw(data, tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_a_curve_on_a_log_axis_says_what_it_cannot_draw_in_a_legend(tmp_path, drawn):
    """plot_curves: a single line's "(2 zeros)" was added to a copy of its label, and the
    legend shown only when the lines' own labels had it: never. A norm of 1e300 (past
    LOG_RANGE) drew with matplotlib's "RuntimeWarning: overflow encountered in exp"."""
    from rnnlab.diagnostics import plots

    steps = np.arange(5.0)
    with np.errstate(all="raise"):
        plots.plot_curves(tmp_path / "g.png", [
            ("zeros", [("‖g‖", steps, np.array([1.0, 0.0, 2.0, 0.0, 3.0]))], True),
            ("far", [("‖g‖", steps, np.array([1.0, 1e300, 2.0, 3.0, 4.0]))], True),
            ("plain", [("loss", steps, np.array([1.0, 0.0, 2.0, 0.0, 3.0]))], False),
        ])  # fmt: skip
    legends = [ax.get_legend() for ax in drawn[0].axes]
    assert [t.get_text() for t in legends[0].get_texts()] == ["‖g‖ (2 zeros)"]
    assert [t.get_text() for t in legends[1].get_texts()] == [
        "‖g‖ (1 beyond 1e-150..1e+150: not drawn)"]  # fmt: skip
    assert legends[2] is None


def test_the_iterated_map_of_a_huge_weight_gains_w_a_step_without_warnings():
    """w = 1e300: the squares of the product's norm overflowed (a RuntimeWarning, and the
    gain at h₀ = 0, where φ′ = 1, NaN instead of log10(w⁵) = 1500), and so did the 2-unit
    Newton step's determinant."""
    with np.errstate(all="raise"):
        one = dg.iterated_map(1e300, 0.0, n_iter=5, n_points=9)
        two = dg.iterated_map(np.eye(2) * 1e300, np.zeros(2), n_iter=5, n_points=5)
    assert one.log10_gain[4] == pytest.approx(1500.0) and one.axis[4] == 0.0
    assert np.isneginf(np.delete(one.log10_gain, 4)).all()  # (saturated: φ′ = 0 exactly)
    assert "ranges from 1e1500 to 1e1500" in one.verdict()
    assert two.log10_gain[2, 2] == pytest.approx(1500.0)
    fixed = {tuple(p) for p in np.round(two.fixed_points, 9)}
    assert {(0.0, 0.0), (1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)} <= fixed


def test_fit_rate_reads_a_json_null_as_a_value_left_out():
    """gradflow's JSON holds null where the gradient overflows; fit_rate read a list with
    None as NaN before its input was checked, and does still (text among them is refused)."""
    fit = dg.fit_rate([0, 1, 2, 3], [1.0, 0.1, None, 1e-3])
    assert fit.points == 3 and fit.slope == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"`values` must be a 1-D array of real numbers"):
        dg.fit_rate([0, 1, 2], [1.0, "a", 0.1])
