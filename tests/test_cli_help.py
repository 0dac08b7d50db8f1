"""`rnnlab train --help` says what the options do, checked against the code that reads them:
which tasks and models refuse or read an option is asked of the tasks themselves, so a help
text that drifts from them fails here."""

import contextlib
import io
import re

from rnnlab.cli import main
from rnnlab.models import FEEDBACK_CELLS
from rnnlab.tasks.registry import SEQ2SEQ_TASKS, TASK_NAMES, make_task
from rnnlab.train import TrainConfig


def _option_help(sub: str, option: str) -> str:
    """The help of `option` in `rnnlab SUB --help`, its lines joined (argparse wraps them)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([sub, "--help"])
    text = out.getvalue().split("\noptions:", 1)[1]
    m = re.search(rf"\n  {re.escape(option)}\b.*?(?=\n  -)", text, re.S)
    assert m, f"{option} is not in `rnnlab {sub} --help`"
    # (argparse breaks "jordan-elman" at its hyphen; a break after a space is a space)
    return re.sub(r"-\n\s+", "-", re.sub(r"(?<!-)\n\s+", " ", m.group(0)))


def _refuses_bptt(task: str) -> bool:
    try:
        make_task(TrainConfig(task=task, bptt=3))
    except ValueError as e:
        assert "bptt" in str(e)
        return True
    return False


def _parenthesised_tasks(text: str) -> set[str]:
    names = set()
    for group in re.findall(r"\(([^()]*)\)", text):
        words = [w.strip() for w in group.split(",")]
        if words and all(w in TASK_NAMES for w in words):
            names.update(words)
    return names


def test_bptt_help_names_the_tasks_that_refuse_it():
    """The tasks the help lists as refusing --bptt are those whose construction refuses it."""
    said = _option_help("train", "--bptt")
    refused = _parenthesised_tasks(said.split("Refused by", 1)[1])
    assert refused == {t for t in TASK_NAMES if _refuses_bptt(t)}
    assert "bidirectional" in said.split("Refused by", 1)[1]
    assert set(TASK_NAMES) - refused <= set(re.findall(r"[\w-]+", said))  # the rest: what it does


def test_teacher_forcing_help_names_the_models_that_read_it():
    """--teacher-forcing is read by the output-feedback cells and the encoder-decoders; the
    help names both, and the tasks a feedback cell can train on."""
    said = _option_help("train", "--teacher-forcing")
    words = set(re.findall(r"[\w-]+", said))
    assert set(FEEDBACK_CELLS) <= words and set(SEQ2SEQ_TASKS) <= words
    steps = {t for t in TASK_NAMES if t not in SEQ2SEQ_TASKS
             and _readout(t) == "steps"}  # fmt: skip
    assert steps <= words
    assert "Evaluation does not read it" in said


def _readout(task: str) -> str:
    return make_task(TrainConfig(task=task)).readout


def test_T_help_says_the_memory_tasks_lengths():
    """--T is adding's length but copy's delay (sequences of T + 20 steps) and temporal-order's
    scale (T to T + T/10 steps); the help said "sequence length" of all three."""
    said = _option_help("train", "--T")
    assert "adding's sequence length" in said and "copy's delay" in said, said
    assert "T + 20 steps" in said and "T to T + T/10 steps" in said, said
    T = 30
    length = {t: make_task(TrainConfig(task=t, T=T)).split("test")[0].shape[1]
              for t in ("adding", "copy", "temporal-order")}  # fmt: skip
    assert length == {"adding": T, "copy": T + 20, "temporal-order": T + T // 10}
    lengths = make_task(TrainConfig(task="temporal-order", T=T)).split("test")[2]
    assert lengths.min() == T and lengths.max() == T + T // 10
    from rnnlab.tasks import defaults

    assert said.endswith("Default: 100, copy 50"), said
    assert [defaults(t)["T"] for t in ("adding", "copy", "temporal-order")] == [100, 50, 100]


def test_steps_help_says_the_memory_tasks_budget():
    """The memory tasks' default budget grows with T (rnnlab.tasks.tuned); --help said
    "optimizer steps" alone."""
    from rnnlab.tasks import defaults_for, tuned

    said = _option_help("train", "--steps")
    for task, per_t in tuned.STEPS_PER_T.items():
        assert defaults_for(task, None, 7)["steps"] == 7 * per_t
    by = {t: p for t, p in tuned.STEPS_PER_T.items()}
    assert f"adding {by['adding']} T, copy and temporal-order {by['copy']} T" in said, said
    assert by["copy"] == by["temporal-order"]
    assert "stops at the first validation that solves the task" in said
