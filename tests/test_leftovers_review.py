"""Leftovers of earlier reviews: a refused `rnnlab reproduce` leaves no --out behind,
Dropout's scale in float16 for a p near 1, gradcheck given both `rng` and `rng_seed`, and
--valid-fold said ignored by the tasks that do not read it."""

import numpy as np
import pytest

from rnnlab import gradcheck, reproduce
from rnnlab.cli import main as cli_main
from rnnlab.modules import Dropout, Linear, Sequential


def test_a_refused_reproduce_leaves_no_out_behind(tmp_path, capsys):
    """--T 1 is refused by the task once OUT is made and written in (the check that it can
    be): OUT and the parents made for it are gone again; an OUT that was there stays. The
    refusal names --T, as typed (it said `T`, TrainConfig's name)."""
    out = tmp_path / "new" / "out"
    argv = ["reproduce", "adding", "--cells", "rnn", "--T", "1", "--jobs", "1", "--steps", "1"]
    assert cli_main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("rnnlab: error: `--T` must be at least 2")
    assert list(tmp_path.iterdir()) == []
    there = tmp_path / "there"
    there.mkdir()
    assert cli_main([*argv, "--out", str(there)]) == 2
    capsys.readouterr()
    assert there.is_dir() and list(there.iterdir()) == []
    with pytest.raises(ValueError, match="`T` must be at least 2"):  # the Python API's too
        reproduce.run_table([reproduce.Row("adding", "rnn", 1)], tmp_path / "api", jobs=1)
    assert not (tmp_path / "api").exists()


@pytest.mark.parametrize("p", [0.999985, 0.99999, 0.9999999])
def test_dropout_refuses_a_p_whose_scale_overflows_float16(p):
    x = np.full((4, 8), 0.01, np.float16)
    with pytest.raises(ValueError, match=rf"`p` must be at most 0\.999984 for a float16 x .*"
                       rf"largest is 65504\); got {p} instead"):  # fmt: skip
        Dropout(p).forward(x, training=True, rng=0)
    y = Dropout(p).forward(x.astype(np.float32), training=True, rng=0).output  # float32: fine
    assert np.isfinite(y).all()
    assert Dropout(p).forward(x, training=False).output is x  # (no scale at inference)


def test_dropout_in_float16_up_to_the_largest_p_is_finite():
    x = np.full((64, 4096), 0.01, np.float16)
    y = Dropout(0.999984).forward(x, training=True, rng=0).output
    assert np.isfinite(y).all() and y.max() > 0


def test_gradcheck_refuses_rng_and_rng_seed_together():
    model = Sequential(Linear(3, 3, dtype=np.float64, rng=0), Dropout(0.5))
    x = np.random.default_rng(0).standard_normal((2, 3))
    assert gradcheck(model, x, training=True, rng_seed=1).ok
    assert gradcheck(model, x, training=True, rng=np.random.default_rng(1)).ok
    for rng, said in ((np.random.default_rng(5), "Generator"), (3, "3")):
        with pytest.raises(ValueError, match=rf"`rng_seed` must be None when `rng` is given .*"
                           rf"got rng_seed=1 and rng={said} instead"):  # fmt: skip
            gradcheck(model, x, training=True, rng_seed=1, rng=rng)


def test_valid_fold_is_said_ignored_by_a_task_that_does_not_read_it(tmp_path, capsys):
    """As --T for digits or --digits-mode for adding: a warning line, the run goes on."""
    argv = ["train", "adding", "--T", "10", "--hidden", "4", "--batch-size", "4", "--steps",
            "1", "--quiet", "--valid-fold", "3", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    assert cli_main(argv) == 0
    assert ("rnnlab: warning: `valid_fold` is for the caption task; adding ignores it"
            in capsys.readouterr().err)  # fmt: skip


@pytest.mark.parametrize("bias", ["no", "False", 0, None])
def test_linear_refuses_a_bias_that_is_not_a_bool(bias):
    """bias="no" was truthy: the layer had a bias; 0 and None had none, without a word."""
    with pytest.raises(ValueError, match=r"`bias` must be True or False; got "):
        Linear(3, 2, bias=bias)
    assert "bias" not in Linear(3, 2, bias=False).params


@pytest.mark.parametrize("strict", ["no", 0, None])
def test_load_state_dict_refuses_a_strict_that_is_not_a_bool(strict):
    """strict="no" loaded strictly, 0 and None leniently: as truthy as they were."""
    for module in (Linear(2, 2), Sequential(Linear(2, 2))):
        with pytest.raises(ValueError, match=r"`strict` must be True or False; got "):
            module.load_state_dict(module.state_dict(), strict=strict)
        module.load_state_dict(module.state_dict(), strict=False)


def test_zoneout_and_teacher_forcing_are_read_in_ascii_digits_as_every_number(capsys):
    """README: numbers are typed in ASCII digits (`--hidden ٣` is refused); --zoneout's own
    reader took float()'s '٠.١' as 0.1, and --teacher-forcing's '٠.٥' as 0.5."""
    for typed in ("٠.١", "0.1,٠.٢"):
        assert cli_main(["train", "adding", "--zoneout", typed, "--steps", "1"]) == 2
        assert capsys.readouterr().err == (
            f"rnnlab: error: `--zoneout` must be a probability or two (p_h,p_c) written in ASCII "
            f"digits (0-9); got {typed!r} instead. (see rnnlab train -h)\n")  # fmt: skip
    for typed in ("٠.٥", "1:٠.٥"):  # (--teacher-forcing's text, read by TrainConfig)
        argv = ["train", "copy", "--cell", "jordan", "--teacher-forcing", typed, "--steps", "1"]
        assert cli_main(argv) == 2
        assert capsys.readouterr().err == (
            f"rnnlab: error: `--teacher-forcing` must be a probability 'p' or a schedule 'a:b' "
            f"written in ASCII digits (0-9); got {typed!r} instead. (see rnnlab train -h)\n")


def test_a_state_given_to_a_module_that_keeps_none_is_refused():
    """Sequential(Linear, LSTM) given state=[h0, None] (the entries swapped) dropped h0 and
    ran the LSTM from zeros, unsaid; so did a state given to a Linear itself."""
    from rnnlab.layers import LSTM
    from rnnlab.modules import Embedding, LastStep, MeanOverTime

    x = np.ones((2, 3, 4), np.float32)
    h0 = np.ones((2, 4), np.float32)
    model = Sequential(Linear(4, 4, rng=0), LSTM(4, 3, rng=0))
    with pytest.raises(ValueError, match=r"`state\[0\]` must be None: modules\[0\] \(a Linear\) "
                       r"keeps no state; got an array of shape \(2, 4\)"):  # fmt: skip
        model.forward(x, state=[h0, None])
    assert model.forward(x, state=[None, None]).output.shape == (2, 3, 3)
    ids = np.ones((2, 3), int)
    for module, given in ((Linear(4, 2), x), (Dropout(0.5), x), (LastStep(), x),
                          (MeanOverTime(), x), (Embedding(5, 2), ids)):  # fmt: skip
        name = type(module).__name__
        with pytest.raises(ValueError, match=rf"`state` must be None \(an? {name} keeps no "
                           "state\\); got "):  # fmt: skip
            module.forward(given, state=h0)


@pytest.mark.parametrize("strict", ["no", 0])
def test_the_recurrent_layers_loads_refuse_a_strict_that_is_not_a_bool(strict):
    """The recurrent layers' and output feedback's loads went through load_params, which read
    strict by truthiness (strict="no" strict, 0 lenient) after the modules' own check."""
    from rnnlab.feedback import OutputFeedback
    from rnnlab.layers import LSTM

    for module in (LSTM(2, 3), OutputFeedback(2, 3, 2)):
        with pytest.raises(ValueError, match=r"`strict` must be True or False; got "):
            module.load_state_dict(module.state_dict(), strict=strict)
        module.load_state_dict(module.state_dict(), strict=False)


@pytest.mark.parametrize("text", ["٠.٥", "1:٠.٥"])
def test_a_config_files_teacher_forcing_is_read_in_ascii_digits(text):
    """--teacher-forcing's reader refuses non-ASCII digits; a --config file's (or a library
    caller's) teacher_forcing went to float(), which read '٠.٥' as 0.5."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    settings = {**tasks.defaults("copy"), "cell": "jordan", "teacher_forcing": text}
    with pytest.raises(ValueError, match=r"`teacher_forcing` must be .* in ASCII digits; got "):
        TrainConfig.from_dict(settings)
    TrainConfig.from_dict({**settings, "teacher_forcing": "1:0.5"})
