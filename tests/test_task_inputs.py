"""What the tasks read and what the commands on a trained run take: FIFOs, byte-order marks,
empty options, vocabularies a run must keep, primes, and the n-gram baselines beside a
charlm score. Every case ends in a result or one `rnnlab: error:` line naming the option or
file, never a hang (each case is stopped after a minute) or a silently wrong result."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import hang_guard

from rnnlab.cli import main

TINY = ["--hidden", "8", "--embed", "4", "--batch-size", "4", "--quiet"]
INTERNAL = ("Traceback", "KeyError", "IndexError", "TypeError", "AttributeError",
            "UnicodeEncodeError", "MemoryError", "codec")  # fmt: skip


@pytest.fixture(autouse=True)
def no_hang():
    """Opening a FIFO for reading blocks until a writer comes: a case that waits a minute
    has hung (the alarm interrupts the blocked open and fails the case)."""
    with hang_guard(60):
        yield


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def error_of(capsys, *args) -> str:
    """The one line `rnnlab ARGS` fails with (warnings before it aside). A train command
    gets a run directory of its own, so that a start wrongly accepted (by an older rnnlab)
    trains there rather than in ./runs, and a refused one must leave none behind."""
    scratch = Path(tempfile.mkdtemp())
    run = scratch / "run"
    try:
        code = run_cli(*args, *(["--run-dir", run] if args[0] == "train" else []))
    except SystemExit as e:  # argparse's usage and its many lines
        code = e.code
    finally:
        left = run.exists()
        shutil.rmtree(scratch)
    err = capsys.readouterr().err
    assert not left, err
    lines = [line for line in err.splitlines() if not line.startswith("rnnlab: warning:")]
    assert code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    assert not any(word in err for word in INTERNAL), err
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    words = "the quick brown fox jumps over lazy dog.\n".split(" ")
    rng = random.Random(0)  # not periodic: valid and test differ
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm(tmp_path_factory, corpus):
    """A tiny charlm run."""
    run = tmp_path_factory.mktemp("lm") / "run"
    argv = ["train", "charlm", "--data", corpus, "--steps", 2, "--seq-len", 16]
    assert run_cli(*argv, "--run-dir", run, *TINY) == 0
    return run


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


# ------------------------------------------------------------------ files that are not files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_an_input_file_is_refused_not_waited_on(capsys, fifo, lm):
    for argv in (["train", "--config", fifo], ["train", "charlm", "--data", fifo, *TINY],
                 ["evaluate", lm, "--data", fifo], ["translate", lm, "--file", fifo]):  # fmt: skip
        line = error_of(capsys, *argv)
        assert str(fifo) in line and re.search("FIFO|not a regular file", line), line


def test_translate_file_is_bounded_names_the_option_and_drops_a_bom(capsys, tmp_path, lm):
    assert "--file" in error_of(capsys, "translate", lm, "--file", tmp_path / "missing.txt")
    assert "--file" in error_of(capsys, "translate", lm, "--file", "/dev/zero")
    from rnnlab.cli.trained import _source_lines

    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\xc2\x85four\n")
    assert _source_lines(bom) == ["one", "two", "three\x85four"]


@pytest.mark.parametrize(
    "codec, said",
    [
        ("utf-16-le", "UTF-16LE without a byte-order mark"),
        ("utf-16-be", "UTF-16BE without a byte-order mark"),
        ("utf-16", "UTF-16 (it starts with the byte-order"),
        ("utf-32", "UTF-32 (it starts with the byte-order"),
    ],
)
def test_translate_file_in_utf16_or_utf32_is_refused_as_such(capsys, tmp_path, lm, codec, said):
    """A UTF-16 file without a byte-order mark decodes as UTF-8, NUL bytes and all: with
    `--unknown map` its lines were translated as sources with a NUL between their letters,
    without a word (and with a mark it was "not UTF-8 (byte 0, 0xff)")."""
    path = tmp_path / "sources.txt"
    path.write_bytes("one\ntwenty-three\n".encode(codec))
    line = error_of(capsys, "translate", lm, "--file", path, "--unknown", "map")
    assert f"`--file` must be a readable UTF-8 text file; got '{path}', which " in line, line
    assert said in line and "iconv" in line, line


def test_a_toml_config_with_a_byte_order_mark_is_read(capsys, tmp_path):
    from rnnlab import io

    config = tmp_path / "bom.toml"
    config.write_bytes(b'\xef\xbb\xbftask = "adding"\nsteps = 3\n')
    assert io.read_toml(config) == {"task": "adding", "steps": 3}


# ------------------------------------------------------------------ options
def test_an_empty_data_option_is_refused_not_read_as_the_built_in_corpus(capsys, lm):
    for argv in (["train", "charlm", "--data", "", *TINY], ["evaluate", lm, "--data", ""]):
        assert "`--data` must be the path of a file (not empty); got ''" in error_of(capsys, *argv)


def test_an_empty_data_in_a_toml_config_is_refused_as_the_option_is(capsys, tmp_path, corpus):
    """`--data ""` is refused; the same setting in --config trained charlm on the pydoc
    topics. Said with the file and the key; `--data FILE` given beside it overrides it. A
    task that reads no data takes it: "" is what its run's config.json holds (review 78: a
    config copied from a run was refused)."""
    config = tmp_path / "run.toml"
    config.write_text('task = "charlm"\ndata = ""\nsteps = 1\n')
    line = error_of(capsys, "train", "--config", config, *TINY)
    assert f"{config}: `data` must be the path of a file (not empty); got ''" in line, line
    assert run_cli("train", "--config", config, "--data", corpus, "--seq-len", 16,
                   "--run-dir", tmp_path / "run", *TINY) == 0  # fmt: skip
    config.write_text('task = "adding"\ndata = ""\nsteps = 1\nT = 8\n')
    assert run_cli("train", "--config", config, "--run-dir", tmp_path / "adding", *TINY) == 0


def test_a_bad_option_value_is_one_line_not_the_usage(capsys):
    assert "argument --T: invalid int value: '1.5'" in error_of(capsys, "train", "adding",
                                                                "--T", "1.5")  # fmt: skip
    assert "invalid choice: 'nosuch'" in error_of(capsys, "nosuch")


def test_a_huge_T_is_refused_by_name_and_out_of_memory_names_the_commands_options(
    capsys, monkeypatch
):
    line = error_of(capsys, "train", "adding", "--T", 10**9, "--quiet")
    assert "`--T` must be a size whose validation and test sequences" in line, line
    from rnnlab.cli import gradflow

    def out_of_memory(argv):
        raise MemoryError

    monkeypatch.setattr(gradflow, "main", out_of_memory)
    line = error_of(capsys, "gradflow", "--T", 5)
    assert "out of memory" in line and "--batch " in line, line
    assert "--batch-size" not in line and "--seq-len" not in line, line
    # translate's memory grows with a source line's length (helper 83: a few-MB line of a
    # --file under its 64 MiB cap ran out with no hint), sample's with --length
    from rnnlab import cli

    for command, option in (("translate", "--file line"), ("sample", "--length")):
        monkeypatch.setitem(cli.COMMANDS, command, lambda args: out_of_memory(args))
        line = error_of(capsys, command, "run")
        assert "out of memory" in line and option in line, line


@pytest.mark.parametrize("task,T", [("adding", 2**63 - 1), ("copy", 2**62),
                                    ("temporal-order", 2**62)])  # fmt: skip
@pytest.mark.parametrize("steps", [[], ["--steps", "1"]])
def test_a_T_whose_step_budget_passes_64_bits_is_refused_as_T(capsys, task, T, steps):
    """The memory tasks' budget of 40 or 60 T steps (rnnlab.tasks.tuned) past 64 bits was
    refused as a `steps` or `eval_every` of 64 bits, options nobody typed."""
    line = error_of(capsys, "train", task, "--T", T, *steps, "--quiet")
    assert line.startswith("rnnlab: error: `--T` must be a size"), line
    from rnnlab.tasks import defaults_for, tuned

    assert "steps" not in tuned.overrides(task, "lstm", T)  # the task's own budget stands
    assert defaults_for(task, None, 10)["steps"] == tuned.budget(task, 10)


def test_a_batch_larger_than_the_training_set_is_said(capsys, tmp_path):
    """digits --batch-size 10**9 trained on its 1,295 images a step, and said nothing."""
    argv = ["train", "digits", "--hidden", "4", "--steps", "1", "--quiet"]
    assert run_cli(*argv, "--batch-size", 10**9, "--run-dir", tmp_path / "a") == 0
    err = capsys.readouterr().err
    assert ("rnnlab: warning: `batch_size` (1,000,000,000) is more than the digits task's "
            "1,295 training sequences: every step trains on all 1,295\n") in err, err
    assert run_cli(*argv, "--batch-size", 1295, "--run-dir", tmp_path / "b") == 0
    assert "batch_size" not in capsys.readouterr().err


def test_a_pytokens_train_size_beyond_the_standard_library_is_said(capsys, tmp_path):
    """--train-size 10**11 trained on the few million characters the standard library
    holds, and said nothing; the default (400,000) is within it."""
    argv = ["train", "pytokens", "--hidden", "4", "--embed", "4", "--steps", "1", "--quiet"]
    assert run_cli(*argv, "--train-size", 10**11, "--run-dir", tmp_path / "a") == 0
    err = capsys.readouterr().err
    said = re.search(r"rnnlab: warning: `train_size` \(100,000,000,000\) asks for more Python "
                     r"source than this standard library's files hold: train ([\d,]+) "
                     r"characters \(of 90,000,000,000\), valid ([\d,]+) characters \(of "
                     r"5,000,000,000\), test ([\d,]+) characters \(of 5,000,000,000\)\n", err)
    assert said, err
    from rnnlab.tasks import pytokens

    files = pytokens.split_files(0)
    for name, got in zip(("train", "valid", "test"), said.groups(), strict=True):
        whole = sum(len(text) for text, _ in pytokens._usable(files[name], 20_000))
        assert int(got.replace(",", "")) == whole  # every file of the split, whole
    assert run_cli(*argv, "--run-dir", tmp_path / "b") == 0
    assert "`train_size`" not in capsys.readouterr().err


def test_seq_len_is_said_to_have_no_effect_on_charlm_with_bptt():
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({"task": "charlm", "bptt": 8, "seq_len": 16})
    said = cfg.without_effect({"bptt", "seq_len"})
    assert any("`seq_len` has no effect on charlm when `bptt` is set" in s for s in said), said
    assert not TrainConfig.from_dict({"task": "charlm", "seq_len": 16}).without_effect({"seq_len"})


# ------------------------------------------------------------------ charlm: baselines
def test_evaluate_on_the_valid_split_is_beside_the_valid_splits_baselines(capsys, lm):
    from rnnlab import runs, tasks

    assert run_cli("evaluate", lm, "--split", "valid", "--json") == 0
    valid = json.loads(capsys.readouterr().out)
    _, cfg, _, data = runs.load_run(lm, vocabulary=True)
    task = tasks.make_task(cfg, data)

    def nats(baselines):
        return [baselines[name]["nats_per_char"] for name in sorted(baselines)]

    assert nats(valid["baselines"]) == pytest.approx(nats(task.baselines("valid")))
    assert nats(valid["baselines"]) != pytest.approx(nats(task.baselines("test")))
    assert run_cli("evaluate", lm, "--split", "valid") == 0
    unigram = task.baselines("valid")["unigram"]["nats_per_char"]
    assert f"unigram  {unigram:.3f} nats/char" in capsys.readouterr().out


def test_a_charlm_vocabulary_too_large_for_5_grams_gets_the_orders_it_allows(capsys, tmp_path):
    chars = "".join(chr(0x4E00 + i) for i in range(7000))  # 7,000 CJK characters
    corpus = tmp_path / "cjk.txt"
    corpus.write_text(chars + chars[::-1] + chars, encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "charlm", "--data", corpus, "--steps", 1, "--seq-len", 8, "--embed", 2]
    assert run_cli(*argv, "--run-dir", run, "--hidden", 2, "--batch-size", 2, "--quiet") == 0
    assert (run / "result.json").exists()
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["baselines"]) == {"unigram", "bigram", "trigram", "4-gram"}
    assert run_cli("evaluate", run) == 0
    assert "no n-gram above order 4" in capsys.readouterr().out


# ------------------------------------------------------------------ sample
def test_sample_refuses_unknown_prime_characters_and_never_samples_unknown(capsys, lm):
    line = error_of(capsys, "sample", lm, "--prime", "the QUICK fox")
    assert "`--prime` must be text of characters the run was trained on" in line, line
    assert "5 it never saw ('QUICK', first at character 4)" in line, line
    assert "--unknown map" in line, line
    assert run_cli("sample", lm, "--prime", "the QUICK", "--unknown", "map", "--length", 5) == 0
    assert capsys.readouterr().out.startswith("the QUICK")
    assert run_cli("sample", lm, "--prime", "the\r\nfox", "--length", 5) == 0
    assert capsys.readouterr().out.startswith("the\nfox")
    # near-uniform: the unknown id (1 of 29) would come about 14 times in 400
    assert run_cli("sample", lm, "--temperature", 1000, "--length", 400) == 0
    out = capsys.readouterr().out
    assert len(out) > 400 and "\ufffd" not in out


def test_sample_options_are_named(capsys, lm):
    assert "`--seed` must be a non-negative integer" in error_of(capsys, "sample", lm,
                                                                  "--seed", -1)  # fmt: skip
    line = error_of(capsys, "sample", lm, "--length", 10**12)
    assert "`--length` must be an integer from 0 to 1,000,000" in line, line
    line = error_of(capsys, "sample", lm, "--prime", "ab\udcff")  # argv's b"ab\xff"
    assert "`--prime` must be valid Unicode text; got the byte 0xff" in line, line
    assert "`--top-k` must be a positive integer" in error_of(capsys, "sample", lm,
                                                               "--top-k", 0)  # fmt: skip


def test_charlm_sample_checks_and_documents_its_seed_as_sample_ids_rng(lm):
    """CharLM.sample passed `seed` to NumPy unchecked: -1 and 1.5 were refused naming
    NumPy's SeedSequence, True drew as 1. It takes what sample_ids' `rng` takes, refused
    naming `seed`, and says what None does; a Python caller's unknown character is answered
    with the argument (`unknown="map"`), not the CLI's --unknown."""
    import numpy as np

    from rnnlab import runs, tasks

    _, cfg, model, data = runs.load_run(lm, vocabulary=True)
    task = tasks.make_task(cfg, data, text=False)
    for bad, said in ((-1, "-1"), (1.5, "1.5"), (True, "True"), ("7", "'7'"), ([1, 2], "a list")):
        with pytest.raises(ValueError, match=r"^`seed` must be ") as e:
            task.sample(model, "the", 5, seed=bad)
        assert said in str(e.value), e.value
    assert re.search(r"None takes fresh entropy", " ".join((task.sample.__doc__ or "").split()))
    hot = {"temperature": 1000.0}  # near-uniform over ~28 characters: 40 alike by chance ~0
    assert task.sample(model, "a", 40, seed=None, **hot) != task.sample(model, "a", 40,
                                                                         seed=None, **hot)
    assert task.sample(model, "a", 40, seed=3, **hot) == task.sample(model, "a", 40, seed=3,
                                                                      **hot)  # fmt: skip
    gen = np.random.default_rng(3)  # drawn from, advanced: as seed=3, then onwards
    assert task.sample(model, "a", 40, seed=gen, **hot) == task.sample(model, "a", 40, seed=3,
                                                                        **hot)  # fmt: skip
    assert task.sample(model, "a", 40, seed=gen, **hot) != task.sample(model, "a", 40, seed=3,
                                                                        **hot)  # fmt: skip
    with pytest.raises(ValueError, match=r'\(unknown="map"\)\.$'):
        task.sample(model, "the QUICK fox", 5)


def test_sample_starts_from_a_character_the_run_knows_without_a_prime(capsys, tmp_path):
    corpus = tmp_path / "one-line.txt"
    corpus.write_text("abcab cabba " * 200, encoding="utf-8")  # no line end
    run = tmp_path / "run"
    argv = ["train", "charlm", "--data", corpus, "--steps", 1, "--seq-len", 8]
    assert run_cli(*argv, "--run-dir", run, *TINY) == 0
    capsys.readouterr()
    assert run_cli("sample", run, "--length", 20) == 0
    out = capsys.readouterr().out
    assert out.startswith(" ") and "\ufffd" not in out, out


# ------------------------------------------------------------------ pytokens
def test_pytokens_too_small_a_train_size_names_train_size_and_seq_len(capsys, tmp_path):
    """The size said is one that trains: the held-out pieces are 5 % each, cut after a line
    end, so it is 20 times the first line end past seq_len in the validation and test files
    (not 20 seq_len)."""
    line = error_of(capsys, "train", "pytokens", "--train-size", 500, *TINY)
    assert re.fullmatch(r"rnnlab: error: `--train-size` must be at least [\d,]+ characters with "
                        r"`--seq-len` = 100, so that valid and test \(5 % each, cut after a "
                        r"line end\) hold one window of `--seq-len` characters; got 500 "
                        r"instead\. Raise `--train-size` or lower `--seq-len`\.", line), line
    need = int(re.search(r"at least ([\d,]+)", line)[1].replace(",", ""))
    assert run_cli("train", "pytokens", "--train-size", need, "--steps", 1,
                   "--run-dir", tmp_path / "r", *TINY) == 0  # fmt: skip
    capsys.readouterr()
    line = error_of(capsys, "train", "pytokens", "--train-size", need - 1, *TINY)
    assert f"`--train-size` must be at least {need:,} characters" in line, line


def test_pytokens_names_train_size_as_the_option_when_left_at_its_default(capsys, tmp_path):
    """Without --train-size typed, its default too small for --seq-len was said as
    `train_size`, TrainConfig's field, which the command line has no such name for: the option
    the user can type is named. Set in a --config file, it keeps the file's key, after the
    file's name (as TrainConfig's refusals of the file's values)."""
    line = error_of(capsys, "train", "pytokens", "--seq-len", 25_000, *TINY)
    assert line.startswith("rnnlab: error: `--train-size` must be at least "), line
    assert "got 400,000 instead. Raise `--train-size` or lower `--seq-len`." in line, line
    config = tmp_path / "c.toml"
    config.write_text("train_size = 400000\n")
    line = error_of(capsys, "train", "pytokens", "--config", config, "--seq-len", 25_000, *TINY)
    assert line.startswith(f"rnnlab: error: {config}: `train_size` must be at least "), line
    assert "Raise `train_size` or lower `--seq-len`." in line, line


def test_a_pytokens_run_keeps_its_vocabulary_where_the_standard_library_differs(
    capsys, tmp_path, monkeypatch
):
    from rnnlab.tasks import pytokens

    run = tmp_path / "py"
    argv = ["train", "pytokens", "--train-size", 4000, "--seq-len", 20, "--steps", 1]
    assert run_cli(*argv, "--run-dir", run, *TINY) == 0
    stored = json.loads((run / "config.json").read_text())["data"]
    assert stored["vocab"] and len(stored["test_sha256"]) == 64 and stored["split"] == "files"
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    before = json.loads(capsys.readouterr().out)
    # another Python: one more test module, first in the order, of characters never seen
    extra = tmp_path / "extra.py"
    extra.write_text('x = "\u00e9\u00e8\u00ea\u4e00"\n' * 400, encoding="utf-8")
    listed = pytokens.split_files
    monkeypatch.setattr(pytokens, "split_files", lambda seed=0, root=None: {
        **listed(seed, root), "test": [extra, *listed(seed, root)["test"]]})  # fmt: skip
    assert run_cli("evaluate", run, "--json") == 0
    out, err = capsys.readouterr()
    assert "test split made now differs" in err
    assert json.loads(out)["accuracy"] != before["accuracy"]
    # a split the record cannot mean (edited by hand) is refused naming the file
    for p in [run / "config.json", *run.glob("checkpoints/*/config.json")]:
        config = json.loads(p.read_text())
        config["data"]["split"] = "halves"
        p.write_text(json.dumps(config))
    line = error_of(capsys, "evaluate", run)
    assert "config.json': `config.json's 'data' 'split'` must be 'files' or 'contiguous'" \
        in line and "got 'halves' (str) instead" in line, line  # fmt: skip


def test_a_pytokens_run_of_the_contiguous_split_evaluates_and_resumes_on_it(
    capsys, tmp_path, monkeypatch
):
    """Runs trained before whole files were held out stored a record without "split" (or
    none, before records): evaluate and --resume read them on the contiguous split they were
    trained on, not the split of files of a new run (which read them silently on other text,
    or refused --resume as if this Python's standard library had changed)."""
    from rnnlab.tasks import pytokens

    run = tmp_path / "old"
    argv = ["train", "pytokens", "--train-size", 4000, "--seq-len", 20, "--steps", 2,
            "--checkpoint-every", 1, "--run-dir", run, *TINY]  # fmt: skip
    split_of = pytokens._split_of
    with monkeypatch.context() as m:  # training as rnnlab did before: the contiguous split
        m.setattr(pytokens, "_split_of", lambda stored: split_of(stored or {"vocab": "x"}))
        assert run_cli(*argv) == 0
        capsys.readouterr()
        assert run_cli("evaluate", run, "--json") == 0
        before = json.loads(capsys.readouterr().out)
    stored = json.loads((run / "config.json").read_text())["data"]
    assert set(stored) == {"vocab", "test_sha256"}  # the record those runs wrote
    assert run_cli("evaluate", run, "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == before and "differs" not in err, err
    # --resume trains on, on its own text, and keeps its record
    assert run_cli("train", "--resume", run, "--steps", 3, "--quiet") == 0
    assert json.loads((run / "config.json").read_text())["data"] == stored
    # a run from before pytokens runs stored their record evaluates as it did
    for p in [run / "config.json", *run.glob("checkpoints/*/config.json")]:
        config = json.loads(p.read_text())
        del config["data"]
        p.write_text(json.dumps(config))
    capsys.readouterr()
    shutil.rmtree(run / "checkpoints" / "step-00000003")
    (run / "checkpoints" / "latest").write_text("step-00000002")
    assert run_cli("evaluate", run, "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == before, err
    assert run_cli("train", "--resume", run, "--steps", 3, "--quiet") == 0


# ------------------------------------------------------------------ encoder-decoder beams
def test_a_beam_wider_than_the_target_vocabulary_is_refused(capsys, tmp_path, monkeypatch):
    """--beam 100000 decoded one word for over a minute (hypotheses grow to the width)."""
    from rnnlab.tasks import transduction

    monkeypatch.setitem(transduction.HELD_OUT_SIZE, "valid", 20)
    monkeypatch.setitem(transduction.HELD_OUT_SIZE, "test", 20)
    run = tmp_path / "numbers"
    argv = ["train", "numbers", "--steps", 1, "--train-size", 200, "--beam", 1]
    assert run_cli(*argv, "--run-dir", run, *TINY) == 0
    vocab = json.loads((run / "config.json").read_text())["model"]["target_vocab"]
    capsys.readouterr()
    for command in (["translate", run, "one"], ["evaluate", run]):
        line = error_of(capsys, *command, "--beam", 100_000)
        assert f"`--beam` must be a width from 1 to {vocab} for this run" in line, line
    assert run_cli("translate", run, "one", "--beam", vocab) == 0


def test_a_train_size_too_large_to_make_is_refused(capsys):
    line = error_of(capsys, "train", "dates", "--train-size", 2_000_000, "--steps", 1, *TINY)
    assert "`--train-size` must be at most 1,000,000 pairs for the dates task" in line, line


def test_files_read_where_there_is_no_o_nonblock(tmp_path, monkeypatch):
    """Windows has no O_NONBLOCK, and its os.set_blocking (3.12+) fails on a regular file:
    set only where the file was opened non-blocking, every read (a config, a corpus) works."""
    import os

    from rnnlab import _checks
    from rnnlab.tasks import text

    def refuse(fd, blocking):
        raise OSError(22, "Incorrect function")

    monkeypatch.delattr(os, "O_NONBLOCK", raising=False)
    monkeypatch.setattr(os, "set_blocking", refuse)
    path = tmp_path / "a.txt"
    path.write_text("hello world\n" * 100)
    assert _checks.read_bounded(path, 1 << 20, "the text") == path.read_bytes()
    assert text.read_text(path).startswith("hello world")
