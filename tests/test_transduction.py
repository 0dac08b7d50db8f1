"""The sequence-to-sequence data: held-out splits by value, the character codec, and an
encoder–decoder that learns from it."""

import numpy as np
import pytest
from helpers import oracle

from rnnlab.tasks import transduction as td

oracle("num2words")
oracle("babel")


def test_number_pairs_and_their_split():
    pairs = td.numbers("train", 200, seed=1)
    assert len(pairs) == 200 and td.numbers("train", 200, seed=1) == pairs
    assert all(isinstance(s, str) and isinstance(t, str) and s and t for s, t in pairs)
    from num2words import num2words

    english = {num2words(v, lang="en"): v for v in range(0, 1000)}  # the small ones
    test = td.numbers("test", 300, seed=1)
    for src, _ in test:  # a test value is never a training value: by its hash
        if src in english:
            assert td.split_of(english[src], "numbers") == "test"
    train_sources = {s for s, _ in td.numbers("train", 3000, seed=2)}
    assert not train_sources & {s for s, _ in test}


def test_reordering_is_in_the_data():
    from num2words import num2words

    assert num2words(347, lang="de") == "dreihundertsiebenundvierzig"  # units before tens
    assert td.split_of(347, "numbers") in td.SPLITS


def test_dates_have_one_answer_each():
    pairs = td.dates("valid", 100, seed=3)
    assert {len(t) for _, t in pairs} == {10}  # YYYY-MM-DD
    for src, iso in pairs:
        year = iso[:4]
        assert year in src  # every style spells the year with four digits
    assert len({s for s, _ in pairs}) > 50  # styles and days vary


def test_codec_round_trip_and_unknown_characters():
    codec = td.CharCodec.fit(["abc", "cab"])
    ids, lengths = codec.encode(["cab", "a"])
    assert ids.shape == (2, 4) and list(lengths) == [4, 2]
    assert ids[0, -1] == td.EOS and ids[1, 2] == td.PAD
    assert codec.decode(ids) == ["cab", "a"]
    with pytest.raises(ValueError, match=r"unknown characters \['z'\]"):
        codec.encode(["za"])
    mapped, _ = codec.encode(["za"], unknown="map")
    assert codec.decode(mapped) == ["\N{REPLACEMENT CHARACTER}a"]
    assert (td.teacher_inputs(ids)[:, 0] == td.BOS).all()


def test_word_codec_round_trip_hyphens_and_unknown_words():
    """caption's decoder writes words: a hyphen stays with the word before it, words are
    otherwise joined by one space, and every number word of 0–999 comes back as it was."""
    from num2words import num2words

    texts = [num2words(v, lang="en") for v in range(1000)]
    codec = td.WordCodec.fit(texts)
    assert td.WordCodec.split("three hundred and forty-two") == [
        "three", "hundred", "and", "forty-", "two"]  # fmt: skip
    assert len(codec.words) == 38  # 0–19, the tens alone and hyphenated, hundred, and
    ids, lengths = codec.encode(texts)
    assert codec.decode(ids) == texts and lengths.max() == 6  # 5 words and EOS
    assert codec.pieces(ids[:1]) == [["zero"]]
    from rnnlab.diagnostics.plots import _output_text  # the attention plot's titles

    assert [_output_text(words) for words in codec.pieces(ids)] == texts
    assert _output_text(list("2023-03-07")) == "2023-03-07"  # characters (numbers, dates)
    with pytest.raises(ValueError, match=r"unknown words \['thousand'\]"):
        codec.encode(["one thousand"])
    mapped, _ = codec.encode(["one thousand"], unknown="map")
    assert codec.decode(mapped) == ["one \N{REPLACEMENT CHARACTER}"]
    with pytest.raises(ValueError, match="words joined by single spaces"):
        td.WordCodec.fit(["forty  two"])  # two spaces would not come back


def test_caption_runs_record_words_and_old_runs_keep_their_characters():
    """A caption run records its output words (`target_words`); a run recorded before, with
    `target_chars`, still decodes by characters, and a record with neither is refused."""
    oracle("sklearn")
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({**tasks.defaults("caption"), "train_size": 64})
    task = td.Transduction(cfg)
    record = task.data_record()
    assert "target_chars" not in record and "hundred" in record["target_words"]
    assert record["max_target_len"] <= 5 and isinstance(task.target_codec, td.WordCodec)
    x, y, lengths, _, refs = task._split("test")
    known = set(record["target_words"])  # 64 training captions miss some words
    for text, ref in zip(task.target_codec.decode(y), refs, strict=True):
        seen = set(td.WordCodec.split(ref)) <= known
        assert text == ref if seen else "\N{REPLACEMENT CHARACTER}" in text
    old = {**{k: v for k, v in record.items() if k != "target_words"},
           "target_chars": " -abcdefghilnorstuvwxyz"}  # fmt: skip
    old_task = td.Transduction(cfg, old)
    assert isinstance(old_task.target_codec, td.CharCodec) and old_task.output_size == 27
    for bad in ({k: v for k, v in old.items() if k != "target_chars"},
                {**old, "target_chars": None, "target_words": ["one", ""]}):  # fmt: skip
        with pytest.raises(ValueError, match="target_chars or target_words"):
            td.Transduction(cfg, bad)


def test_an_encoder_decoder_learns_dates():
    """A few hundred Adam steps on a small model: the teacher-forced loss falls well below
    its start, and greedy decoding gets the year's first characters right."""
    from rnnlab.losses import softmax_cross_entropy
    from rnnlab.optim import Adam
    from rnnlab.seq2seq import Seq2Seq

    train = td.dates("train", 512, seed=0)
    src_codec = td.CharCodec.fit([s for s, _ in train])
    tgt_codec = td.CharCodec.fit([t for _, t in train])
    X, lx = src_codec.encode([s for s, _ in train])
    Y, ly = tgt_codec.encode([t for _, t in train])
    m = Seq2Seq(src_codec.size, tgt_codec.size, embed=16, hidden=48, cell="gru",
                attention="multiplicative", rng=0)  # fmt: skip
    opt = Adam(lr=1e-2)
    state = opt.init(m.params)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(120):
        i = rng.choice(len(train), 64, replace=False)
        f = m.forward(X[i], td.teacher_inputs(Y[i]), src_lengths=lx[i], tgt_lengths=ly[i])
        loss, d = softmax_cross_entropy(f.output, Y[i], lengths=ly[i])
        opt.update(m.params, m.backward(f, d).params, state)
        losses.append(loss)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def test_caption_images_and_words():
    oracle("sklearn")
    x, lengths, words = td.caption("test", 50, seed=4)
    assert x.shape == (50, 24, 8) and x.dtype == np.float32
    assert set(lengths.tolist()) <= {8, 16, 24}
    for xi, n in zip(x, lengths, strict=True):
        assert not xi[n:].any()  # padding after the number's columns
    from num2words import num2words

    assert all(w in {num2words(v, lang="en") for v in range(1000)} for w in words)
    from rnnlab.seq2seq import Seq2Seq

    m = Seq2Seq(None, 20, source_features=8, hidden=8, attention="additive", rng=0)
    ids, _ = m.greedy(x[:4], src_lengths=lengths[:4], bos=1, eos=2, max_len=5)
    assert ids.shape[0] == 4


def test_caption_splits_read_disjoint_images():
    """Validation, like the test, reads handwriting never trained on: the three splits' digit
    images are pairwise disjoint (compared by their pixels), the valid images are a stratified
    tenth of scikit-learn's training images, and every caption of a split is made of its own
    split's images."""
    oracle("sklearn")
    images = {s: td.caption_images(s) for s in td.SPLITS}
    pixels = {s: {im.tobytes() for im in x} for s, (x, _) in images.items()}
    assert len(pixels["train"]) == len(images["train"][0])  # no image twice
    assert not pixels["train"] & pixels["valid"]
    assert not pixels["train"] & pixels["test"]
    assert not pixels["valid"] & pixels["test"]
    n_train, n_valid = len(images["train"][1]), len(images["valid"][1])
    assert n_train + n_valid + len(images["test"][1]) == 1797
    counts = np.bincount(images["valid"][1], minlength=10)
    assert counts.min() >= 14 and counts.sum() == n_valid  # every digit, about a tenth
    assert 0.09 < n_valid / (n_train + n_valid) < 0.11
    for split in ("train", "valid"):
        x, lengths, _ = td.caption(split, 40, seed=5)
        for xi, n in zip(x, lengths, strict=True):
            for j in range(0, n, 8):
                assert xi[j : j + 8].T.tobytes() in pixels[split]
    # the valid images do not depend on the run's seed
    a, b = td.caption("valid", 10, seed=1), td.caption("valid", 10, seed=2)
    used = {xi[j : j + 8].T.tobytes() for x, ls, _ in (a, b)
            for xi, n in zip(x, ls, strict=True) for j in range(0, n, 8)}  # fmt: skip
    assert used <= pixels["valid"]
    # the ten validation tenths (--valid-fold) cut the training images into disjoint parts,
    # each held out from its own run's training images
    train_all = pixels["train"] | pixels["valid"]
    seen: set = set()
    for fold in range(td.CAPTION_FOLDS):
        valid = {im.tobytes() for im in td.caption_images("valid", fold)[0]}
        train = {im.tobytes() for im in td.caption_images("train", fold)[0]}
        assert not valid & train and valid | train == train_all and not valid & seen
        seen |= valid
    assert seen == train_all
    with pytest.raises(ValueError, match=r"`fold` must be an integer from 0 to 9"):
        td.caption_images("valid", 10)


def test_scores():
    s = td.scores(["forty-two", "sieben"], ["forty-two", "siebzehn"])
    assert s["exact_match"] == 0.5
    assert s["cer"] == pytest.approx(2 / 17)  # "sieben" → "siebzehn": two insertions
    assert 0 <= s["bleu"] < 100 and 0 < s["chrf"] < 100  # BLEU: no 4-grams in 2 words
    same = ["the cat sat on the mat"]
    assert td.scores(same, same)["bleu"] == pytest.approx(100)
    with pytest.raises(ValueError, match=r"`hypotheses` must be 2 strings"):
        td.scores(["a"], ["a", "b"])


def test_scores_refuses_a_string_for_a_list_of_them():
    """scores("ab", ["a", "b"]) read the string as two hypotheses and gave exact match 1.0."""
    for args, match in (
        (("ab", ["a", "b"]), r"`hypotheses` must be a sequence of strings, one per item; got "
                             r"'ab' \(str\)"),
        ((["a", "b"], "ab"), r"`references` must be a sequence of strings"),
        ((["a", 2], ["a", "b"]), r"`hypotheses` must be .*; got 2 \(int\) at index 1"),
        ((["a"], [["a"]]), r"`references` must be .*; got a list of length 1 at index 0"),
        ((None, ["a"]), r"`hypotheses` must be a sequence of strings, one per item; got None"),
        (([], []), r"`hypotheses` must be 0 strings, one per reference \(at least one\)"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            td.scores(*args)
    assert td.scores(("a", "b"), np.array(["a", "c"]))["exact_match"] == 0.5


@pytest.mark.parametrize("make", [td.numbers, td.dates, td.caption])
def test_the_data_functions_check_n_and_seed(make):
    """numbers("test", 2.5) gave 4 items, numbers("test", -1) none, caption("test", -1)
    "negative dimensions are not allowed" and seed=-1 NumPy's message."""
    if make is td.caption:
        oracle("sklearn")
    for n in (2.5, -1, True, "3", None):
        with pytest.raises(ValueError, match=r"^`n` must be a non-negative integer \(the number"):
            make("test", n)
    for seed in (-1, 1.5, "0", None):
        with pytest.raises(ValueError, match=r"^`seed` must be a non-negative integer"):
            make("test", 2, seed=seed)
    with pytest.raises(ValueError, match=r"^`split` must be one of"):
        make("tests", 2)
    items = {n: make("test", n) for n in (0, np.int64(3))}  # (caption: x, lengths, words)
    assert [len(v[-1] if make is td.caption else v) for v in items.values()] == [0, 3]


def test_the_held_out_values_do_not_depend_on_the_seed_but_the_drawn_items_do():
    """What docs/seq2seq.md says of seeds: a held-out value is never a training value whatever
    the seed, and the items drawn from the held-out values follow the seed, so runs of two
    seeds are scored on two samples of one held-out set (15 numbers of 1,000 in common)."""
    a, b = td.numbers("test", 1000, seed=0), td.numbers("test", 1000, seed=1)
    assert len(set(a) & set(b)) == 15
    english = {}
    from num2words import num2words

    for v in range(0, 100_000, 7):
        english[num2words(v, lang="en")] = v
    for seed in (0, 1, 2):
        for split in td.SPLITS:
            for src, _ in td.numbers(split, 300, seed=seed):
                if src in english:
                    assert td.split_of(english[src], "numbers") == split


def test_trainee_takes_the_pass_options_and_refuses_the_rest():
    """Trainee.forward has the module protocol's options: a misspelt keyword is a TypeError,
    a state or a mask (which an encoder-decoder cannot honour) a clear ValueError."""
    from rnnlab.seq2seq import Seq2Seq
    from rnnlab.tasks.transduction import Trainee

    rng = np.random.default_rng(0)
    net = Trainee(Seq2Seq(7, 6, embed=4, hidden=5, rng=rng))
    x = rng.integers(3, 7, (2, 4))
    y = np.array([[3, 4, 2], [5, 2, 0]])
    out = net.forward(x, targets=y, lengths=np.array([4, 3]), training=False, grad=False)
    assert out.output.shape[:2] == (2, 3)
    with pytest.raises(TypeError, match="lenghts"):
        net.forward(x, targets=y, lenghts=np.array([4, 3]))
    with pytest.raises(ValueError, match="`state`"):
        net.forward(x, targets=y, state=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="`mask`"):
        net.forward(x, targets=y, mask=np.ones((2, 4), bool))


def test_every_training_pair_takes_part_and_the_batches_come_in_random_order():
    """With one pool of 16 batches (1,000 pairs of 64), the remainder left out of an epoch
    was always the longest pairs (31 of them never trained in 50 epochs) and every epoch ran
    shortest to longest. Now a random remainder sits an epoch out, and the bucketed batches
    (similar lengths together, little padding) come in random order."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({**tasks.defaults("numbers"), "train_size": 1000,
                                 "batch_size": 64})  # fmt: skip
    task = td.Transduction(cfg)
    lengths = task._split("train")[2]
    per_epoch = 1000 // 64
    seen, rising = set(), 0
    for epoch in range(20):
        batches = td.epoch_batches(1000, 64, lengths, cfg.seed, epoch)
        assert batches.shape == (per_epoch, 64) and len(set(batches.ravel())) == per_epoch * 64
        seen |= set(batches.ravel().tolist())
        means = lengths[batches].mean(axis=1)
        rising += bool(np.all(np.diff(means) >= 0))
        spread = np.ptp(lengths[batches], axis=1)  # bucketed: a batch's lengths lie close
        assert np.median(spread) < np.ptp(lengths) / 2
    assert seen == set(range(1000)) and rising == 0
    # the task's batches are those rows, step by step
    b = task.batch(per_epoch + 3, None)
    row = td.epoch_batches(1000, 64, lengths, cfg.seed, 1)[3]
    np.testing.assert_array_equal(b.lengths, lengths[row])
    # fewer items than a batch: one batch of them all
    assert td.epoch_batches(5, 64, lengths[:5], 0, 0).shape == (1, 5)


def test_scheduled_sampling_takes_a_seed_and_refuses_no_generator_or_a_bad_teacher():
    """Scheduled sampling (training, teacher < 1) draws from `rng` as every training pass
    does: a seed is made into one Generator (it raised AttributeError: 'int' object has no
    attribute 'random'), None is refused naming `rng` (it raised the same for 'NoneType'),
    and a teacher-forcing probability outside [0, 1] is refused naming `teacher` (-1 and NaN
    fed the model's own draws everywhere, 1.5 the truth, without a word)."""
    from rnnlab.seq2seq import Seq2Seq
    from rnnlab.tasks.transduction import Trainee

    net = Trainee(Seq2Seq(7, 6, embed=4, hidden=5, rng=0, dtype=np.float64))
    x = np.random.default_rng(1).integers(3, 7, (3, 4))
    y = np.array([[3, 4, 5, 2], [5, 2, 0, 0], [4, 4, 2, 0]])
    kw = dict(targets=y, lengths=np.array([4, 3, 2]), training=True, teacher=0.3)
    seeded = net.forward(x, rng=5, **kw).output
    by_generator = net.forward(x, rng=np.random.default_rng(5), **kw).output
    np.testing.assert_array_equal(seeded, by_generator)
    with pytest.raises(ValueError, match="`rng`"):
        net.forward(x, rng=None, **kw)
    for bad in (-1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="`teacher`"):
            net.forward(x, rng=5, **dict(kw, teacher=bad))
    # teacher forcing alone (p = 1, or not training) draws nothing and needs no generator
    net.forward(x, rng=None, **dict(kw, teacher=1.0))
    net.forward(x, rng=None, **dict(kw, training=False))
