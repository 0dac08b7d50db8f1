"""The encoder–decoder: exact gradients through decoder, attention, bridge and encoder, and
generation that agrees with teacher forcing."""

import math

import numpy as np
import pytest

from rnnlab import gradcheck
from rnnlab.seq2seq import Seq2Seq

B, S, T, V, W = 3, 5, 4, 7, 6
SRC_LENGTHS, TGT_LENGTHS = np.array([5, 2, 4]), np.array([4, 3, 1])


def model(cell="lstm", bi=False, attention="none", seed=1, **kw):
    m = Seq2Seq(V, W, embed=3, hidden=4, cell=cell, bidirectional=bi, attention=attention,
                attention_size=3 if attention == "additive" else None, dtype=np.float64, rng=seed,
                encoder_layers=2 if bi else 1, **kw)  # fmt: skip
    g = np.random.default_rng(seed + 1)
    for v in m.params.values():  # weights large enough that no gradient is tiny
        v[...] = g.uniform(-0.8, 0.8, v.shape)
    return m


@pytest.mark.parametrize("attention", ["none", "multiplicative", "additive"])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradients_are_exact(cell, bi, attention):
    """Every parameter against central differences, padded sources and targets. The step
    1e-4: the attention's weights have gradients of norm ~1e-4 here, whose differences at
    smaller steps drown in rounding (the error then grows as 1/eps)."""
    _gradients_are_exact(cell, bi, attention)


def _gradients_are_exact(cell, bi, attention):
    m = model(cell, bi, attention)
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, V, (B, S)), rng.integers(0, W, (B, T))
    report = gradcheck(m, src, tgt_in=tgt, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS,
                       check_input=False, eps=1e-4)  # fmt: skip
    assert report.max_error < 1e-7, str(report)
    assert set(report.errors) == set(m.params)


@pytest.mark.parametrize("bi,attention", [(False, "none"), (True, "additive")],
                         ids=["uni-none", "bi-additive"])
@pytest.mark.parametrize("cell", ["rnn", "relu", "irnn", "gru-orig"])
def test_gradients_are_exact_for_the_other_cells(cell, bi, attention):
    """The cells Seq2Seq takes besides the LSTM and GRU, as above (PyTorch parity for those
    it has: test_seq2seq_torch.py; gru-orig has no PyTorch module)."""
    _gradients_are_exact(cell, bi, attention)


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_greedy_equals_teacher_forcing_on_its_own_output(attention):
    """Fed back step by step, the decoder computes what the one-call teacher-forced pass
    computes when given the same tokens: the same logits."""
    m = model("gru", True, attention)
    src = np.random.default_rng(3).integers(0, V, (B, S))
    ids, logits = m.greedy(src, src_lengths=SRC_LENGTHS, bos=0, eos=W - 1, max_len=6)
    assert ids.shape[0] == B and logits.shape[:2] == ids.shape
    tgt_in = np.concatenate([np.zeros((B, 1), int), ids[:, :-1]], axis=1)
    f = m.forward(src, tgt_in, src_lengths=SRC_LENGTHS)
    done = np.cumsum(ids == W - 1, axis=1) - (ids == W - 1) > 0  # after the first EOS
    np.testing.assert_allclose(
        np.where(done[..., None], 0, f.output), np.where(done[..., None], 0, logits), atol=1e-12
    )
    np.testing.assert_array_equal(np.where(done, W - 1, f.output.argmax(-1)), ids)


@pytest.mark.parametrize("cell,bi,attention", [("lstm", True, "additive"),
                                               ("gru", False, "multiplicative"),
                                               ("rnn", True, "none")])  # fmt: skip
def test_a_padded_batch_decodes_as_each_source_alone(cell, bi, attention):
    """Greedy decoding and beam search of sources padded past the longest (ids in the
    padding) give each source what it gets decoded on its own, unpadded: the encoder's
    final state is taken at each source's own last step, in both directions, and the
    attention reads no padding (evaluation decodes batches; translate one line or many)."""
    m = model(cell, bi, attention, seed=8)
    rng = np.random.default_rng(9)
    lengths = np.array([5, 2, 4, 1])
    src = rng.integers(0, V, (4, 7))
    kw = dict(bos=0, eos=W - 1, max_len=6)
    ids, logits = m.greedy(src, src_lengths=lengths, **kw)
    beam, score = m.beam_search(src, src_lengths=lengths, width=3, **kw)
    for i, n in enumerate(lengths):
        alone = src[i : i + 1, :n]
        ids1, logits1 = m.greedy(alone, **kw)
        k = ids1.shape[1]
        np.testing.assert_array_equal(ids[i, :k], ids1[0])
        assert (ids[i, k:] == W - 1).all()  # (the batch ran on for the others: EOS)
        np.testing.assert_allclose(logits[i, :k], logits1[0], rtol=0, atol=1e-12)
        beam1, score1 = m.beam_search(alone, width=3, **kw)
        k = beam1.shape[1]
        np.testing.assert_array_equal(beam[i, :k], beam1[0])
        assert (beam[i, k:] == W - 1).all()
        assert score[i] == pytest.approx(score1[0], abs=1e-12)


def test_bridge_and_names():
    m = Seq2Seq(V, W, hidden=8, bidirectional=True, attention="multiplicative", rng=0)
    assert m.params["bridge_h.weight"].shape == (8, 16)  # [h_S ; h'_1] → h_0
    assert m.params["attention.weight"].shape == (8, 16)
    plain = Seq2Seq(V, W, hidden=8, cell="gru", rng=0)
    assert not any(k.startswith("bridge") for k in plain.params)  # final state as it is


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attention="dot"), r"`attention` must be one of 'none', 'multiplicative'"),
        (dict(cell="jordan"), r"`cell` must be"),
        (dict(hidden=0), r"`hidden` must be a positive integer"),
        (dict(target_vocab=0), r"`target_vocab` must be a positive integer"),
        (dict(attention="additive", attention_size=0), r"`attention_size` must be a positive"),
        (dict(attention="multiplicative", attention_size=8),
         r"`attention_size` must be None \(only additive attention has a size\)"),
        (dict(recurrent={"foo": 1}), r"`recurrent` must be layer options among .*'foo'"),
        (dict(recurrent={"bidirectional": True}), r"`recurrent` must be layer options among"),
        (dict(recurrent={"proj_size": 2}), r"`recurrent` must be no proj_size"),
        (dict(recurrent=[("dropout", 0.1)]), r"`recurrent` must be a dict of layer options"),
    ],
)
def test_bad_settings(kwargs, match):
    kwargs = {"target_vocab": W, **kwargs}
    with pytest.raises(ValueError, match=match):
        Seq2Seq(V, **kwargs)


def test_a_learned_initial_state_is_refused_not_made_a_parameter_nothing_reads():
    """The decoder starts from the encoder's state, so `recurrent={"initial_state":
    "learned"}` made `decoder.h0_l0` (and an LSTM's `decoder.c0_l0`), parameters that no
    pass reads, whose gradient is always zero, trained, saved and exported without a word
    (the command line refuses --initial-state learned for the same reason)."""
    for cell in ("lstm", "gru"):
        with pytest.raises(ValueError, match=r"`recurrent` must be no initial_state"):
            Seq2Seq(V, W, hidden=4, cell=cell, recurrent={"initial_state": "learned"}, rng=0)
    m = Seq2Seq(V, W, hidden=4, recurrent={"initial_state": "zeros"}, rng=0)
    assert not any("0_l" in k for k in m.params)


def test_token_ids_and_the_special_tokens_are_checked_by_their_names():
    """An EOS outside the vocabulary would never end a sequence (greedy ran to max_len, the
    beam raised an IndexError) and a negative one would end it at another token."""
    m = model("gru", False, "none", seed=2)
    src = np.random.default_rng(3).integers(0, V, (B, S))
    tgt = np.zeros((B, T), int)
    with pytest.raises(ValueError, match=rf"`tgt_in` must be token ids in \[0, {W}\); got the id"):
        m.forward(src, tgt + W)
    with pytest.raises(ValueError, match=rf"`src` must be token ids in \[0, {V}\); got the id -1"):
        m.forward(src - 1, tgt)
    kw = dict(max_len=4)
    for method in (m.greedy, m.sample, m.beam_search):
        for bos, eos, bad in ((0, W, "eos"), (0, -1, "eos"), (W + 2, 1, "bos"), (0, 1.0, "eos"),
                              (True, 1, "bos")):  # fmt: skip
            with pytest.raises(ValueError, match=rf"`{bad}` must be a target token id in"):
                method(src, bos=bos, eos=eos, **kw)


@pytest.mark.parametrize("attention", ["none", "multiplicative"])
def test_beam_of_width_one_is_greedy(attention):
    m = model("lstm", True, attention, seed=4)
    src = np.random.default_rng(5).integers(0, V, (B, S))
    g, _ = m.greedy(src, src_lengths=SRC_LENGTHS, bos=0, eos=W - 1, max_len=7)
    b, _ = m.beam_search(src, src_lengths=SRC_LENGTHS, bos=0, eos=W - 1, max_len=7, width=1)
    np.testing.assert_array_equal(b, g)


def _log_prob(m, src, ids, eos, never=()):
    """Σ log p(y_t | y_<t, x) of each row's ids up to and including its first EOS (with
    `never`: of the distribution over the other ids)."""
    tgt_in = np.concatenate([np.zeros((ids.shape[0], 1), int), ids[:, :-1]], axis=1)
    z = m.forward(src, tgt_in, src_lengths=SRC_LENGTHS).output
    z[..., list(never)] = -np.inf
    logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(
        -1, keepdims=True
    )
    picked = np.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
    upto = np.cumsum(ids == eos, axis=1) - (ids == eos) == 0  # through the first EOS
    return (picked * upto).sum(axis=1)


def test_beam_finds_outputs_at_least_as_likely_as_greedy():
    """The beam's score is the model's log-probability of what it returns, and here (α = 0)
    it is at least greedy's. That is this model's case, not a property of beam search: a
    beam may drop greedy's prefix for prefixes that later fall below it (on 1,000 sources of
    20 random GRU models with additive attention, 8 target ids, 8 steps, widths 2, 3 and 5
    scored below greedy 8, 2 and 0 times; a plain reference beam did the same; the seq2seq
    review). Exhaustive search is the check of the search itself (below)."""
    m = model("gru", False, "additive", seed=6)
    src = np.random.default_rng(7).integers(0, V, (B, S))
    eos = W - 1
    g, _ = m.greedy(src, src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=6)
    b, score = m.beam_search(src, src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=6, width=4,
                             alpha=0.0)  # fmt: skip
    np.testing.assert_allclose(score, _log_prob(m, src, b, eos), atol=1e-9)
    assert (score >= _log_prob(m, src, g, eos) - 1e-9).all()


def test_sampling_is_seeded_and_top_1_is_greedy():
    m = model("lstm", False, "none", seed=8)
    src = np.random.default_rng(9).integers(0, V, (B, S))
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=W - 1, max_len=6)
    a, _ = m.sample(src, rng=1, temperature=0.7, **kw)
    b, _ = m.sample(src, rng=1, temperature=0.7, **kw)
    np.testing.assert_array_equal(a, b)
    top1, _ = m.sample(src, rng=2, top_k=1, **kw)
    np.testing.assert_array_equal(top1, m.greedy(src, **kw)[0])
    with pytest.raises(ValueError, match=r"`temperature` must be a positive number"):
        m.sample(src, temperature=0, **kw)


def test_a_tiny_temperature_is_greedy_and_top_k_keeps_exactly_k():
    """logits / temperature overflowed to inf − inf = NaN and sampled token 0; a threshold at
    the k-th logit kept every tie with it."""
    from rnnlab.generate import next_token_probabilities

    m = model("lstm", False, "none", seed=8)
    m.params["out.bias"][:] = np.arange(W) * 0.5  # the last token the clear favourite
    src = np.random.default_rng(9).integers(0, V, (B, S))
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=0, max_len=5)
    greedy = m.greedy(src, **kw)[0]
    for t in (1e-300, 5e-324):
        np.testing.assert_array_equal(m.sample(src, rng=1, temperature=t, **kw)[0], greedy)
    m32 = Seq2Seq(V, W, embed=3, hidden=4, dtype=np.float32, rng=8)
    m32.params["out.bias"][:] = np.arange(W) * 5.0
    ids, _ = m32.sample(src, rng=1, temperature=1e-38, **kw)
    np.testing.assert_array_equal(ids, m32.greedy(src, **kw)[0])
    p = next_token_probabilities(np.array([[1.0, 1.0, 0.0, -5.0], [0.0, 2.0, 2.0, 2.0]]), 1.0, 2)
    assert ((p > 0).sum(axis=1) == 2).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    p1 = next_token_probabilities(np.array([[1.0, 1.0, 0.0]]), 1.0, 1)
    assert (p1 > 0).sum() == 1


def test_vector_sources_gradients_are_exact():
    """A source of vectors (an image read column by column): no source embedding, and the
    gradient of the source itself (zero past each source's length) is exact too."""
    m = Seq2Seq(None, W, source_features=3, embed=3, hidden=4, bidirectional=True,
                attention="additive", attention_size=3, dtype=np.float64, rng=2)  # fmt: skip
    g = np.random.default_rng(3)
    for v in m.params.values():
        v[...] = g.uniform(-0.8, 0.8, v.shape)
    assert not any(k.startswith("src_embed") for k in m.params)
    x, tgt = g.standard_normal((B, S, 3)), g.integers(0, W, (B, T))
    report = gradcheck(m, x, tgt_in=tgt, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS,
                       eps=1e-4)  # fmt: skip
    assert report.max_error < 1e-7, str(report)
    assert "input" in report.errors and report.norms["input"] > 0
    b = m.backward(m.forward(x, tgt, src_lengths=SRC_LENGTHS), np.ones((B, T, W)))
    assert b.input.shape == x.shape and not b.input[1, 2:].any() and b.input[1, :2].any()
    no_input = m.backward(m.forward(x, tgt), np.ones((B, T, W)), input_grad=False)
    assert no_input.input is None


def test_a_source_is_tokens_or_vectors():
    match = r"`source_vocab` must be a vocabulary size for token sources, or None with"
    with pytest.raises(ValueError, match=match):
        Seq2Seq(None, W)
    with pytest.raises(ValueError, match=match):
        Seq2Seq(V, W, source_features=3)


@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "vectors"])
def test_input_dropout_gradients_are_exact_and_it_acts_in_training_only(tokens):
    """Dropout on what the encoder reads (the embeddings, or the source's vectors): the same
    mask for the same generator, so the gradient check holds; nothing changes in evaluation,
    and a bad probability is refused with its name."""
    kw = dict(embed=3, hidden=4, attention="additive", attention_size=3, dtype=np.float64,
              rng=6, input_dropout=0.5)  # fmt: skip
    m = Seq2Seq(V, W, **kw) if tokens else Seq2Seq(None, W, source_features=3, **kw)
    g = np.random.default_rng(7)  # (seeds whose gradients are none of them tiny, see above)
    for v in m.params.values():
        v[...] = g.uniform(-0.8, 0.8, v.shape)
    src = g.integers(0, V, (B, S)) if tokens else g.standard_normal((B, S, 3))
    tgt = g.integers(0, W, (B, T))
    kw = dict(tgt_in=tgt, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS)
    report = gradcheck(m, src, eps=1e-4, training=True, rng_seed=4, **kw)
    assert report.max_error < 1e-7, str(report)
    assert ("input" in report.errors) is not tokens  # (token ids have no gradient)
    plain = m.forward(src, **kw).output
    dropped = m.forward(src, training=True, rng=np.random.default_rng(4), **kw).output
    assert not np.allclose(plain, dropped)  # the mask acts in training
    again = m.forward(src, training=False, rng=np.random.default_rng(4), **kw).output
    np.testing.assert_array_equal(plain, again)
    with pytest.raises(ValueError, match=r"`input_dropout` must be a number in \[0, 1\)"):
        Seq2Seq(V, W, input_dropout=1.0)


def test_source_convolution_gradients_are_exact_and_padding_reads_nothing():
    """The 3×3 convolution over an image source (with input dropout before it): every
    gradient against central differences, its features zero past each source's length, and
    the channels refused for token sources or when negative, with the argument's name."""
    m = Seq2Seq(None, W, source_features=3, embed=3, hidden=4, attention="additive",
                attention_size=3, input_dropout=0.3, source_conv=2, dtype=np.float64,
                rng=3)  # fmt: skip
    g = np.random.default_rng(4)
    for v in m.params.values():
        v[...] = g.uniform(-0.8, 0.8, v.shape)
    assert m.params["conv.weight"].shape == (2, 9) and m.encoder.input_size == 6
    x, tgt = g.standard_normal((B, S, 3)), g.integers(0, W, (B, T))
    kw = dict(tgt_in=tgt, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS)
    report = gradcheck(m, x, eps=1e-4, training=True, rng_seed=4, **kw)
    assert report.max_error < 1e-7, str(report)
    assert "input" in report.errors and report.norms["input"] > 0  # through the convolution
    features, _ = m._conv(x, SRC_LENGTHS)
    assert not features[1, 2:].any() and features[1, :2].any()
    noisy = x.copy()
    noisy[1, 2:] = 99.0  # what lies past a source's length changes nothing
    np.testing.assert_array_equal(m.forward(x, **kw).output[1], m.forward(noisy, **kw).output[1])
    for bad, args in ((-1, (None, W)), (2, (V, W)), (True, (None, W))):
        with pytest.raises(ValueError, match=r"`source_conv` must be a non-negative number"):
            Seq2Seq(*args, source_features=3 if args[0] is None else None, source_conv=bad)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(tgt_lengths=[5, 4, 4]), r"`tgt_lengths` must be between 1 and the padded length 4"),
        (dict(src_lengths=[0, 6, 6]), r"`src_lengths` must be between 1 and the padded length 6"),
        (dict(tgt_lengths=[4, 4]), r"`tgt_lengths` must be an array of shape \(3,\)"),
        (dict(tgt=0), r"`tgt_in` must be one step at least \(BOS, then the target\); got shape "
                      r"\(3, 0\)"),
        (dict(src=0), r"`src` must be one step at least; got shape \(3, 0\)"),
    ],
)
def test_a_two_input_models_errors_name_the_argument(change, match):
    """With two inputs, "`lengths` must be ..." and "`x` must be ..." left the caller
    guessing which (the seq2seq review)."""
    m = Seq2Seq(9, 8, hidden=4, rng=0)
    src = np.zeros((3, 6), int)[:, : change.pop("src", 6)]
    tgt = np.ones((3, 4), int)[:, : change.pop("tgt", 4)]
    with pytest.raises(ValueError, match=match):
        m.forward(src, tgt, **change)


def test_decoding_never_chooses_the_ids_it_is_told_not_to():
    """A task's padding and BOS are never targets; a decoder that ranked one first wrote it
    into the output (the text then dropped it unsaid). With `never` greedy and beam choose
    among the rest: greedy's logits stay the model's own, beam's scores are of the model's
    distribution over the other ids."""
    m = model("gru", False, "additive", seed=6)
    m.params["out.bias"][1] += 50.0  # id 1 ranked first everywhere
    src = np.random.default_rng(7).integers(0, V, (B, S))
    eos = W - 1
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=6)
    g, _ = m.greedy(src, **kw)
    assert (g[:, 0] == 1).all()
    g, logits = m.greedy(src, never=(0, 1), **kw)
    assert not np.isin(g, (0, 1)).any()
    tgt_in = np.concatenate([np.zeros((B, 1), int), g[:, :-1]], axis=1)
    live = ~(np.cumsum(g == eos, axis=1) - (g == eos) > 0)
    np.testing.assert_allclose(np.where(live[..., None], logits, 0),
                               np.where(live[..., None], m.forward(src, tgt_in, src_lengths=
                               SRC_LENGTHS).output, 0), atol=1e-12)  # fmt: skip
    b, score = m.beam_search(src, width=3, alpha=0.0, never=(0, 1), **kw)
    assert not np.isin(b, (0, 1)).any()
    np.testing.assert_allclose(score, _log_prob(m, src, b, eos, never=(0, 1)), atol=1e-9)
    assert (score >= _log_prob(m, src, g, eos, never=(0, 1)) - 1e-9).all()
    one, _ = m.beam_search(src, width=1, never=(0, 1), **kw)
    np.testing.assert_array_equal(one, g)
    for bad in ((eos,), (W,), tuple(range(W - 1))):
        with pytest.raises(ValueError, match="`never` must be"):
            m.greedy(src, never=bad, **kw)


@pytest.mark.parametrize("method", ["forward", "greedy", "beam_search", "sample"])
def test_the_source_is_checked_under_its_own_name_by_every_entry(method):
    """A vector source of the wrong width said "`x` must be an array with 32 features ...
    (input_size)": the encoder's name for its input, and C·F features where the caller gave F;
    an empty batch named `x` too (the seq2seq review)."""
    vectors = Seq2Seq(None, W, source_features=8, source_conv=4, hidden=4, rng=0)
    tokens = Seq2Seq(V, W, hidden=4, rng=0)

    def call(m, src):
        if method == "forward":
            return m.forward(src, np.ones((src.shape[0], 3), int))
        return getattr(m, method)(src, bos=1, eos=2, max_len=3)

    cases = [
        (vectors, np.zeros((2, 5, 7), np.float32),
         r"`src` must be an array of 8 features a step \(source_features=8\); got 7 features"),
        (vectors, np.zeros((0, 5, 8), np.float32), r"`src` must be one source at least; got shape"),
        (tokens, np.zeros((0, 5), int), r"`src` must be one source at least; got shape \(0, 5\)"),
        (tokens, np.zeros((2, 0), int), r"`src` must be one step at least; got shape \(2, 0\)"),
    ]  # fmt: skip
    for m, src, match in cases:
        with pytest.raises(ValueError, match=match):
            call(m, src)


@pytest.mark.parametrize("name", ["embed", "encoder_layers", "decoder_layers"])
@pytest.mark.parametrize("bad", [0, 2.0, True])
def test_sizes_are_refused_under_the_callers_names(name, bad):
    """`embed=0` was refused as `embedding_dim`, `decoder_layers=0` as `num_layers`: the
    Embedding's and make_recurrent's names, not Seq2Seq's."""
    with pytest.raises(ValueError, match=rf"^`{name}` must be a positive integer; got"):
        Seq2Seq(V, W, **{name: bad})


def test_never_takes_one_id_and_names_the_offending_one():
    """`never=0` raised "TypeError: 'int' object is not iterable"; `never=[0, eos]` said "got
    a list of length 2" without saying which id was wrong."""
    m = model("gru", False, "additive", seed=6)
    src = np.random.default_rng(7).integers(0, V, (B, S))
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=2, max_len=5)
    for method, extra in ((m.greedy, {}), (m.beam_search, {"width": 2}), (m.sample, {"rng": 1})):
        for one in (1, np.int64(1), np.array(1), {1}, frozenset([1]), (i for i in [1]),
                    {1: "x"}.keys(), np.array([1])):
            a, b = method(src, never=one, **kw, **extra), method(src, never=[1], **kw, **extra)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        cases = [
            ([0, 2], r"`never` must be ids other than eos \(decoding ends on it\); got 2, the "
                     r"eos id instead"),
            ([0, W], rf"`never` must be target token ids in \[0, {W}\); got the id {W} instead"),
            ([0, 1.0], r"got 1.0 \(float\) instead"),
            ("0", r"`never` must be a target token id or a collection of them; got '0' \(str\)"),
            (None, r"`never` must be a target token id or a collection of them"),
            ({1: "x"}, r"`never` must be a target token id or a collection of them; got "),
            (np.array(1.5), r"got 1.5 \(float\) instead"),
        ]  # fmt: skip
        for bad, match in cases:
            with pytest.raises(ValueError, match=match):
                method(src, never=bad, **kw, **extra)


class _Fixed(np.random.Generator):
    """A generator whose every uniform draw is u: the edges of sampling's [0, 1)."""

    def __init__(self, u):
        super().__init__(np.random.PCG64(0))
        self.u = u

    def random(self, size=None, dtype=np.float64, out=None):
        return np.full(size, self.u)


def test_sampling_takes_never_and_never_draws_an_id_of_probability_zero():
    """`sample` had no `never`: a weak decoder drew BOS or padding as readily as any token
    (31 % BOS in the review's test). And at the edges of [0, 1) it drew an id of probability
    0: id 0 at u = 0, the last id where the cumulative sum rounded below u."""
    m = model("gru", False, "additive", seed=6)
    m.params["out.bias"][1] += 3.0  # id 1 (BOS here) likely everywhere
    src = np.repeat(np.random.default_rng(7).integers(0, V, (1, S)), 400, axis=0)
    kw = dict(bos=1, eos=W - 1, max_len=4)
    assert (m.sample(src, rng=0, **kw)[0] == 1).any()
    ids, _ = m.sample(src, rng=0, never=(0, 1), **kw)
    assert not np.isin(ids, (0, 1)).any()
    flat = Seq2Seq(V, W, embed=3, hidden=4, dtype=np.float64, rng=0)
    flat.params["out.weight"][:] = 0.0  # logits = the bias: their probabilities sum to
    flat.params["out.bias"][:] = [1.0, -0.4, -0.6, -1.2, -1.2, -5.0]  # 1 - 2 ulp without id 5
    kw = dict(bos=1, eos=2, max_len=3)
    for u in (0.0, np.nextafter(1.0, 0.0)):
        for extra in ({"top_k": 5}, {"never": 5}, {"never": (0, 5)}):
            banned = [5] + ([0] if extra.get("never") == (0, 5) else [])
            ids, _ = flat.sample(src[:2], rng=_Fixed(u), **kw, **extra)
            assert not np.isin(ids, banned).any(), (u, extra, ids)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beam_of_width_one_is_greedy_at_a_near_tie(dtype):
    """Two logits an ulp apart: logp = z − logsumexp(z) rounded them to one value, and the
    beam's stable sort kept the lower id where greedy's argmax keeps the higher."""
    m = Seq2Seq(5, 6, embed=3, hidden=4, dtype=dtype, rng=0)
    m.params["out.weight"][...] = 0
    bias = m.params["out.bias"]
    bias[...] = -5
    bias[3], bias[4] = 0.01, np.nextafter(dtype(0.01), dtype(1))
    src = np.ones((2, 3), int)
    g, _ = m.greedy(src, bos=1, eos=2, max_len=3)
    assert (g == 4).all()
    for never in ((), (0,)):
        b, _ = m.beam_search(src, bos=1, eos=2, max_len=3, width=1, never=never)
        np.testing.assert_array_equal(b, g)
    bias[3] = bias[4]  # an exact tie: the lower id, as argmax
    g, _ = m.greedy(src, bos=1, eos=2, max_len=3)
    assert (g == 3).all()
    np.testing.assert_array_equal(m.beam_search(src, bos=1, eos=2, max_len=3, width=1)[0], g)


def _wild(seed, attention):
    """A small model with weights large enough that outputs differ in probability a lot."""
    m = Seq2Seq(5, 4, embed=3, hidden=4, attention=attention, bidirectional=seed % 2 == 1,
                dtype=np.float64, rng=seed)  # fmt: skip
    g = np.random.default_rng(seed + 100)
    for v in m.params.values():
        v[...] = g.uniform(-1.5, 1.5, v.shape)
    return m


def _logp_of(m, src, lengths, seq, bos, never=()):
    """log p(seq | src) under the model (over the ids not in `never`), one sequence."""
    z = m.forward(src, np.array([[bos, *seq[:-1]]]), src_lengths=lengths).output[0].copy()
    z[:, list(never)] = -np.inf
    lp = z - z.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    return sum(lp[t, s] for t, s in enumerate(seq))


def _until_eos(row, eos):
    row = list(row)
    return tuple(row[: row.index(eos) + 1]) if eos in row else tuple(row)


def test_a_beam_wider_than_the_outputs_is_exhaustive_search():
    """Every output of up to 4 tokens scored by the teacher-forced model: a beam that keeps
    them all returns the best under the length penalty (the review's check, smaller)."""
    import itertools

    bos, eos, W4, max_len = 0, 3, 4, 4
    outputs = [seq for n in range(1, max_len + 1)
               for seq in itertools.product(range(W4), repeat=n)
               if eos not in seq[:-1] and (n == max_len or seq[-1] == eos)]  # fmt: skip
    for seed, attention in enumerate(["none", "additive", "multiplicative"] * 2):
        m = _wild(seed, attention)
        src, lengths = np.random.default_rng(seed).integers(0, 5, (1, 4)), np.array([3])
        lp = {s: _logp_of(m, src, lengths, s, bos) for s in outputs}
        for alpha in (0.0, 0.6):
            ids, score = m.beam_search(src, src_lengths=lengths, bos=bos, eos=eos, alpha=alpha,
                                       max_len=max_len, width=len(outputs))  # fmt: skip
            best = max(outputs, key=lambda s: lp[s] / ((5 + len(s)) / 6) ** alpha)
            assert _until_eos(ids[0], eos) == best, (seed, alpha)
            assert score[0] == pytest.approx(lp[best], abs=1e-9)


def test_a_length_penalty_past_float64_still_ranks_by_score():
    """An α so large that a decoded length's penalty ((5 + L) / 6)^α overflows (or, negative,
    underflows): the winner is still the exhaustive search's best under the penalty, ranked
    in logarithms (s / pen was -0.0 or -inf for every long output, and the first of them
    won whatever its score, with an overflow warning)."""
    import itertools

    bos, eos, W4, max_len = 0, 3, 4, 4
    outputs = [seq for n in range(1, max_len + 1)
               for seq in itertools.product(range(W4), repeat=n)
               if eos not in seq[:-1] and (n == max_len or seq[-1] == eos)]  # fmt: skip
    for seed, attention in enumerate(["none", "additive", "multiplicative"]):
        m = _wild(seed, attention)
        src, lengths = np.random.default_rng(seed).integers(0, 5, (1, 4)), np.array([3])
        lp = {s: _logp_of(m, src, lengths, s, bos) for s in outputs}
        for alpha in (3000.0, -3000.0):  # (9/6)^3000 = e^1216: past float64 both ways
            ids, score = m.beam_search(src, src_lengths=lengths, bos=bos, eos=eos, alpha=alpha,
                                       max_len=max_len, width=len(outputs))  # fmt: skip
            best = min(outputs, key=lambda s: math.log(-lp[s]) - alpha * math.log((5 + len(s)) / 6))
            assert _until_eos(ids[0], eos) == best, (seed, alpha)
            assert score[0] == pytest.approx(lp[best], abs=1e-9)


def test_beam_search_equals_a_plain_reference_beam():
    """A beam written plainly (one hypothesis at a time, the teacher-forced model's
    distribution, sorted by score) keeps the same hypotheses: widths 2 and 3, with and
    without a length penalty and `never`."""
    bos, eos, W4 = 1, 2, 4

    def reference(m, src, lengths, k, max_len, alpha, never):
        beam = [((), 0.0, False)]
        for _ in range(max_len):
            cand = []
            for seq, s, done in beam:
                if done:
                    cand.append(((*seq, eos), s, True))
                    continue
                z = m.forward(src, np.array([[bos, *seq]]), src_lengths=lengths).output[0, -1]
                z = z.copy()
                z[list(never)] = -np.inf
                lp = z - z.max() - np.log(np.exp(z - z.max()).sum())
                cand += [((*seq, t), s + lp[t], t == eos) for t in range(W4) if np.isfinite(lp[t])]
            beam = sorted(cand, key=lambda c: -c[1])[:k]
            if all(d for _, _, d in beam):
                break
        best = max(beam, key=lambda c: c[1] / ((5 + len(_until_eos(c[0], eos))) / 6) ** alpha)
        return _until_eos(best[0], eos), best[1]

    for seed, attention in enumerate(["none", "additive", "multiplicative"] * 2):
        m = _wild(seed, attention)
        src, lengths = np.random.default_rng(seed).integers(0, 5, (1, 4)), np.array([4])
        for k, alpha, never in ((2, 0.0, ()), (3, 0.6, ()), (2, 0.6, (0,)), (3, 0.0, (0, 3))):
            ids, score = m.beam_search(src, src_lengths=lengths, bos=bos, eos=eos, max_len=5,
                                       width=k, alpha=alpha, never=never)  # fmt: skip
            out, ref_score = reference(m, src, lengths, k, 5, alpha, never)
            assert _until_eos(ids[0], eos) == out and score[0] == pytest.approx(ref_score, abs=1e-9)


class _Counted(np.ndarray):
    """A weight that counts how often its transpose is read: the source's projection."""

    reads = 0

    @property
    def T(self):  # noqa: N802 (NumPy's name)
        _Counted.reads += 1
        return np.asarray(self).T


@pytest.mark.parametrize("attention", ["multiplicative", "additive"])
def test_decoding_projects_each_source_once_and_computes_what_it_did(attention):
    """The attention's projection of the source (enc W_aᵀ, or W_1 e_j) was computed again at
    every decoding step though it depends on the source alone: now once per call, for the
    beam's repeated rows too, with the same numbers to the bit as the per-step path (its
    `_head` without the keys) in float32."""
    m = Seq2Seq(V, W, embed=5, hidden=8, attention=attention, bidirectional=True, rng=3)
    m.params["out.bias"][W - 1] = -50.0  # EOS never first: every call runs max_len steps
    src = np.random.default_rng(4).integers(0, V, (B, S))
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=W - 1, max_len=6)
    calls = {"greedy": lambda: m.greedy(src, **kw),
             "beam": lambda: m.beam_search(src, width=3, **kw),
             "sample": lambda: m.sample(src, rng=5, temperature=0.8, **kw)}  # fmt: skip
    new = {name: call() for name, call in calls.items()}

    def per_step(self, prev, state, memory):  # the old path: keys made again at each step
        fdec = self.decoder.forward(self.tgt_embed.forward(prev[:, None]).output, state=state,
                                    grad=False, check=False, check_state=False)  # fmt: skip
        logits, _ = self._head(fdec.output, memory.enc, memory.mask)
        return logits[:, 0], fdec.state

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Seq2Seq, "_step", per_step)
        old = {name: call() for name, call in calls.items()}
    for name in calls:
        for a, b in zip(new[name], old[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    key = "weight" if attention == "multiplicative" else "weight_source"
    m.attn[key] = m.attn[key].view(_Counted)
    for name, call in calls.items():
        _Counted.reads = 0
        ids, _ = call()
        assert ids.shape[1] == 6 and _Counted.reads == 1, (name, _Counted.reads)


def test_a_seed_gives_the_encoder_and_the_decoder_masks_of_their_own():
    """An int seed (or a SeedSequence) made a Generator in each of the input dropout, the
    encoder and the decoder: the same seed, so their masks were drawn alike. One Generator
    serves the whole pass now, as Sequential's does (regression review, 2026-12-05)."""
    from rnnlab.seq2seq import Seq2Seq

    model = Seq2Seq(6, 5, embed=4, hidden=8, input_dropout=0.3, recurrent={"zoneout": 0.2},
                    rng=0)  # fmt: skip
    src = np.array([[1, 2, 3, 4], [2, 3, 4, 5]])
    tgt = np.array([[1, 2, 3], [1, 3, 4]])
    shared = model.forward(src, tgt, training=True, rng=np.random.default_rng(7)).output
    for seed in (7, np.random.SeedSequence(7)):
        out = model.forward(src, tgt, training=True, rng=seed).output
        want = shared if isinstance(seed, int) else model.forward(
            src, tgt, training=True, rng=np.random.default_rng(np.random.SeedSequence(7))).output
        np.testing.assert_array_equal(out, want)


def test_beams_top_k_equals_the_full_tie_broken_sort():
    """Beam search sorts each row's k·V candidates by a stable argsort and sorts again, with
    the tie-break, only the rows with a tie among their k + 1 best (a lexsort of every row
    was 1.5-2x slower at V = 5,000-25,000): the same picks as the lexsort of every row, on
    rows with exact ties, -inf scores and ended hypotheses."""
    from rnnlab.seq2seq import _top_k

    rng = np.random.default_rng(0)
    for _ in range(300):
        B, k, V = rng.integers(1, 5), rng.integers(1, 5), rng.integers(2, 9)
        logits = np.round(rng.standard_normal((B, k, V)), 1)  # rounded: many exact ties
        done = rng.random((B, k)) < 0.3
        ended = np.full(V, -np.inf)
        ended[0] = 0.0
        score = np.round(rng.standard_normal((B, k, 1)), 1)
        score[rng.random((B, k, 1)) < 0.2] = -np.inf
        flat = np.where(done[:, :, None], score + ended, score + logits).reshape(B, k * V)
        raw = np.where(done[:, :, None], ended, logits).reshape(B, k * V)
        want = np.lexsort((np.where(np.isfinite(flat), -raw, 0.0), -flat), axis=1)[:, :k]
        np.testing.assert_array_equal(_top_k(flat, k, done, ended, logits), want)


def test_encode_names_the_callers_arguments():
    """encode, public, said the encoder's `x` (with 32 features for a source of 8 read by a
    convolution of 4 channels) and `lengths`; forward and the decoders said `src`."""
    from rnnlab.seq2seq import Seq2Seq

    vec = Seq2Seq(None, 5, source_features=8, source_conv=4, embed=4, hidden=6, rng=0)
    cases = [
        (vec, (np.zeros((2, 5, 7)),), r"`src` must be an array of 8 features a step "
                                      r"\(source_features=8\); got 7 features"),
        (vec, (np.zeros((0, 5, 8)),), r"`src` must be one source at least"),
        (vec, (np.zeros((2, 5, 8)), [5, 9]), r"`src_lengths` must be between 1 and the padded "
                                             r"length 5; got a length of 9"),
        (Seq2Seq(6, 5, embed=4, hidden=6, rng=0), (np.array([[1, 7]]),),
         r"`src` must be token ids in \[0, 6\); got the id 7"),
    ]  # fmt: skip
    for model, args, match in cases:
        with pytest.raises(ValueError, match=match):
            model.encode(*args)


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 3)])
def test_sample_draws_follow_softmax_of_the_logits_over_the_temperature(temperature, top_k):
    """A chi-square test of Seq2Seq.sample's draws (its own inverse-CDF draw, not
    rnnlab.generate's) against softmax(o / temperature) among the top k, written out here:
    the readout's weight zero, every step of every source draws from the bias. EOS (bias
    −40) is never drawn, so each source gives max_len draws. 3,000 draws at temperature 1
    give p = 6e-18 against temperature 0.8."""
    from scipy.stats import chisquare

    m = model("gru", False, "none", seed=3)
    m.params["out.weight"][:] = 0.0
    logits = np.array([0.4, -0.7, 1.1, 0.0, 1.6, -40.0])
    m.params["out.bias"][:] = logits
    src = np.random.default_rng(4).integers(0, V, (1000, S))
    ids, _ = m.sample(src, bos=0, eos=W - 1, max_len=3, temperature=temperature,
                      top_k=top_k, rng=12)  # fmt: skip
    assert ids.shape == (1000, 3)
    counts = np.bincount(ids.ravel(), minlength=W)
    z = logits / temperature
    keep = np.argsort(-z)[: W if top_k is None else top_k]
    p = np.zeros(W)
    p[keep] = np.exp(z[keep] - z[keep].max())
    p /= p.sum()
    kept = p > 1e-12
    assert (counts[~kept] == 0).all()
    assert chisquare(counts[kept], p[kept] * ids.size).pvalue > 1e-3


def test_sample_with_a_top_k_at_or_above_the_vocabulary_draws_as_without_one():
    m = model("lstm", False, "none", seed=8)
    src = np.random.default_rng(9).integers(0, V, (B, S))
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=W - 1, max_len=6, temperature=0.9)
    free, _ = m.sample(src, rng=4, **kw)
    for k in (W, W + 3):
        np.testing.assert_array_equal(m.sample(src, rng=4, top_k=k, **kw)[0], free)


def _beam_search_as_before(m, src, *, src_lengths=None, bos, eos, max_len, width=5, alpha=0.6,
                           never=()):  # fmt: skip
    """Seq2Seq.beam_search's loop as it was before its early stop: it stopped at max_len or
    once all `width` hypotheses of every row had finished. (ids, scores, decoder steps)."""
    from rnnlab.seq2seq import _take, _top_k

    banned = m._never(never, eos)
    memory, state, B = m._start(src, src_lengths, max_len, width)
    k = width
    score = np.full((B, k), -np.inf)
    score[:, 0] = 0.0
    done = np.zeros((B, k), bool)
    length = np.zeros((B, k), int)
    ids = np.zeros((B, k, 0), int)
    prev = np.full(B * k, bos)
    steps = 0
    for _ in range(max_len):
        steps += 1
        logits, state = m._step(prev, state, memory)
        Vt = logits.shape[-1]
        if banned:
            logits = logits.copy()
            logits[:, banned] = -np.inf
        z = logits - logits.max(axis=-1, keepdims=True)
        logp = (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).reshape(B, k, Vt)
        cand = score[:, :, None] + logp
        ended = np.full(Vt, -np.inf)
        ended[eos] = 0.0
        cand = np.where(done[:, :, None], score[:, :, None] + ended, cand)
        flat = cand.reshape(B, k * Vt)
        best = _top_k(flat, k, done, ended, logits.reshape(B, k, Vt))
        parent, tok = best // Vt, best % Vt
        rows = np.arange(B)[:, None]
        score = flat[rows, best]
        was_done = done[rows, parent]
        length = length[rows, parent] + ~was_done
        done = was_done | (tok == eos)
        ids = np.concatenate([ids[rows, parent], tok[:, :, None]], axis=2)
        state = _take(state, (rows * k + parent).reshape(-1))
        prev = tok.reshape(-1)
        if done[:, 0].all() and (width == 1 or done.all()):
            break
    penalty = ((5.0 + length) / 6.0) ** alpha
    pick = np.argmax(np.where(np.isfinite(score), score / penalty, -np.inf), axis=1)
    return ids[np.arange(B), pick], score[np.arange(B), pick], steps


def _counting(mp, bias=None, replace=False):
    """Seq2Seq._step counted (the list returned grows by one a call), its logits plus
    `bias(prev)` if given (or `bias(prev)` alone if `replace`): a decoder whose next token
    depends on the last as a test needs."""
    calls = []
    step = Seq2Seq._step

    def counted(self, prev, state, memory):
        calls.append(prev.size)
        logits, state = step(self, prev, state, memory)
        if bias is not None:
            logits = bias(prev) + (0.0 if replace else logits)
        return logits, state

    mp.setattr(Seq2Seq, "_step", counted)
    return calls


def _same_output(new, old, eos, what=""):
    """beam_search's (ids, scores) as the loop before the early stop gave them: the same
    winners and scores to the bit, only fewer columns of EOS padding."""
    (ids, score), (old_ids, old_score) = new, old
    n = ids.shape[1]
    assert n <= old_ids.shape[1], what
    np.testing.assert_array_equal(ids, old_ids[:, :n], err_msg=what)
    assert (old_ids[:, n:] == eos).all(), what
    np.testing.assert_array_equal(score, old_score, err_msg=what)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_stops_once_no_growing_hypothesis_can_win(alpha):
    """`never` leaves EOS and one other id, the beam is 3 wide, and the decoder ends at once
    (EOS +8 after BOS) but not after its token (EOS -8): the growing x x x .. (score about
    -8) stayed in the beam beside the finished ones, and every call ran all 30 steps for
    the EOS it had at the first. No continuation of it can reach EOS's score, not even
    with the largest length penalty: it stops after one step now, with the same output."""
    m = model("gru", False, "additive", seed=6)
    src = np.random.default_rng(7).integers(0, V, (B, S))
    eos = W - 1

    def bias(prev):
        out = np.zeros((prev.size, W))
        out[:, eos] = np.where(prev == 0, 8.0, -8.0)
        return out

    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=30, width=3, alpha=alpha,
              never=(0, 1, 2, 3))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        calls = _counting(mp, bias)
        new = m.beam_search(src, **kw)
        steps = len(calls)
        *old, old_steps = _beam_search_as_before(m, src, **kw)
    assert (old_steps, steps) == (30, 1)
    assert (new[0] == eos).all()
    _same_output(new, old, eos)


def test_beam_search_does_not_wait_for_what_fills_the_beam_after_every_ending():
    """A beam of 6 over 4 ids it may choose (2 slots -inf at the first step), EOS unlikely
    first (-3) and certain after any token (+60): every hypothesis that can win has ended at
    the second step, and
    the slots left over hold continuations at about -60. The loop waited for those to end
    too; it stops at the second step now, every row of the batch, with the same output."""
    m = model("lstm", True, "multiplicative", seed=3)
    src = np.random.default_rng(4).integers(0, V, (B, S))
    eos = W - 1

    def bias(prev):
        out = np.zeros((prev.size, W))
        out[:, eos] = np.where(prev == 0, -3.0, 60.0)
        return out

    for alpha in (0.0, 0.6):
        kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=10, width=6, alpha=alpha,
                  never=(0, 1))  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            calls = _counting(mp, bias)
            new = m.beam_search(src, **kw)
            steps = len(calls)
            *old, old_steps = _beam_search_as_before(m, src, **kw)
        assert steps == 2 < old_steps, (alpha, old_steps)
        _same_output(new, old, eos, str(alpha))


def test_beam_search_does_not_stop_for_a_finished_hypothesis_a_longer_one_overtakes():
    """α = 0.6, two ids to choose: after BOS EOS (log p -0.47) or x (-0.97), after x x
    again at a cost of e^-40. The growing x.. cannot beat EOS at the next length
    (-0.97 / pen(2) = -0.89), the bound some beam searches stop on, but its score hardly
    falls while its penalty grows: cut at max_len 30 it has -0.97 / pen(30) = -0.34 and
    wins. Decoding runs to max_len for it, as it did."""
    m = model("gru", False, "additive", seed=6)
    src = np.random.default_rng(7).integers(0, V, (B, S))
    eos, x = W - 1, 4

    def logits(prev):
        out = np.zeros((prev.size, W))
        out[:, x] = np.where(prev == 0, -0.5, 20.0)
        out[:, eos] = np.where(prev == 0, 0.0, -20.0)
        return out

    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=30, width=2, alpha=0.6,
              never=(0, 1, 2, 3))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        calls = _counting(mp, logits, replace=True)
        new = m.beam_search(src, **kw)
        steps = len(calls)
        *old, old_steps = _beam_search_as_before(m, src, **kw)
    assert steps == old_steps == 30 and (new[0] == x).all()
    _same_output(new, old, eos)


def test_beam_search_gives_what_it_gave_before_it_stopped_early():
    """On random small models (weights N(0, 1), 3 to 8 target ids, so beams fill with
    finished and -inf hypotheses alike), batches of sources of different lengths, widths
    1-6, with and without `never`, α = 0 and 0.6 (and -0.5 and 1.5, the bound being taken
    at whichever end the penalty is largest): the same winners and scores to the bit as the
    loop that ran to max_len or to all `width` finished, in at most its steps (10,547 of
    its 12,288 here)."""
    saved = total = 0
    for seed in range(24):
        g = np.random.default_rng(seed)
        Vt = int(g.integers(3, 9))
        m = Seq2Seq(6, Vt, embed=3, hidden=5, attention=("none", "additive")[seed % 2],
                    bidirectional=seed % 3 == 0, dtype=np.float64, rng=seed)  # fmt: skip
        for v in m.params.values():
            v[...] = g.normal(0.0, 1.0, v.shape)
        src, lengths = g.integers(0, 6, (4, 5)), np.array([5, 1, 3, 4])
        never = tuple(range(2, 2 + seed % min(4, Vt - 2)))  # (bos 0, eos 1)
        for width in range(1, 7):
            for ban in ((), never):
                for alpha in (0.0, 0.6, -0.5, 1.5):
                    kw = dict(src_lengths=lengths, bos=0, eos=1, max_len=12, width=width,
                              alpha=alpha, never=ban)  # fmt: skip
                    with pytest.MonkeyPatch.context() as mp:
                        calls = _counting(mp)
                        new = m.beam_search(src, **kw)
                        steps = len(calls)
                        *old, old_steps = _beam_search_as_before(m, src, **kw)
                    what = f"seed {seed} width {width} never {ban} alpha {alpha}"
                    _same_output(new, old, 1, what)
                    assert steps == new[0].shape[1] <= old_steps, what
                    saved += old_steps - steps
                    total += old_steps
    assert saved > 0, total


def test_greedy_and_sampling_stop_when_every_sequence_has_ended():
    """`_run` (greedy, sample) stops at the step where the last sequence produces its first
    EOS: one decoder step a column, and the last column holds a first EOS. (It has no
    growing hypotheses to wait for: a sequence that ended writes EOS at no further choice.)"""
    m = model("gru", False, "additive", seed=6)
    m.params["out.bias"][W - 1] += 1.5  # every row ends within a few steps
    src = np.random.default_rng(7).integers(0, V, (B, S))
    eos = W - 1
    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=30)
    with pytest.MonkeyPatch.context() as mp:
        calls = _counting(mp)
        for name, call in (("greedy", lambda: m.greedy(src, **kw)),
                           ("sample", lambda: m.sample(src, rng=3, **kw)),
                           ("never", lambda: m.greedy(src, never=(1, 2), **kw))):  # fmt: skip
            calls.clear()
            ids, _ = call()
            n = ids.shape[1]
            first = (ids == eos).argmax(axis=1)
            assert (ids == eos).any(axis=1).all() and n < 30, name
            assert len(calls) == n and first.max() == n - 1, name


def test_beam_search_with_a_huge_alpha_neither_warns_nor_raises():
    """α = 1000: the largest penalty up to max_len 40, ((5 + 40) / 6)^1000, overflows. The
    early stop's bound computed it at every call and warned "overflow encountered in power"
    (raised under np.errstate(all="raise")) for a decoder whose every hypothesis ends at
    once, where the winner's choice computes the penalties of lengths 1 and 2 only, which
    fit. The bound is then inf and stops nothing: the output is the loop's before the stop."""
    m = model("gru", False, "additive", seed=6)
    src = np.random.default_rng(7).integers(0, V, (B, S))
    eos = W - 1

    def bias(prev):
        out = np.zeros((prev.size, W))
        out[:, eos] = 40.0
        return out

    kw = dict(src_lengths=SRC_LENGTHS, bos=0, eos=eos, max_len=40, width=3, alpha=1000.0)
    with pytest.MonkeyPatch.context() as mp, np.errstate(all="raise"):
        _counting(mp, bias)
        new = m.beam_search(src, **kw)
        *old, _ = _beam_search_as_before(m, src, **kw)
    _same_output(new, old, eos)
