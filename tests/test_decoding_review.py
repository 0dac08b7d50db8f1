"""A review of generation and decoding (2026-12-06): `rnnlab translate` and its task method
refuse sources that are not text (bytes of the command line that are not UTF-8, a str where
a list is asked for, non-str items), and beam search's scores are the model's own sums of
log-probabilities."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import oracle

from rnnlab.cli import main

oracle("num2words")
oracle("sacrebleu")
oracle("editdistance")

TINY = ["--hidden", "8", "--embed", "4", "--batch-size", "4", "--train-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def numbers_run(tmp_path_factory):
    """A tiny numbers run (two steps; small held-out splits, as test_translation_cli's)."""
    from rnnlab.tasks import transduction

    run = tmp_path_factory.mktemp("decoding") / "numbers"
    with pytest.MonkeyPatch.context() as m:
        m.setitem(transduction.HELD_OUT_SIZE, "valid", 8)
        m.setitem(transduction.HELD_OUT_SIZE, "test", 8)
        assert main(["train", "numbers", "--steps", "2", "--run-dir", str(run), *TINY]) == 0
    return run


def _loaded(run):
    from rnnlab import runs, tasks

    _, cfg, model, data = runs.load_run(run)
    return tasks.make_task(cfg, data), model


def test_translate_refuses_a_command_line_byte_that_is_not_utf8(numbers_run):
    """The byte 0xff reaches Python as U+DCFF: it was refused as a character never seen,
    shown as '\\udcff', and with --unknown map translated, the raw byte then written into
    --json's output, which was no longer UTF-8."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for extra in ([], ["--unknown", "map", "--json"]):
        p = subprocess.run([sys.executable, "-m", "rnnlab", "translate", str(numbers_run),
                            b"one\xff", *extra], capture_output=True, env=env)  # fmt: skip
        err = p.stderr.decode()
        assert p.returncode == 2, (p.stdout, err)
        assert p.stdout == b""
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "the byte 0xff, which is not UTF-8, at character 3 of source" in err, err


def test_translate_the_method_refuses_what_is_not_a_list_of_texts(numbers_run):
    task, model = _loaded(numbers_run)
    # a str was translated character by character, each its own source
    with pytest.raises(ValueError, match=r"`texts` must be a list of source texts"):
        task.translate(model, "one", beam=1)
    with pytest.raises(ValueError, match=r"`texts` must be a list"):
        task.translate(model, (t for t in ["one"]), beam=1)
    for bad, said in ((b"one", "bytes"), (7, "7"), (None, "None")):
        with pytest.raises(ValueError, match=r"`source` must be a str; got .*" + said):
            task.translate(model, ["two", bad], beam=1)
    with pytest.raises(ValueError, match=r"`source` must be valid Unicode text; got the lone "
                       r"surrogate U\+D800 at character 1 of source 1"):  # fmt: skip
        task.translate(model, ["o\ud800ne"], beam=1, unknown="map")
    with pytest.raises(ValueError, match=r"`where` must be one name for each of the 2 texts"):
        task.translate(model, ["one", "two"], beam=1, where=["a"])
    assert task.translate(model, ("one",), beam=1) == task.translate(model, ["one"], beam=1)


def test_translate_json_is_utf8_and_names_the_beam(numbers_run, capsys):
    assert main(["translate", str(numbers_run), "one", "--json", "--beam", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["beam"] == 2 and out["translations"][0]["source"] == "one"


def test_beam_scores_are_the_models_log_probabilities_and_width_one_is_greedy(numbers_run):
    """Each winner's score, recomputed by a teacher-forced pass over its ids (PAD and BOS
    left out of the distribution, as the task decodes), to its EOS."""
    from rnnlab.tasks.transduction import BOS, EOS, NEVER, teacher_inputs

    task, model = _loaded(numbers_run)
    net = model.net
    texts = ["one", "twenty-three", "nine hundred and ninety-nine thousand"]
    x, lengths = task.source_codec.encode(texts, eos=False, unknown="map")
    kw = dict(src_lengths=lengths, bos=BOS, eos=EOS, max_len=12, never=NEVER)
    greedy, _ = net.greedy(x, **kw)
    one, _ = net.beam_search(x, width=1, **kw)
    np.testing.assert_array_equal(one, greedy)
    for width in (1, 3, net.target_vocab):
        ids, scores = net.beam_search(x, width=width, alpha=0.0, **kw)
        f = net.forward(x, teacher_inputs(ids), src_lengths=lengths, grad=False)
        z = f.output.astype(np.float64)
        z[..., list(NEVER)] = -np.inf
        z -= z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        for b in range(len(texts)):
            n = int(np.argmax(ids[b] == EOS)) + 1 if (ids[b] == EOS).any() else ids.shape[1]
            assert logp[b, np.arange(n), ids[b, :n]].sum() == pytest.approx(scores[b], abs=1e-4)


def _ascii_stdout(monkeypatch):
    import io

    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    return out


def test_a_stdout_that_cannot_write_the_text_is_said_as_such(numbers_run, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    """Python's own words, "'ascii' codec can't encode character...", named neither the
    standard output nor a remedy; nothing is written either way."""
    text = tmp_path / "snow.txt"
    text.write_text("a snowman \u2603 and a b c.\n" * 200, encoding="utf-8")
    charlm = tmp_path / "charlm"
    assert main(["train", "charlm", "--data", str(text), "--steps", "1", "--hidden", "4",
                 "--seq-len", "8", "--batch-size", "2", "--run-dir", str(charlm),
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    cases = (
        (["sample", str(charlm), "--prime", "a \u2603", "--length", "3"], "2 of the sample"),
        (["translate", str(numbers_run), "on\u00e9", "--unknown", "map", "--json"],
         "of the JSON output"),
    )
    for argv, where in cases:
        out = _ascii_stdout(monkeypatch)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("rnnlab: error: standard output's encoding, ascii, cannot write"), err
        assert where in err and "PYTHONIOENCODING=utf-8" in err, err
        out.flush()
        assert out.buffer.getvalue() == b""


@pytest.mark.parametrize("beam", [1, 3])
def test_translate_says_when_an_output_is_cut_at_the_length_limit(numbers_run, capsys, beam):
    """An output that never produced EOS was printed as if whole (an untrained model's 142
    letters of "enderteunder..."), without a word."""
    from rnnlab.tasks.transduction import EOS

    task, model = _loaded(numbers_run)
    bias = model.net.params["out.bias"]
    bias[...] = 0
    bias[5] = 50.0  # a letter, always: no output ends
    limit = task.max_output_len()
    texts = ["one", "two", "three", "four", "five"]
    out = task.translate(model, texts, beam=beam)
    assert all(len(o) == limit for o in out)
    err = capsys.readouterr().err
    assert err == (f"rnnlab: warning: the outputs of source 1, source 2, source 3 and 2 more "
                   f"reached the length limit ({limit} symbols) without ending; they are cut "
                   "there\n")  # fmt: skip
    task.translate(model, ["one"], beam=beam, where=["line 4 of F"])
    assert "the output of line 4 of F reached the length limit" in capsys.readouterr().err
    bias[EOS] = 100.0  # EOS first, always: every output ends, empty
    assert task.translate(model, texts, beam=beam) == [""] * 5
    assert capsys.readouterr().err == ""


def test_beam_search_of_a_sure_decoder_is_no_floating_point_error():
    """A logit more than 103 below the best, in float32, underflows in the log-softmax's exp:
    0, the right answer, but under np.seterr(all="raise") (the tests') a FloatingPointError
    stopped decoding; greedy decoding and sampling were not stopped."""
    from rnnlab.seq2seq import Seq2Seq

    assert np.geterr()["under"] == "raise"  # (tests/conftest.py)
    m = Seq2Seq(5, 6, embed=3, hidden=4, cell="gru", rng=0)
    m.params["out.bias"][...] = [0, 0, 0, 0, 0, 200]
    src = np.array([[1, 2, 3]])
    kw = dict(bos=0, eos=1, max_len=3)
    greedy, _ = m.greedy(src, **kw)
    ids, scores = m.beam_search(src, width=2, **kw)
    np.testing.assert_array_equal(ids, greedy)
    np.testing.assert_array_equal(ids, [[5, 5, 5]])
    assert scores[0] == 0.0  # (every other id's probability is 0 in float32)
