"""The data side of the built-in tasks: corpora, vocabularies, batching, n-gram baselines,
the synthetic memory benchmarks, the digits and the Python token labels."""

import itertools
import json
import math
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnlab.tasks import digits, ngram, pytokens, synthetic, text

# --------------------------------------------------------------------------------------------
# text: corpus, reading files, vocabulary, splits, batches
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    return text.default_corpus()


def test_default_corpus_is_the_pydoc_topics(corpus):
    from pydoc_data.topics import topics

    assert corpus == "\n\n".join(topics[k] for k in sorted(topics))
    assert 400_000 < len(corpus) < 600_000  # 465,126 characters on CPython 3.11.7
    assert 80 < len(set(corpus)) < 200


def test_read_text_normalises_line_ends_and_bom(tmp_path):
    body = "line one\r\nline two\rline three\n" * 40
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    got = text.read_text(path)
    assert got == body.replace("\r\n", "\n").replace("\r", "\n")
    assert text.read_text(str(path)) == got


def test_read_text_keeps_unicode(tmp_path):
    body = "naïve café — ünïcödé ✓ 日本語\n" * 50
    (tmp_path / "u.txt").write_text(body, encoding="utf-8")
    assert text.read_text(tmp_path / "u.txt") == body


def test_read_text_errors(tmp_path, monkeypatch):
    with pytest.raises(
        text.TextFileError,
        match=r"`path` must be a readable UTF-8 text file; "
        r"got '.*nope.txt', which does not exist instead",
    ):
        text.read_text(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match=r"got '.*', which is a directory instead"):
        text.read_text(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"got '.*empty.txt', which is empty instead"):
        text.read_text(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes(b"a" * 1500 + "é".encode("latin-1") + b"b" * 100)
    with pytest.raises(
        ValueError,
        match=r"got '.*latin.txt', whose byte 1500 \(0xe9\) is not "
        r"UTF-8 instead\. Convert it first",
    ):
        text.read_text(tmp_path / "latin.txt")
    (tmp_path / "short.txt").write_text("x" * 999)
    with pytest.raises(
        ValueError,
        match=r"`path` must be a text of at least 1000 characters "
        r"\(to split into train/valid/test\); got '.*short.txt' with 999",
    ):
        text.read_text(tmp_path / "short.txt")
    with pytest.raises(ValueError, match=r"`path` must be a path \(str or pathlib.Path\); got 3"):
        text.read_text(3)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "locked.txt").write_text("x" * 2000)
    monkeypatch.setattr(text._checks, "open_file", denied)  # root reads any mode
    with pytest.raises(
        ValueError,
        match=r"got '.*locked.txt', which cannot be read "
        r"\(Permission denied\) instead",
    ):
        text.read_text(tmp_path / "locked.txt")
    monkeypatch.undo()
    # a device or a FIFO is never read to its (missing) end
    with pytest.raises(ValueError, match=r"got '/dev/zero', which is not a regular file"):
        text.read_text("/dev/zero")


@pytest.mark.parametrize("bom,codec,name", [
    (b"\xff\xfe", "utf-16-le", "UTF-16"), (b"\xfe\xff", "utf-16-be", "UTF-16"),
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"), (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
])  # fmt: skip
def test_a_utf16_or_utf32_corpus_is_named_as_such_not_sent_to_iconv_from_latin1(tmp_path, bom,
                                                                                 codec, name):
    """A UTF-16 file (BOM FF FE) was told "Convert it first, e.g. iconv -f latin1 -t utf-8",
    which turns it into text with a NUL after every character that then trains silently.
    Its byte-order mark names the encoding, and the advice converts from it."""
    path = tmp_path / "wide.txt"
    path.write_bytes(bom + ("hello world\n" * 200).encode(codec))
    with pytest.raises(text.TextFileError) as e:
        text.read_text(path)
    said = str(e.value)
    assert f"'{path}', which is {name} (it starts with the byte-order mark " \
           f"{bom.hex(' ').upper()})" in said, said  # fmt: skip
    assert f"iconv -f {name.lower()} -t utf-8" in said and "latin1" not in said, said
    # what the advice does gives the text back
    converted = tmp_path / "converted.txt"
    converted.write_bytes(path.read_bytes().decode(name.lower()).encode("utf-8"))
    assert text.read_text(converted) == "hello world\n" * 200


@pytest.mark.parametrize(("codec", "body"), [
    *((c, b) for c in ("utf-16le", "utf-16be", "utf-32le", "utf-32be")
      for b in ("ascii", "accented")),
    # (UTF-16 of a non-Latin script has no NULs to be told by: said as not UTF-8)
    *((c, b) for c in ("utf-32le", "utf-32be") for b in ("greek", "cjk")),
])  # fmt: skip
def test_a_utf16_or_utf32_corpus_without_byte_order_mark_is_named(tmp_path, codec, body):
    """UTF-16 without a byte-order mark (as some Windows tools write it) of ASCII text
    decodes as UTF-8, a NUL between every two characters, and trained so silently; with an
    accented letter it was refused as "not UTF-8" with latin1's iconv as the way out. Its
    NULs say the width and the byte order: named, with the iconv that converts it. UTF-32 of
    Greek or CJK (half its bytes NUL, as UTF-16 of ASCII) was named UTF-16BE."""
    path = tmp_path / "wide.txt"
    line = {"ascii": "hello world\n", "accented": "héllo wörld, ça va\n",
            "greek": "καλημέρα κόσμε\n", "cjk": "漢字の文章です。\n"}[body]  # fmt: skip
    path.write_bytes((line * 200).encode(codec))
    with pytest.raises(text.TextFileError) as e:
        text.read_text(path)
    said = str(e.value)
    assert f"'{path}', which reads as {codec.upper()} without a byte-order mark (" in said, said
    assert said.endswith(f"Convert it first, e.g. `iconv -f {codec} -t utf-8`."), said
    converted = tmp_path / "converted.txt"
    converted.write_bytes(path.read_bytes().decode(codec).encode("utf-8"))
    assert text.read_text(converted) == line * 200
    # a UTF-8 text with a few NULs in it is still read (a quarter of its bytes are not NUL)
    sparse = tmp_path / "sparse.txt"
    sparse.write_bytes(("hello\x00world\n" * 200).encode("utf-8"))
    assert text.read_text(sparse).count("\x00") == 200


@pytest.mark.parametrize("body", ["latin1", "cjk"])
def test_a_text_that_only_starts_like_utf16_gets_both_ways_out(tmp_path, body):
    """A latin1 text that begins with ÿþ (FF FE) was named UTF-16, and `iconv -f utf-16` made
    CJK-looking nonsense of it that then trained (review 78). Without the NUL bytes a UTF-16
    text of a Latin script has, the message names both encodings; a UTF-16 text of CJK
    characters alone (no NULs either) is said the same way, its way out among them."""
    path = tmp_path / "start.txt"
    if body == "latin1":
        path.write_bytes(("ÿþ" + "Where the quick brown fox jumps. " * 60).encode("latin1"))
    else:
        path.write_bytes(b"\xff\xfe" + ("漢字の文章です。" * 200).encode("utf-16-le"))
    with pytest.raises(text.TextFileError) as e:
        text.read_text(path)
    said = str(e.value)
    assert "is not UTF-8 and which starts with FF FE, UTF-16's byte-order mark" in said, said
    assert ("`iconv -f utf-16 -t utf-8` if it is UTF-16, `iconv -f latin1 -t utf-8` if it is "
            "latin1.") in said, said  # fmt: skip


def test_char_vocab_round_trip_and_unknown():
    vocab = text.CharVocab("hello world")
    assert vocab.chars == " dehlorw"  # sorted distinct characters
    assert vocab.unknown == 8 and vocab.size == 9 and len(vocab) == 9
    ids = vocab.encode("world hello")
    assert ids.dtype == np.int32
    assert ids.tolist() == [7, 5, 6, 4, 1, 0, 3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "world hello"
    unseen = vocab.encode("hex!")
    assert unseen.tolist() == [3, 2, 8, 8]
    assert vocab.decode(unseen) == "he\ufffd\ufffd"
    assert vocab.decode([0, 1]) == " d" and vocab.decode([]) == ""
    assert vocab.encode("").shape == (0,)


def test_char_vocab_non_bmp_and_json_round_trip():
    vocab = text.CharVocab("ab😀c\nd")
    assert vocab.decode(vocab.encode("😀\nz")) == "😀\n\ufffd"
    again = text.CharVocab.from_json(vocab.to_json())
    assert again == vocab and again.size == vocab.size
    assert text.CharVocab.from_json(json.loads(vocab.to_json())) == vocab
    np.testing.assert_array_equal(again.encode("dab😀"), vocab.encode("dab😀"))


def test_char_vocab_errors():
    with pytest.raises(
        ValueError,
        match=r"`text` must be a non-empty str \(the training text\); "
        r"got '' \(str\)",
    ):
        text.CharVocab("")
    vocab = text.CharVocab("abc")
    with pytest.raises(ValueError, match=r"`text` must be a str; got 5 \(int\)"):
        vocab.encode(5)
    with pytest.raises(ValueError, match=r"`ids` must be ids in \[0, 4\); got the id 4"):
        vocab.decode(np.array([0, 4]))
    with pytest.raises(ValueError, match=r"`ids` must be ids in \[0, 4\); got the id -1"):
        vocab.decode([-1])
    with pytest.raises(ValueError, match=r"`ids` must be a 1-D array \(or list\) of integer ids"):
        vocab.decode(np.zeros((2, 2), np.int64))
    with pytest.raises(
        ValueError,
        match=r"`data` must be the JSON text of CharVocab.to_json\(\); "
        r"got invalid JSON",
    ):
        text.CharVocab.from_json("{not json")
    with pytest.raises(ValueError, match=r"`data` must be a CharVocab JSON object"):
        text.CharVocab.from_json('{"type": "Other", "chars": "ab"}')
    with pytest.raises(
        ValueError,
        match=r"`data` must be a CharVocab whose characters are "
        r"sorted and distinct; got chars='ba'",
    ):
        text.CharVocab.from_json('{"type": "CharVocab", "chars": "ba"}')


def test_split_text_is_contiguous(corpus):
    train, valid, test = text.split_text(corpus)
    assert train + valid + test == corpus
    n = len(corpus)
    assert len(valid) == round(0.05 * n) and len(test) == round(0.05 * n)
    train, valid, test = text.split_text("abcdefghij", valid_fraction=0.2, test_fraction=0.0)
    assert (train, valid, test) == ("abcdefgh", "ij", "")
    # a non-zero fraction always gets at least one character
    assert text.split_text("abcd", 0.01, 0.01) == ("ab", "c", "d")


def test_split_text_errors():
    with pytest.raises(ValueError, match=r"`valid_fraction` must be a number in \[0, 1\); got 1.5"):
        text.split_text("abc" * 100, valid_fraction=1.5)
    with pytest.raises(
        ValueError,
        match=r"`valid_fraction \+ test_fraction` must be less than 1 "
        r"\(to leave a training piece\); got 0.6 \+ 0.4",
    ):
        text.split_text("abc" * 100, 0.6, 0.4)
    with pytest.raises(
        ValueError,
        match=r"`text` must be long enough to leave a training piece; "
        r"got 2 characters",
    ):
        text.split_text("ab", 0.1, 0.1)
    with pytest.raises(ValueError, match=r"`text` must be a str; got None"):
        text.split_text(None)


def test_windows():
    ids = np.arange(11, dtype=np.int32)
    x, y = text.windows(ids, 4)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert x.dtype == np.int32
    x, y = text.windows(ids, 4, stride=3)
    assert x[:, 0].tolist() == [0, 3, 6]  # 6 + 4 = 10 is the last target
    np.testing.assert_array_equal(y, x + 1)
    x, y = text.windows(ids, 10)
    assert x.shape == (1, 10) and y[0, -1] == 10


def test_windows_errors():
    with pytest.raises(ValueError, match=r"`ids` must be at least length \+ 1 = 6 ids; got 5"):
        text.windows(np.arange(5), 5)
    with pytest.raises(ValueError, match=r"`length` must be a positive integer; got 0"):
        text.windows(np.arange(5), 0)
    with pytest.raises(ValueError, match=r"`stride` must be a positive integer; got -1"):
        text.windows(np.arange(5), 2, stride=-1)
    with pytest.raises(
        ValueError,
        match=r"`ids` must be a 1-D array of integer ids; got an array "
        r"of shape \(5,\) and dtype float64",
    ):
        text.windows(np.zeros(5), 2)


def test_stream_batches_carry_state_across_blocks():
    N, B, k = 103, 4, 5
    ids = np.arange(N) * 7 % 101  # distinct values, so positions can be recovered
    blocks = list(text.stream_batches(ids, B, k))
    K = (N - 1) // B  # 25 ids per track
    assert len(blocks) == K // k == 5
    assert all(x.shape == (B, k) and y.shape == (B, k) for x, y in blocks)
    xs = np.concatenate([x for x, _ in blocks], axis=1)
    ys = np.concatenate([y for _, y in blocks], axis=1)
    for b in range(B):  # row b of every block continues row b of the block before
        np.testing.assert_array_equal(xs[b], ids[b * K : b * K + 5 * k])
        np.testing.assert_array_equal(ys[b], ids[b * K + 1 : b * K + 5 * k + 1])


def test_stream_batches_drops_the_partial_block_and_errors():
    assert len(list(text.stream_batches(np.arange(23), 2, 5))) == 2  # K = 11: blocks of 5, 5
    with pytest.raises(
        ValueError,
        match=r"`ids` must be at least batch_size · bptt \+ 1 = 21 ids "
        r"\(one block\); got 20",
    ):
        list(text.stream_batches(np.arange(20), 4, 5))
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer; got 0"):
        list(text.stream_batches(np.arange(20), 0, 5))


# --------------------------------------------------------------------------------------------
# n-gram baselines
# --------------------------------------------------------------------------------------------


def reference_kneser_ney(train, V, n):
    """Interpolated Kneser–Ney written directly from its definition with Counters, to check
    the vectorised version: P(k, history, w) for history of length k − 1."""
    train = [int(t) for t in train]
    raw = {
        k: Counter(tuple(train[i : i + k]) for i in range(len(train) - k + 1))
        for k in range(1, n + 1)
    }
    counts = {n: raw[n]}
    for k in range(1, n):
        counts[k] = Counter(gram[1:] for gram in raw[k + 1])  # N1+(• gram)
    discount = {}
    for k in range(2, n + 1):
        n1 = sum(v == 1 for v in counts[k].values())
        n2 = sum(v == 2 for v in counts[k].values())
        discount[k] = n1 / (n1 + 2 * n2) if n1 else 0.5

    def P(k, h, w):
        if k == 1:
            return (counts[1][(w,)] + 1) / (sum(counts[1].values()) + V)
        lower = P(k - 1, h[1:], w)
        following = {g: c for g, c in counts[k].items() if g[:-1] == h}
        total = sum(following.values())
        if total == 0:
            return lower
        D = discount[k]
        return max(counts[k][h + (w,)] - D, 0) / total + D * len(following) / total * lower

    return P


@pytest.fixture(scope="module")
def small_stream():
    # a Markov chain over 4 symbols with uneven transitions; id 4 never occurs (vocab 5)
    rng = np.random.default_rng(5)
    T = np.array(
        [[0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.5, 0.1], [0.1, 0.3, 0.3, 0.3], [0.5, 0.0, 0.0, 0.5]]
    )
    s = [0]
    for _ in range(299):
        s.append(int(rng.choice(4, p=T[s[-1]])))
    return np.array(s, np.int64)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_matches_reference_and_normalises(small_stream, order):
    V = 5
    model = ngram.fit(small_stream, V, order)
    P = reference_kneser_ney(small_stream, V, order)
    for L in range(order):  # every history length, every history over all 5 ids
        for h in itertools.product(range(V), repeat=L):
            p = ngram.next_probs(model, np.array(h, np.int64))
            assert p.shape == (V,)
            assert abs(p.sum() - 1.0) < 1e-12
            assert np.all(p > 0)  # the unseen id 4 too
            want = [P(L + 1, h, w) for w in range(V)]
            np.testing.assert_allclose(p, want, rtol=1e-12, atol=0)


def test_ngram_log_probs_use_the_longest_available_history(small_stream):
    model = ngram.fit(small_stream, 5, 3)
    held_out = np.array([0, 4, 2, 2, 3, 1, 0], np.int64)
    lp = ngram.log_probs(model, held_out)
    for i in range(len(held_out)):
        p = ngram.next_probs(model, held_out[max(0, i - 2) : i])
        assert lp[i] == pytest.approx(np.log(p[held_out[i]]), abs=1e-14)
    # a longer context than order − 1 only uses its last order − 1 ids
    np.testing.assert_array_equal(
        ngram.next_probs(model, [3, 3, 0, 1]), ngram.next_probs(model, [0, 1])
    )


def test_ngram_discounts_follow_counts_of_counts(small_stream):
    model = ngram.fit(small_stream, 5, 3)
    top = Counter(tuple(small_stream[i : i + 3]) for i in range(len(small_stream) - 2))
    n1 = sum(v == 1 for v in top.values())
    n2 = sum(v == 2 for v in top.values())
    assert model.discounts[-1] == pytest.approx(n1 / (n1 + 2 * n2))
    assert all(0 < d <= 1 for d in model.discounts)


@pytest.fixture(scope="module")
def corpus_ids(corpus):
    train, valid, _ = text.split_text(corpus)
    vocab = text.CharVocab(train)
    return vocab.encode(train), vocab.encode(valid), vocab.size


def test_ngram_baselines_on_the_default_corpus(corpus_ids):
    train, valid, V = corpus_ids
    start = time.perf_counter()
    result = ngram.ngram_baselines(train, valid, V, max_order=5)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0  # ~0.1 s measured
    assert list(result) == ["unigram", "bigram", "trigram", "4-gram", "5-gram"]
    nats = [r["nats_per_char"] for r in result.values()]
    assert all(a > b for a, b in itertools.pairwise(nats))  # each order beats the one below
    for n, r in enumerate(result.values(), start=1):
        assert r["order"] == n
        assert r["bits_per_char"] == pytest.approx(r["nats_per_char"] / math.log(2))
    # measured on CPython 3.11.7's topics: 4.74, 3.43, 2.54, 2.07, 1.90 bits/char
    assert 4.4 < result["unigram"]["bits_per_char"] < 5.0
    assert 1.6 < result["5-gram"]["bits_per_char"] < 2.3
    # the unigram is the add-one estimate over raw counts
    c = np.bincount(train, minlength=V)
    laplace = -np.mean(np.log((c[valid] + 1) / (len(train) + V)))
    assert result["unigram"]["nats_per_char"] == pytest.approx(laplace, rel=1e-12)


def test_ngram_errors(small_stream):
    with pytest.raises(
        ValueError,
        match=r"`eval_ids` must be ids in \[0, vocab_size\) = "
        r"\[0, 5\); got the id 7",
    ):
        ngram.ngram_baselines(small_stream, np.array([1, 7]), 5)
    with pytest.raises(ValueError, match=r"`train_ids` must be a 1-D array of integer ids"):
        ngram.ngram_baselines(small_stream.astype(float), small_stream, 5)
    with pytest.raises(ValueError, match=r"`eval_ids` must be a non-empty array of ids"):
        ngram.ngram_baselines(small_stream, np.zeros(0, np.int64), 5)
    with pytest.raises(
        ValueError,
        match=r"`max_order` must be at most 3 for a vocabulary of "
        r"1000000 ids .*; got 4",
    ):
        ngram.ngram_baselines(small_stream, small_stream, 10**6, max_order=4)
    with pytest.raises(ValueError, match=r"`max_order` must be a positive integer; got 0"):
        ngram.ngram_baselines(small_stream, small_stream, 5, max_order=0)
    for start in (-1, 10**6, True):
        with pytest.raises(ValueError, match=r"`start` must be an id's position in eval_ids "
                           r"\(0 to \d+\); got "):  # fmt: skip
            ngram.ngram_baselines(small_stream, small_stream, 5, start=start)
    with pytest.raises(ValueError, match=r"`vocab_size` must be a positive integer; got 2.5"):
        ngram.fit(small_stream, 2.5, 2)
    model = ngram.fit(small_stream, 5, 2)
    with pytest.raises(ValueError, match=r"`context` must be ids in \[0, vocab_size\)"):
        ngram.next_probs(model, [5])


# --------------------------------------------------------------------------------------------
# synthetic memory benchmarks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 7, 100])
def test_adding_problem_layout(T):
    x, y = synthetic.adding(300, T, np.random.default_rng(0))
    assert x.shape == (300, T, 2) and x.dtype == np.float32
    assert y.shape == (300, 1) and y.dtype == np.float32
    values, markers = x[:, :, 0], x[:, :, 1]
    assert values.min() >= 0 and values.max() <= 1
    assert np.isin(markers, [0.0, 1.0]).all()
    assert np.all(markers[:, : T // 2].sum(1) == 1)  # one in the first half
    assert np.all(markers[:, T // 2 :].sum(1) == 1)  # one in the second half
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(1), rtol=1e-6)


def test_adding_baseline_is_the_mse_of_answering_one():
    assert synthetic.adding_baseline() == 1 / 6
    _, y = synthetic.adding(200_000, 4, np.random.default_rng(1))
    assert np.mean((y.astype(np.float64) - 1.0) ** 2) == pytest.approx(1 / 6, abs=2e-3)


def test_synthetic_tasks_are_deterministic_given_the_generator():
    for make in (synthetic.adding, synthetic.copy_memory, synthetic.temporal_order):
        a = make(8, 20, np.random.default_rng(3))
        b = make(8, 20, np.random.default_rng(3))
        c = make(8, 20, np.random.default_rng(4))
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
        assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))


@pytest.mark.parametrize("T", [1, 50])
def test_copy_memory_layout(T):
    x, y = synthetic.copy_memory(64, T, np.random.default_rng(0))
    assert x.shape == y.shape == (64, T + 20) and x.dtype == y.dtype == np.int64
    symbols = x[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert np.all(x[:, 10 : T + 9] == 0)  # T − 1 blanks
    assert np.all(x[:, T + 9] == 9)  # the delimiter
    assert np.all(x[:, T + 10 :] == 0)  # 10 blanks while the answer is given
    assert np.all(y[:, : T + 10] == 0)
    np.testing.assert_array_equal(y[:, T + 10 :], symbols)
    assert y.max() <= 8  # targets need 9 classes, inputs 10 ids


def test_copy_baseline_is_the_memoryless_cross_entropy():
    T = 30
    assert synthetic.copy_baseline(T) == pytest.approx(10 * np.log(8) / (T + 20))
    _, y = synthetic.copy_memory(100, T, np.random.default_rng(2))
    # memoryless prediction: a blank for sure until the answer, then uniform over 1..8
    p = np.zeros((T + 20, 9))
    p[: T + 10, 0] = 1.0
    p[T + 10 :, 1:] = 1 / 8
    nll = -np.log(p[np.arange(T + 20)[None, :], y])
    assert nll.mean() == pytest.approx(synthetic.copy_baseline(T), rel=1e-12)


def test_copy_baseline_on_is_a_memoryless_model_s_loss_counted_directly():
    """The empirical baseline beside copy's score is the loss and recall, scored as
    Copy.evaluate scores a model (softmax cross-entropy averaged over all T + 20 steps), of
    the model that outputs a blank for sure and then, at each recalled step, the frequencies
    of the set's symbols there, whatever the input; computed here by a direct count."""
    from rnnlab.losses import softmax_cross_entropy

    n, T = 400, 7
    _, y = synthetic.copy_memory(n, T, np.random.default_rng(9))
    p = np.zeros((T + 20, 9))
    p[: T + 10, 0] = 1.0
    hits = 0
    for t in range(T + 10, T + 20):
        counts = Counter(y[:, t].tolist())
        for symbol, c in counts.items():
            p[t, symbol] = c / n
        hits += max(counts.values())
    logits = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -1e30)
    loss, _ = softmax_cross_entropy(np.broadcast_to(logits, (n, T + 20, 9)), y,
                                    reduction="mean")  # fmt: skip
    nats, recall = synthetic.copy_baseline_on(y)
    assert nats == pytest.approx(loss, rel=1e-9)
    assert recall == pytest.approx(hits / (10 * n), rel=1e-12)
    assert nats < synthetic.copy_baseline(T)  # fitted to the set: a little below 10 ln 8 / (T + 20)


def test_temporal_order_ranges_reproduce_the_paper_at_T_100():
    assert synthetic.temporal_order_ranges(100) == {
        "length": (100, 110),
        "t1": (10, 20),
        "t2": (50, 60),
    }
    assert synthetic.temporal_order_ranges(10) == {"length": (10, 11), "t1": (1, 2), "t2": (5, 6)}


@pytest.mark.parametrize("T", [10, 100])
def test_temporal_order_layout(T):
    n = 2000
    x, lengths, y = synthetic.temporal_order(n, T, np.random.default_rng(0))
    r = synthetic.temporal_order_ranges(T)
    L_max = r["length"][1]
    assert x.shape == (n, L_max, 8) and x.dtype == np.float32
    assert lengths.dtype == y.dtype == np.int64 and lengths.shape == y.shape == (n,)
    assert lengths.min() == r["length"][0] and lengths.max() == r["length"][1]
    steps = np.arange(L_max)[None, :]
    valid = steps < lengths[:, None]
    np.testing.assert_array_equal(x.sum(2), valid.astype(np.float32))  # one-hot, then zeros
    sym = np.where(valid, x.argmax(2), -1)
    S = {s: i for i, s in enumerate(synthetic.TEMPORAL_SYMBOLS)}
    assert np.all(sym[:, 0] == S["B"])
    assert np.all(sym[np.arange(n), lengths - 1] == S["E"])
    relevant = (sym == S["X"]) | (sym == S["Y"])
    assert np.all(relevant.sum(1) == 2)
    t1 = relevant.argmax(1)
    t2 = L_max - 1 - relevant[:, ::-1].argmax(1)
    assert t1.min() == r["t1"][0] and t1.max() == r["t1"][1]
    assert t2.min() == r["t2"][0] and t2.max() == r["t2"][1]
    others = valid & ~relevant
    others[:, 0] = False
    others[np.arange(n), lengths - 1] = False
    assert np.all(sym[others] <= S["d"])  # distractors a..d everywhere else
    first_y = sym[np.arange(n), t1] == S["Y"]
    second_y = sym[np.arange(n), t2] == S["Y"]
    np.testing.assert_array_equal(y, 2 * first_y + second_y)
    # every class equally likely: no input-blind answer beats chance
    assert synthetic.temporal_order_baseline() == 0.25
    assert np.all(np.abs(np.bincount(y, minlength=4) / n - 0.25) < 0.04)


def test_synthetic_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(
        ValueError,
        match=r"`rng` must be a numpy.random.Generator .*; got 0 "
        r"\(int\) instead. Randomness is always passed explicitly",
    ):
        synthetic.adding(4, 10, 0)
    with pytest.raises(
        ValueError,
        match=r"`T` must be at least 2 \(one marker in each half\); "
        r"got 1",
    ):
        synthetic.adding(4, 1, rng)
    with pytest.raises(ValueError, match=r"`n` must be a positive integer; got 0"):
        synthetic.copy_memory(0, 10, rng)
    with pytest.raises(ValueError, match=r"`T` must be a positive integer; got 0"):
        synthetic.copy_baseline(0)
    with pytest.raises(
        ValueError,
        match=r"`T` must be at least 10 \(so that t₁ ≥ 1 comes after "
        r"the start symbol\); got 9",
    ):
        synthetic.temporal_order(4, 9, rng)


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_rows_and_pixels():
    x_tr, y_tr, x_te, y_te = digits.load_digits_sequences("rows")
    assert x_tr.shape[1:] == x_te.shape[1:] == (8, 8)
    assert x_tr.dtype == x_te.dtype == np.float32 and y_tr.dtype == y_te.dtype == np.int64
    assert len(x_tr) + len(x_te) == 1797
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert np.all(x_tr * 16 == np.round(x_tr * 16))  # grey levels 0..16, scaled
    # stratified: each digit gives round(0.2 · its count) images to the test set
    counts = np.bincount(np.concatenate([y_tr, y_te]), minlength=10)
    np.testing.assert_array_equal(np.bincount(y_te, minlength=10), np.round(0.2 * counts))
    p_tr, q_tr, p_te, q_te = digits.load_digits_sequences("pixels")
    assert p_tr.shape[1:] == (64, 1)
    np.testing.assert_array_equal(p_tr.reshape(-1, 8, 8), x_tr)  # same split, row-major pixels
    np.testing.assert_array_equal(q_te, y_te)


def test_digits_split_depends_only_on_the_seed():
    a = digits.load_digits_sequences(seed=1, test_fraction=0.3)
    b = digits.load_digits_sequences(seed=1, test_fraction=0.3)
    c = digits.load_digits_sequences(seed=2, test_fraction=0.3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    assert len(a[3]) == sum(
        round(0.3 * k) for k in [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    )


@pytest.mark.parametrize("task", ["adding", "copy", "temporal-order", "digits"])
def test_batches_follow_the_seed_and_step_and_the_held_out_sets_are_apart(task):
    """A training batch is a function of (seed, step) alone: the same for two tasks made
    with one seed, whatever generator the Trainer passes; another step or seed gives
    another. digits puts each of its 1,797 images in one set (it has no duplicates) and an
    epoch's batches draw distinct training images; a synthetic task's two held-out sets are
    drawn apart."""
    from rnnlab.tasks import make_task
    from rnnlab.train import TrainConfig

    def batches(seed, steps):
        t = make_task(TrainConfig(task=task, T=12, batch_size=8, seed=seed))
        return t, [t.batch(s, np.random.default_rng(s + 99)) for s in steps]

    a, first = batches(0, range(4))
    _, again = batches(0, range(4))
    _, other = batches(1, range(4))
    for u, v, w in zip(first, again, other, strict=True):
        assert np.array_equal(u.x, v.x) and np.array_equal(u.y, v.y)
        assert not np.array_equal(u.x, w.x)
    assert all(not np.array_equal(first[0].x, b.x) for b in first[1:])
    if task != "digits":  # fresh draws; the two held-out sets are drawn apart
        assert not np.array_equal(a.split("valid")[0], a.split("test")[0])
        return
    seen = {name: {row.tobytes() for row in a.split(name)[0]} for name in ("train", "valid",
                                                                          "test")}  # fmt: skip
    assert sum(map(len, seen.values())) == 1797  # every image once, in one set
    trained = [row.tobytes() for b in first for row in b.x]
    assert len(set(trained)) == len(trained) == 32 and set(trained) <= seen["train"]


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError) as info:
        digits.load_digits_sequences()
    assert isinstance(info.value, digits.MissingDependencyError)
    assert str(info.value) == "the digits task needs scikit-learn: pip install 'rnnlab[digits]'"


def test_digits_errors():
    with pytest.raises(ValueError, match=r"`mode` must be one of 'rows', 'pixels'; got 'cols'"):
        digits.load_digits_sequences("cols")
    with pytest.raises(
        ValueError,
        match=r"`test_fraction` must be a number in \(0, 1\); got 0.0 "
        r"instead. The test set cannot be empty",
    ):
        digits.load_digits_sequences(test_fraction=0.0)
    with pytest.raises(ValueError, match=r"`test_fraction` must be a number in \[0, 1\); got 1.0"):
        digits.load_digits_sequences(test_fraction=1.0)
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative integer \(a seed\); "
                       r"got -1"):
        digits.load_digits_sequences(seed=-1)


# --------------------------------------------------------------------------------------------
# Python token labels
# --------------------------------------------------------------------------------------------

# One letter per class, in CLASSES order, to write expected labels under the source.
LETTERS = dict(zip(pytokens.CLASSES, ".nCKoDS#", strict=True))


def letters(labels):
    return "".join(".nCKoDS#"[i] for i in labels)


# (source line, its labels + the label of the line's "\n")
SNIPPETS = {
    "definition": [
        ("def f(x=1):", "KKK.ConoDoo."),
        ("    return g (x) + 0x1F  # hi", "....KKKKKK.C.ono.o.DDDD..####."),
    ],
    "class": [
        ("class A:", "KKKKK.Co."),
        ("    '''doc", "....SSSSSSS"),  # the "\n" inside a string is STRING
        ("    string'''", "SSSSSSSSSSSSS."),
        ("    x: int = 1_000", "....no.nnn.o.DDDDD."),
    ],
    "strings": [
        (r's = f"{a!r}" + rb"\x00"', "n.o.SSSSSSSS.o.SSSSSSSS."),
    ],
    "keywords": [
        (
            "x = True if y is not None else print(-1.5e-3j)",
            "n.o.KKKK.KK.n.KK.KKK.KKKK.KKKK.CCCCCooDDDDDDDo.",
        ),
    ],
    "soft keywords are names": [
        ("match = re.match (p, s)", "nnnnn.o.nnoCCCCC.ono.no."),
        ("_ = case", "n.o.nnnn."),
    ],
    "decorators and async": [
        ("@functools.cache", "onnnnnnnnnonnnnn."),
        ("async def g(): pass", "KKKKK.KKK.Cooo.KKKK."),
    ],
    "call needs the same line": [
        ("y = (f", "n.o.on."),
        ("     (1)) + d[k](z) + h\t(2)", ".....oDoo.o.nonoono.o.C.oDo."),
    ],
    "continuation": [
        ("z = 1 + \\", "n.o.D.o..."),
        ("    2", "....D."),
    ],
}


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_label_source_exact(name):
    lines = SNIPPETS[name]
    for src, want in lines:
        assert len(want) == len(src) + 1, (src, want)
    src = "".join(s + "\n" for s, _ in lines)
    labels = pytokens.label_source(src)
    assert labels.dtype == np.int8 and labels.shape == (len(src),)
    assert letters(labels) == "".join(w for _, w in lines)


def test_label_source_crlf_and_no_final_newline():
    assert letters(pytokens.label_source("f(a)\r\nb = 2")) == "Cono..n.o.D"
    assert letters(pytokens.label_source("")) == ""


def test_label_source_errors():
    with pytest.raises(
        pytokens.SourceError,
        match=r"`text` must be Python source that "
        r"tokenizes; got '\$' at line 2, column 6, where no token can start",
    ):
        pytokens.label_source("x = 1\na = 1 $ 2\n")
    with pytest.raises(ValueError, match=r"tokenizes; got .* at line 1"):
        pytokens.label_source('s = "abc\n')
    with pytest.raises(
        ValueError,
        match=r"tokenizes; got an error at line 2: EOF in multi-line "
        r"statement instead",
    ):
        pytokens.label_source("x = (1,\n")
    with pytest.raises(
        ValueError,
        match=r"tokenizes; got an error at line 3: unindent does not "
        r"match any outer indentation level",
    ):
        pytokens.label_source("if x:\n        a\n    b\n")
    with pytest.raises(ValueError, match=r"`text` must be a str of Python source; got b'x'"):
        pytokens.label_source(b"x")


def test_stdlib_selection_leaves_out_tests_and_data():
    files = pytokens.stdlib_files()
    assert len(files) > 300
    assert files == sorted(files, key=lambda p: p.as_posix())
    root = Path(sysconfig.get_paths()["stdlib"])
    assert all(pytokens.EXCLUDED_DIRS.isdisjoint(p.relative_to(root).parts) for p in files)
    assert any(p.name == "textwrap.py" for p in files)


def test_load_pytokens_from_the_standard_library():
    chars, labels = pytokens.load_pytokens(max_chars=30_000, seed=0)
    assert len(chars) == len(labels) == 30_000 and labels.dtype == np.int8
    again, _ = pytokens.load_pytokens(max_chars=30_000, seed=0)
    other, _ = pytokens.load_pytokens(max_chars=30_000, seed=1)
    assert again == chars and other != chars
    share = np.bincount(labels, minlength=len(pytokens.CLASSES)) / len(labels)
    assert np.all(
        share[
            [
                pytokens.NAME,
                pytokens.CALLDEF,
                pytokens.KEYWORD,
                pytokens.OPERATOR,
                pytokens.STRING,
                pytokens.OTHER,
            ]
        ]
        > 0.02
    )
    vocab = text.CharVocab(chars)  # the characters are what a model reads
    assert vocab.decode(vocab.encode(chars)) == chars


def test_load_pytokens_from_given_files(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("def f(a):\n    return a  # é\n" * 3, encoding="utf-8")
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    broken = tmp_path / "broken.py"
    broken.write_text("x = (1,\n")
    chars, labels = pytokens.load_pytokens(files=[broken, good, str(latin)])
    assert chars == good.read_text(encoding="utf-8") + "# -*- coding: latin-1 -*-\ns = 'é'\n"
    np.testing.assert_array_equal(labels, pytokens.label_source(chars))
    # each file is cut after a line end once it passes max_file_chars, the total at max_chars
    chars, labels = pytokens.load_pytokens(files=[good, latin], max_file_chars=30)
    assert chars == "def f(a):\n    return a  # é\n" + "# -*- coding: latin-1 -*-\n"
    chars, _ = pytokens.load_pytokens(files=[good], max_chars=7)
    assert chars == "def f(a"


def _module_library(root: Path, files: int = 120, lines: int = 8) -> None:
    """A stand-in standard library under `root`: `files` modules, each of `lines` functions
    whose names say the module (f_M_J), in folders as the real one has; every module has
    the same characters, so a training piece's vocabulary reads any held-out text."""
    for m in range(files):
        path = root / ("pkg" if m % 3 == 0 else "") / f"mod{m:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"def f_{m:03d}_{j}(x):\n    return x + {j}  # 0123456789\n"
                       for j in range(lines))  # fmt: skip
        path.write_text('"""Module\nof f()."""\n' + body, encoding="utf-8")


def _pytokens_task(seed: int, size: int, seq_len: int = 20):
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({**tasks.defaults("pytokens"), "seed": seed,
                                 "train_size": size, "seq_len": seq_len})  # fmt: skip
    return tasks.make_task(cfg)


def _split_text(task, name: str) -> str:
    return task.vocab.decode(task.split(name)[0].reshape(-1))


@pytest.fixture
def module_library(tmp_path, monkeypatch):
    """pytokens reading `_module_library` instead of this Python's standard library."""
    root = tmp_path / "lib"
    _module_library(root)
    monkeypatch.setattr(pytokens, "stdlib_root", lambda: root, raising=False)
    found = sorted(root.rglob("*.py"))
    monkeypatch.setattr(pytokens, "stdlib_files", lambda r=None: found)
    return root


def test_pytokens_holds_out_whole_files_whatever_the_seed_and_train_size(module_library):
    """The test text was the last 5 % of the files shuffled by --seed and concatenated to
    --train-size: a file could straddle a split (its head trained on, its tail tested), and
    one run's test text lay inside another's training piece (a larger --train-size trains on
    the smaller's test text). Whole files are held out by their path's hash now: no run's
    training text holds a file any run validates or tests on, and runs of any seed test on
    the same text, a smaller --train-size on a beginning of a larger one's."""
    import hashlib
    import re

    def modules(text_: str) -> set[str]:
        return set(re.findall(r"f_(\d{3})_", text_))

    def held_out(m: int) -> str:
        relative = f"{'pkg/' if m % 3 == 0 else ''}mod{m:03d}.py"
        r = int(hashlib.sha256(relative.encode()).hexdigest(), 16) % 20
        return "test" if r == 0 else "valid" if r == 1 else "train"

    runs = {(seed, size): _pytokens_task(seed, size)
            for seed in (0, 1) for size in (4_000, 8_000, 40_000)}  # fmt: skip
    seen: dict[str, set[str]] = {"train": set(), "valid": set(), "test": set()}
    for task in runs.values():
        for name in seen:
            text_ = _split_text(task, name)
            assert "\ufffd" not in text_  # (every character read as itself)
            got = modules(text_)
            assert got and all(held_out(int(m)) == name for m in got), (name, got)
            seen[name] |= got
    assert seen["train"].isdisjoint(seen["test"] | seen["valid"])
    assert seen["test"].isdisjoint(seen["valid"])
    tests = {key: _split_text(task, "test") for key, task in runs.items()}
    trains = {key: _split_text(task, "train") for key, task in runs.items()}
    for size in (4_000, 8_000, 40_000):
        assert tests[0, size] == tests[1, size]
        assert trains[0, size] != trains[1, size]  # the seed orders the training files
    assert tests[0, 40_000].startswith(tests[0, 8_000]) and tests[0, 8_000].startswith(
        tests[0, 4_000])  # fmt: skip
    for test_text in tests.values():
        for train_text in trains.values():
            assert test_text[:40] not in train_text


def test_pytokens_pieces_are_budgeted_and_labelled_per_whole_file(module_library):
    """Each split reads its share of --train-size (90/5/5 %), its last file cut after a line
    end, with the labels of the whole file: a cut through the module's docstring is still
    STRING (labelled after the cut, the file would not tokenize and be skipped)."""
    splits = pytokens.load_pytokens_splits(max_chars=4_000, seed=0)
    assert pytokens.split_budgets(4_000) == {"train": 3_600, "valid": 200, "test": 200}
    for name, (text_, labels) in splits.items():
        budget = pytokens.split_budgets(4_000)[name]
        assert budget - 60 < len(text_) <= budget and text_.endswith("\n"), name
        assert len(labels) == len(text_) and labels.dtype == np.int8
    files = pytokens.split_files(0, module_library)
    first = files["test"][0].read_text(encoding="utf-8")
    text_, labels = splits["test"]
    assert first.startswith(text_)  # one module of more than 200 characters
    np.testing.assert_array_equal(labels, pytokens.label_source(first)[: len(text_)])
    cut = pytokens.load_pytokens_splits(max_chars=20 * 15, seed=0)["test"]
    assert cut[0] == '"""Module\n' and set(cut[1].tolist()) == {pytokens.STRING}
    with pytest.raises(ValueError, match=r"`relative` must be a file's path relative"):
        pytokens.file_split("")


def test_load_pytokens_errors(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"`files\[1\]` must be an existing file; got '.*nope.py', "
        r"which is missing instead",
    ):
        pytokens.load_pytokens(files=[__file__, tmp_path / "nope.py"])
    (tmp_path / "bad.py").write_text("$\n")
    with pytest.raises(
        ValueError,
        match=r"`files` must be Python files of which at least one "
        r"tokenizes and is not empty; got 1 file, none usable",
    ):
        pytokens.load_pytokens(files=[tmp_path / "bad.py"])
    with pytest.raises(ValueError, match=r"`files` must be a non-empty list of paths"):
        pytokens.load_pytokens(files=[])
    with pytest.raises(ValueError, match=r"`max_chars` must be a positive integer; got 0"):
        pytokens.load_pytokens(max_chars=0)
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative integer \(a seed\); "
                       r"got 1.5"):
        pytokens.load_pytokens(seed=1.5)


def test_chunk():
    ids = np.arange(23, dtype=np.int32)
    labels = (np.arange(23) % 8).astype(np.int8)
    x, y = pytokens.chunk(ids, labels, 5)
    assert x.shape == y.shape == (4, 5) and x.dtype == np.int32 and y.dtype == np.int8
    np.testing.assert_array_equal(x.ravel(), ids[:20])
    np.testing.assert_array_equal(y.ravel(), labels[:20])
    with pytest.raises(ValueError, match=r"`labels` must be one label per id \(23\); got 22"):
        pytokens.chunk(ids, labels[:22], 5)
    with pytest.raises(
        ValueError,
        match=r"`ids` must be at least length = 30 ids \(one window\); "
        r"got 23",
    ):
        pytokens.chunk(ids, labels, 30)
    with pytest.raises(ValueError, match=r"`labels` must be a 1-D array of integers"):
        pytokens.chunk(ids, labels.astype(float), 5)


# ----------------------------------------------------------------------------- truncated BPTT
def _labelling_task(lengths, bptt):
    """A per-step labelling task over fixed sequences of the given lengths (padding: -1)."""
    from rnnlab.tasks._sequence import _SequenceTask
    from rnnlab.train import TrainConfig

    class Labelling(_SequenceTask):
        name, metric, higher_is_better, per_step = "labelling", "loss", False, True

        def split(self, name):
            n, T = len(lengths), max(lengths)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((n, T, 2))
            y = rng.integers(0, 3, (n, T))
            valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
            y[~valid] = -1  # a padding target would be an invalid class: never scored
            return x, y, np.asarray(lengths)

    return Labelling(TrainConfig(task="labelling", batch_size=len(lengths), bptt=bptt, seed=1))


def test_truncated_bptt_leaves_finished_sequences_out_of_later_windows():
    from rnnlab.losses import softmax_cross_entropy

    task = _labelling_task([7, 2, 5, 3], bptt=3)  # windows [0, 3), [3, 6), [6, 7)
    seen_active = []
    for w in range(3):
        batch = task.batch(w, np.random.default_rng(0))
        assert batch.x.shape[1] >= 1 and batch.lengths.min() >= 1
        assert batch.carry == (w > 0)
        out = np.random.default_rng(w).standard_normal(batch.x.shape[:2] + (3,))
        loss, d = task.loss(out, batch)
        a = np.ones(len(batch.lengths), bool) if batch.active is None else batch.active
        seen_active.append(int(a.sum()))
        want, d_want = softmax_cross_entropy(
            out[a], batch.y[a], lengths=batch.lengths[a], reduction="mean"
        )
        assert loss == pytest.approx(want, rel=1e-12)
        np.testing.assert_array_equal(d[a], d_want)
        np.testing.assert_array_equal(d[~a], 0.0)
    assert seen_active == [4, 2, 1]  # 2 and 3 end by step 3, 5 by step 6; 7 runs to the end


def test_a_window_past_every_sequence_makes_no_update():
    """Bucketing can put only short sequences in a batch: a window after all of them has no
    row to learn from; the loss is 0 with a zero gradient and the Trainer skips the step
    before the model runs, reporting no loss (None: no 0 in the metrics or the progress)."""
    from types import SimpleNamespace

    from rnnlab.tasks._sequence import epoch_batches
    from rnnlab.train import Trainer

    task = _labelling_task([2, 1, 2, 6], bptt=2)  # batch of 4 = all; windows 0..2
    task.cfg.batch_size = 3  # the first batch holds three of the four sequences
    # a seed whose first epoch leaves the long sequence (index 3) out: a random one sits out
    task.cfg.seed = next(s for s in range(100)
                         if 3 not in epoch_batches(4, 3, np.array([2, 1, 2, 6]), s, 0)[0])
    short = [w for w in range(3) if task.batch(w, np.random.default_rng(0)).active is not None]
    batch = task.batch(2, np.random.default_rng(0))  # steps [4, 6) of the first batch
    assert batch.active is not None and not batch.active.any()
    loss, d = task.loss(np.ones(batch.x.shape[:2] + (3,)), batch)
    assert loss == 0.0 and not d.any() and short
    fake = SimpleNamespace(cfg=task.cfg, task=task)  # no model: running it would fail
    fake._draw = lambda step, rng: Trainer._draw(fake, step, rng)  # one process's batch
    assert Trainer._train_step(fake, 2) == (None, None, 0)


def _small_charlm(tmp_path):
    """A charlm task on a 4,003-character text of 23 letters, 4 tracks of 10: its test split
    leaves a tail short of a track's length (the case of the two tests below)."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(chr(97 + (i * i + i // 7) % 23) for i in range(4003)))
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": str(corpus),
                                 "batch_size": 4, "seq_len": 10})  # fmt: skip
    return tasks.make_task(cfg)


def test_charlm_s_baselines_score_the_characters_its_evaluation_scores(tmp_path):
    """evaluate scores the split's 2nd to (8n+1)-th characters (8 tracks of n); the n-gram
    baselines scored every character, the first (never predicted) and the tail among them,
    so "beats the 5-gram" compared two different sets of characters."""
    from rnnlab.tasks import ngram, text

    task = _small_charlm(tmp_path)
    ids = task.ids["test"]
    n = (len(ids) - 1) // text.EVAL_TRACKS
    assert (len(ids) - 1) % text.EVAL_TRACKS  # (a tail is left out: the case in question)
    got = task.baselines("test")["trigram"]["nats_per_char"]
    raw = ngram.ngram_baselines(task.ids["train"], ids[: n * text.EVAL_TRACKS + 1],
                                task.vocab.size, max_order=3)["trigram"]["nats_per_char"]
    every = ngram.ngram_baselines(task.ids["train"], ids, task.vocab.size,
                                  max_order=3)["trigram"]["nats_per_char"]  # fmt: skip
    assert got != every and got != raw
    trigram = ngram.fit(task.ids["train"], task.vocab.size, 3)
    logs = ngram.log_probs(trigram, ids[: n * text.EVAL_TRACKS + 1])[1:]
    assert len(logs) == n * text.EVAL_TRACKS == task.evaluate(_Uniform(task), "test")["chars"]
    assert got == pytest.approx(-np.mean(logs), rel=1e-12)


class _Uniform:
    """A model that predicts every character alike (what evaluate runs, at no cost)."""

    def __init__(self, task):
        self.size = task.vocab.size

    def forward(self, x, state=None, **_):
        from rnnlab.layers import Forward

        return Forward(np.zeros((*x.shape, self.size)), None)


def test_a_text_that_would_not_fit_in_memory_is_refused_by_name(tmp_path, monkeypatch):
    """A file under the 1 GiB cap still takes up to 9 bytes a byte while it is read and
    encoded: one larger than the memory available is refused naming it, not left to end in
    "out of memory; try a smaller --hidden" (which changes nothing) or the OOM killer."""
    from rnnlab import _checks
    from rnnlab.tasks import text

    big = tmp_path / "big.txt"
    big.write_text("abcdefghi\n" * 600_000)  # 6 MB
    monkeypatch.setattr(_checks, "available_memory", lambda: 40 << 20)
    with pytest.raises(ValueError, match=r"`path` must be a readable UTF-8 text file that fits "
                       r"in the memory available \(40.0 MiB; reading it takes about 9 bytes "
                       r"a byte of text\); got '.*big.txt', of 6,000,000 bytes \(about "
                       r"51.5 MiB\) instead"):  # fmt: skip
        text.read_text(big)
    monkeypatch.setattr(_checks, "available_memory", lambda: 1 << 30)
    assert len(text.read_text(big)) == 6_000_000


def test_a_text_whose_n_gram_baselines_would_not_fit_is_refused_before_training(tmp_path,
                                                                                 monkeypatch,
                                                                                 capsys):
    """The baselines beside the test score, counted at the end of `rnnlab train`, take up to
    ~255 bytes a character of random text (30 of prose) against the 9 a byte of reading
    it: a text that read well was killed by memory after the whole training. A new run
    refuses it up front, naming --data, with the estimate; prose of the same size, whose
    distinct n-grams are few, is counted and goes on; a small text is not even looked at."""
    from rnnlab import _checks
    from rnnlab.cli import main
    from rnnlab.train import TrainConfig

    def task(path):
        from rnnlab import tasks

        cfg = TrainConfig.from_dict(tasks.defaults("charlm") | {"data": str(path)})
        return tasks.make_task(cfg)

    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.txt"
    noise.write_text("".join(np.array([chr(33 + i) for i in range(90)])[rng.integers(0, 90,
                                                                                   1_600_000)]))
    prose = tmp_path / "prose.txt"
    d = text.default_corpus()
    prose.write_text((d * 4)[:1_600_000])
    monkeypatch.setattr(_checks, "available_memory", lambda: 200 << 20)
    lm = task(noise)
    n = len(lm.ids["train"])
    grams = ngram.distinct_grams(lm.ids["train"], lm.vocab.size, 5)
    need = ngram.baseline_memory(n, lm.vocab.size, 5, grams)
    assert need > 200 << 20 and ngram.baseline_memory(n, lm.vocab.size, 5) >= need
    with pytest.raises(ValueError, match=(
            rf"`--data` must be a text whose n-gram baselines \(counted from its training "
            rf"piece, beside the test score\) fit in the memory "
            rf"available \(200.0 MiB\); got '.*noise.txt', whose {n:,} training characters "
            rf"hold {sum(grams):,} distinct n-grams of orders 1 to 5 \(about "
            rf"{_checks.describe_bytes(need)} to count\) instead")):  # fmt: skip
        lm.check_new_run()
    assert task(prose).check_new_run() == []  # counted: it fits
    monkeypatch.setattr(_checks, "available_memory", lambda: 1 << 30)
    assert lm.check_new_run() == []
    # `rnnlab train` says it in one line and leaves no run directory
    monkeypatch.setattr(_checks, "available_memory", lambda: 200 << 20)
    run = tmp_path / "run"
    assert main(["train", "charlm", "--data", str(noise), "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnlab: error: `--data` must be a text "
                                                   "whose n-gram baselines"), err  # fmt: skip
    assert not run.exists()

    # a small text: /proc/meminfo is not read
    def unasked():
        raise AssertionError("available_memory read for a small text")

    monkeypatch.setattr(_checks, "available_memory", unasked)
    small = tmp_path / "small.txt"
    small.write_text(d[:200_000])
    assert task(small).check_new_run() == []


def test_resume_and_evaluate_ask_whether_the_n_gram_baselines_fit(tmp_path, monkeypatch, capsys):
    """The baselines are counted at the end of a resumed run's training too, and by `rnnlab
    evaluate` on the text given with --data: both asked the memory question only a new run
    was asked, so a resumed run was killed after its training and evaluate after its pass.
    Both now refuse up front, in one line, naming --data; with the memory there both go on."""
    from rnnlab import _checks
    from rnnlab.cli import main

    rng = np.random.default_rng(1)
    symbols = np.array([chr(33 + i) for i in range(90)])
    noise = tmp_path / "noise.txt"
    noise.write_text("".join(symbols[rng.integers(0, 90, 1_600_000)]))
    run = tmp_path / "run"
    monkeypatch.setattr(_checks, "available_memory", lambda: 8 << 30)
    assert main(["train", "charlm", "--data", str(noise), "--run-dir", str(run), "--steps", "1",
                 "--hidden", "8", "--embed", "4", "--batch-size", "2", "--seq-len", "8",
                 "--checkpoint-every", "1", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    monkeypatch.setattr(_checks, "available_memory", lambda: 200 << 20)
    assert main(["train", "--resume", str(run), "--steps", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()  # (a warning first: --steps changes the schedule)
    assert err[-1].startswith("rnnlab: error: `--data` must be a text whose n-gram baselines"), err
    assert main(["evaluate", str(run), "--data", str(noise), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--data` must be a text whose n-gram baselines" in err, err
    monkeypatch.setattr(_checks, "available_memory", lambda: 8 << 30)
    assert main(["evaluate", str(run), "--split", "valid", "--data", str(noise), "--json"]) == 0
    assert main(["train", "--resume", str(run), "--steps", "2", "--quiet"]) == 0


def _cgroup(root, path, files):
    group = root / path
    group.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (group / name).write_text(value)


def test_the_memory_available_is_capped_by_the_control_group_limit(tmp_path, monkeypatch):
    """In a container (`docker run -m 2g`) /proc/meminfo shows the host's memory while the
    group's OOM killer strikes at its limit: the memory checks read the tightest limit of
    the process's group and its ancestors, less what the group holds (its file cache, which
    the kernel reclaims first, not counted), for cgroup v2 and v1; "max" or v1's near-2⁶³
    means none; unreadable files are passed over."""
    from rnnlab import _checks

    root = tmp_path / "cg"
    membership = tmp_path / "cgroup"
    # v2: the group's own limit, and a tighter one on its parent
    membership.write_text("0::/box/job\n")
    _cgroup(root, "box/job", {"memory.max": str(3 << 30), "memory.current": str(1 << 30),
                              "memory.stat": f"anon 1\nfile {256 << 20}\n"})
    _cgroup(root, "box", {"memory.max": "max", "memory.current": str(1 << 30)})
    got = _checks.cgroup_headroom(str(membership), str(root))
    assert got == (3 << 30) - (1 << 30) + (256 << 20)
    _cgroup(root, "box", {"memory.max": str(1536 << 20)})
    assert _checks.cgroup_headroom(str(membership), str(root)) == 512 << 20
    _cgroup(root, "box", {"memory.max": "max"})
    _cgroup(root, "box/job", {"memory.max": "max"})
    assert _checks.cgroup_headroom(str(membership), str(root)) is None
    _cgroup(root, "box/job", {"memory.max": "garbage"})
    assert _checks.cgroup_headroom(str(membership), str(root)) is None
    # v1: the memory controller's own hierarchy; no limit written as a number near 2⁶³
    membership.write_text("5:cpu,cpuacct:/x\n4:memory:/process_api/abc\n0::/\n")
    _cgroup(root, "memory/process_api/abc",
            {"memory.limit_in_bytes": str(2 << 30), "memory.usage_in_bytes": str(1 << 30),
             "memory.stat": f"cache 5\ntotal_cache {1 << 20}\n"})  # fmt: skip
    _cgroup(root, "memory", {"memory.limit_in_bytes": "9223372036854771712",
                             "memory.usage_in_bytes": "1"})
    assert _checks.cgroup_headroom(str(membership), str(root)) == (1 << 30) + (1 << 20)
    _cgroup(root, "memory/process_api/abc", {"memory.limit_in_bytes": "9223372036854771712"})
    assert _checks.cgroup_headroom(str(membership), str(root)) is None
    assert _checks.cgroup_headroom(str(tmp_path / "missing"), str(root)) is None
    # over its limit already: no room, never a negative size
    _cgroup(root, "memory/process_api/abc", {"memory.limit_in_bytes": str(1 << 30),
                                             "memory.usage_in_bytes": str(2 << 30)})
    assert _checks.cgroup_headroom(str(membership), str(root)) == 0
    # available_memory takes the smaller of the machine's and the group's
    monkeypatch.setattr(_checks, "_machine_available", lambda: 24 << 30)
    monkeypatch.setattr(_checks, "cgroup_headroom", lambda: 2 << 30)
    assert _checks.available_memory() == 2 << 30
    monkeypatch.setattr(_checks, "cgroup_headroom", lambda: None)
    assert _checks.available_memory() == 24 << 30
    monkeypatch.setattr(_checks, "_machine_available", lambda: None)
    monkeypatch.setattr(_checks, "cgroup_headroom", lambda: 1 << 30)
    assert _checks.available_memory() == 1 << 30


def test_distinct_grams_counts_what_the_baselines_count(corpus):
    """ngram.distinct_grams: the number of distinct k-grams, as many as ngram's own counts
    (np.unique of the k-gram codes) for every order, on text and on a tiny stream."""
    vocab = text.CharVocab(corpus)
    ids = vocab.encode(corpus[:50_000])
    raw, _ = ngram._count(ids.astype(np.int64), vocab.size, 5)
    assert ngram.distinct_grams(ids, vocab.size, 5) == [len(keys) for keys, _ in raw]
    assert ngram.distinct_grams([0, 1, 0, 1, 0], 2, 3) == [2, 2, 2]
    assert ngram.baseline_memory(5, 2, 3, [2, 2, 2]) == 5 * ngram.PEAK_PER_ID + \
        6 * ngram.PEAK_PER_GRAM  # fmt: skip
    assert ngram.baseline_memory(5, 2, 3) == 5 * ngram.PEAK_PER_ID + \
        (2 + 4 + 3) * ngram.PEAK_PER_GRAM  # fmt: skip


def test_resuming_on_a_built_in_corpus_that_changed_is_refused_and_evaluating_warns(capsys):
    """The pydoc topics follow the Python version: a run trained under another one resumes
    on other text, refused (`resume=True`, as `train --resume` makes its task), while
    evaluate and sample read it with the run's vocabulary after a warning, as before."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict(tasks.defaults("charlm"))
    record = tasks.make_task(cfg).data_record()
    other = dict(record, corpus_sha256="0123456789ab" + "0" * 52)
    with pytest.raises(ValueError, match=(
            r"`--resume` must train on the text the run was trained on; the pydoc topics of "
            rf"CPython has changed since \(its SHA-256 is now {record['corpus_sha256'][:12]}"
            r"\.\.\., the run's config.json records 0123456789ab\.\.\.\): resume it under the "
            r"Python it was trained with, or start a new run on this text")):  # fmt: skip
        tasks.make_task(cfg, other, resume=True)
    assert "warning" not in capsys.readouterr().err
    assert tasks.make_task(cfg, record, resume=True).data_record() == record
    assert tasks.make_task(cfg, other).data_record()["vocab"] == record["vocab"]
    assert "has changed since the run was trained" in capsys.readouterr().err


def test_charlm_s_unknown_chars_counts_the_characters_it_scores(tmp_path):
    """`unknown_chars` beside `chars`: the unknown ones among the characters scored. It counted
    the whole split, its first character (read, never predicted) and the tail short of a
    track's length too, so a text of a script the run never saw had 55 unknown characters
    in 48 (`rnnlab evaluate RUN --data other.txt`)."""
    from rnnlab.tasks import text

    task = _small_charlm(tmp_path)
    ids = task.ids["test"]
    scored = (len(ids) - 1) // text.EVAL_TRACKS * text.EVAL_TRACKS
    assert len(ids) - 1 > scored  # (a tail is left out: the case in question)
    ids[:] = task.vocab.unknown  # a split of characters the run never saw
    result = task.evaluate(_Uniform(task), "test", baselines=False)
    assert result["unknown_chars"] == result["chars"] == scored
    ids[: scored + 1] = 0  # the unknown ones only in the tail: none scored
    assert task.evaluate(_Uniform(task), "test", baselines=False)["unknown_chars"] == 0
    ids[1] = task.vocab.unknown  # the first character scored
    assert task.evaluate(_Uniform(task), "test", baselines=False)["unknown_chars"] == 1


@pytest.mark.parametrize("B, window", [(10, 106), (13, 73), (32, 100), (4, 300)])
def test_a_charlm_text_of_the_length_said_is_long_enough(tmp_path, B, window):
    """A text too short for --batch-size tracks of --seq-len is refused with the length it
    needs; that length was training's share over 0.9, which the rounding of the 5 % pieces
    leaves short at times (--batch-size 10 --seq-len 106: "about 1,190 characters", and a
    text of 1,190 was refused again). The length said is accepted, one less refused."""
    import re

    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    def task_of(chars: int):
        corpus = tmp_path / "c.txt"
        corpus.write_text("".join(chr(97 + (i * i + i // 7) % 23) for i in range(chars)))
        cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": str(corpus),
                                     "batch_size": B, "seq_len": window})  # fmt: skip
        return tasks.make_task(cfg)

    with pytest.raises(ValueError, match="at least .* characters in all") as e:
        task_of(1000).batch(0, None)
    need = int(re.search(r"at least ([\d,]+) characters in all", str(e.value))[1].replace(",", ""))
    task_of(need).batch(0, None)
    with pytest.raises(ValueError, match=f"at least {need:,} characters in all"):
        task_of(need - 1).batch(0, None)


@pytest.mark.parametrize("window", [{"seq_len": 100}, {"bptt": 100, "seq_len": 300}])
def test_a_charlm_text_too_short_is_refused_naming_the_settings_a_python_caller_set(
    tmp_path, window
):
    """The refusal said `--data`, --batch-size and --seq-len (or --bptt) to a Python caller,
    who set `data`, `batch_size` and `seq_len` (or `bptt`) in a TrainConfig; rnnlab train
    turns these into its options (tests/test_train_cli.py)."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    corpus = tmp_path / "s.txt"
    corpus.write_text("hello world, a short text. " * 60)
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": str(corpus),
                                 "batch_size": 32, **window})  # fmt: skip
    name = next(iter(window))
    with pytest.raises(ValueError) as e:
        tasks.make_task(cfg).batch(0, None)
    assert str(e.value).startswith(
        "`data` must hold enough text for 32 tracks (`batch_size`) of 100 characters "
        f"(`{name}`) in its training piece (at least 3,593 characters in all); got "
    ), e.value
    assert str(e.value).endswith(f"Give more text, or a smaller `batch_size` or `{name}`.")
    assert "--" not in str(e.value)


def test_a_pytokens_seq_len_longer_than_the_standard_library_allows_names_seq_len(
    tmp_path, monkeypatch
):
    """Where the standard library gives less source than --train-size asks, a --seq-len too
    long for its 5 % pieces said "`train_size` must be at least ... Raise --train-size",
    which gives no more text: it names --seq-len and the longest that fits, the characters
    of the held-out files that split holds whole."""
    root = tmp_path / "lib"
    _module_library(root, files=40)
    monkeypatch.setattr(pytokens, "stdlib_root", lambda: root)
    files = pytokens.split_files(0, root)
    held = {name: sum(len(p.read_text()) for p in files[name]) for name in ("valid", "test")}
    name, shortest = min(held.items(), key=lambda kv: kv[1])
    assert 0 < shortest < 2_000  # (the library's test or validation files are few)

    def task(seq_len: int):
        return _pytokens_task(0, 400_000, seq_len)

    with pytest.raises(ValueError, match=rf"^`seq_len` must be at most {shortest:,} for the "
                       rf"Python source this standard library gives \(its {name} \(held-out\) "
                       rf"files hold {shortest:,} characters in all.*; got {shortest + 1:,} "
                       r"instead\. Lower `seq_len`\.$"):  # fmt: skip
        task(shortest + 1)
    assert task(shortest).split(name)[0].shape == (1, shortest)
    # a library of no test file at all (no path of it hashes to one) is said as such
    for path in files["test"]:
        path.unlink()
    with pytest.raises(ValueError, match=r"^the standard library at '.*lib' gives no usable "
                       r"test file .*: pytokens has no test text$"):  # fmt: skip
        task(10)


def test_a_pytokens_train_size_too_small_says_the_least_that_fits(module_library):
    """The least --train-size said holds a window in each piece, each cut after a line end:
    that size trains, one less is refused with the same message."""
    import re

    with pytest.raises(ValueError, match=r"^`train_size` must be at least ([\d,]+) characters "
                       r"with `seq_len` = 50, .*; got 500 instead\. Raise `train_size` or "
                       r"lower `seq_len`\.$") as e:  # fmt: skip
        _pytokens_task(0, 500, 50)
    need = int(re.search(r"at least ([\d,]+)", str(e.value))[1].replace(",", ""))
    task = _pytokens_task(0, need, 50)
    assert min(len(task.split(name)[0]) for name in ("train", "valid", "test")) == 1
    with pytest.raises(ValueError, match=rf"at least {need:,} characters with `seq_len` = 50"):
        _pytokens_task(0, need - 1, 50)


def test_evaluation_asks_for_no_tape(tmp_path):
    """Every forward pass of a task's evaluation says grad=False (no backward follows: a
    recurrent layer then keeps no tape of its 256-step chunks or batches): the charlm's and
    a sequence task's."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    seen = []

    class Spy(_Uniform):
        def forward(self, x, state=None, **options):
            seen.append(options.get("grad"))
            return super().forward(x, state)

    task = _small_charlm(tmp_path)
    task.evaluate(Spy(task), "test", baselines=False)
    cfg = TrainConfig.from_dict({**tasks.defaults("adding"), "T": 8, "train_size": 40})
    adding = tasks.make_task(cfg)

    class Vectors:
        def forward(self, x, state=None, **options):
            from rnnlab.layers import Forward

            seen.append(options.get("grad"))
            return Forward(np.zeros((x.shape[0], 1)), None)

    adding.evaluate(Vectors(), "valid")
    assert len(seen) >= 2 and seen == [False] * len(seen)
