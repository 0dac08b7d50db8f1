"""rnnlab gradflow / rnnlab plot: every analysis on a tiny fresh model of each cell and on a
tiny trained run (PNGs, JSON with the lag profile per layer and direction), the iterated
map, the training record, the gradient the task's loss sends into the recurrent layer
(against finite differences), and bad input."""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import oracle

from rnnlab import cli, models, tasks
from rnnlab.cli import gradflow
from rnnlab.cli import plot as plot_command
from rnnlab.diagnostics import analyses, report, subjects, training
from rnnlab.diagnostics import model as dg_model
from rnnlab.train import TrainConfig

TINY = ["--hidden", "3", "--T", "6", "--batch", "3"]


def run_json(capsys, *args):
    assert gradflow.main([str(a) for a in args] + ["--json"]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def check_outputs(summary, out: Path, names):
    assert json.loads((out / "summary.json").read_text()) == summary
    assert list(summary["analyses"]) == names
    for name, entry in summary["analyses"].items():
        assert entry["png"], name
        for png in entry["png"]:
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert json.loads((out / entry["json"]).read_text())
        assert entry["verdict"] == summary["verdicts"][name] and entry["verdict"]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "gru-orig"])
def test_every_analysis_on_a_fresh_model(tmp_path, capsys, cell):
    summary, err = run_json(capsys, "adding", "--cell", cell, *TINY, "--out", tmp_path)
    check_outputs(summary, tmp_path, ["lag", "map", "jacobian", "spectrum", "gates", "cliff"])
    lag = summary["analyses"]["lag"]
    assert lag["loss"] == "task"  # adding reads the last step: the task's own loss
    l0 = lag["layers"]["l0"]
    assert len(l0["norms"]) == 6 and all(v > 0 for v in l0["norms"])
    assert l0["factor_per_step"] > 0 and l0["trend"] in ("vanishing", "stable", "exploding")
    assert l0["max_over_min"] >= 1.0
    # the verdict lines went to stderr, one per analysis
    assert [ln.split(":")[0] for ln in err.splitlines() if not ln.startswith("gradflow")] == list(
        summary["analyses"]
    )
    jac = summary["analyses"]["jacobian"]["layers"]["l0"]
    assert jac["log10_measured_at_last_lag"] <= jac["log10_bound_at_last_lag"] + 1e-9
    assert summary["verdicts"]["jacobian"].startswith("l0, sequence 0, ")  # named once
    gates = summary["analyses"]["gates"]["layers"]["l0"]
    assert (
        set(gates)
        == {
            "rnn": {"hidden"},
            "lstm": {"input", "forget", "candidate", "output"},
            "gru": {"reset", "update", "candidate"},
            "gru-orig": {"reset", "update", "candidate"},
        }[cell]
    )
    cliff = summary["analyses"]["cliff"]
    assert cliff["clip"]["max_norm"] == 1.0 and cliff["bias"]["direction"] == "0.bias_hh_l0"
    assert summary["model"]["cell"] == cell and summary["batch"] == {
        "split": "valid",
        "sequences": 3,
        "T": 6,
    }


def test_stacked_bidirectional_token_model(tmp_path, capsys):
    """copy: an Embedding in front and an output at every step (auto loss: 'last')."""
    summary, _ = run_json(
        capsys,
        "copy",
        "--cell",
        "gru",
        "--layers",
        "2",
        "--bidirectional",
        "--hidden",
        "3",
        "--T",
        "2",
        "--batch",
        "2",
        "--out",
        tmp_path,
        "--analyses",
        "lag,jacobian,spectrum",
    )
    check_outputs(summary, tmp_path, ["lag", "jacobian", "spectrum"])
    names = ["l0", "l0_reverse", "l1", "l1_reverse"]
    assert summary["analyses"]["lag"]["loss"] == "last"
    assert list(summary["analyses"]["lag"]["layers"]) == names
    for n in names:
        assert len(summary["analyses"]["lag"]["layers"][n]["norms"]) == 22  # T + 20
        assert "factor_per_step" in summary["analyses"]["lag"]["layers"][n]
    assert list(summary["analyses"]["jacobian"]["layers"]) == names
    assert len(summary["analyses"]["jacobian"]["png"]) == 4


def test_init_scale_multiplies_W_hh(tmp_path, capsys):
    common = ["adding", "--cell", "rnn", *TINY, "--analyses", "spectrum"]
    s1, _ = run_json(capsys, *common, "--out", tmp_path / "a")
    s3, _ = run_json(capsys, *common, "--init-scale", "3", "--out", tmp_path / "b")
    n1 = s1["analyses"]["spectrum"]["blocks"]["weight_hh_l0"]["spectral_norm"]
    n3 = s3["analyses"]["spectrum"]["blocks"]["weight_hh_l0"]["spectral_norm"]
    assert n3 == pytest.approx(3 * n1, rel=1e-5)
    assert s3["source"]["init_scale"] == 3.0


def test_forget_bias_of_a_fresh_lstm():
    sub = subjects.task_subject("adding", cell="lstm", hidden=3, T=4, batch=2, forget_bias=3.0)
    p = sub.model.params
    assert np.all(p["0.bias_ih_l0"][3:6] == 3.0) and np.all(p["0.bias_hh_l0"][3:6] == 0.0)
    assert sub.source["forget_bias"] == 3.0 and sub.x.shape == (2, 4, 2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    (base / "cfg.toml").write_text("grad_log_every = 2\n")
    run = base / "run"
    assert (
        cli.main(
            [
                "train",
                "adding",
                "--T",
                "8",
                "--steps",
                "4",
                "--hidden",
                "4",
                "--batch-size",
                "4",
                "--eval-every",
                "2",
                "--checkpoint-every",
                "2",
                "--config",
                str(base / "cfg.toml"),
                "--run-dir",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    return run


def test_an_unreadable_older_checkpoint_is_a_gap_in_the_spectrum_history(tiny_run, tmp_path,
                                                                         capsys):
    """The analysed weights are the latest checkpoint's; one older checkpoint cut short
    ended the whole command (with training's advice) and wrote no summary.json."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step"))
    assert len(steps) >= 2
    for f in (run / "checkpoints" / steps[0]).glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:10])
    s, _ = run_json(capsys, run, "--analyses", "lag,spectrum,gates", "--out", tmp_path / "o")
    assert list(s["analyses"]) == ["lag", "spectrum", "gates"]
    step = int(steps[0].removeprefix("step-"))
    unread = s["analyses"]["spectrum"]["unread_checkpoints"]
    assert len(unread) == 1 and unread[0].startswith(f"step {step} (")
    assert "left out of the history, 1 checkpoint(s) that cannot be read: step" in (
        s["verdicts"]["spectrum"])  # fmt: skip
    assert step not in s["analyses"]["spectrum"]["history"]["steps"]


def test_run_directory(tiny_run, tmp_path, capsys):
    summary, _ = run_json(capsys, tiny_run, "--out", tmp_path / "a")
    check_outputs(summary, tmp_path / "a", ["lag", "map", "jacobian", "spectrum", "gates", "cliff"])
    assert summary["source"]["type"] == "run" and summary["source"]["step"] == 4
    assert summary["source"]["checkpoints"] == [2, 4]
    hist = summary["analyses"]["spectrum"]["history"]
    assert hist["steps"] == [0, 2, 4]  # the initialisation is rebuilt from the run's seed
    assert "spectrum-history.png" in summary["analyses"]["spectrum"]["png"]
    assert len(summary["analyses"]["lag"]["layers"]["l0"]["norms"]) == 8
    # an earlier checkpoint, at another sequence length
    summary, _ = run_json(
        capsys, tiny_run, "--step", 2, "--T", 5, "--analyses", "lag", "--out", tmp_path / "b"
    )
    assert summary["source"]["step"] == 2 and summary["batch"]["T"] == 5


def test_step_ends_the_spectrum_history_at_that_checkpoint(tiny_run, tmp_path, capsys):
    """--step 2 of a run saved at 2 and 4: the weights are step 2's, and the history drew
    step 4 too, a future of the analysed weights. It ends at 2, and the verdict says so."""
    s, _ = run_json(capsys, tiny_run, "--step", 2, "--analyses", "spectrum", "--out", tmp_path)
    assert s["source"]["step"] == 2 and s["source"]["checkpoints"] == [2, 4]
    assert s["analyses"]["spectrum"]["history"]["steps"] == [0, 2]
    assert "; during training up to step 2: " in s["verdicts"]["spectrum"]
    hist = json.loads((tmp_path / "spectrum.json").read_text())["history"]
    assert hist["steps"] == [0, 2]


def test_plain_output_has_one_verdict_line_per_analysis(tiny_run, tmp_path, capsys):
    assert gradflow.main([str(tiny_run), "--analyses", "lag,spectrum", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["lag", "spectrum", "output"]
    assert "factor of 10 every" in lines[0]


def test_without_matplotlib_the_json_is_written_and_no_png_promised(tmp_path, capsys,
                                                                   monkeypatch):
    """matplotlib is an optional extra: without it gradflow writes its JSON and says the
    PNGs are missing, in summary.json and in its last line (which named PNGs before)."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of it raises ImportError
    args = ["adding", *TINY, "--analyses", "lag,spectrum", "--out", str(tmp_path)]
    assert gradflow.main(args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"output: {tmp_path} (summary.json, a JSON per analysis, 0 PNGs)"
    assert "\nrnnlab: warning: no PNGs written: rnnlab's plots need matplotlib" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["plots"].startswith("no PNGs")
    assert [entry["png"] for entry in summary["analyses"].values()] == [[], []]
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "lag.json").is_file()


def test_gradflow_and_plot_warn_as_every_command_does(tiny_run, tmp_path, capsys):
    """Three prefixes for a warning: `rnnlab gradflow: warning:`, `gradflow:` (no PNGs) and
    `rnnlab plot:` (no gradient records), beside the `rnnlab: warning:` of train, of the
    Python warnings gradflow shows and the `rnnlab: error:` of both commands: now that one."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(ln + "\n" for ln in metrics.read_text().splitlines()
                               if '"gradients"' not in ln))  # fmt: skip
    assert plot_command.main([str(run), "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().err == (
        'rnnlab: warning: no gradient records ("kind": "gradients") in metrics.jsonl, so no '
        "per-layer norms or lag profile\n")
    args = ["adding", *TINY, "--analyses", "spectrum", "--loss", "all", "--out", tmp_path / "g"]
    assert gradflow.main([str(a) for a in args]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert warned == ["rnnlab: warning: --loss is for the lag analysis, which this run does "
                      "not make; ignored"]  # fmt: skip


def test_metrics_log_and_plot(tiny_run, tmp_path, capsys):
    records = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    grads = [r for r in records if r.get("kind") == "gradients"]
    assert [r["step"] for r in grads] == [2, 4]
    assert all(r["grad_norm_after"] <= r["grad_norm_before"] + 1e-6 for r in grads)
    assert grads[-1]["lags"]["l0"]["factor_per_step"] > 0  # evaluation steps carry the lags
    assert plot_command.main([str(tiny_run), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    names = ["loss.png", "valid.png", "grad-norm.png", "grad-layers.png", "lag-history.png"]
    assert [Path(p).name for p in printed] == names
    for n in names:
        assert (tmp_path / n).read_bytes()[:4] == b"\x89PNG"


def test_valid_png_draws_references_in_their_metrics_panel_and_no_counts():
    """A baseline or chance level is a dashed line beside the metric it is the reference
    for, not a flat panel of its own; counts (charlm's chars) are not drawn; a reference
    whose metric is missing keeps its own panel."""
    def records(**keys):
        return [{"step": s, "split": "valid", **{k: v + s for k, v in keys.items()}}
                for s in (1, 2)]  # fmt: skip

    def shape(panels):
        return [(title, [(line[0], line[3:]) for line in lines]) for title, lines, _ in panels]

    copy = records(loss=1.0, recall_accuracy=0.1, baseline_loss=0.3, baseline_loss_empirical=0.3,
                   baseline_recall_empirical=0.15)  # fmt: skip
    assert shape(report.valid_panels(copy)) == [
        ("valid loss", [("loss", ()), ("baseline_loss", ("--",)),
                        ("baseline_loss_empirical", ("--",))]),
        ("valid recall_accuracy", [("recall_accuracy", ()),
                                   ("baseline_recall_empirical", ("--",))]),
    ]  # fmt: skip
    digits = records(accuracy=0.5, loss=2.0, chance=0.1, majority=0.12)
    assert shape(report.valid_panels(digits)) == [
        ("valid accuracy", [("accuracy", ()), ("chance", ("--",)), ("majority", ("--",))]),
        ("valid loss", [("loss", ())]),
    ]
    charlm = records(bits_per_char=6.0, chars=23248, unknown_chars=0)
    assert shape(report.valid_panels(charlm)) == [("valid bits_per_char", [("bits_per_char", ())])]
    alone = records(baseline_mse=0.17, chance=0.1)
    assert shape(report.valid_panels(alone)) == [
        ("valid baseline_mse", [("baseline_mse", ())]), ("valid chance", [("chance", ())])
    ]
    steps, values = report.valid_panels(digits)[0][1][1][1:3]  # chance's own series
    assert steps.tolist() == [1.0, 2.0] and values.tolist() == [1.1, 2.1]


def small_model(cell="lstm", dtype=np.float32, T=5, layers=1, bidirectional=False):
    cfg = TrainConfig.from_dict(
        {
            **tasks.defaults("adding"),
            "cell": cell,
            "hidden": 3,
            "T": T,
            "layers": layers,
            "bidirectional": bidirectional,
        }
    )
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    return models.build(spec, dtype=dtype, rng=np.random.default_rng(0)), task


def test_training_record():
    model, task = small_model(layers=2, bidirectional=True)
    x, _, _ = task.split("valid")
    rng = np.random.default_rng(0)
    before = {k: rng.standard_normal(v.shape) for k, v in model.params.items()}
    after = {k: v * 0.5 for k, v in before.items()}
    before["0.bias_hh_l1"][0] = np.nan  # a NaN goes into JSON as null
    rec = training.training_record(model, x[:20], None, before, after, False)
    assert set(rec) == {
        "grad_norm_before",
        "grad_norm_after",
        "layer_norms_before",
        "layer_norms_after",
        "lags",
    }
    assert rec["lags"] is None and rec["grad_norm_before"] is None
    assert list(rec["layer_norms_after"]) == [
        "0.l0",
        "0.l0_reverse",
        "0.l1",
        "0.l1_reverse",
        "2.linear",
    ]
    assert rec["layer_norms_before"]["0.l1"] is None
    expected = math.sqrt(sum(float(np.sum(v**2)) for v in after.values()))
    assert rec["grad_norm_after"] == pytest.approx(expected)
    json.dumps(rec, allow_nan=False)
    rec = training.training_record(model, x[:20], None, after, after, True)
    assert list(rec["lags"]) == ["l0", "l0_reverse", "l1", "l1_reverse"]
    assert len(rec["lags"]["l0"]["norms"]) == 5 and rec["lags"]["l0"]["factor_per_step"] > 0
    json.dumps(rec, allow_nan=False)
    # an output-feedback (jordan) model: norms per module, no lag profile
    cfg = TrainConfig.from_dict(
        {**tasks.defaults("copy"), "cell": "jordan", "hidden": 3, "embed": 2, "T": 2}
    )
    task = tasks.make_task(cfg)
    model = models.build(tasks.model_spec(cfg, task), rng=np.random.default_rng(0))
    g = {k: np.ones_like(v) for k, v in model.params.items()}
    rec = training.training_record(model, task.split("valid")[0][:2], None, g, g, True)
    assert rec["lags"] is None and list(rec["layer_norms_before"]) == [
        "0.embedding",
        "1.outputfeedback",
    ]


def test_task_gradient_at_the_recurrent_output_matches_finite_differences():
    """∂L/∂o for the adding task's MSE through LastStep and Linear, in float64."""
    model, task = small_model("rnn", dtype=np.float64)
    x, y, _ = task.split("valid")
    x, y = x[:4].astype(np.float64), y[:4].astype(np.float64)
    x_rec, d_out, loss, _ = dg_model.output_gradient(model, task, x, y, None)
    f = model.forward(x)
    o = f.cache[0].output

    def head_loss(o_):
        out = o_
        for m in model.modules[1:]:
            out = m.forward(out).output
        return float(np.mean((out - y) ** 2))

    assert loss == pytest.approx(head_loss(o), rel=1e-12)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for _ in range(6):
        idx = tuple(int(rng.integers(n)) for n in o.shape)
        idx = (idx[0], o.shape[1] - 1 if rng.random() < 0.5 else idx[1], idx[2])
        up, down = o.copy(), o.copy()
        up[idx] += eps
        down[idx] -= eps
        assert d_out[idx] == pytest.approx((head_loss(up) - head_loss(down)) / (2 * eps), abs=1e-8)
    # The lag profile of the task's loss starts from that very gradient: at lag 0 it is
    # ‖∂L/∂o_{T-1}‖ of each sequence, averaged over the batch.
    from rnnlab import diagnostics as dg

    prof = dg.gradient_by_lag(model.modules[0], x_rec, None, d_output=d_out)
    assert prof.mean[0, 0] == pytest.approx(np.linalg.norm(d_out[:, -1], axis=1).mean())


def test_dynamics_source(tmp_path, capsys):
    s, _ = run_json(capsys, "dynamics", "--w", "2", "--b", "0", "--out", tmp_path / "a")
    check_outputs(s, tmp_path / "a", ["dynamics"])
    d = s["analyses"]["dynamics"]
    assert d["kinds"] == ["stable", "unstable", "stable"]
    assert d["fixed_points"][0][0] == pytest.approx(-0.957504, abs=1e-5)
    s, _ = run_json(
        capsys,
        "dynamics",
        "--W",
        "2,0;0,2",
        "--bias",
        "0,0",
        "--iters",
        "50",
        "--out",
        tmp_path / "b",
    )
    d = s["analyses"]["dynamics"]
    assert d["units"] == 2 and d["kinds"].count("stable") == 4 and len(d["kinds"]) == 9
    # a 1-unit tanh RNN of a task also gets the iterated map (its input set to zero)
    s, _ = run_json(
        capsys,
        "adding",
        "--cell",
        "rnn",
        "--hidden",
        "1",
        "--T",
        "4",
        "--batch",
        "2",
        "--analyses",
        "dynamics",
        "--out",
        tmp_path / "c",
    )
    assert s["analyses"]["dynamics"]["units"] == 1


def test_map_options_for_a_model_and_values_with_a_minus_sign(tmp_path, capsys):
    """A 1-unit tanh RNN's map runs over --range for --iters steps (both were dropped, the
    map drawn over [-2, 2] for 200 steps); --phi is the bare map's (a model's φ is its
    cell's); `--range -3,3` and `--b -1e-3` are values, not options (argparse said "expected
    one argument")."""
    args = ["adding", "--cell", "rnn", "--hidden", "1", "--T", "4", "--batch", "2",
            "--analyses", "dynamics", "--iters", "5", "--range", "-0.5,0.5"]  # fmt: skip
    s, _ = run_json(capsys, *args, "--out", tmp_path / "a")
    details = json.loads((tmp_path / "a" / "dynamics.json").read_text())
    assert details["n_iter"] == 5 and details["axis"][0] == -0.5 and details["axis"][-1] == 0.5
    assert "--phi` must be given only with the dynamics source" in error_of(
        capsys, "gradflow", *args[:-4], "--phi", "sigmoid", "--out", tmp_path / "b"
    )
    for more in (["--w", "2", "--b", "-1e-3"], ["--W", "-1,0;0,-1", "--bias", "-0.5,0"],
                 ["--w", "2", "--b", "-.5", "--range", "-3,3"]):  # fmt: skip
        s, _ = run_json(capsys, "dynamics", *more, "--out", tmp_path / "c")
        assert s["analyses"]["dynamics"]["b"][0] < 0, more
    assert json.loads((tmp_path / "c" / "dynamics.json").read_text())["axis"][0] == -3.0


def test_an_option_of_an_analysis_not_made_is_said_ignored(tmp_path, capsys):
    model = ["adding", "--cell", "rnn", "--hidden", "4", "--T", "5", "--batch", "2"]
    args = [*model, "--analyses", "spectrum", "--loss", "all", "--sample", "1", "--max-norm",
            "2", "--iters", "7"]  # fmt: skip
    _, err = run_json(capsys, *args, "--out", tmp_path)
    said = [ln for ln in err.splitlines() if "warning" in ln]
    assert said == [
        f"rnnlab: warning: {flag} is for the {analysis} analysis, which this run "
        "does not make; ignored"
        for flag, analysis in (("--loss", "lag"), ("--sample", "jacobian"),
                               ("--max-norm", "cliff"), ("--iters", "dynamics"))
    ]  # fmt: skip
    _, err = run_json(capsys, *model, "--analyses", "lag,spectrum", "--loss", "all",
                      "--out", tmp_path)  # fmt: skip
    assert "warning" not in err
    _, err = run_json(capsys, *model, "--analyses", "lag", "--range", "3,-3", "--out", tmp_path)
    assert "--range is for the dynamics analysis" in err  # said ignored, and not read


def error_of(capsys, *args) -> str:
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnlab: error: ")
    return err


@pytest.mark.parametrize(
    "args,match",
    [
        (["nope"], r"`source` must be a run directory, a task name \(charlm.*got 'nope'"),
        (["adding", "--analyses", "lag,foo"], r"`--analyses` must be .* Unknown analysis: 'foo'"),
        (["adding", "--analyses", ","], r"`--analyses` must be at least one of"),
        (["adding", "--cell", "irnn", "--analyses", "gates"], r"'gates' \(relu units have no"),
        (["adding", "--analyses", "dynamics"], r"'dynamics' \(the iterated map needs a tanh RNN"),
        (
            ["adding", "--cell", "rnn", "--hidden", "2", "--layers", "2", "--analyses", "dynamics"],
            r"'dynamics' \(the iterated map \(input at zero\) is of one layer in one direction; "
            r"this RNN has 2 layers\)",
        ),
        (
            ["adding", "--cell", "rnn", "--hidden", "1", "--bidirectional", "--analyses",
             "dynamics"],
            r"in one direction; this RNN is bidirectional\)",
        ),
        (
            ["dynamics", "--w", "1", "--b", "0", "--analyses", "lag"],
            r"'lag' \(the dynamics source is a bare map",
        ),
        (["adding", "--init-scale", "-1"],
         r"`--init-scale` must be a positive finite number; got '-1'"),
        (["adding", "--batch", "0"], r"`--batch` must be a positive integer; got '0'"),
        (["adding", "--T", "1"], r"`--T` must be at least 2 \(one marker in each half\); got 1"),
        (
            ["dynamics", "--w", "1", "--b", "0", "--range", "5,1e400"],
            r"`--range` must be 'lo,hi' of finite numbers; got '5,1e400'",
        ),
        (["adding", "--init-scale", "1e300"], r"`--init-scale` must be a scale that keeps W_hh "
         r"within float32 \(below .*; got 1e\+300"),
        (["adding", "--cell", "gru", "--forget-bias", "2"], r"`--forget-bias` must be given only"),
        (["adding", "--cell", "jordan"], r"argument --cell: invalid choice"),
        (["adding", "--bogus"], r"unrecognized arguments: --bogus"),
        (["charlm", "--T", "5"], r"`--T` must be given only for the adding, copy and temporal"),
        (["adding", "--step", "3"], r"`--step` must be given only for a run directory"),
        (["adding", "--w", "2"], r"`--w` must be given only with the dynamics source"),
        (["dynamics"], r"`--w` must be given with --b .*; got neither"),
        (["dynamics", "--w", "2"], r"`--b` must be given"),
        (["dynamics", "--w", "1", "--b", "0", "--W", "1,0;0,1"], r"got both forms"),
        (["dynamics", "--W", "1,2;3", "--bias", "0,0"], r"`--W` must be 'a,b;c,d'"),
        (["dynamics", "--W", "1,0;0,1", "--bias", "0"], r"`--bias` must be 'e,f'"),
        (
            ["dynamics", "--w", "1", "--b", "0", "--range", "2,1"],
            r"`--range` must be 'lo,hi' with lo < hi; got '2,1'",
        ),
        (["dynamics", "--w", "nan", "--b", "0"], r"`--w` must be a finite number"),
        (["dynamics", "--w", "1", "--b", "0", "--cell", "rnn"], r"`--cell` must be left out"),
        # (these three were ignored silently)
        (["dynamics", "--w", "1", "--b", "0", "--batch", "8"], r"`--batch` must be left out "
         r"for the dynamics source"),
        (["dynamics", "--w", "1", "--b", "0", "--sample", "0"], r"`--sample` must be left out"),
        (["dynamics", "--w", "1", "--b", "0", "--loss", "task"], r"`--loss` must be left out"),
        (
            ["adding", "--T", "4", "--batch", "2", "--sample", "5", "--analyses", "jacobian"],
            r"`--sample` must be a sequence index in \[0, 2\)",
        ),
    ],
)
def test_bad_input(tmp_path, capsys, args, match):
    import re

    err = error_of(capsys, "gradflow", *args, "--out", tmp_path / "out")
    assert re.search(match, err), err


def test_bad_run_directories(tiny_run, tmp_path, capsys):
    import re

    err = error_of(capsys, "gradflow", tiny_run, "--cell", "rnn")
    assert re.search(r"`--cell` must be given only for a task source", err)
    err = error_of(capsys, "gradflow", tiny_run, "--step", "3")
    assert re.search(r"`--step` must be a saved step of .*\(saved: 2, 4\); got 3 instead", err)
    err = error_of(capsys, "gradflow", tiny_run, "--T", "1", "--out", tmp_path / "o")
    assert "`--T` must be at least 2 (one marker in each half); got 1 instead." in err
    err = error_of(capsys, "gradflow", tmp_path)  # gradflow's argument is its SOURCE
    assert re.search(r"`source` must be a run directory, a task name \(charlm, digits, "
                     r"pytokens, adding, copy, temporal-order\) or 'dynamics'; got '.*', a "
                     r"directory without config.json", err)  # fmt: skip
    (tmp_path / "notes.txt").write_text("not a run")
    err = error_of(capsys, "gradflow", tmp_path / "notes.txt")
    assert re.search(r"`source` must be a run directory, .*; got '.*notes.txt', a file", err)
    err = error_of(capsys, "plot", tmp_path)
    assert re.search(r"`run` must be a run directory", err)
    (tmp_path / "config.json").write_text("{}")
    err = error_of(capsys, "plot", tmp_path)
    assert f"'{tmp_path}' has logged no metrics yet (no metrics.jsonl)" in err


def test_out_that_is_a_file_and_a_bad_metrics_record_name_the_option_or_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    err = error_of(capsys, "gradflow", "adding", "--out", tmp_path / "afile")
    assert "`--out` must be a directory (new or existing) for the PNGs and JSON files; got " \
        f"'{tmp_path / 'afile'}', which is a file instead." in err  # fmt: skip
    err = error_of(capsys, "gradflow", "adding", "--out", tmp_path / "afile" / "sub")
    assert "`--out` must be a directory rnnlab can create; got" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {}, "model": {}}')
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": "x", "loss": 1}\n')
    err = error_of(capsys, "plot", run)
    assert f"'{run / 'metrics.jsonl'}' record 2 (of those with a \"step\"): \"step\" must be a " \
        "number (the training step); got 'x' (str) instead." in err  # fmt: skip


def test_an_out_with_an_earlier_output_holds_this_run_s_files_alone(tmp_path, capsys):
    """A second gradflow into the same --out left the first one's files that it did not
    write again (map.png, jacobian-l0_reverse.png of a bidirectional model) beside a
    summary.json that does not name them; a summary.json of something else was overwritten."""
    small = ["adding", "--cell", "rnn", "--hidden", "3", "--T", "5", "--batch", "2"]
    run_json(capsys, *small, "--bidirectional", "--analyses", "lag,map,jacobian",
             "--out", tmp_path)  # fmt: skip
    assert (tmp_path / "jacobian-l0_reverse.png").is_file()
    (tmp_path / "mine.txt").write_text("kept")
    summary, err = run_json(capsys, *small, "--analyses", "lag", "--out", tmp_path)
    assert "held an earlier gradflow output; its 8 files were removed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lag.json", "lag.png", "mine.txt", "summary.json"]  # fmt: skip
    assert summary["model"]["bidirectional"] is False
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text('{"kind": "mine"}')
    err = error_of(capsys, "gradflow", *small, "--out", other)
    assert f"`--out` must be a directory without a summary.json, or with an earlier " \
        f"gradflow's (replaced); got '{other}', whose summary.json is not gradflow's" in err
    assert (other / "summary.json").read_text() == '{"kind": "mine"}'


def test_bad_training_record_input():
    model, task = small_model()
    x, _, _ = task.split("valid")
    g = {k: np.zeros_like(v) for k, v in model.params.items()}
    with pytest.raises(ValueError, match=r"`grads_before_clip` must be a dict of gradients keyed"):
        training.training_record(model, x, None, {"w": np.zeros(1)}, g, False)
    with pytest.raises(ValueError, match=r"`grads_after_clip` must be a dict of gradients keyed"):
        training.training_record(model, x, None, g, None, False)
    with pytest.raises(ValueError, match=r"`model` must be a Sequential with one recurrent"):
        dg_model.split_model(object())


def test_training_record_says_the_states_overflow_not_zeros():
    """W_hh = 1e10·I: the IRNN's float64 states overflow after 33 steps. The logged lag
    profile read the gradient through NaN states: [1, 0, 0, …], "vanishing" in the log of an
    exploding network. It is None now, with the overflow said as gradflow says it."""
    sub = subjects.task_subject("adding", cell="irnn", hidden=4, T=40, batch=4, init_scale=1e10)
    g = {k: np.zeros_like(v) for k, v in sub.model.params.items()}
    r = training.training_record(sub.model, sub.x, sub.lengths, g, g, True)
    assert r["lags"] is None
    assert r["lag_overflow"].startswith(
        "the recurrent layer's states overflow float64 after 33 of its 40 steps: exploding")
    assert r["grad_norm_before"] == 0.0  # (the norms are logged still)


def test_training_record_says_where_the_gradient_overflows():
    """Finite states (zero input and biases: h = 0, φ' = 1) and ‖W_hh‖ ~ 360: ∂L/∂h_k grows
    past 1e308 by lag 117 of 120. That raised NumPy's warnings; the lags past it are None,
    and the record names the first."""
    sub = subjects.task_subject("adding", cell="rnn", hidden=4, T=120, batch=4, init_scale=1e3)
    for k, v in sub.model.params.items():
        if "bias" in k:
            v[...] = 0.0
    g = {k: np.zeros_like(v) for k, v in sub.model.params.items()}
    r = training.training_record(sub.model, np.zeros_like(sub.x), sub.lengths, g, g, True)
    norms = r["lags"]["l0"]["norms"]
    k = norms.index(None)
    assert all(v is not None and v > 0 for v in norms[:k]) and norms[k - 1] > 1e300
    assert r["lag_overflow"] == f"l0: ‖∂L/∂h_k‖ overflows float64 from lag {k}: exploding"
    assert r["lags"]["l0"]["trend"] == "exploding"
    assert r["lags_reached"] == 120  # (the nulls before it are overflows)


@pytest.fixture(scope="module")
def logged_lags():
    """What training_record logs (with the lags) for a network whose gradient overflows
    float64 from lag 117 of 120 ("gradient"), one whose states overflow (lags null,
    "states") and a finite one ("finite")."""
    def record(sub, x=None):
        g = {k: np.zeros_like(v) for k, v in sub.model.params.items()}
        x = sub.x if x is None else x
        return training.training_record(sub.model, x, sub.lengths, g, g, True)

    grows = subjects.task_subject("adding", cell="rnn", hidden=4, T=120, batch=4, init_scale=1e3)
    for k, v in grows.model.params.items():
        if "bias" in k:
            v[...] = 0.0
    states = subjects.task_subject("adding", cell="irnn", hidden=4, T=120, batch=4,
                                   init_scale=1e10)  # fmt: skip
    finite = subjects.task_subject("adding", cell="rnn", hidden=4, T=120, batch=4)
    return {"gradient": record(grows, np.zeros_like(grows.x)), "states": record(states),
            "finite": record(finite)}  # fmt: skip


def _gradient_records(logged, kinds):
    return [{"step": 10 * (i + 1), "kind": "gradients", **logged[k]} for i, k in enumerate(kinds)]


def _lag_history_figure(monkeypatch, grads, tmp_path):
    """The Figure plot_lag_history draws (kept from save_png), with its PNG written."""
    oracle("matplotlib")
    from rnnlab.diagnostics import plots

    figures = []
    save = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig) or
                        save(fig, path))  # fmt: skip
    plots.plot_lag_history(tmp_path / "lag-history.png", grads)
    assert (tmp_path / "lag-history.png").read_bytes()[:4] == b"\x89PNG"
    return figures[0]


def test_the_lag_history_draws_the_steps_where_the_gradient_overflowed(
        logged_lags, monkeypatch, tmp_path):  # fmt: skip
    """lag-history.png left out every record whose lags were null: a network whose states
    overflowed had no row (the next record's row stretched over its step) and no mark, and
    the lags past a gradient's overflow were blank like lags no sequence reaches. Now the
    overflowing cells are red (never a colour of the scale), with a marker at the first,
    a step whose states overflowed a hatched band across its row, and the factor panel has
    a line at each; all labelled "overflow"."""
    from matplotlib.collections import QuadMesh

    grads = _gradient_records(logged_lags, ["gradient", "states", "finite"])
    k = logged_lags["gradient"]["lags"]["l0"]["norms"].index(None)
    fig = _lag_history_figure(monkeypatch, grads, tmp_path)
    heat, factor = fig.axes[:2]  # (then the colour bar)
    assert heat.get_title() == "l0"
    meshes = [c for c in heat.collections if isinstance(c, QuadMesh)]
    values = next(m for m in meshes if m.get_label() != "overflow").get_array()
    red = next(m for m in meshes if m.get_label() == "overflow").get_array()
    assert values.shape == red.shape == (3, 120)  # one row per record, the overflowing one too
    marked = ~np.ma.getmaskarray(red)
    assert marked[0, k:].all() and not marked[0, :k].any() and not marked[1:].any()
    drawn = ~np.ma.getmaskarray(values) & np.isfinite(np.ma.getdata(values))
    assert drawn[0, :k].all() and not drawn[0, k:].any()  # a null is no value
    assert not drawn[1].any() and drawn[2].all()
    (first,) = [ln for ln in heat.get_lines() if ln.get_label() == "overflow: first lag"]
    assert list(first.get_xdata()) == [k] and list(first.get_ydata()) == [10]
    (band,) = [p for p in heat.patches if p.get_label() == "overflow"]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    assert (ys.min(), ys.max()) == (15, 25)  # the row of step 20 (halfway to its neighbours)
    assert band.get_hatch() == "xx"
    assert [t.get_text() for t in heat.get_legend().get_texts()] == [
        r"overflow: $\|\partial L/\partial h_k\|$ past float64 (◆ its first lag)",
        "overflow: the states past float64, no profile"]  # fmt: skip
    lines = {ln.get_label(): ln for ln in factor.get_lines()}
    assert np.isnan(lines["l0"].get_ydata()[1])  # step 20 has no fitted factor: a gap
    overflow_x = [ln.get_xdata()[0] for ln in factor.get_lines()
                  if ln.get_label() in ("overflow (float64)", "_overflow")]  # fmt: skip
    assert overflow_x == [10, 20]
    assert "overflow (float64)" in [t.get_text() for t in factor.get_legend().get_texts()]


def test_the_lag_history_draws_a_gradient_of_exactly_0_apart_from_no_data(monkeypatch,
                                                                          tmp_path):
    """A zero W_hh passes no gradient back: the logged norms are 1 at lag 0 and exactly 0
    beyond. lag-history.png drew those zeros white, as it draws a lag no sequence reaches
    (step 20's lags past its "lags_reached"). They are grey now (a mesh labelled "zero"),
    and the legend names the grey and, beside it, the white."""
    from matplotlib.collections import QuadMesh

    from rnnlab.diagnostics.plots import ZERO_COLOR

    sub = subjects.task_subject("adding", cell="rnn", hidden=4, T=6, batch=4)
    sub.model.params["0.weight_hh_l0"][...] = 0.0
    g = {k: np.zeros_like(v) for k, v in sub.model.params.items()}
    zeros = training.training_record(sub.model, sub.x, sub.lengths, g, g, True)
    assert zeros["lags"]["l0"]["norms"][1:] == [0.0] * 5 and zeros["lags_reached"] == 6
    short = {"lags": {"l0": {"norms": [1.0, 0.5, 0.25, None, None, None],
                             "factor_per_step": 0.5}}, "lags_reached": 3}  # fmt: skip
    grads = [{"step": 10, "kind": "gradients", **zeros}, {"step": 20, "kind": "gradients",
                                                          **short}]  # fmt: skip
    heat = _lag_history_figure(monkeypatch, grads, tmp_path).axes[0]
    meshes = {m.get_label(): m for m in heat.collections if isinstance(m, QuadMesh)}
    grey = meshes["zero"]
    assert (~np.ma.getmaskarray(grey.get_array())).tolist() == [[False] + [True] * 5,
                                                                [False] * 6]  # fmt: skip
    assert grey.get_cmap().colors == [ZERO_COLOR]
    values = next(m for k, m in meshes.items() if k != "zero").get_array()
    drawn = ~np.ma.getmaskarray(values) & np.isfinite(np.ma.getdata(values))
    assert drawn.tolist() == [[True] + [False] * 5, [True] * 3 + [False] * 3]
    assert [t.get_text() for t in heat.get_legend().get_texts()] == [
        r"$\|\partial L/\partial h_k\|$ exactly 0: vanished",
        "white: a lag no sequence reaches (no data)"]  # fmt: skip


def test_the_lag_history_of_a_run_whose_every_record_overflowed(logged_lags, monkeypatch,
                                                                tmp_path):
    """Every record's lags null (the states overflowed at every logged step): plot_run wrote
    no lag-history.png at all. Now it is a figure of hatched rows that says so."""
    grads = _gradient_records(logged_lags, ["states"] * 3)
    fig = _lag_history_figure(monkeypatch, grads, tmp_path)
    heat, factor = fig.axes
    assert heat.get_title() == "recurrent layer"
    assert [p.get_label() for p in heat.patches] == ["overflow"] * 3
    assert "the recurrent states overflowed" in " ".join(t.get_text() for t in heat.texts)
    assert [t.get_text() for t in factor.texts] == ["no fitted factor at any step"]
    assert len([ln for ln in factor.get_lines() if "overflow" in ln.get_label()]) == 3
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {}, "model": {}}')
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grads))
    assert [p.name for p in report.plot_run(run, tmp_path / "p")] == [
        "grad-norm.png", "grad-layers.png", "lag-history.png"]  # fmt: skip


def test_plot_names_the_steps_whose_gradient_overflowed(logged_lags, tmp_path, capsys):
    """`rnnlab plot` printed the PNGs' paths and nothing of an overflow in metrics.jsonl."""
    oracle("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {}, "model": {}}')
    grads = _gradient_records(logged_lags, ["finite", "gradient", "finite", "states"])
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grads))
    assert plot_command.main([str(run)]) == 0
    out = capsys.readouterr()
    assert out.err == (
        "rnnlab: warning: the gradient overflowed float64 (exploding) at 2 of the 4 steps that "
        "log a lag profile, first at step 20 (l0: ‖∂L/∂h_k‖ overflows float64 from lag 117: "
        "exploding), last at step 40; lag-history.png marks them\n")
    assert Path(out.out.split()[-1]).name == "lag-history.png"
    grads = _gradient_records(logged_lags, ["finite", "finite"])
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grads))
    assert plot_command.main([str(run)]) == 0
    assert capsys.readouterr().err == ""


def test_the_end_of_train_names_the_steps_whose_gradient_overflowed(logged_lags, tmp_path,
                                                                     capsys, monkeypatch):
    """The end of `rnnlab train` plots the run as `rnnlab plot` does but said nothing of the
    overflows it logged; now it warns as `rnnlab plot` does, once, under --quiet too (which
    hides the progress bar alone). The records are what training_record wrote for a network
    whose gradient overflows, logged by a real run."""
    oracle("matplotlib")
    logs = iter(["finite", "gradient", "finite", "states"])
    monkeypatch.setattr(training, "gradient_log",
                        lambda *args: logged_lags[next(logs)])  # fmt: skip
    run = tmp_path / "run"
    argv = ["train", "adding", "--T", "6", "--steps", "8", "--grad-log-every", "2",
            "--hidden", "3", "--batch-size", "3", "--run-dir", run, "--quiet"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    out = capsys.readouterr()
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r.get("kind") == "gradients"] == [2, 4, 6, 8]  # fmt: skip
    warning = (
        "rnnlab: warning: the gradient overflowed float64 (exploding) at 2 of the 4 steps that "
        "log a lag profile, first at step 4 (l0: ‖∂L/∂h_k‖ overflows float64 from lag 117: "
        "exploding), last at step 8; lag-history.png marks them\n")
    assert out.err.count("rnnlab: warning:") == 1 and out.err.endswith(warning)
    assert "lag-history.png" in out.out.split("plots: ")[1]
    logs = iter(["finite"] * 4)
    assert cli.main([str(a) for a in argv[:-3] + ["--run-dir", tmp_path / "finite"]]) == 0
    assert "rnnlab: warning" not in capsys.readouterr().err


def test_lag_history_tells_an_overflow_from_a_lag_no_sequence_reaches():
    """A null before "lags_reached" is an overflow, one past it a lag no sequence of the batch
    is long enough for; a record logged before "lags_reached" existed says where the overflow
    starts only in its "lag_overflow"; a record without lags or overflow is no row."""
    said = "l0: ‖∂L/∂h_k‖ overflows float64 from lag 2: exploding"
    entry = {"l0": {"norms": [1.0, 1e300, None, None], "factor_per_step": 1e300}}
    grads = [
        {"step": 1, "kind": "gradients", "lags": entry, "lags_reached": 3, "lag_overflow": said},
        {"step": 2, "kind": "gradients", "lags": entry, "lag_overflow": said},
        {"step": 3, "kind": "gradients", "lags": entry, "lags_reached": 2},
        {"step": 4, "kind": "gradients", "lags": None},
    ]
    h = training.lag_history(grads)
    assert list(h.steps) == [1, 2, 3] and h.names == ["l0"]
    assert h.overflow["l0"].tolist() == [[False, False, True, False],
                                         [False, False, True, True],
                                         [False, False, False, False]]  # fmt: skip
    assert h.overflowed.tolist() == [True, True, False]
    assert training.lag_history(grads[3:]) is None
    assert training.lag_history(grads[2:]).overflow_note() is None


def test_the_overflow_note_names_a_step_past_a_million_as_logged():
    """The note formatted the steps with :g, six significant digits: step 1234567 was said
    as 1.23457e+06 (and 1000000 as 1e+06)."""
    said = "l0: ‖∂L/∂h_k‖ overflows float64 from lag 1: exploding"
    entry = {"l0": {"norms": [1.0, None], "factor_per_step": None}}
    grads = [{"step": s, "kind": "gradients", "lags": entry, "lags_reached": 2,
              "lag_overflow": said} for s in (1000000, 1234567)]  # fmt: skip
    note = training.lag_history(grads).overflow_note()
    assert note.endswith("first at step 1000000 (l0: ‖∂L/∂h_k‖ overflows float64 from lag 1: "
                         "exploding), last at step 1234567")  # fmt: skip


def test_loss_of_a_diverging_model_is_nan_without_warnings():
    """Far along a direction an IRNN overflows: the slice gets NaN, not a warning or inf."""
    from rnnlab import diagnostics as dg

    sub = subjects.task_subject("adding", cell="irnn", hidden=3, T=50, batch=2)
    model = dg_model.float64_model(sub.model)
    theta = {k: v.copy() for k, v in model.params.items()}
    loss_fn = analyses._task_loss_fn(sub, model)
    s = dg.loss_slice(loss_fn, theta, "0.bias_hh_l0", np.array([0.0, 1e3, 1e36, 1e200, 1e300]))
    assert np.isfinite(s.losses[:3]).all() and np.isnan(s.losses[-1])  # float64 goes far


def test_cliff_when_the_gradient_overflows(tmp_path, capsys, monkeypatch):
    real = analyses._task_gradient

    def overflowing(subject, model):
        assert real(subject, model) is not None
        return None  # what _task_gradient says of a gradient that overflows

    monkeypatch.setattr(analyses, "_task_gradient", overflowing)
    s, _ = run_json(
        capsys, "adding", "--cell", "rnn", *TINY, "--analyses", "cliff", "--out", tmp_path
    )
    check_outputs(s, tmp_path, ["cliff"])
    assert s["analyses"]["cliff"]["clip"] is None
    assert "the output or the gradient overflows even in float64" in s["verdicts"]["cliff"]


@pytest.mark.parametrize("loss", ["task", "last"])
def test_states_that_overflow_float64_are_exploding_not_vanished(tmp_path, capsys, loss):
    """W_hh = 1e10·I: the IRNN's states overflow float64 after 33 steps, and a gradient
    through NaN states reads as 0 (φ'(NaN) = 0): the lag profile, the map and the Jacobian
    said "too few non-zero values" of an exploding network. They say it overflows."""
    args = ["adding", "--cell", "irnn", "--init-scale", "1e10", "--T", "40", "--hidden", "4",
            "--batch", "4", "--analyses", "lag,map,jacobian,spectrum", "--loss", loss]  # fmt: skip
    s, _ = run_json(capsys, *args, "--out", tmp_path)
    said = "the recurrent layer's states overflow float64 after 33 of its 40 steps: exploding"
    for name in ("lag", "map", "jacobian"):
        assert s["verdicts"][name].startswith(said), name
        assert s["analyses"][name]["layers"] is None and s["analyses"][name]["png"] == []
        assert json.loads((tmp_path / f"{name}.json").read_text())["overflow"]
    assert s["analyses"]["spectrum"]["png"]  # the weights' own analysis goes on


def test_a_map_whose_gradient_overflows_float64_says_which_cells_without_warnings(
        tmp_path, capsys):  # fmt: skip
    """W_hh = 2e34·I (an IRNN) over 10 steps: the states stay finite, ∂L_9/∂h_0 passes
    float64. The map analysis raised NumPy's RuntimeWarning (an error under pytest; the CLI
    hid it) and its fit left the cell out without a word ("fitted over lags 0–8"). Now the
    verdict, summary.json and map.json say which cell overflowed and that the fit leaves it
    out, without a warning."""
    sub = subjects.task_subject("adding", cell="irnn", hidden=4, T=10, batch=4,
                                init_scale=2e34)  # fmt: skip
    outcome = analyses.analyse_map(sub)  # (under pytest a warning here is an error)
    args = ["adding", "--cell", "irnn", "--init-scale", "2e34", "--T", "10", "--hidden", "4",
            "--batch", "4", "--analyses", "map"]  # fmt: skip
    s, err = run_json(capsys, *args, "--out", tmp_path)
    assert s["verdicts"]["map"] == outcome.verdict and s["verdicts"]["map"].endswith(
        "fitted over lags 0–8): exploding; overflows float64 (exploding) in 1 of its 100 "
        "cells, (t, k) = (9, 0), at lag 9; the fit leaves it out")
    l0 = s["analyses"]["map"]["layers"]["l0"]
    assert l0["overflow_cells"] == 1 and l0["overflow_lags"] == [9]
    assert l0["trend"] == "exploding"
    details = json.loads((tmp_path / "map.json").read_text())
    assert details["norms"][0][9][0] is None and details["counts"][9][0] == 4
    assert [(t, k) for t, row in enumerate(details["overflow"][0])
            for k, v in enumerate(row) if v] == [(9, 0)]  # fmt: skip
    assert "Warning" not in err


def test_where_the_states_overflow_is_counted_in_each_directions_order():
    """A bidirectional layer: the reverse direction's states overflow after as many steps
    of its own (from the sequence's end), and the earliest of the directions is said."""
    from rnnlab.layers import RNN

    layer = RNN(1, 1, nonlinearity="relu", bidirectional=True, dtype=np.float64, rng=0)
    for name in ("weight_hh_l0", "weight_hh_l0_reverse"):
        layer.params[name][...] = 1e200
    for name in ("weight_ih_l0", "weight_ih_l0_reverse"):
        layer.params[name][...] = 1.0
    for name in [k for k in layer.params if k.startswith("bias")]:
        layer.params[name][...] = 0.0

    def said(*ones):
        x = np.zeros((1, 6, 1))
        x[0, list(ones)] = 1.0
        with np.errstate(all="ignore"):
            return dg_model.state_overflow(layer.forward(x))

    # forward: h = 1 at step 1, 1e200 at 2, inf at 3: after 4 steps; reverse: finite
    assert said(1) == "the recurrent layer's states overflow float64 after 4 of its 6 steps"
    # reverse (5, 4, 3, 2, ...): 1 at step 4, 1e200 at 3, inf at 2: after 4 of its steps;
    # forward: 1 at 4, 1e200 at 5: finite
    assert said(4).endswith("after 4 of its 6 steps")
    assert said(0, 4).endswith("after 3 of its 6 steps")  # forward's 3 before reverse's 4
    assert said(1, 5).endswith("after 3 of its 6 steps")  # reverse's 3 (5, 4, 3 = inf)
    with np.errstate(all="ignore"):
        assert dg_model.state_overflow(layer.forward(np.zeros((1, 6, 1)))) is None


def test_an_output_that_overflows_float32_is_analysed_in_float64(tmp_path, capsys):
    """The exploding regime gradflow exists to show: an IRNN with W_hh = 100·I overflows
    float32 within 30 steps, not float64; its lag profile grows ×100 a step."""
    args = ["adding", "--cell", "irnn", "--init-scale", "100", "--T", "30", "--hidden", "8",
            "--batch", "4", "--analyses", "lag,cliff"]  # fmt: skip
    s, _ = run_json(capsys, *args, "--out", tmp_path / "a")
    l0 = s["analyses"]["lag"]["layers"]["l0"]
    assert all(math.isfinite(v) and v > 0 for v in l0["norms"])
    assert 50 < l0["factor_per_step"] < 200 and l0["trend"] == "exploding"
    assert s["analyses"]["cliff"]["clip"]["grad_norm"] > 1e50
    # where even float64 overflows, the verdict says so and the other analyses go on
    args = ["adding", "--cell", "relu", "--init-scale", "1e6", "--T", "30", "--hidden", "8",
            "--batch", "4", "--analyses", "lag,map,cliff"]  # fmt: skip
    s, err = run_json(capsys, *args, "--out", tmp_path / "b")
    assert s["verdicts"]["lag"].startswith("the task's loss overflows even in float64")
    assert s["analyses"]["lag"]["layers"] is None
    assert s["analyses"]["map"]["layers"]["l0"]["trend"] == "exploding"
    assert "the output or the gradient overflows" in s["verdicts"]["cliff"]
    assert "Warning" not in err


def test_gradients_near_float64s_limit_are_plotted_without_them(tmp_path, capsys):
    """Lag values up to ~1e300 made matplotlib's log-axis ticks overflow (an OverflowError
    traceback while drawing lag.png); values beyond 1e±150 are now left out and counted in
    the title, and NumPy's warnings about the infs the verdicts report are not printed."""
    oracle("matplotlib")
    args = ["adding", "--cell", "relu", "--init-scale", "1e9", "--T", "30", "--hidden", "8",
            "--batch", "4", "--analyses", "lag,map,jacobian", "--loss", "last"]  # fmt: skip
    s, err = run_json(capsys, *args, "--out", tmp_path / "c")
    assert s["analyses"]["lag"]["png"] == ["lag.png"] and (tmp_path / "c" / "lag.png").exists()
    assert s["analyses"]["jacobian"]["png"] and s["analyses"]["map"]["png"]
    assert 1e200 < max(s["analyses"]["lag"]["layers"]["l0"]["norms"]) < 1e300  # (left out)
    assert "Warning" not in err


def test_spectrum_names_a_coupled_lstms_blocks_f_g_o(tmp_path, capsys):
    """Three blocks are a GRU's r, z, n or a coupled LSTM's f, g, o: the cell says which."""
    import rnnlab
    from rnnlab import diagnostics as dg

    spec = dg.recurrent_spectrum(rnnlab.LSTM(3, 4, coupled=True))
    assert [b.gate for b in spec.blocks] == ["f", "g", "o"]
    assert spec.blocks[0].name == "weight_hh_l0[f]"
    assert [b.gate for b in dg.recurrent_spectrum(rnnlab.GRU(3, 4)).blocks] == ["r", "z", "n"]
    W = rnnlab.LSTM(3, 4, coupled=True).params["weight_hh_l0"]
    assert [b.gate for b in dg.recurrent_spectrum(W, gates=("f", "g", "o")).blocks] == [
        "f", "g", "o"]  # fmt: skip
    with pytest.raises(ValueError, match=r"`gates` must be 3 gate names"):
        dg.recurrent_spectrum(W, gates=("i", "f"))
    run = tmp_path / "run"
    assert cli.main(["train", "adding", "--cell", "lstm", "--coupled", "--T", "6", "--hidden", "3",
                     "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1",
                     "--eval-every", "2", "--run-dir", str(run), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    s, _ = run_json(capsys, run, "--analyses", "spectrum", "--out", tmp_path / "g")
    names = ["weight_hh_l0[f]", "weight_hh_l0[g]", "weight_hh_l0[o]"]
    assert list(s["analyses"]["spectrum"]["blocks"]) == names
    assert s["analyses"]["spectrum"]["history"]["names"] == ["0." + n for n in names]


def test_a_slice_with_fewer_than_two_finite_slopes_is_undetermined(tmp_path, capsys):
    """Not "smooth": with the loss not finite along the slice there is no slope to judge."""
    from rnnlab import diagnostics as dg

    theta = {"w": np.zeros(2)}
    nan_but_near_zero = lambda p: 1.0 if 0 <= p["w"][0] < 0.6 else float("nan")  # noqa: E731
    s = dg.loss_slice(nan_but_near_zero, theta, "w", np.linspace(-2, 2, 9))  # 1 finite slope
    assert s.undetermined and not s.cliff
    assert s.verdict().endswith(": undetermined: the loss is not finite along the slice")
    assert not dg.loss_slice(lambda p: float(p["w"][0]), theta, "w", [0, 1, 2]).undetermined
    args = ["adding", "--cell", "rnn", "--hidden", "8", "--T", "10", "--batch", "4",
            "--analyses", "cliff", "--cliff-range", "1e300"]  # fmt: skip
    s, _ = run_json(capsys, *args, "--out", tmp_path)
    assert s["analyses"]["cliff"]["random"]["cliff"] is None
    assert ("a random direction (α/‖θ‖): 1 finite value(s) of 81: undetermined: the loss is not "
            "finite along the slice") in s["verdicts"]["cliff"]  # fmt: skip


def test_a_zero_W_hh_says_what_it_means_without_warnings(tmp_path, capsys):
    """W_hh = 0 (a relu RNN scaled by 1e-300): the gradient reaches back one step, the map's
    points all sit at lag 0 and the Jacobian and its bound are both exactly 0."""
    import warnings

    args = ["adding", "--cell", "relu", "--init-scale", "1e-300", "--T", "30", "--hidden", "8",
            "--batch", "4", "--analyses", "map,jacobian"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would end the run here
        s, _ = run_json(capsys, *args, "--out", tmp_path)
    assert s["verdicts"]["map"] == (
        "l0: ‖∂L_t/∂h_k‖: all 30 non-zero values at one lag (0), no rate to fit: undetermined"
    )
    assert s["verdicts"]["jacobian"].endswith(
        "at lag 30 the measured norm and the bound are both exactly 0 (a zero W_hh, or units "
        "with φ′ = 0, pass no gradient back)"
    )


def test_lags_the_gradient_does_not_reach_are_said_not_dropped(tmp_path, capsys):
    """A relu RNN with W_hh = 0: ‖∂L/∂h_k‖ is exactly 0 beyond lag 1. The verdict said
    "max/min over lags 0–29" of the two non-zero lags (the zeros were dropped unsaid)."""
    args = ["adding", "--cell", "relu", "--init-scale", "1e-300", "--T", "30", "--hidden", "8",
            "--batch", "4", "--analyses", "lag", "--loss", "last"]  # fmt: skip
    s, _ = run_json(capsys, *args, "--out", tmp_path)
    l0 = s["analyses"]["lag"]["layers"]["l0"]
    norms = np.array(l0["norms"])
    assert norms[0] > 0 and np.all(norms[1:] == 0)  # h_0 alone reaches the loss of the last
    assert l0["zero_lags"] == list(range(1, 30)) and l0["lag_to_10x"] == 1
    said = s["verdicts"]["lag"]
    assert said.endswith("exactly 0 at 29 of the 30 lags, from lag 1 (no gradient reaches back "
                         "that far)")  # fmt: skip
    # two non-zero lags, then zeros (the review's case): max/min over those two, said so
    args = ["adding", "--cell", "relu", "--T", "30", "--hidden", "2", "--batch", "2",
            "--seed", "0", "--init-scale", "0.5", "--analyses", "lag"]  # fmt: skip
    s, _ = run_json(capsys, *args, "--out", tmp_path / "b")
    l0 = s["analyses"]["lag"]["layers"]["l0"]
    norms = np.array(l0["norms"])
    k = l0["zero_lags"][0]
    assert k >= 2 and np.all(norms[:k] > 0) and np.all(norms[k:] == 0)
    said = s["verdicts"]["lag"]
    assert f"exactly 0 at {30 - k} of the 30 lags, from lag {k}" in said
    assert "over lags 0–29" not in said and "max/min over the lags where it is not 0" in said
    assert l0["max_over_min"] == pytest.approx(norms[:k].max() / norms[:k].min())


def test_lags_the_gradient_overflows_at_are_said_not_dropped():
    """Finite states (zero input and biases) and ‖W_hh‖ ~ 360: ‖∂L/∂h_k‖ overflows float64
    from lag 117 of 120. The lag analysis raised NumPy's overflow (a warning on the command
    line); its summary held null there unsaid, and the verdict gave max/min "over lags
    0–119" of the finite ones. It says where the gradient overflows now."""
    import dataclasses

    sub = subjects.task_subject("adding", cell="rnn", hidden=4, T=120, batch=4, init_scale=1e3)
    for k, v in sub.model.params.items():
        if "bias" in k:
            v[...] = 0.0
    out = analyses.analyse_lag(dataclasses.replace(sub, x=np.zeros_like(sub.x)), "last")
    l0 = out.summary["layers"]["l0"]
    k = l0["norms"].index(None)
    assert l0["overflow_lags"] == list(range(k, 120)) and l0["zero_lags"] == []
    assert f"; overflows float64 at {120 - k} of the 120 lags, from lag {k} (exploding)" \
        in out.verdict  # fmt: skip
    assert "over lags 0–119" not in out.verdict
    assert "max/min over the lags where it is finite = " in out.verdict
    assert l0["max_over_min"] == pytest.approx(max(l0["norms"][:k]) / min(l0["norms"][:k]))


def test_a_task_source_starts_from_what_rnnlab_train_starts_from(tmp_path, capsys):
    """A fresh model from a task name was built from the task's defaults alone, not the
    cell's (rnnlab.tasks.tuned): copy's LSTM got forget bias 1 where `rnnlab train copy`
    starts from 3, and the IRNN's cliff stepped at lr 0.002 where its runs train at 0.01."""
    s, _ = run_json(capsys, "copy", "--T", "5", "--hidden", "8", "--batch", "4",
                    "--analyses", "spectrum", "--out", tmp_path / "a")  # fmt: skip
    assert s["source"]["forget_bias"] == 3.0
    s, _ = run_json(capsys, "adding", "--cell", "irnn", "--T", "10", "--hidden", "8",
                    "--batch", "4", "--analyses", "cliff", "--out", tmp_path / "b")  # fmt: skip
    assert "SGD step (lr 0.01)" in s["verdicts"]["cliff"]


def test_an_output_feedback_run_is_refused_in_words(tmp_path, capsys):
    """gradflow on a jordan run: one sentence, not the model object's repr and an internal
    function's name."""
    run = tmp_path / "j"
    assert cli.main(["train", "copy", "--T", "5", "--cell", "jordan", "--hidden", "8", "--steps",
                 "2", "--batch-size", "4", "--quiet", "--run-dir", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    err = error_of(capsys, "gradflow", run, "--out", tmp_path / "o")
    assert "`model` must be a model of one recurrent layer; got an output-feedback (jordan) " \
        "model instead. The gradient diagnostics do not cover output feedback yet." in err, err
    assert "object at 0x" not in err and "models.build" not in err


def _own_cell_subject(cell):
    """A fresh adding model whose recurrent layer is `cell`'s (what a researcher builds with
    the Python API: the command line builds rnnlab's cells only)."""
    from rnnlab.layers import Recurrent
    from rnnlab.modules import Sequential

    sub = subjects.task_subject("adding", cell="rnn", hidden=3, T=6, batch=3)
    first, *rest = sub.model.modules
    sub.model = Sequential(Recurrent(cell, first.input_size, 3, rng=0), *rest)
    sub.spec["rnn"]["cell"] = sub.source["cell"] = cell.name
    return sub


def test_a_cell_of_one_s_own_through_gradflow(tmp_path, capsys, monkeypatch):
    """Every analysis that applies, gates among them, on a model of a minimal gated unit
    that declares its gates: summary, JSON and PNG name them; without the declaration the
    gates analysis is skipped with the reason, and asked for, refused with it."""
    from helpers import mgu_cell

    from rnnlab import diagnostics as dg

    sub = _own_cell_subject(mgu_cell())
    monkeypatch.setattr(gradflow, "subject_from_args", lambda args: sub)
    summary, _ = run_json(capsys, "adding", "--out", tmp_path / "a")
    check_outputs(summary, tmp_path / "a", ["lag", "map", "jacobian", "spectrum", "gates",
                                            "cliff"])  # fmt: skip
    assert summary["model"]["cell"] == "mgu"
    gates = summary["analyses"]["gates"]
    assert list(gates["layers"]["l0"]) == ["forget", "candidate"]
    detail = json.loads((tmp_path / "a" / "gates.json").read_text())
    assert detail["gates"] == ["f", "n"] and detail["activations"] == ["sigmoid", "tanh"]
    direct = dg.gate_saturation(sub.model.modules[0], sub.x, sub.lengths)
    assert detail["overall_high"] == direct.overall_high.tolist()
    assert gates["layers"]["l0"]["candidate"]["low"] == direct.overall_low[0, 1]
    assert gates["verdict"].startswith("l0: forget (f) near 0 in ")
    assert "candidate (n) near −1 in " in gates["verdict"]

    sub = _own_cell_subject(mgu_cell(declare=False))
    monkeypatch.setattr(gradflow, "subject_from_args", lambda args: sub)
    summary, _ = run_json(capsys, "adding", "--out", tmp_path / "b")
    assert "gates" not in summary["analyses"] and "lag" in summary["analyses"]
    why = "the cell does not say where its gate activations lie (Cell.gate_activations)"
    assert summary["skipped"]["gates"] == why
    err = error_of(capsys, "gradflow", "adding", "--analyses", "gates", "--out", tmp_path / "c")
    assert f"'gates' ({why})" in err


@pytest.mark.parametrize("taken", ["lag.png", "lag.json", "summary.json", "fifo:lag.png"])
def test_an_out_where_a_file_it_writes_is_a_folder_or_fifo_names_out(tmp_path, capsys, taken):
    """gradflow writes NAME.png, NAME.json and summary.json into --out: where one of them is a
    directory (or a FIFO), the writer's check named its own argument, `path`, which the user
    never gave ("`path` must be a file path; got 'out/lag.png', a directory"). Now --out is
    named, with the file, and nothing is written over."""
    out = tmp_path / "out"
    out.mkdir()
    fifo = taken.startswith("fifo:")
    name = taken.removeprefix("fifo:")
    os.mkfifo(out / name) if fifo else (out / name).mkdir()
    err = error_of(capsys, "gradflow", "adding", "--cell", "rnn", "--hidden", "3", "--T", "5",
                   "--batch", "2", "--analyses", "lag", "--out", out)  # fmt: skip
    kind = "a FIFO, device or socket" if fifo else "a directory"
    assert (f"`--out` must be a directory where gradflow can write its {name}; got '{out}', "
            f"where '{name}' is {kind} instead. Move it away, or give another --out.") in err, err
    assert "`path`" not in err
    assert (out / name).is_fifo() if fifo else (out / name).is_dir()
