"""Sampling from a token model (rnnlab.generate): its arguments refused by name, seeded
draws, tiny temperatures and ties at the top-k cut."""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import oracle

from rnnlab.generate import next_token_probabilities, sample_ids
from rnnlab.models import build

V = 6
README = Path(__file__).resolve().parent.parent / "README.md"


def _model():
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": "lstm", "hidden_size": 4}, "output_size": V}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=0)
    bias = next(v for k, v in m.params.items() if k.endswith("bias") and v.shape == (V,))
    bias[:] = np.arange(V) * 0.5  # the last id the clear favourite
    return m


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(length=2.9), r"`length` must be a non-negative integer; got 2.9"),
        (dict(length=None), r"`length` must be a non-negative integer"),
        (dict(length=-1), r"`length` must be a non-negative integer"),
        (dict(temperature=float("inf")), r"`temperature` must be a finite number"),
        (dict(temperature=-0.5), r"`temperature` must be a positive number"),
        (dict(top_k=0), r"`top_k` must be a positive integer"),
        (dict(prime=[1.7, 2.2]), r"`prime` must be an array of integers"),
        (dict(prime=[[1, 2]]), r"`prime` must be an array with 1 dimensions"),
        (dict(prime=[]), r"`prime` must be"),
        (dict(rng="x"), r"`rng` must be a numpy Generator, an integer seed, a SeedSequence, a "
                        r"BitGenerator or None"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    args = {"prime": [1, 2], "length": 3, "rng": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_ids(_model(), args.pop("prime"), args.pop("length"), **args)


def test_a_seed_draws_the_same_and_a_tiny_temperature_is_greedy():
    m = _model()
    a = sample_ids(m, [1, 2], 8, rng=3)
    np.testing.assert_array_equal(a, sample_ids(m, np.array([1, 2]), 8, rng=3))
    assert sample_ids(m, [1], 0, rng=0).shape == (0,)
    top1 = sample_ids(m, [1, 2], 8, top_k=1, rng=5)
    for t in (np.float32(1e-30), 1e-320):  # (logits / t overflowed: NaN probabilities)
        np.testing.assert_array_equal(sample_ids(m, [1, 2], 8, temperature=t, rng=4), top1)


def test_top_k_keeps_exactly_k_ids_when_logits_tie():
    p = next_token_probabilities(np.array([1.0, 1.0, 0.0, -5.0]), 1.0, 1)
    assert (p > 0).sum() == 1 and p.sum() == 1.0
    p = next_token_probabilities(np.array([[2.0, 2.0, 2.0, 0.0]]), 0.5, 2)
    assert (p > 0).sum() == 2
    np.testing.assert_allclose(p[p > 0], 0.5)
    full = next_token_probabilities(np.array([0.0, np.log(3.0)]), 1.0)
    np.testing.assert_allclose(full, [0.25, 0.75])


def test_top_k_ties_keep_the_lower_ids_as_documented():
    """argpartition kept an arbitrary set of the tied ids (the docstring said by position):
    in 1,643 of 2,000 random tied rows another set than the lower ids."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 30))
        z = rng.integers(0, 3, n).astype(float)  # many ties
        k = int(rng.integers(1, n + 1))
        kept = np.flatnonzero(next_token_probabilities(z, 1.0, k) > 0)
        want = np.sort(sorted(range(n), key=lambda i: (-z[i], i))[:k])
        np.testing.assert_array_equal(kept, want)


@pytest.mark.parametrize("temperature,top_k,match", [
    (0.0, None, r"`temperature` must be a positive number; got 0.0"),
    (float("nan"), None, r"`temperature` must be a finite number"),
    (-1.0, None, r"`temperature` must be a positive number"),
    (1.0, 0, r"`top_k` must be a positive integer; got 0"),
])  # fmt: skip
def test_next_token_probabilities_refuses_what_gives_no_distribution(temperature, top_k, match):
    """Called alone (and by Seq2Seq.sample) it returned NaN probabilities with a
    RuntimeWarning for 0 or NaN, and the inverted distribution for a negative temperature."""
    with pytest.raises(ValueError, match=match):
        next_token_probabilities(np.array([0.0, 1.0]), temperature, top_k)


def test_exclude_names_the_id_out_of_range_and_a_one_answer_model_is_refused():
    with pytest.raises(ValueError, match=r"`exclude` must be ids in \[0, 6\) \(the model's "
                       r"outputs\); got the id 31 instead"):  # (it said "a list of length 2")
        sample_ids(_model(), [1], 2, rng=0, exclude=[2, 31])
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": "rnn", "hidden_size": 4}, "readout": "last", "output_size": V}
    with pytest.raises(ValueError, match=r"`model` must be a token model with an output at "
                       r"every step .*; got an output of shape \(1, 6\) instead"):
        sample_ids(build(spec, dtype=np.float64, rng=0), [1, 2], 3, rng=0)  # (a TypeError)


def test_infinite_logits_are_certainties_and_nan_logits_are_refused():
    """A +inf logit (a model pushed to overflow) made inf − inf = NaN probabilities, and
    NumPy's choice then failed with its own words; now the +inf ids share the mass, and a
    NaN logit or a row with nothing to draw is refused by name."""
    p = next_token_probabilities(np.array([np.inf, 1.0, np.inf, -np.inf]), 0.7)
    np.testing.assert_array_equal(p, [0.5, 0.0, 0.5, 0.0])
    p = next_token_probabilities(np.array([[0.0, np.inf, 3.0], [0.0, np.log(3.0), -np.inf]]),
                                 1.0, top_k=2)  # fmt: skip
    np.testing.assert_allclose(p, [[0.0, 1.0, 0.0], [0.25, 0.75, 0.0]])
    with pytest.raises(ValueError, match=r"`logits` must be numbers to sample from; got NaN "
                                         r"\(first at index \(1, 2\)\)"):  # fmt: skip
        next_token_probabilities(np.array([[0.0, 1.0, 2.0], [0.0, 1.0, np.nan]]), 1.0)
    with pytest.raises(ValueError, match=r"`logits` must be at least one id"):
        next_token_probabilities(np.array([-np.inf, -np.inf]), 1.0)


def test_excluded_ids_are_never_sampled():
    """A vocabulary's unknown id stands for no character: excluded, it never comes, even as
    the model's favourite and at a temperature where every id is about as likely."""
    for temperature in (1.0, 1000.0):
        out = sample_ids(_model(), [1, 2], 200, temperature=temperature, rng=0, exclude=[V - 1])
        assert (V - 1) not in out.tolist() and len(set(out.tolist())) > 1
    assert set(sample_ids(_model(), [1], 20, rng=0, top_k=1, exclude=[V - 1])) == {V - 2}
    with pytest.raises(ValueError, match=r"`exclude` must be ids in \[0, 6\)"):
        sample_ids(_model(), [1], 5, rng=0, exclude=[V])
    with pytest.raises(ValueError, match=r"`exclude` must be some of the model's ids"):
        sample_ids(_model(), [1], 5, rng=0, exclude=list(range(V)))


@pytest.mark.parametrize("cell", ["jordan", "jordan-elman"])
def test_an_output_feedback_model_is_fed_back_the_ids_it_read_and_sampled(cell):
    """A Jordan character model is trained with teacher forcing: the one-hot of the true
    previous class fed back. Sampling feeds back the same: within the prime the next id, then
    each id sampled, so a greedy sample is the argmax of one teacher-forced pass over the
    prime and the sample together (free running fed back the softmax: other ids)."""
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": cell, "hidden_size": 5}, "output_size": V}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=1)
    for k, v in m.params.items():  # feedback strong enough that what is fed back matters
        if k.endswith(("weight_fh", "weight_out")):
            v *= 4.0
    prime = np.array([1, 4, 2])
    out = sample_ids(m, prime, 12, top_k=1, rng=0)
    seq = np.concatenate([prime, out])
    f = m.forward(seq[None], targets=np.append(seq[1:], 0)[None], teacher=1.0)
    np.testing.assert_array_equal(f.output[0, len(prime) - 1 : -1].argmax(-1), out)
    free = m.forward(seq[None]).output[0, len(prime) - 1 : -1].argmax(-1)
    assert (free != out).any()  # the test can tell the two apart
    with pytest.raises(ValueError, match=r"`ids` must be class ids in \[0, 6\)"):
        m.fed_back(f.state, [6])
    spec["feedback"] = "sigmoid"
    with pytest.raises(ValueError, match=r"`model` must be an output-feedback model with "
                                         r"feedback='softmax'"):  # fmt: skip
        build(spec, dtype=np.float64, rng=1).fed_back(None, [1])


def test_an_output_feedback_model_of_vectors_runs_free_as_before():
    """Only a model that feeds back classes is fed the sampled id; one that feeds back
    vectors (identity, sigmoid) ran free before and still does (it was refused, about
    targets the caller never passed)."""
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": "jordan", "hidden_size": 5}, "output_size": V,
            "feedback": "identity"}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=1)
    out = sample_ids(m, [1, 2], 6, top_k=1, rng=0)
    seq = np.concatenate([[1, 2], out])
    free = m.forward(seq[None]).output[0, 1:-1].argmax(-1)
    np.testing.assert_array_equal(free, out)


@pytest.mark.parametrize("cell", ["jordan", "jordan-elman"])
def test_an_output_feedback_model_is_evaluated_as_it_is_trained_and_sampled(cell, tmp_path):
    """Evaluation fed a Jordan model its own soft predictions, which it never saw: charlm's
    likelihood is now P(x_t | the true x_<t) (the true previous character fed back, one
    teacher-forced pass over the stream's windows), and a per-step task (copy) runs it free
    on the one-hot of the class each step ranked first, as greedy sampling does."""
    from rnnlab import tasks
    from rnnlab.losses import softmax_cross_entropy
    from rnnlab.tasks import _sequence
    from rnnlab.train import TrainConfig

    corpus = tmp_path / "cat.txt"
    corpus.write_text("the cat sat on the mat. " * 400)
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "cell": cell, "hidden": 5,
                                 "embed": 3, "data": str(corpus)})  # fmt: skip
    task = tasks.make_task(cfg)
    m = tasks.build_model(tasks.model_spec(cfg, task), seed=1)
    for k, v in m.params.items():  # feedback strong enough that what is fed back matters
        if k.endswith(("weight_fh", "weight_out")):
            v *= 4.0
    got = task.evaluate(m, "valid")["nats_per_char"]
    ids = task.ids["valid"]
    n = (len(ids) - 1) // 8
    xs, ys = ids[: n * 8].reshape(8, n), ids[1 : n * 8 + 1].reshape(8, n)
    f = m.forward(xs, targets=ys, teacher=1.0)  # the whole stream at once, the truth fed back
    want = softmax_cross_entropy(f.output, ys, reduction="mean")[0]
    assert got == pytest.approx(want, rel=1e-5)
    free = softmax_cross_entropy(m.forward(xs).output, ys, reduction="mean")[0]
    assert abs(free - want) > 1e-3  # the test tells the soft feedback apart

    x = np.random.default_rng(0).integers(0, V, (7, 9))
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": cell, "hidden_size": 5}, "output_size": V}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=1)
    for k, v in m.params.items():
        if k.endswith(("weight_fh", "weight_out")):
            v *= 4.0
    out = _sequence._fed_own_classes(m, x)
    ranked_first = out.argmax(-1)
    fed = m.forward(x, targets=ranked_first, teacher=1.0).output  # step t fed step t-1's
    np.testing.assert_allclose(out, fed, rtol=0, atol=1e-12)
    assert (m.forward(x).output.argmax(-1) != ranked_first).any()


def test_a_per_step_tasks_evaluation_runs_a_jordan_model_on_its_own_classes():
    """copy's evaluation reads the outputs of _fed_own_classes, batch by batch."""
    from rnnlab import tasks
    from rnnlab.tasks import _sequence
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({**tasks.defaults("copy"), "cell": "jordan", "hidden": 5,
                                 "T": 4})  # fmt: skip
    task = tasks.make_task(cfg)
    m = tasks.build_model(tasks.model_spec(cfg, task), seed=1)
    out, _, _ = task._eval_outputs(m, "valid", batch_size=100)
    x, y, lengths = task.prepare(*task.split("valid"))
    np.testing.assert_array_equal(out, np.concatenate(
        [_sequence._fed_own_classes(m, x[i : i + 100]) for i in range(0, len(x), 100)]))
    assert not np.array_equal(out, m.forward(x).output)


def _flat(logits):
    """_model() whose scores are `logits` at every step, whatever it read (the readout's
    weight zero): its draws are independent, each from the same distribution."""
    m = _model()
    m.params["2.weight"][:] = 0.0
    m.params["2.bias"][:] = logits
    return m


def _expected(logits, temperature, top_k):
    """softmax(logits / temperature) over the top_k largest, written out apart from
    next_token_probabilities (the logits here have no ties)."""
    z = np.asarray(logits, float) / temperature
    keep = np.argsort(-z)[: len(z) if top_k is None else top_k]
    p = np.zeros(len(z))
    p[keep] = np.exp(z[keep] - z[keep].max())
    return p / p.sum()


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.6, None), (2.5, 4)])
def test_the_draws_follow_softmax_of_the_logits_over_the_temperature(temperature, top_k):
    """A chi-square test of 3,000 seeded draws against softmax(o / temperature) among the
    top k: no test compared the sampler's frequencies with the distribution it claims. The
    test has the power to see a wrong law: 3,000 draws at temperature 1 give p = 5e-30
    against temperature 0.8, 2e-253 against 0.6; a top k not cut draws the ids outside."""
    from scipy.stats import chisquare

    logits = [0.3, -1.0, 1.2, 0.0, 2.0, -0.5]
    p = _expected(logits, temperature, top_k)
    draws = sample_ids(_flat(logits), [0], 3000, temperature=temperature, top_k=top_k, rng=11)
    counts = np.bincount(draws, minlength=V)
    assert (counts[p == 0] == 0).all()  # nothing outside the top k
    kept = p > 0
    assert chisquare(counts[kept], p[kept] * draws.size).pvalue > 1e-3


def test_a_top_k_at_or_above_the_vocabulary_keeps_every_id():
    """top_k > V ran without a word: now documented (as Hugging Face's generate, it keeps
    every id) and held to it: the same draws as no top_k, not an error nor a cut."""
    m = _model()
    free = sample_ids(m, [1, 2], 30, rng=7)
    for k in (V, V + 1, 10**9):
        np.testing.assert_array_equal(sample_ids(m, [1, 2], 30, top_k=k, rng=7), free)
    z = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(next_token_probabilities(z, 0.7, 4),
                                  next_token_probabilities(z, 0.7))  # fmt: skip
    assert len(set(free.tolist())) > 2  # (a draw over several ids, not one repeated)


def test_different_seeds_draw_different_text():
    m = _model()
    draws = {tuple(sample_ids(m, [1, 2], 20, rng=seed).tolist()) for seed in range(5)}
    assert len(draws) == 5


def test_a_bidirectional_model_is_refused_as_it_cannot_generate_left_to_right():
    """It sampled: each step read alone with the reverse direction's state carried forward,
    text from a model other than the one trained."""
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": "lstm", "hidden_size": 4, "bidirectional": True}, "output_size": V}
    with pytest.raises(ValueError, match=r"`model` must be a model that reads left to right; "
                       r"got a model with a bidirectional layer \(Recurrent, module 1\)"):
        sample_ids(build(spec, dtype=np.float64, rng=0), [1, 2], 3, rng=0)


@pytest.mark.parametrize("prime,bad", [([1, V], V), ([-1, 2], -1)])
def test_a_prime_id_outside_the_vocabulary_is_named_as_the_prime(prime, bad):
    """The embedding refused it as `x`, an argument sample_ids does not have."""
    with pytest.raises(ValueError, match=rf"`prime` must be token ids in \[0, {V}\); got the "
                       rf"id {bad} instead"):  # fmt: skip
        sample_ids(_model(), prime, 3, rng=0)


def test_a_positive_float_option_refuses_inf_as_not_finite(capsys, tmp_path):
    """`--temperature inf` (or `--init-scale inf`) was refused as "must be a positive number"
    (inf is one): the options that take a positive float say "a positive finite number"."""
    from rnnlab.cli import main

    assert main(["gradflow", "adding", "--init-scale", "inf", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "`--init-scale` must be a positive finite number; got 'inf' instead" in err, err


def test_rng_none_is_documented_fresh_entropy_and_draws_anew():
    """`rng` is required; None is accepted as NumPy's fresh entropy (the docstring and the
    README say so): two calls draw different ids, where a seed draws the same."""
    m = _model()
    for text in (sample_ids.__doc__ or "", README.read_text(encoding="utf-8")):
        assert re.search(r"None`? takes fresh entropy", " ".join(text.split()))
    flat = _flat(np.zeros(V))  # V = 6 equally likely ids: 30 draws alike twice by chance 5e-24
    assert not np.array_equal(sample_ids(flat, [0], 30, rng=None),
                              sample_ids(flat, [0], 30, rng=None))  # fmt: skip
    np.testing.assert_array_equal(sample_ids(m, [1, 2], 20, rng=9),
                                  sample_ids(m, [1, 2], 20, rng=9))  # fmt: skip


def test_a_model_with_more_outputs_than_its_vocabulary_is_refused_before_sampling():
    """An id the model may draw but its embedding cannot read failed mid-sample as `x`
    ("token ids in [0, 6)"), or not at all if the seed never drew one: whether a call
    worked depended on the seed. Excluding those ids samples among the others."""
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": "gru", "hidden_size": 4}, "output_size": V + 3}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=0)
    for seed in range(3):
        with pytest.raises(ValueError, match=r"`model` must be a model whose outputs are ids "
                                             r"its embedding reads \(at most 6 of them\); got "
                                             r"9 outputs instead. Pass exclude= the ids from 6"):
            sample_ids(m, [1, 2], 1, rng=seed)
    with pytest.raises(ValueError, match=r"`model` must be a model whose outputs"):
        sample_ids(m, [1, 2], 5, rng=0, exclude=[V, V + 1])  # (one id left unread)
    out = sample_ids(m, [1, 2], 200, rng=0, exclude=[V, V + 1, V + 2])
    assert out.max() < V and len(set(out.tolist())) > 1


def test_a_model_that_reads_vectors_is_refused_as_the_model():
    """It failed inside the model as "`x` must be a floating-point array", an argument
    sample_ids does not have."""
    for cell, feedback in (("lstm", None), ("jordan", "sigmoid")):
        spec = {"input": {"type": "vectors", "size": 3}, "rnn": {"cell": cell, "hidden_size": 4},
                "output_size": V} | ({"feedback": feedback} if feedback else {})  # fmt: skip
        first = "Recurrent" if cell == "lstm" else "OutputFeedback"
        with pytest.raises(ValueError, match=rf"`model` must be a token model \(an Embedding "
                                             rf"first, reading the ids\); got a model whose "
                                             rf"first module, {first}, reads vectors of 3 "
                                             rf"features"):  # fmt: skip
            sample_ids(build(spec, dtype=np.float64, rng=0), [1, 2], 3, rng=0)


def test_exclude_takes_an_empty_list_and_a_single_id():
    """[] (exclude nothing) was refused as an array of float64; one id, as Seq2Seq's
    `never` takes it, as "an array of integers; got 2 (int)"."""
    m = _model()
    np.testing.assert_array_equal(sample_ids(m, [1], 30, rng=4, exclude=[]),
                                  sample_ids(m, [1], 30, rng=4))  # fmt: skip
    np.testing.assert_array_equal(sample_ids(m, [1], 30, rng=4, exclude=V - 1),
                                  sample_ids(m, [1], 30, rng=4, exclude=[V - 1]))  # fmt: skip
    assert V - 1 not in sample_ids(m, [1], 30, rng=4, exclude=np.int64(V - 1)).tolist()
    with pytest.raises(ValueError, match=r"`exclude` must be ids: an integer or a 1-D array"):
        sample_ids(m, [1], 3, rng=0, exclude=True)


def test_a_time_major_model_samples_as_its_batch_first_copy():
    """A model whose layer reads (time, batch, ...) read the prime as that many sequences
    of one step, then failed on its state's shape (`state[0] (h0)`); a prime of one id
    hid it. It samples now as the same weights batch-first do, the prime read in order."""
    from rnnlab.layers import LSTM
    from rnnlab.modules import Embedding, Linear, Sequential

    rng = np.random.default_rng(0)
    emb, lin = Embedding(V, 3, dtype=np.float64, rng=rng), Linear(4, V, dtype=np.float64, rng=rng)
    time_major = LSTM(3, 4, batch_first=False, dtype=np.float64, rng=rng)
    for v in (*time_major.params.values(), lin.params["weight"]):
        v *= 3.0  # (the draws depend on what was read, not on the readout's bias)
    lin.params["bias"][:] = 0.0
    batch_first = LSTM(3, 4, dtype=np.float64, rng=0)
    batch_first.load_state_dict(time_major.state_dict())
    prime = np.array([1, 4, 2, 3, 0])
    a = sample_ids(Sequential(emb, time_major, lin), prime, 40, rng=5)
    b = sample_ids(Sequential(emb, batch_first, lin), prime, 40, rng=5)
    np.testing.assert_array_equal(a, b)
    firsts = set()
    for p in np.random.default_rng(1).integers(0, V, (12, 6)):  # the first greedy id: the
        first = sample_ids(Sequential(emb, time_major, lin), p, 1, top_k=1, rng=0)[0]
        out = Sequential(emb, batch_first, lin).forward(p[None]).output[0, -1]
        assert first == out.argmax()  # argmax after the whole prime, read in order
        firsts.add(int(first))
    assert len(firsts) > 1 and len(set(a.tolist())) > 2  # (they depend on the prime)


@pytest.mark.parametrize("cell", ["lstm", "jordan-elman"])
def test_sampling_asks_the_model_for_no_tape(cell):
    """No backward follows a sample: every forward is asked grad=False (a long prime's tape
    was kept, and FeedbackModel ignored grad=False), and the draws are the same."""
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": 3},
            "rnn": {"cell": cell, "hidden_size": 4}, "output_size": V}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=0)
    want = sample_ids(m, [1, 2, 3], 6, rng=2)
    seen, tapes = [], []
    forward = m.forward

    def spy(x, **options):
        seen.append(options.get("grad", True))
        f = forward(x, **options)
        if cell == "jordan-elman":  # (FeedbackModel's cache: the embedding's, the layer's)
            tapes.append(f.cache[1].cache["tape"])
        return f

    m.forward = spy
    np.testing.assert_array_equal(sample_ids(m, [1, 2, 3], 6, rng=2), want)
    assert seen == [False] * 7
    assert all(t is None for t in tapes)


@pytest.mark.parametrize("logits,match", [
    (["a", "b"], r"`logits` must be an array of numbers, ids on its last axis; got a list"),
    (np.float64(2.0), r"`logits` must be an array with one id or more on its last axis; got "
                      r"shape \(\)"),
    (np.zeros((2, 0)), r"`logits` must be an array with one id or more on its last axis; got "
                       r"shape \(2, 0\)"),
])  # fmt: skip
def test_next_token_probabilities_names_logits_without_ids(logits, match):
    """Strings failed with NumPy's "could not convert string to float"; a scalar gave the
    probability 1.0 of no id; no ids were said to be "only −inf"."""
    with pytest.raises(ValueError, match=match):
        next_token_probabilities(logits, 1.0)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
def test_an_exported_onnx_model_samples_as_the_model_and_an_older_file_too(batch_first,
                                                                        tmp_path):  # fmt: skip
    """A Runtime runs an exported file behind the module API; it draws the ids the model
    draws (batch-first or time-major). An older file's vocabulary size is not recorded
    (num_embeddings 0, "unknown"): every prime was refused as "token ids in [0, 0)"; only
    a negative id is now, and the same ids are drawn."""
    for module in ("onnx", "onnxruntime"):
        oracle(module)
    from rnnlab.layers import GRU
    from rnnlab.modules import Embedding, Linear, Sequential
    from rnnlab.onnx import Runtime, export

    rng = np.random.default_rng(3)
    gru = GRU(3, 4, batch_first=batch_first, dtype=np.float32, rng=rng)
    m = Sequential(Embedding(V, 3, rng=rng), gru, Linear(4, V, rng=rng))
    for v in m.params.values():
        v *= 3.0
    export(m, tmp_path / "m.onnx", state=True)
    rt = Runtime(tmp_path / "m.onnx")
    want = sample_ids(m, [1, 2, 3], 30, rng=0)
    assert len(set(want.tolist())) > 2
    np.testing.assert_array_equal(sample_ids(rt, [1, 2, 3], 30, rng=0), want)
    rt.num_embeddings = 0  # as a file from before the size was recorded
    np.testing.assert_array_equal(sample_ids(rt, [1, 2, 3], 30, rng=0), want)
    with pytest.raises(ValueError, match=r"`prime` must be token ids in \[0, the vocabulary "
                                         r"size\); got the id -1"):  # fmt: skip
        sample_ids(rt, [1, -1], 3, rng=0)
