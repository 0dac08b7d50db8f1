"""The encoder–decoder tasks from the command line: train numbers/dates/caption, resume bit for
bit, Ctrl-C, divergence, evaluate (greedy, beam, baseline), translate and its one-line errors,
the attention plot, and scheduled sampling."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import oracle

from rnnlab import io
from rnnlab.cli import main

oracle("num2words")
oracle("babel")
oracle("sacrebleu")
oracle("editdistance")

TINY = ["--hidden", "8", "--embed", "4", "--batch-size", "4", "--train-size", "64", "--quiet"]


def run_cli(*args):
    return main([str(a) for a in args])


def weights(run):
    tensors, _ = io.load_safetensors(Path(run) / "model.safetensors")
    return tensors


def error_of(capsys, *args):
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("rnnlab: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def small_held_out():
    """Held-out splits of 40 and 60 items instead of 500 and 1000: decoding an untrained
    model runs to its length limit, which would make these tests slow."""
    from rnnlab.tasks import transduction

    with pytest.MonkeyPatch.context() as m:
        m.setitem(transduction.HELD_OUT_SIZE, "valid", 40)
        m.setitem(transduction.HELD_OUT_SIZE, "test", 60)
        yield


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory, small_held_out):
    """A tiny dates run with additive attention and reversed input (trained once)."""
    run = tmp_path_factory.mktemp("s2s") / "dates"
    args = [
        "train",
        "dates",
        "--steps",
        6,
        "--eval-every",
        3,
        "--checkpoint-every",
        3,
        "--attention",
        "additive",
        "--reverse-input",
        "--beam",
        2,
        "--run-dir",
        run,
        *TINY,
        "--train-size",
        2000,
    ]
    assert run_cli(*args) == 0
    return run


def test_tasks_lists_the_encoder_decoder_tasks(capsys):
    assert run_cli("tasks") == 0
    out = capsys.readouterr().out
    for name in ("numbers", "dates", "caption"):
        assert f"\n{name} " in out and "encoder-decoder" in out


@pytest.mark.parametrize(
    "task,extra",
    [
        (
            "numbers",
            [
                "--attention",
                "additive",
                "--attention-size",
                "3",
                "--reverse-input",
                "--teacher-forcing",
                "1.0:0.5",
            ],
        ),
        (
            "dates",
            [
                "--attention",
                "multiplicative",
                "--bidirectional",
                "--layers",
                "2",
                "--cell",
                "gru",
                "--dropout",
                "0.2",
            ],
        ),
        ("caption", ["--attention", "additive", "--cell", "rnn"]),
    ],
)
def test_resume_equals_uninterrupted(tmp_path, task, extra):
    """Cut a run at its step-4 checkpoint, resume it, and get the uninterrupted weights and
    metrics (scheduled sampling and dropout draw from the step's generator too)."""
    common = [*TINY, *extra, "--eval-every", 4, "--checkpoint-every", 4, "--beam", 2]
    assert run_cli("train", task, "--steps", 8, "--run-dir", tmp_path / "a", *common) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.rmtree(ckpts / io.load_checkpoint(tmp_path / "b").path.name)  # lose step 8
    (ckpts / "latest").write_text(io.load_checkpoint(tmp_path / "b", step=4).path.name)
    assert run_cli("train", "--resume", tmp_path / "b", "--quiet") == 0
    assert io.load_checkpoint(tmp_path / "b").step == 8
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("decoder.") for k in a)
    if "--attention-size" in extra:
        assert a["attention.v"].shape == (3,)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ma, mb = ((tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in "ab")

    def untimed(lines):
        return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]

    assert untimed(ma) == untimed(mb)
    assert any(json.loads(x).get("split") == "valid" for x in ma)


def test_the_run_stores_its_alphabets_and_model(dates_run):
    config = json.loads((dates_run / "config.json").read_text())
    data, model = config["data"], config["model"]
    assert set(data["target_chars"]) == set("0123456789-")
    assert set("0123456789äû") <= set(data["source_chars"]) and data["max_target_len"] == 10
    assert len(data["test_sha256"]) == 64
    assert model["type"] == "seq2seq" and model["attention"] == "additive"
    assert config["train"]["reverse_input"] and config["train"]["beam"] == 2
    result = json.loads((dates_run / "result.json").read_text())["test"]
    assert result["beam"]["width"] == 2 and result["baseline"]["name"] == "copy the source"
    assert result["items"] == 60


def test_evaluate_greedy_beam_and_baseline(dates_run, capsys):
    assert run_cli("evaluate", dates_run, "--json", "--beam", 1) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("exact_match", "cer", "bleu", "chrf"):
        assert r["beam"][key] == r[key]  # a beam of width 1 is greedy, exactly
    assert r["baseline"]["exact_match"] == 0.0 and r["baseline"]["chrf"] > 0
    assert run_cli("evaluate", dates_run, "--split", "valid") == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "beam 2" in out and "copy the source" in out
    assert "`--beam` must be a positive integer" in error_of(
        capsys, "evaluate", dates_run, "--beam", 0
    )


def test_translate_and_its_errors(dates_run, tmp_path, capsys, monkeypatch):
    from rnnlab.tasks import transduction as td

    def no_data(*a, **k):
        raise AssertionError("translate must not make data")

    monkeypatch.setattr(td, "dates", no_data)  # the run's stored alphabets are enough
    assert run_cli("translate", dates_run, "7. März 2023") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    # the source after an option too (it was "unrecognized arguments: 7. März 2023")
    assert run_cli("translate", dates_run, "--unknown", "map", "7. März 2023") == 0
    assert capsys.readouterr().out.splitlines() == out
    assert "unrecognized arguments: b (see rnnlab translate -h)" in error_of(
        capsys, "translate", dates_run, "--beam", 5, "a", "b"
    )
    lines = tmp_path / "in.txt"
    lines.write_text("7 March 2023\n07.03.2023\n", encoding="utf-8")
    assert run_cli("translate", dates_run, "--file", lines, "--json", "--beam", 3) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["beam"] == 3 and [t["source"] for t in r["translations"]] == [
        "7 March 2023",
        "07.03.2023",
    ]
    e = error_of(capsys, "translate", dates_run, "7 März 2023 ☃")
    # (named as typed, `text`, the positional argument's name in the usage line: it said
    # `source`, the library's word, which no option or argument of the command is)
    assert "`text` must be characters the model saw in training" in e and "'☃'" in e
    assert "--unknown map" in e
    assert run_cli("translate", dates_run, "7 März 2023 ☃", "--unknown", "map") == 0
    capsys.readouterr()
    assert "got an empty source instead" in error_of(capsys, "translate", dates_run, "")
    lines.write_text("7 March 2023\n\n", encoding="utf-8")
    assert f"`--file` must be non-empty text; got an empty line 2 of {lines}" in error_of(
        capsys, "translate", dates_run, "--file", lines
    )
    assert "`--beam` must be a positive integer (1: greedy); got 0" in error_of(
        capsys, "translate", dates_run, "1 May 2000", "--beam", 0
    )
    assert "a source text or --file" in error_of(capsys, "translate", dates_run)
    assert run_cli("translate", dates_run, "1 May 2000 " * 6) == 0
    err = capsys.readouterr().err
    assert "more than any source in training" in err and "error" not in err


def test_translate_refuses_a_source_of_spaces_alone(dates_run, tmp_path, capsys):
    """A line of spaces (a blank line to the eye, in a file edited by hand) is no source:
    it was decoded into whatever the model writes for nothing, among the real outputs,
    without a word. It is refused as the empty line is, naming the line."""
    assert "got a blank source (white space alone) instead" in error_of(
        capsys, "translate", dates_run, "   "
    )
    lines = tmp_path / "in.txt"
    lines.write_text("7 March 2023\n \n07.03.2023\n", encoding="utf-8")
    assert f"a blank line 2 of {lines} (white space alone)" in error_of(
        capsys, "translate", dates_run, "--file", lines
    )


def test_translate_refuses_runs_without_text_sources(tmp_path, capsys):
    run = tmp_path / "c"
    assert (
        run_cli(
            "train",
            "caption",
            "--steps",
            2,
            "--beam",
            1,
            "--attention",
            "none",
            "--run-dir",
            run,
            *TINY,
        )
        == 0
    )
    assert not (run / "plots" / "attention.png").exists()  # no attention: no plot
    capsys.readouterr()
    assert "a caption run, whose sources are images" in error_of(capsys, "translate", run, "x")
    other = tmp_path / "adding"
    assert (
        run_cli(
            "train",
            "adding",
            "--T",
            5,
            "--steps",
            2,
            "--run-dir",
            other,
            "--hidden",
            4,
            "--batch-size",
            4,
            "--quiet",
        )
        == 0
    )
    capsys.readouterr()
    assert "adding run" in error_of(capsys, "translate", other, "x")
    assert "`--beam` is for numbers, dates and caption runs" in error_of(
        capsys, "evaluate", other, "--beam", 2
    )


def test_attention_plot_by_train_and_by_plot(dates_run, capsys):
    png = dates_run / "plots" / "attention.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    png.unlink()
    assert run_cli("plot", dates_run) == 0
    assert str(png) in capsys.readouterr().out and png.is_file()


def test_attention_examples_follow_the_source_order(dates_run):
    """With reversed input the weights come back in the source's own order: each row of a
    panel is a distribution over the source's characters."""
    from rnnlab import tasks
    from rnnlab.runs import load_run

    _, cfg, model, data = load_run(dates_run)
    task = tasks.make_task(cfg, data)
    examples = task.attention_examples(model, 3)
    x, _, lengths, sources, _ = task._split("test")
    for (src, out, w), s in zip(examples, sources, strict=False):
        assert src == list(s) and w.shape == (len(out), len(s))
        assert np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
    # un-reversing is a flip: the model's own weights on the reversed source, read backwards
    from rnnlab.tasks import transduction as td

    xp = task.prepare(x[:1], lengths[:1])
    assert not np.array_equal(xp, x[:1])
    ids, _ = model.net.greedy(xp, src_lengths=lengths[:1], bos=td.BOS, eos=td.EOS, max_len=11)
    f = model.net.forward(xp, td.teacher_inputs(ids), src_lengths=lengths[:1])
    _, out, w = examples[0]
    alpha = f.cache["head"][1][0][0, : len(out), : lengths[0]]
    assert np.allclose(w, alpha[:, ::-1], rtol=1e-5, atol=1e-7)


def test_a_decoder_that_ranks_padding_or_bos_first_still_writes_symbols(dates_run):
    """PAD and BOS are never targets: decoding chooses among the others. A decoder pushed
    to rank BOS first wrote it everywhere: the text was empty (BOS dropped unsaid) and the
    attention plot's labels were one '</s>' against 11 rows (the seq2seq review)."""
    from rnnlab import tasks
    from rnnlab.runs import load_run
    from rnnlab.tasks import transduction as td

    _, cfg, model, data = load_run(dates_run)
    task = tasks.make_task(cfg, data)
    model.net.params["out.bias"][td.BOS] += 50.0
    model.net.params["out.bias"][td.PAD] += 40.0
    x, _, lengths, _, _ = task._split("test")
    xp = task.prepare(x[:4], lengths[:4])
    assert all(task.decode(model, xp, lengths[:4]))  # greedy: the best of the other ids
    kw = dict(src_lengths=lengths[:4], bos=td.BOS, eos=td.EOS, width=3,
              max_len=2 * task._record["max_target_len"] + 10)  # (as decode)
    ids, _ = model.net.beam_search(xp, never=td.NEVER, **kw)
    assert not np.isin(ids, td.NEVER).any()
    assert np.isin(model.net.beam_search(xp, **kw)[0], td.NEVER).any()  # (without: BOS)
    want = task.target_codec.decode(ids)
    assert task.decode(model, xp, lengths[:4], beam=3) == want
    for _, out, w in task.attention_examples(model, 3):
        assert w.shape[0] == len(out) and "</s>" not in out[:-1]


def test_a_bad_beam_is_refused_by_evaluate_and_decode_before_any_decoding(dates_run,
                                                                          monkeypatch):
    """evaluate(beam=0) decoded the whole split greedily, then stopped on Python's
    ZeroDivisionError (DECODE_BATCH // 0); 2.5 on a TypeError of a float slice; True was
    decoded as a beam of width 1 (the seq2seq review). Now each is named before any
    decoding."""
    from rnnlab import tasks
    from rnnlab.runs import load_run

    _, cfg, model, data = load_run(dates_run)
    task = tasks.make_task(cfg, data)
    x, _, lengths, _, _ = task._split("valid")

    def no_decoding(*a, **k):
        raise AssertionError("decoded before the beam was checked")

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"`beam` must be a positive integer \(1: greedy\)"):
            task.decode(model, x[:2], lengths[:2], bad)
        with monkeypatch.context() as m:
            m.setattr(model.net, "greedy", no_decoding)
            with pytest.raises(ValueError, match=r"`beam` must be a positive integer"):
                task.evaluate(model, "valid", beam=bad)
    assert task.decode(model, x[:2], lengths[:2], np.int64(2)) == task.decode(
        model, x[:2], lengths[:2], 2
    )


def test_translate_pads_no_short_source_to_a_long_ones_length(dates_run, monkeypatch):
    """translate decodes shortest first, in batches of at most as many characters as 250
    sources of training's longest (a source longer than that alone): in the order given,
    one long line padded every source of its batch of 250 to its length (5,200 characters
    among 249 short lines: 2.9 GB at the peak, against 0.18 GB; the seq2seq review). The
    outputs come back in the order given, each what the source gets decoded alone."""
    from rnnlab import tasks
    from rnnlab.runs import load_run
    from rnnlab.tasks import transduction as td

    _, cfg, model, data = load_run(dates_run)
    task = tasks.make_task(cfg, data)
    sources = task._split("test")[3]
    texts = list(sources[:12])
    texts.insert(5, " ".join(sources[12:60]) * 2)  # longer than any source of training
    # (a batch holds at most as many characters as 250 sources of training's longest)
    budget = td.DECODE_BATCH * task._record["max_source_len"]
    assert len(texts) * len(texts[5]) > budget
    shapes = []
    decode = task._decode  # (decode's texts, and whether each ended)

    def recorded(model, x, lengths, beam=1):
        shapes.append(x.shape)
        return decode(model, x, lengths, beam)

    monkeypatch.setattr(task, "_decode", recorded)
    for beam in (1, 3):
        shapes.clear()
        out = task.translate(model, texts, beam=beam, unknown="map")
        assert sorted(shapes) == sorted([(12, max(map(len, texts[:5] + texts[6:]))),
                                         (1, len(texts[5]))])  # fmt: skip
        shapes.clear()
        assert out == [task.translate(model, [t], beam=beam, unknown="map")[0] for t in texts]


def test_bad_settings_for_the_encoder_decoder_tasks(tmp_path, capsys):
    assert "`--cell` must be one of rnn" in error_of(capsys, "train", "dates", "--cell", "jordan")
    assert "`--bptt` must be 0 (full BPTT" in error_of(capsys, "train", "dates", "--bptt", 5)
    assert "`--proj-size` must be 0" in error_of(capsys, "train", "dates", "--proj-size", 4)
    assert "`--beam` must be a positive integer" in error_of(capsys, "train", "dates", "--beam", 0)
    assert "invalid choice: 'dot'" in error_of(capsys, "train", "dates", "--attention", "dot")
    assert (
        run_cli(
            "train",
            "adding",
            "--T",
            4,
            "--steps",
            1,
            "--attention",
            "additive",
            "--hidden",
            4,
            "--batch-size",
            2,
            "--quiet",
            "--run-dir",
            tmp_path / "a",
        )
        == 0
    )
    assert "`attention` is for the encoder-decoder tasks" in capsys.readouterr().err
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({**tasks.defaults("caption"), "dropout": 0.2})
    assert "with one layer it does nothing" in " ".join(cfg.without_effect({"dropout"}))
    cfg.layers = 2
    assert not cfg.without_effect({"dropout"})


def test_divergence_stops_with_the_step_and_a_remedy(tmp_path, capsys):
    code = run_cli(
        "train",
        "dates",
        "--cell",
        "relu",
        "--lr",
        "1e6",
        "--clip",
        "none",
        "--optimizer",
        "sgd",
        "--steps",
        30,
        "--run-dir",
        tmp_path / "r",
        *TINY,
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "at step" in err and "clipping" in err and "learning rate" in err


def test_ctrl_c_saves_a_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "r"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [
        "train",
        "dates",
        "--steps",
        "100000",
        "--checkpoint-every",
        "100000",
        "--eval-every",
        "100000",
        "--beam",
        "1",
        "--run-dir",
        str(run),
        *TINY,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    step = io.load_checkpoint(run).step
    assert step >= 10
    assert main(["train", "--resume", str(run), "--steps", str(step + 2), "--quiet"]) == 0
    assert io.load_checkpoint(run).step == step + 2


def test_scheduled_sampling_mixes_truth_and_the_models_draws():
    from rnnlab.seq2seq import Seq2Seq
    from rnnlab.tasks import transduction as td
    from rnnlab.tasks.transduction import Trainee

    rng = np.random.default_rng(0)
    model = Trainee(Seq2Seq(9, 12, embed=4, hidden=6, attention="multiplicative", rng=0))
    src = rng.integers(4, 9, (64, 5))
    y = rng.integers(4, 12, (64, 7))
    y[:, -1] = td.EOS
    truth = td.teacher_inputs(y)
    for p, low, high in ((1.0, 1.0, 1.0), (0.5, 0.35, 0.8), (0.0, 0.0, 0.3)):
        mixed = model.scheduled_inputs(src, None, truth, p, np.random.default_rng(1))
        assert (mixed[:, 0] == td.BOS).all()
        kept = (mixed[:, 1:] == truth[:, 1:]).mean()
        assert low <= kept <= high, (p, kept)
    # the forward pass of a training step reads the mixed inputs: its logits differ from
    # teacher forcing, and the teacher-forced pass over those inputs is the same computation
    f_mix = model.forward(src, targets=y, training=True, teacher=0.0, rng=np.random.default_rng(2))
    mixed = model.scheduled_inputs(src, None, truth, 0.0, np.random.default_rng(2))
    f_tf = model.net.forward(src, mixed, tgt_lengths=np.full(64, 7))
    assert np.array_equal(f_mix.output, f_tf.output)
    assert not np.array_equal(model.forward(src, targets=y).output, f_mix.output)


def test_scheduled_sampling_never_feeds_the_decoder_pad_or_bos():
    """The decoders never emit PAD or BOS (transduction.NEVER); a scheduled-sampling draw fed
    them as inputs (74 of 640 positions on an untrained dates model, p = 0)."""
    from rnnlab.seq2seq import Seq2Seq
    from rnnlab.tasks import transduction as td

    rng = np.random.default_rng(0)
    model = td.Trainee(Seq2Seq(9, 12, embed=4, hidden=6, attention="additive", rng=0))
    src = rng.integers(4, 9, (64, 5))
    y = rng.integers(4, 12, (64, 7))
    y[:, -1] = td.EOS
    for seed in range(3):
        fed = model.scheduled_inputs(src, None, td.teacher_inputs(y), 0.0,
                                     np.random.default_rng(seed))  # fmt: skip
        assert (fed[:, 0] == td.BOS).all()
        assert not np.isin(fed[:, 1:], td.NEVER).any(), seed


def test_a_scheduled_sampling_draw_leaves_pad_and_bos_out_and_changes_no_other_draw():
    """transduction._draw: where the inverse-CDF draw of the full distribution fell on
    another token, the same token (the generator read as before); where it fell on PAD or
    BOS, a token of the others in their proportions, so the draws follow the distribution
    with PAD and BOS zeroed and the rest scaled to sum to 1."""
    from rnnlab.tasks import transduction as td

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(7, 0.7), size=40)
    probs[:, :2] *= 4  # PAD and BOS likely
    probs /= probs.sum(axis=-1, keepdims=True)
    u = rng.random((40, 1))
    before = np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), 6)  # (the draw of old)
    drawn = td._draw(probs, u)
    assert np.isin(before, td.NEVER).sum() >= 5  # (the case is tried)
    assert not np.isin(drawn, td.NEVER).any()
    kept = ~np.isin(before, td.NEVER)
    assert np.array_equal(drawn[kept], before[kept])
    # one row, u on a grid of [0, 1): each token's share is its probability without PAD and
    # BOS, to the grid's resolution
    n = 200_000
    row = probs[:1].repeat(n, axis=0)
    grid = ((np.arange(n) + 0.5) / n)[:, None]
    shares = np.bincount(td._draw(row, grid), minlength=7) / n
    want = np.concatenate([[0, 0], probs[0, 2:] / probs[0, 2:].sum()])
    np.testing.assert_allclose(shares, want, atol=3 / n)
    # a row whose PAD and BOS hold everything (or nothing), and u = 0 exactly: EOS or later
    edge = np.array([[0.5, 0.5, 0, 0, 0, 0, 0], [0, 0, 0.2, 0.2, 0.2, 0.2, 0.2]])
    assert (td._draw(edge, np.zeros((2, 1))) >= 2).all()
    assert (td._draw(edge, np.full((2, 1), 0.4)) >= 2).all()


def test_commands_that_do_not_cover_encoder_decoders_say_so(dates_run, capsys):
    assert "a dates run, an encoder-decoder" in error_of(capsys, "export", dates_run)
    assert "a dates run, an encoder-decoder" in error_of(capsys, "gradflow", dates_run)
    assert "'numbers', an encoder-decoder task" in error_of(capsys, "gradflow", "numbers")
    assert "must be a charlm run" in error_of(capsys, "sample", dates_run)
