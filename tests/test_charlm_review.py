"""charlm's data as a user's own text meets it (review 128): the memory a corpus takes while
it is read and encoded, a vocabulary too large for a training step or an evaluation chunk,
a text too short for the batches, characters a run's vocabulary lacks in a score, and the
layout's promises (training windows never reach the held-out text, the carried state is
dropped where an epoch wraps, each held-out character is scored once)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rnnlab import _checks, tasks
from rnnlab.cli import main
from rnnlab.layers import Forward
from rnnlab.tasks import text
from rnnlab.train import TrainConfig


def _peak(fn):
    """(fn(), the bytes Python and NumPy allocated at the peak of the call)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _charlm(path, **settings) -> text.CharLM:
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": str(path), **settings})
    task = tasks.make_task(cfg)
    assert isinstance(task, text.CharLM)
    return task


class _Recorder:
    """A model that predicts every symbol alike and records what evaluate feeds it."""

    def __init__(self, size: int):
        self.size, self.calls = size, []

    def forward(self, x, state=None, **_):
        self.calls.append((x.copy(), state))
        return Forward(np.zeros((*x.shape, self.size)), ("state", len(self.calls)))


# ------------------------------------------------------------------ memory


def test_decoding_normalises_on_the_bytes_not_on_copies_of_a_wide_text():
    """A str of ASCII and one emoji takes 4 bytes a character; the BOM and the CRLF and CR
    line ends were dropped from it by three str steps, each a whole copy (11 bytes a byte
    of the file at the peak). On the bytes they cost one byte a byte; the text is the same,
    and a refusal still names the file's own byte offset."""
    data = b"\xef\xbb\xbf" + "\U0001f600".encode() + b"ab\r\n" * 1_000_000 + b"\rend"
    got, peak = _peak(lambda: text.decode_text(data, Path("wide.txt")))
    want = data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    assert got == want
    assert peak < 7 * len(data), peak / len(data)
    bad = b"a\r\n" * 10 + b"\xff" + b"b" * 2000
    with pytest.raises(text.TextFileError, match=r"whose byte 30 \(0xff\) is not UTF-8"):
        text.decode_text(bad, Path("bad.txt"))


def test_the_vocabulary_and_its_ids_are_made_a_piece_at_a_time(monkeypatch):
    """CharVocab's passes took the code points, their sorted copy, the int64 lookups and
    their int32 copy of the whole text at once: 264 MB for the 32 MB of ids of 8 million
    characters, 34 bytes a byte of a 200 MB corpus in all. A piece at a time the ids are
    most of it; pieces end anywhere, astral characters and unknown ones included."""
    monkeypatch.setattr(text, "_CHUNK", 1 << 16)
    body = "abcdefgh" * 1_000_000
    vocab, peak = _peak(lambda: text.CharVocab(body))
    assert vocab.chars == "abcdefgh" and peak < 2 << 20, peak
    ids, peak = _peak(lambda: vocab.encode(body))
    assert peak < 1.25 * ids.nbytes, peak / ids.nbytes
    np.testing.assert_array_equal(ids[:10], [0, 1, 2, 3, 4, 5, 6, 7, 0, 1])

    monkeypatch.setattr(text, "_CHUNK", 7)
    train = "x\U0001f600y e\u0301 z\U0001d518\n" * 5
    vocab = text.CharVocab(train)
    assert vocab.chars == "".join(sorted(set(train)))
    other = train + "Q\U0001f601"
    want = [vocab.chars.index(c) if c in vocab.chars else vocab.unknown for c in other]
    np.testing.assert_array_equal(vocab.encode(other), want)
    assert vocab.decode(vocab.encode(other)) == train + "\ufffd\ufffd"


def test_a_lone_surrogate_is_refused_where_it_is():
    """A Python str may hold one (no UTF-8 file does): the vocabulary said "'utf-32-le'
    codec can't encode character '\\ud800' in position 2: surrogates not allowed"."""
    with pytest.raises(ValueError, match=r"^`text` must be valid Unicode text; got the lone "
                       r"surrogate U\+D800 at character 2 instead\.$"):  # fmt: skip
        text.CharVocab("ab\ud800")
    with pytest.raises(ValueError, match=r"the lone surrogate U\+DC80 at character 3 instead"):
        text.CharVocab("abc").encode("abc\udc80")


def test_a_corpus_is_held_once_beside_its_ids(monkeypatch):
    """The task kept the whole text beside its three pieces while their ids were made, and
    made each with whole-text temporaries: 9.4 times the text's str at the peak (a text of
    ASCII and one emoji, 4 bytes a character). Now its pieces and their ids: 2.1."""
    monkeypatch.setattr(text, "_CHUNK", 1 << 16)
    monkeypatch.setattr(text, "read_text", lambda path: "\U0001f600" + "abcdefgh\n" * 450_000)
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": "wide.txt",
                                 "batch_size": 4, "seq_len": 10})  # fmt: skip
    task, peak = _peak(lambda: text.CharLM(cfg))
    wide = 4 * task.chars  # the bytes of the text's str
    assert sum(a.nbytes for a in task.ids.values()) == wide
    assert peak < 2.5 * wide, peak / wide


@pytest.mark.parametrize("body, codec", [
    ("Caf\u00e9 \u201cquoted\u201d \u2013 it\u2019s fine. " * 60, "cp1252"),  # Windows
    ("caf\u00e9 na\u00efve " * 100, "latin1"),  # no byte from 0x80 to 0x9F: latin1 reads it
])  # fmt: skip
def test_a_windows_1252_text_is_sent_to_cp1252_s_iconv_not_latin1_s(tmp_path, body, codec):
    """A Windows text's curly quotes and dashes are bytes 0x80 to 0x9F, which latin1 reads as
    control characters: `iconv -f latin1`, as advised, gave a corpus with U+0093 for its
    quotes, and it trained so without a word."""
    path = tmp_path / "w.txt"
    path.write_bytes(body.encode(codec))
    with pytest.raises(text.TextFileError) as e:
        text.read_text(path)
    assert "whose byte 3 (0xe9) is not UTF-8" in str(e.value)
    assert f"`iconv -f {codec} -t utf-8`" in str(e.value), e.value
    assert ("Windows-1252" in str(e.value)) == (codec == "cp1252")


def test_a_damaged_utf8_text_or_an_undefined_windows_byte_keeps_latin1_s_example(tmp_path):
    """Bytes from 0x80 to 0x9F are UTF-8's continuation bytes too: a UTF-8 text with one bad
    byte after its first accented letter is not called Windows-1252, nor one holding a byte
    that code page leaves undefined (0x81)."""
    damaged = ("caf\u00e9 \u00e0 la carte. " * 60).encode() + b"\x93 end"
    undefined = "Caf\u00e9 \u201cq\u201d ".encode("cp1252") * 80 + b"\x81"
    for name, data in (("damaged.txt", damaged), ("undefined.txt", undefined)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(text.TextFileError, match=r"`iconv -f latin1 -t utf-8`\.$"):
            text.read_text(tmp_path / name)


# ------------------------------------------------------------------ large vocabularies


@pytest.fixture(scope="module")
def many_symbols(tmp_path_factory) -> Path:
    """40,000 characters of 9,000 distinct CJK ideographs, every one in the training piece."""
    rng = np.random.default_rng(0)
    symbols = [chr(0x4E00 + i) for i in range(9000)]
    body = "".join(symbols) + "".join(rng.choice(symbols, size=31_000))
    path = tmp_path_factory.mktemp("many") / "cjk.txt"
    path.write_text(body, encoding="utf-8")
    return path


def test_a_vocabulary_too_large_for_a_training_step_is_refused_by_name(
    many_symbols, monkeypatch, capsys
):
    """A text of many distinct characters makes batch x window x vocabulary outputs a step
    (a million code points at --batch-size 32 --seq-len 100: about 30 GiB), which nothing
    checked: the run was killed by the out-of-memory killer at its first step."""
    monkeypatch.setattr(_checks, "available_memory", lambda: 200 << 20)
    task = _charlm(many_symbols)
    assert task.vocab.size == 9001
    with pytest.raises(ValueError) as e:
        task.check_new_run()
    assert str(e.value) == (
        "`data` must be a text whose training steps fit in the memory available (200.0 MiB); "
        f"got '{many_symbols}', of 9,001 symbols: a step of 32 tracks (`batch_size`) of 100 "
        "characters (`seq_len`) makes 28,803,200 outputs, about 274.7 MiB (10 bytes an "
        "output), instead. Give a smaller `batch_size` or `seq_len`, or a text of fewer "
        "distinct characters."
    )
    code = main(["train", "charlm", "--data", str(many_symbols), "--steps", "1", "--quiet",
                 "--run-dir", str(many_symbols.parent / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not (many_symbols.parent / "run").exists(), err
    assert "`--data` must be a text whose training steps fit" in err, err
    assert "Give a smaller `--batch-size` or `--seq-len`" in err, err
    monkeypatch.setattr(_checks, "available_memory", lambda: 1 << 30)
    assert _charlm(many_symbols).check_new_run() == []
    assert _charlm(many_symbols, batch_size=8).check_new_run() == []  # (under 256 MiB)


def test_evaluation_reads_fewer_steps_at_a_time_for_a_large_vocabulary(many_symbols):
    """evaluate read 8 tracks 256 steps at a time whatever the vocabulary: 2,048 x V outputs
    of 13 bytes, about 25 GiB for a million symbols. Past 8,192 symbols it reads fewer steps,
    the state carried across, every character still scored once."""
    task = _charlm(many_symbols, batch_size=4, seq_len=10)
    model = _Recorder(task.vocab.size)
    result = task.evaluate(model, "valid", baselines=False)
    k = text.EVAL_CHUNK_BYTES // (16 * text.EVAL_TRACKS * 9001)
    assert k == 232
    lengths = [x.shape[1] for x, _ in model.calls]
    assert max(lengths) == k and sum(lengths) * text.EVAL_TRACKS == result["chars"]
    assert [s for _, s in model.calls][1:] == [("state", i) for i in range(1, len(lengths))]


def test_a_chunked_evaluation_scores_as_the_whole(many_symbols, monkeypatch):
    task = _charlm(many_symbols, batch_size=4, seq_len=10, hidden=4, embed=2)
    model = tasks.build_model(tasks.model_spec(task.cfg, task), seed=0)
    chunked = task.evaluate(model, "valid", baselines=False)
    monkeypatch.setattr(text, "EVAL_CHUNK_BYTES", 1 << 40)  # 256 steps at a time
    whole = task.evaluate(model, "valid", baselines=False)
    assert chunked["chars"] == whole["chars"]
    assert chunked["nats_per_char"] == pytest.approx(whole["nats_per_char"], rel=1e-6)


# ------------------------------------------------------------------ short texts, reports


def test_a_text_too_short_for_the_batches_says_so_at_once(tmp_path):
    """A text under 1,000 characters was told it needed 1,000; made that long, it was told
    3,593 (--batch-size 32 of --seq-len 100). A new run says what its batches need at once;
    where they need less, the 1,000 of the split is said, in the singular for one."""
    short = tmp_path / "short.txt"
    short.write_text("a short text. " * 35, encoding="utf-8")
    with pytest.raises(ValueError) as e:
        _charlm(short)
    assert str(e.value) == (
        "`data` must hold enough text for 32 tracks (`batch_size`) of 100 characters "
        "(`seq_len`) in its training piece (at least 3,593 characters in all); got "
        f"'{short}' with 490 characters instead. Give more text, or a smaller `batch_size` "
        "or `seq_len`."
    )
    one = tmp_path / "one.txt"
    one.write_text("a", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^--data: `path` must be a text of at least 1000 "
                       r"characters \(to split into train/valid/test\); got '.*one.txt' with 1 "
                       r"character instead\.$"):  # fmt: skip
        _charlm(one, batch_size=2, seq_len=10)


def test_a_short_text_is_refused_by_rnnlab_train_with_the_options(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("a short text. " * 35, encoding="utf-8")
    code = main(["train", "charlm", "--data", str(short), "--batch-size", "16",
                 "--run-dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "run").exists(), err
    assert err.startswith("rnnlab: error: `--data` must hold enough text for 16 tracks "
                          "(`--batch-size`) of 100 characters (`--seq-len`) in its training "
                          "piece (at least 1,797 characters in all)"), err  # fmt: skip


def test_a_run_s_own_text_that_no_longer_reads_is_said_as_such(tmp_path):
    """`rnnlab evaluate RUN` and `train --resume RUN` read the run's text from the path its
    config.json stores; one cut short or converted since was refused as "--data: `path`
    must be ...", an option the user never typed, without the way out."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(chr(97 + (i * i + i // 7) % 23) for i in range(4003)))
    task = _charlm(corpus, batch_size=4, seq_len=10)
    record = task.data_record()
    corpus.write_text("abc")
    for resume in (False, True):
        with pytest.raises(ValueError) as e:
            text.CharLM(task.cfg, record, resume=resume)
        assert str(e.value) == (
            "the run's training text (config.json's \"data\") no longer reads as it did: "
            "`path` must be a text of at least 1000 characters (to split into "
            f"train/valid/test); got '{corpus}' with 3 characters instead. Put it back as it "
            "was to train or evaluate the run on it, or score other text with the run's "
            "vocabulary: rnnlab evaluate RUN --data FILE"
        )
    with pytest.raises(ValueError, match=r"^--data: `path` must be a text of at least 1000"):
        text.CharLM(task.cfg, {"vocab": record["vocab"]})  # (evaluate --data: typed)


def test_the_report_says_how_many_scored_characters_the_vocabulary_lacks(tmp_path):
    """`rnnlab evaluate RUN --data OTHER` scores every character the run's vocabulary lacks
    as its unknown symbol; the report said nothing of it (a text 57 % emoji scored 6.5
    bits/char beside a 5-gram of 0.3, fitted on that text's own unknown symbols)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(chr(97 + (i * i + i // 7) % 23) for i in range(4003)))
    task = _charlm(corpus, batch_size=4, seq_len=10)
    result = task.evaluate(_Recorder(task.vocab.size), "test", baselines=True)
    assert not any("vocabulary" in line for line in task.report(result))
    result["unknown_chars"] = 127
    lines = task.report(result)
    assert lines[1] == (f"  unknown: 127 of the {result['chars']} characters scored "
                        f"({127 / result['chars']:.1%}) are not in the run's vocabulary; each "
                        "is scored as its unknown symbol")  # fmt: skip


# ------------------------------------------------------------------ the layout's promises


def test_training_windows_never_reach_the_held_out_text_and_wrap_without_state(tmp_path):
    """Held-out pieces of letters training never has: any window that reached them would
    hold the unknown id. Over an epoch and past its wrap, every target is a training
    character, each window continues the one before on its track, and the state is
    carried everywhere but at the first window of an epoch."""
    corpus = tmp_path / "split.txt"
    corpus.write_text("abcdefgh" * 450 + ("XYZ" * 134)[:400], encoding="utf-8")
    task = _charlm(corpus, batch_size=3, seq_len=7)
    assert len(task.ids["train"]) == 3600
    assert (task.ids["valid"] == task.vocab.unknown).all()
    assert (task.ids["test"] == task.vocab.unknown).all()
    _, _, per_epoch = task._training_tracks()
    K = 3599 // 3
    assert per_epoch == K // 7
    train = task.ids["train"]
    for step in range(2 * per_epoch + 2):
        batch = task.batch(step, None)
        w = step % per_epoch
        assert batch.carry == (w > 0)
        assert (batch.y != task.vocab.unknown).all()
        for b in range(3):
            start = b * K + w * 7
            np.testing.assert_array_equal(batch.x[b], train[start : start + 7])
            np.testing.assert_array_equal(batch.y[b], train[start + 1 : start + 8])


def test_each_held_out_character_is_scored_once(tmp_path):
    """evaluate reads a split as 8 tracks, the state carried along each: the inputs are the
    split's characters 0 to 8n - 1, once each, so its targets are 1 to 8n."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(chr(97 + (i * i + i // 7) % 23) for i in range(50_011)))
    task = _charlm(corpus, batch_size=4, seq_len=10)
    model = _Recorder(task.vocab.size)
    result = task.evaluate(model, "test", baselines=False)
    ids = task.ids["test"]
    n = (len(ids) - 1) // text.EVAL_TRACKS
    read = np.concatenate([x for x, _ in model.calls], axis=1)
    np.testing.assert_array_equal(read, ids[: n * text.EVAL_TRACKS].reshape(8, n))
    assert len(model.calls) == -(-n // 256) > 1
    assert model.calls[0][1] is None and all(s is not None for _, s in model.calls[1:])
    assert result["chars"] == n * text.EVAL_TRACKS
    assert result["nats_per_char"] == pytest.approx(np.log(task.vocab.size), rel=1e-12)
