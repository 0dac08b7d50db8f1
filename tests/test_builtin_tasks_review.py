"""Review of the n-gram baselines, digits and pytokens by use (review 136): what a user of
these tasks met."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab import tasks
from rnnlab.tasks import ngram, pytokens
from rnnlab.train import TrainConfig


def test_ngram_bits_per_char_by_hand():
    """Bigram Kneser–Ney on "abaab" (ids 0 1 0 0 1, a third id "c" never seen), scored on
    "acab", worked out by hand: continuation unigram N1+(• a) = 2, N1+(• b) = 1, N1+(• c) = 0,
    add-one over 3 ids → (3, 2, 1) / 6; bigrams ab ×2, ba, aa → D = 2 / (2 + 2 · 1) = 1/2;
    P(c | a) = (0 + 1/2 · 2 · 1/6) / 3 = 1/18, P(a | c) = P_1(a) = 1/2 (c never a context),
    P(b | a) = (2 − 1/2 + 1/2 · 2 · 1/3) / 3 = 11/18. The unigram: raw counts (3, 2, 0) + 1
    over 5 + 3."""
    got = ngram.ngram_baselines([0, 1, 0, 0, 1], [0, 2, 0, 1], 3, max_order=2)
    bigram = -(math.log(1 / 2) + math.log(1 / 18) + math.log(1 / 2) + math.log(11 / 18)) / 4
    unigram = -(math.log(4 / 8) + math.log(1 / 8) + math.log(4 / 8) + math.log(3 / 8)) / 4
    assert got["bigram"]["nats_per_char"] == pytest.approx(bigram, rel=1e-14)
    assert got["unigram"]["nats_per_char"] == pytest.approx(unigram, rel=1e-14)
    assert got["bigram"]["bits_per_char"] == pytest.approx(bigram / math.log(2), rel=1e-14)
    # from the second id on: the same terms but the first
    later = ngram.ngram_baselines([0, 1, 0, 0, 1], [0, 2, 0, 1], 3, max_order=2, start=1)
    want = -(math.log(1 / 18) + math.log(1 / 2) + math.log(11 / 18)) / 3
    assert later["bigram"]["nats_per_char"] == pytest.approx(want, rel=1e-14)


def test_ngram_refuses_a_vocabulary_whose_unigram_would_not_fit_by_name():
    """vocab_size = 10**12 ended in NumPy's MemoryError (the unigram is a float64 an id)."""
    for call in (lambda: ngram.fit([0, 1], 2**60, 1),
                 lambda: ngram.ngram_baselines([0, 1], [1], 2**60, max_order=1)):  # fmt: skip
        with pytest.raises(ValueError, match=r"`vocab_size` must be a size whose unigram over "
                           r"1,152,921,504,606,846,976 ids \(24 bytes an id\) would fit in "
                           r"the memory available"):  # fmt: skip
            call()


def test_ngram_baselines_take_a_numpy_integer_start():
    """`start` refused np.int64(1) ("got np.int64(1) instead"), a position as NumPy gives it
    (np.argmax, len of an array's slice), where `max_order` and `vocab_size` take NumPy
    integers."""
    at_one = ngram.ngram_baselines([0, 1, 0, 0, 1], [0, 2, 0, 1], 3, 2, start=1)
    assert ngram.ngram_baselines([0, 1, 0, 0, 1], [0, 2, 0, 1], 3, 2, start=np.int64(1)) == at_one
    for bad in (np.int64(4), 1.0, np.bool_(True)):
        with pytest.raises(ValueError, match=r"`start` must be an id's position in eval_ids "
                           r"\(0 to 3\); got "):  # fmt: skip
            ngram.ngram_baselines([0, 1], [0, 2, 0, 1], 3, 2, start=bad)


def test_load_pytokens_says_which_file_is_unusable_and_why(tmp_path):
    """Given files none of which was usable, the error said "got 1 files, none usable",
    naming no file and no reason; and empty files were "usable": load_pytokens returned an
    empty text and no labels, which chunk then refused in other words."""
    empty = tmp_path / "empty.py"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"`files` must be Python files of which at least one "
                       r"tokenizes and is not empty; got 2 files, none usable \('.*empty.py': "
                       r"it is empty; and 1 more\)"):  # fmt: skip
        pytokens.load_pytokens(files=[empty, empty])
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"s = '\xe9'\n")  # latin-1 without a coding cookie
    with pytest.raises(ValueError, match=r"got 1 file, none usable \('.*latin.py': it does "
                       r"not decode: invalid or missing encoding declaration\)"):  # fmt: skip
        pytokens.load_pytokens(files=[latin])
    bogus = tmp_path / "bogus.py"
    bogus.write_text("# coding: nonsense\nx = 1\n")
    with pytest.raises(ValueError, match=r"\('.*bogus.py': it does not decode: unknown "
                       r"encoding: nonsense\)"):  # fmt: skip
        pytokens.load_pytokens(files=[bogus])
    dollar = tmp_path / "dollar.py"
    dollar.write_text("x = 1\ny = $\n")
    with pytest.raises(ValueError, match=r"\('.*dollar.py': it does not tokenize: '\$' at line "
                       r"2, column 4, where no token can start\)"):  # fmt: skip
        pytokens.load_pytokens(files=[dollar])
    # an empty file among usable ones is left out, as an unusable one is
    good = tmp_path / "good.py"
    good.write_text("f(x)\n")
    chars, labels = pytokens.load_pytokens(files=[empty, good, dollar])
    assert chars == "f(x)\n" and len(labels) == 5


def test_load_pytokens_skips_a_file_that_cannot_be_read_and_says_which(tmp_path):
    """/proc/self/mem is a file whose read fails (EIO): load_pytokens raised that OSError,
    naming no file, where a file that does not decode is skipped and named."""
    with pytest.raises(ValueError, match=r"got 1 file, none usable \('/proc/self/mem': it "
                       r"cannot be read: Input/output error\)"):  # fmt: skip
        pytokens.load_pytokens(files=["/proc/self/mem"])
    good = tmp_path / "good.py"
    good.write_text("f(x)\n")
    assert pytokens.load_pytokens(files=["/proc/self/mem", good])[0] == "f(x)\n"


def test_load_pytokens_names_a_device_as_no_regular_file_not_missing():
    with pytest.raises(ValueError, match=r"`files\[0\]` must be an existing file; got "
                       r"'/dev/null', which is no regular file instead"):  # fmt: skip
        pytokens.load_pytokens(files=["/dev/null"])


def test_pytokens_says_its_held_out_sets_commonest_class():
    """pytokens printed its accuracy alone, where digits and the synthetic tasks say the
    commonest class of the set beside theirs: with a small --train-size the test piece can
    be one docstring, and an untrained model that answers STRING everywhere "scored" 92 %
    with nothing to say that always answering STRING scores 100 %."""
    cfg = TrainConfig.from_dict({**tasks.defaults("pytokens"), "train_size": 4_000,
                                 "seq_len": 20, "hidden": 4, "embed": 4})  # fmt: skip
    task = tasks.make_task(cfg)
    model = tasks.build_model(tasks.model_spec(cfg, task), seed=0)
    for split, name in (("test", "test"), ("valid", "validation")):
        y = task.split(split)[1]
        counts = np.bincount(y.ravel(), minlength=len(pytokens.CLASSES))
        result = task.evaluate(model, split)
        assert result["majority"] == counts.max() / y.size
        assert result["majority_class"] == pytokens.CLASSES[int(counts.argmax())]
        line = tasks.report(task, result, split=split)[0]
        above = "above" if result["accuracy"] > result["majority"] else "not above"
        assert line == (f"per-character accuracy {100 * result['accuracy']:.2f} % (commonest "
                        f"class of this {name} set, {result['majority_class']}, "
                        f"{100 * result['majority']:.1f} %: {above} it)")  # fmt: skip
    # a result without it (a record from before) is said as it was
    assert tasks.report(task, {"accuracy": 0.5, "per_class_accuracy": {}}) == [
        "per-character accuracy 50.00 %"
    ]
