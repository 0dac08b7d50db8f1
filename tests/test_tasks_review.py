"""The synthetic and transduction tasks by use (review 132): the held-out baselines' helpers
and the codecs under careless input, and the report of `rnnlab evaluate --split valid`."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.tasks import synthetic
from rnnlab.tasks.codecs import CharCodec, WordCodec

TINY = ["--hidden", "4", "--batch-size", "2", "--quiet"]


# ------------------------------------------------------------------- the baselines' helpers
@pytest.mark.parametrize("y,said", [
    ([], r"`y` must be the class labels \(integers >= 0\) of at least one item; got a list "
         r"of length 0"),
    (np.array([0.0, 1.0, 1.0]), r"`y` must be an array of integers; got an array of shape "
                                r"\(3,\) and dtype float64"),
    ([2, -1, 2], r"`y` must be the class labels \(integers >= 0\) of at least one item; "
                 r"got the label -1"),
])  # fmt: skip
def test_majority_accuracy_refuses_what_are_no_labels_by_name(y, said):
    """It raised NumPy's TypeError (float labels), ValueError (an empty set; a negative
    label, "'list' argument must have no negative elements")."""
    with pytest.raises(ValueError, match=said):
        synthetic.majority_accuracy(y)
    assert synthetic.majority_accuracy([[2], [0], [2]]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("y,said", [
    (np.zeros((0, 30), np.int64), r"shape \(0, 30\)"),  # ZeroDivisionError
    (np.zeros((3, 5), np.int64), r"shape \(3, 5\)"),  # IndexError
])  # fmt: skip
def test_copy_baseline_on_refuses_what_are_no_copy_targets(y, said):
    with pytest.raises(ValueError, match=r"`y` must be copy-memory targets: at least one row "
                       r"of T \+ 20 steps \(T ≥ 1\); got " + said):  # fmt: skip
        synthetic.copy_baseline_on(y)
    with pytest.raises(ValueError, match=r"`y` must be an array of integers; got an array of "
                       r"shape \(3, 30\) and dtype float64"):  # fmt: skip (TypeError)
        synthetic.copy_baseline_on(np.zeros((3, 30)))
    with pytest.raises(ValueError, match=r"`y` must be token ids in \[0, 9\); got the id 9"):
        synthetic.copy_baseline_on(np.full((3, 30), 9))
    _, y = synthetic.copy_memory(50, 1, np.random.default_rng(0))
    nats, recall = synthetic.copy_baseline_on(y)  # the shortest targets still score
    assert 0 < nats < synthetic.copy_baseline(1) and 1 / 8 <= recall < 1


def test_copy_baseline_on_refuses_targets_out_of_the_copy_layout():
    """Targets with a symbol before the last ten steps, or a blank among them, were scored
    as if they had the layout: np.full((3, 30), 5) had a baseline of 0 nats."""
    with pytest.raises(ValueError, match=r"`y` must be copy-memory targets: blanks \(0\) up "
                       r"to the last 10 steps, symbols 1 to 8 at them; got a symbol at step 0 "
                       r"instead"):  # fmt: skip
        synthetic.copy_baseline_on(np.full((3, 30), 5))
    with pytest.raises(ValueError, match=r"got a blank at step 20 instead"):
        synthetic.copy_baseline_on(np.zeros((3, 30), np.int64))


def test_a_copy_run_with_reversed_input_is_scored_where_its_symbols_are():
    """A copy run saved with reverse_input (refused for new runs since, but one that did
    still evaluates) reads its targets reversed, the symbols first: its recall and its
    baseline were scored on the last ten steps, blanks, so a model of blanks recalled 100 %
    beside a baseline of 0 nats."""
    from types import SimpleNamespace

    from rnnlab.tasks import make_task
    from rnnlab.train import TrainConfig

    class Blanks:  # the memoryless model that answers a blank at every step
        def forward(self, x, lengths=None, grad=True):
            return SimpleNamespace(output=np.where(np.arange(9) == 0, 9.0, 0.0)
                                   * np.ones(x.shape + (9,)))  # fmt: skip

    plain = make_task(TrainConfig(task="copy", T=5)).evaluate(Blanks(), "test")
    reversed_ = make_task(TrainConfig(task="copy", T=5, reverse_input=True)).evaluate(
        Blanks(), "test")
    assert reversed_["recall_accuracy"] == plain["recall_accuracy"] == 0.0
    for key in ("loss", "baseline_loss_empirical", "baseline_recall_empirical"):
        assert reversed_[key] == pytest.approx(plain[key], rel=1e-12), key
    assert 0.125 <= plain["baseline_recall_empirical"] < 0.2


def test_adding_baseline_on_refuses_an_empty_set_or_text():
    """An empty set gave NumPy's "Mean of empty slice" RuntimeWarning and NaN baselines."""
    for y in ([], np.zeros((0, 1), np.float32), ["a"]):
        with pytest.raises(ValueError, match=r"`y` must be the targets \(numbers\) of at "
                           r"least one sequence; got "):  # fmt: skip
            synthetic.adding_baseline_on(y)
    assert synthetic.adding_baseline_on([[1.0], [2.0]]) == (0.5, 0.25)


# ---------------------------------------------------------------------------- the codecs
@pytest.mark.parametrize("fit", [CharCodec.fit, WordCodec.fit])
def test_a_text_alone_is_refused_not_read_as_a_list_of_characters(fit):
    """A string was a sequence of one-character texts: `encode("two")` gave three rows,
    `WordCodec.fit("forty-two")` a vocabulary of letters."""
    said = r"`texts` must be a sequence of strings, one per text; got "
    with pytest.raises(ValueError, match=said + r"'forty-two' \(str\)"):
        fit("forty-two")
    codec = fit(["forty-two"])
    with pytest.raises(ValueError, match=said + r"'forty-two' \(str\)"):
        codec.encode("forty-two")
    with pytest.raises(ValueError, match=said + r"b'two' \(bytes\) at index 1"):
        codec.encode(["forty-two", b"two"])  # (named as unknown characters 116, 119, 111)
    with pytest.raises(ValueError, match=said + r"None at index 0"):
        codec.encode([None])  # (TypeError: 'NoneType' object is not iterable)
    ids, _ = codec.encode(["forty-two"])
    assert codec.decode(ids) == ["forty-two"]


def test_a_word_codec_fitted_to_a_generator_has_its_words():
    """`WordCodec.fit` read its texts twice (the check, then the words): a generator's second
    pass was empty, so the codec knew no word and encoded nothing, without a word."""
    texts = ["forty-two", "six"]
    assert WordCodec.fit(t for t in texts) == WordCodec.fit(texts)
    assert WordCodec.fit(t for t in texts).words == ("forty-", "six", "two")


def test_decode_refuses_ids_outside_the_codec():
    """An id past the end raised IndexError, a negative one was dropped as a special, a row
    alone failed iterating an integer."""
    codec = CharCodec(("a", "b"))
    with pytest.raises(ValueError, match=r"`ids` must be token ids in \[0, 6\); got the id 6"):
        codec.decode(np.array([[4, 6]]))
    with pytest.raises(ValueError, match=r"`ids` must be token ids in \[0, 6\); got the id -1"):
        codec.decode(np.array([[4, -1]]))
    with pytest.raises(ValueError, match=r"`ids` must be an array with 2 dimensions; got "
                       r"shape \(2,\)"):  # fmt: skip
        codec.pieces(np.array([4, 5]))
    assert codec.decode([[4, 5, 2, 4], [3, 5, 0, 0]]) == ["ab", "\N{REPLACEMENT CHARACTER}b"]


# ---------------------------------------------------------------- evaluate --split valid
@pytest.mark.parametrize("task,said", [
    ("adding", ["validation MSE ", "on this validation set "]),
    ("copy", ["validation cross-entropy ", "on this validation set:", "% on this validation "
              "set)"]),
    ("temporal-order", ["validation accuracy ", "commonest class of this validation set "]),
])  # fmt: skip
def test_evaluate_of_the_validation_split_does_not_call_it_the_test(tmp_path, capsys, task,
                                                                     said):  # fmt: skip
    """`rnnlab evaluate RUN --split valid` printed "test MSE ... on this test set" of the
    validation set's numbers."""
    run = tmp_path / task
    T = "10" if task == "temporal-order" else "2"
    assert main(["train", task, "--T", T, "--steps", "1", "--eval-every", "1",
                 "--run-dir", str(run), *TINY]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "test" not in out and all(s in out for s in said), out
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "validation" not in out and all(s.replace("validation", "test") in out
                                           for s in said), out  # fmt: skip
