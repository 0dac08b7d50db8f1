"""Hostile input, through the API and the CLI: every case ends in one clear error (a
ValueError naming the argument or file and what was expected; on the command line one
`rnnlab: error:` line), never a traceback, an internal name or a hang, and nothing wrong is
accepted silently. Cases run in-process and small, so the corpus takes seconds."""

from __future__ import annotations

import math
import signal

import pytest

from rnnlab.cli import main
from rnnlab.train import TrainConfig

INTERNAL = ("Traceback", "KeyError", "IndexError", "TypeError", "AttributeError",
            "RecursionError", "MemoryError", "ZeroDivisionError", "numpy.", "_core")  # fmt: skip


@pytest.fixture(autouse=True)
def no_hang():
    """A case that takes 30 s is a hang."""

    def stop(signum, frame):
        raise TimeoutError("the case hung")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def refused(fn, match: str) -> str:
    """`fn()` raises a ValueError whose one-line message matches `match`."""
    with pytest.raises(ValueError, match=match) as e:
        fn()
    text = str(e.value)
    assert not any(word in text for word in INTERNAL), text
    return text


def cli_error(capsys, argv, match: str, code: int | None = None) -> str:
    """`rnnlab ARGV` exits non-zero with one `rnnlab: error:` line matching `match`."""
    try:
        got = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        got = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("rnnlab: warning:")]
    assert got not in (0, None), err
    if code is not None:
        assert got == code, err
    assert "error: " in lines[-1], err
    assert not any(word in err for word in INTERNAL), err
    assert __import__("re").search(match, lines[-1]), err
    return err


# ------------------------------------------------------------------ configuration values
CONFIG_CASES = [
    ({"bidirectional": "false"}, r"`bidirectional` must be True or False; got 'false'"),
    ({"reverse_input": 1}, r"`reverse_input` must be True or False"),
    ({"layer_norm": "yes"}, r"`layer_norm` must be True or False"),
    ({"clip_at": "1"}, r"`clip_at` must be a positive number; got '1'"),
    ({"clip_at": -1.0}, r"`clip_at` must be a positive number"),
    ({"clip_at": math.inf}, r"`clip_at` must be a positive number"),
    ({"lr": "0.1"}, r"`lr` must be a positive number"),
    ({"lr": True}, r"`lr` must be a positive number; got True"),
    ({"lr": math.nan}, r"`lr` must be a positive number; got nan"),
    ({"momentum": "0.9"}, r"`momentum` must be a number in \[0, 1\)"),
    ({"momentum": 1.5}, r"`momentum` must be a number in \[0, 1\)"),
    ({"weight_decay": -0.1}, r"`weight_decay` must be a non-negative number"),
    ({"weight_decay": "x"}, r"`weight_decay` must be a non-negative number"),
    ({"time_limit": -5}, r"`time_limit` must be a non-negative number of seconds"),
    ({"time_limit": "1h"}, r"`time_limit` must be a non-negative number of seconds"),
    ({"forget_bias": math.inf}, r"`forget_bias` must be a finite number"),
    ({"forget_bias": [1]}, r"`forget_bias` must be a finite number"),
    ({"data": 3}, r"`data` must be a string; got 3"),
    ({"digits_mode": "columns"}, r"`digits_mode` must be one of 'rows', 'pixels'"),
    ({"initial_state": "random"}, r"`initial_state` must be one of 'zeros', 'learned'"),
    ({"task": "translate"}, r"`task` must be one of 'charlm'"),
    ({"task": 3}, r"`task` must be a string"),
    ({"extra": 3}, r"`extra` must be a table of settings"),
    ({"hidden": 0}, r"`hidden` must be a positive integer"),
    ({"hidden": 2.5}, r"`hidden` must be a positive integer"),
    ({"hidden": "64"}, r"`hidden` must be a positive integer"),
    ({"layers": True}, r"`layers` must be a positive integer"),
    ({"steps": -3}, r"`steps` must be a positive integer"),
    ({"seed": -1}, r"`seed` must be a non-negative integer"),
    ({"bptt": 1.5}, r"`bptt` must be a non-negative integer"),
    ({"dropout": 1.0}, r"`dropout` must be a number in \[0, 1\)"),
    ({"dropout": "0.1"}, r"`dropout` must be a number in \[0, 1\)"),
    ({"clip": "norm"}, r"`clip` must be one of 'global_norm', 'value', 'none'"),
    ({"optimizer": "lbfgs"}, r"`optimizer` must be one of"),
    ({"schedule": 1}, r"`schedule` must be one of"),
    ({"cell": "transformer"}, r"`cell` must be one of"),
    ({"teacher_forcing": "2"}, r"`teacher_forcing` must be a probability"),
    ({"cell_clip": -1.0}, r"`cell_clip` must be a non-negative number"),
    ({"peephole": True, "cell": "gru"}, r"`peephole` must be unset unless cell = 'lstm'"),
    ({"hiddne": 3}, r"unknown setting 'hiddne'"),
]


@pytest.mark.parametrize("settings,match", CONFIG_CASES, ids=[str(c[0])[:40] for c in CONFIG_CASES])
def test_config_values(settings, match):
    refused(lambda: TrainConfig.from_dict(settings), match)


NO_EFFECT = [
    ("adding", ["--data", "x.txt"], "`data` is read by the charlm task only"),
    ("digits", ["--T", "50"], "`T` is the length of the synthetic tasks"),
    ("adding", ["--clip", "none", "--clip-at", "3"], "`clip_at` has no effect with clip = 'none'"),
    ("adding", ["--cell", "gru", "--digits-mode", "pixels"], "`digits_mode` is for the digits"),
]


@pytest.mark.parametrize("task,argv,warning", NO_EFFECT)
def test_settings_without_effect_are_said(tmp_path, capsys, task, argv, warning):
    """A setting the run ignores is said on stderr before training starts."""
    run = tmp_path / "r"
    code = main(["train", task, *argv, "--steps", "1", "--hidden", "4", "--batch-size", "2",
                 "--T", "4", "--run-dir", str(run), "--quiet", "--eval-every", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"rnnlab: warning: {warning}" in err


def test_momentum_with_adam_is_said(tmp_path, capsys):
    from rnnlab.cli import _config_from_args, build_parser

    toml = tmp_path / "c.toml"
    toml.write_text('task = "adding"\noptimizer = "adam"\nmomentum = 0.5\n')
    args = build_parser().parse_args(["train", "--config", str(toml)])
    _config_from_args(args)
    assert "`momentum` is for sgd and nesterov" in capsys.readouterr().err
