"""Review of the encoder–decoder and `rnnlab translate` (2026-12-06): the gradients of
settings the other modules do not combine (the LSTM's variants, training-mode dropout and
zoneout, encoders deeper than their decoders), caption's image model against PyTorch,
BLEU and chrF against sacrebleu by hand, and translate's refusals and warnings (an empty
--file, one just over the size limit, neither text nor file, a run without its data
record, many over-long sources)."""

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


@pytest.mark.parametrize("attention", ["none", "multiplicative", "additive"])
@pytest.mark.parametrize("cell,bi", [("lstm", True), ("gru", False)], ids=["lstm-bi", "gru"])
def test_an_image_source_with_its_convolution_equals_pytorch(cell, bi, attention):
    """caption's model (vector sources read column by column through the 3×3 convolution and
    ReLU, zero past each image's length) against PyTorch on copied weights, float64: the
    masked loss, every parameter's gradient and the image's. PyTorch's side is written from
    the docstring: conv2d over the (columns, pixels) image with padding 1, the columns past
    the length zeroed before and after it, the channels of a pixel side by side; the encoder
    packed; the bridge and attention as tests/test_seq2seq_torch.py."""
    torch = oracle("torch")
    F, C, E, H = 4, 2, 3, 4
    m = Seq2Seq(None, W, source_features=F, source_conv=C, embed=E, hidden=H, cell=cell,
                bidirectional=bi, attention=attention, dtype=np.float64, rng=3,
                attention_size=3 if attention == "additive" else None)  # fmt: skip
    g = np.random.default_rng(5)
    for v in m.params.values():
        v[...] = g.uniform(-0.8, 0.8, v.shape)
    src = g.normal(size=(B, S, F))  # values in the padding too
    tgt = g.integers(0, W, (B, T))
    tgt_in = np.concatenate([np.zeros((B, 1), int), tgt[:, :-1]], axis=1)
    f = m.forward(src, tgt_in, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS)
    loss, d_logits = softmax_cross_entropy(f.output, tgt, lengths=TGT_LENGTHS, reduction="sum")
    back = m.backward(f, d_logits)

    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    enc = kind(F * C, H, 1, bidirectional=bi, batch_first=True, dtype=torch.float64)
    dec = kind(E, H, 1, batch_first=True, dtype=torch.float64)
    for mod, part in ((enc, "encoder."), (dec, "decoder.")):
        mod.load_state_dict({k[len(part):]: torch.tensor(v) for k, v in m.params.items()
                             if k.startswith(part)})  # fmt: skip
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.params.items()
         if not k.startswith(("encoder.", "decoder."))}  # fmt: skip
    P.update({f"encoder.{k}": v for k, v in enc.named_parameters()})
    P.update({f"decoder.{k}": v for k, v in dec.named_parameters()})
    x = torch.tensor(src, requires_grad=True)
    valid = torch.tensor(np.arange(S)[None, :] < SRC_LENGTHS[:, None])  # (B, S)
    image = (x * valid[:, :, None])[:, None]  # (B, 1, S, F)
    z = torch.nn.functional.conv2d(image, P["conv.weight"].reshape(C, 1, 3, 3),
                                   P["conv.bias"], padding=1)  # (B, C, S, F)  # fmt: skip
    z = torch.relu(z) * valid[:, None, :, None]
    read = z.permute(0, 2, 3, 1).reshape(B, S, F * C)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        read, torch.tensor(SRC_LENGTHS), batch_first=True, enforce_sorted=False)  # fmt: skip
    out, state = enc(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=S)
    if bi:
        h, c = state
        h0 = torch.tanh(torch.cat(list(h), 1) @ P["bridge_h.weight"].T + P["bridge_h.bias"])
        c0 = torch.cat(list(c), 1) @ P["bridge_c.weight"].T + P["bridge_c.bias"]
        state = (h0[None], c0[None])
    y, _ = dec(P["tgt_embed.weight"][torch.tensor(tgt_in)], state)
    if attention != "none":
        if attention == "multiplicative":
            score = y @ (out @ P["attention.weight"].T).transpose(1, 2)
        else:
            u = torch.tanh((out @ P["attention.weight_source"].T)[:, None]
                           + (y @ P["attention.weight_target"].T)[:, :, None])  # fmt: skip
            score = u @ P["attention.v"]
        ctx = torch.softmax(score.masked_fill(~valid[:, None, :], -torch.inf), dim=-1) @ out
        y = torch.tanh(torch.cat([ctx, y], dim=-1) @ P["combine.weight"].T + P["combine.bias"])
    logits = y @ P["out.weight"].T + P["out.bias"]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, W), torch.tensor(tgt).reshape(-1),
                                           reduction="none").reshape(B, T)  # fmt: skip
    theirs = (ce * torch.tensor(np.arange(T)[None, :] < TGT_LENGTHS[:, None])).sum()
    theirs.backward()
    assert loss == pytest.approx(theirs.item(), rel=1e-12)
    assert set(P) == set(back.params)
    for name, ours in back.params.items():
        want = P[name].grad.numpy()
        assert np.abs(ours - want).max() <= 1e-10 * max(np.abs(want).max(), 1e-3), name
    want = x.grad.numpy()
    assert np.abs(back.input - want).max() <= 1e-10 * np.abs(want).max()


def test_bleu_and_chrf_are_sacrebleus_with_its_defaults():
    """The scores docs/seq2seq.md gives: sacrebleu's corpus BLEU (13a tokenisation, which
    splits "2023-03-07" at its hyphens and leaves "forty-two" whole) and chrF, as sacrebleu
    computes them by hand on the same outputs; numbers' BLEU is 0 for a perfect output."""
    sacrebleu = oracle("sacrebleu")
    oracle("editdistance")
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    from rnnlab.tasks.transduction import scores

    assert Tokenizer13a()("2023-03-07").split() == ["2023", "-", "03", "-", "07"]
    hyps = ["2023-03-07", "1999-12-31", "2000-01-02", "1950-06-15"]
    refs = ["2023-03-07", "1999-12-30", "2000-01-02", "1905-06-15"]
    s = scores(hyps, refs)
    bleu = sacrebleu.metrics.BLEU()
    assert s["bleu"] == bleu.corpus_score(hyps, [refs]).score
    assert bleu.get_signature().format(short=False).startswith(
        "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")  # fmt: skip
    assert s["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert 0 < s["bleu"] < 100 and s["exact_match"] == 0.5
    german = ["dreihundertsiebenundvierzig", "zwölf"]
    assert scores(german, german)["bleu"] == 0.0 and scores(german, german)["chrf"] == 100.0


def test_a_file_just_over_the_limit_says_both_sizes_apart(numbers_run, tmp_path, capsys,
                                                          monkeypatch):  # fmt: skip
    """A --file a byte over translate's limit was said to have "64.0 MiB, more than the 64.0
    MiB rnnlab reads": both sizes rounded to one figure. Where they round alike, the bytes
    are said (the limit made 1,024 bytes here, so that the file is small)."""
    from rnnlab.cli import trained

    monkeypatch.setattr(trained, "MAX_SOURCE_BYTES", 1024)
    big = tmp_path / "big.txt"
    big.write_bytes(b"one\n" * 256 + b"x")
    e = error_of(capsys, "translate", numbers_run, "--file", big)
    assert f"'{big}': it has 1,025 bytes, more than the 1,024 bytes (1.0 KiB) rnnlab reads" in e
    big.write_bytes(b"one\n" * 600)
    e = error_of(capsys, "translate", numbers_run, "--file", big)
    assert "it has 2.3 KiB, more than the 1.0 KiB rnnlab reads" in e


def test_translate_without_a_source_says_what_came(numbers_run, tmp_path, capsys):
    """Given neither a text nor --file, translate ended its line "not neither"."""
    e = error_of(capsys, "translate", numbers_run)
    assert e.endswith("a source text or --file F (one source a line), one of them; got neither")
    f = tmp_path / "in.txt"
    f.write_text("one\n", encoding="utf-8")
    e = error_of(capsys, "translate", numbers_run, "two", "--file", f)
    assert e.endswith("one of them; got both")


@pytest.mark.parametrize("record", [None, {}, "absent"])
def test_a_run_without_its_data_record_is_refused_not_refitted(numbers_run, tmp_path, capsys,
                                                               record):  # fmt: skip
    """Every encoder–decoder run stores its alphabets in config.json's "data". With the
    record removed, translate made the training pairs again and fitted new alphabets to
    them, without a word (docs/seq2seq.md: translate makes no data); evaluate and --resume
    too. It is an edited file, refused naming it, as an edited record is."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(numbers_run, run)
    for config in run.rglob("config.json"):
        c = json.loads(config.read_text())
        if record == "absent":
            del c["data"]
        else:
            c["data"] = record
        config.write_text(json.dumps(c))
    for args in (("translate", run, "one"), ("evaluate", run), ("train", "--resume", run)):
        e = error_of(capsys, *args)
        assert "config.json' holds no data record" in e and "numbers run" in e, e


def test_sources_longer_than_trainings_are_said_in_one_warning(numbers_run, tmp_path, capsys):
    """translate printed a warning for each source longer than any of training as it read
    it: a file of many such lines wrote as many warnings, and a bad line after them ended
    them with an error. One warning now names the first three and counts the rest, as the
    warning of outputs cut at the length limit does; one long source is said as before."""
    f = tmp_path / "in.txt"
    f.write_text("one\n" + "one hundred and one " * 10 + "\n" + "two " * 30 + "\n"
                 + "three " * 40 + "\n" + "four " * 50 + "\n", encoding="utf-8")  # fmt: skip
    assert main(["translate", str(numbers_run), "--file", str(f), "--beam", "1"]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "than any source in training" in ln]
    assert warnings == [
        f"rnnlab: warning: line 2 of {f}, line 3 of {f}, line 4 of {f} and 1 more have more "
        f"characters than any source in training ({_longest(numbers_run)}; up to 250 here); "
        "their outputs may be poor"
    ], err
    f.write_text("two " * 30 + "\n" + "three " * 40 + "\n\n", encoding="utf-8")
    assert main(["translate", str(numbers_run), "--file", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"rnnlab: error: `--file` must be non-empty text; got an empty "
                                f"line 3 of {f} instead."], err
    assert main(["translate", str(numbers_run), "two " * 30, "--beam", "1"]) == 0
    assert (f"rnnlab: warning: source has 120 characters, more than any source in training "
            f"({_longest(numbers_run)}); the output may be poor") in capsys.readouterr().err


def _longest(run):
    import json

    return json.loads((run / "config.json").read_text())["data"]["max_source_len"]
