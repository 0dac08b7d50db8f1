"""Review of the encoder–decoder and `rnnlab translate` (2026-12-06): the gradients of
settings the other modules do not combine (the LSTM's variants, training-mode dropout and
zoneout, encoders deeper than their decoders), and translate's --file refusals."""

import numpy as np
import pytest
from helpers import oracle

from rnnlab.cli import main
from rnnlab.losses import softmax_cross_entropy
from rnnlab.seq2seq import Seq2Seq

V, W, B, S, T = 7, 6, 3, 6, 5
SRC_LENGTHS, TGT_LENGTHS = np.array([6, 3, 1]), np.array([5, 2, 3])


@pytest.mark.parametrize(
    "kw,training",
    [
        (dict(cell="lstm", encoder_layers=3, decoder_layers=2, bidirectional=True,
              attention="additive", attention_size=2), False),
        (dict(cell="lstm", bidirectional=True, attention="multiplicative",
              recurrent=dict(peephole=True, coupled=True, layer_norm=True)), False),
        (dict(cell="lstm", encoder_layers=2, decoder_layers=2, attention="additive",
              recurrent=dict(dropout=0.3, recurrent_dropout=0.3, zoneout=0.2)), True),
        (dict(cell="gru", encoder_layers=1, decoder_layers=2, bidirectional=True,
              attention="additive", input_dropout=0.3,
              recurrent=dict(recurrent_dropout=0.3)), True),
    ],
    ids=["lstm-3-2-bi-additive", "lstm-variants-bi-mult", "lstm-train-masks", "gru-1-2-train"],
)  # fmt: skip
def test_gradients_of_combined_settings_equal_central_differences(kw, training):
    """Every parameter's gradient (25 entries of each, drawn) against float64 central
    differences of the masked cross entropy; in training the masks come from a seed given
    to each pass, so every pass draws the same ones."""
    m = Seq2Seq(V, W, embed=3, hidden=4, dtype=np.float64, rng=1, **kw)
    g = np.random.default_rng(2)
    for v in m.params.values():
        v[...] = g.uniform(-0.7, 0.7, v.shape)
    src, tgt = g.integers(0, V, (B, S)), g.integers(0, W, (B, T))
    tgt_in = np.concatenate([np.zeros((B, 1), int), tgt[:, :-1]], axis=1)

    def loss():
        f = m.forward(src, tgt_in, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS,
                      training=training, rng=7)  # fmt: skip
        value, d = softmax_cross_entropy(f.output, tgt, lengths=TGT_LENGTHS, reduction="sum")
        return value, d, f

    _, d, f = loss()
    grads = m.backward(f, d).params
    assert set(grads) == set(m.params)
    eps = 1e-5
    for name, v in m.params.items():
        flat = v.reshape(-1)
        for i in g.choice(flat.size, min(flat.size, 25), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = loss()[0]
            flat[i] = old - eps
            down = loss()[0]
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - grads[name].reshape(-1)[i]) < 1e-7 * max(1.0, abs(numeric)), name


@pytest.fixture(scope="module")
def numbers_run(tmp_path_factory):
    """A tiny numbers run (a few steps, small held-out splits: an untrained decoder runs
    to its length limit)."""
    for name in ("num2words", "babel", "sacrebleu", "editdistance"):
        oracle(name)
    from rnnlab.tasks import transduction

    run = tmp_path_factory.mktemp("review") / "numbers"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(transduction.HELD_OUT_SIZE, "valid", 10)
        mp.setitem(transduction.HELD_OUT_SIZE, "test", 10)
        assert main(["train", "numbers", "--steps", "2", "--hidden", "8", "--embed", "4",
                     "--attention-size", "4", "--batch-size", "4", "--train-size", "64",
                     "--beam", "1", "--quiet", "--run-dir", str(run)]) == 0  # fmt: skip
    return run


def error_of(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("rnnlab: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["no-bytes", "bom-alone"])
def test_translate_says_an_empty_file_is_empty(numbers_run, tmp_path, capsys, content):
    """A --file of no bytes was said to be UTF-32LE without a byte-order mark ("0 of its first
    0 bytes are NUL", with an iconv to run): text._wide_without_mark took no bytes for a wide
    text. It is said to be empty, as a file of its byte-order mark alone was."""
    empty = tmp_path / "empty.txt"
    empty.write_bytes(content)
    e = error_of(capsys, "translate", numbers_run, "--file", empty)
    assert f"`--file` must hold one source a line; '{empty}' is empty" in e, e
    assert "UTF-32" not in e
