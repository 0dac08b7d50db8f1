"""The README as a new user runs it (review 137): what its commands promise, they do or say
why not."""

import pytest

from rnnlab import cli
from rnnlab.cli import plot as plot_command


def _train(run, task, *extra):
    args = ["train", task, "--steps", "4", "--hidden", "4", "--batch-size", "4",
            "--eval-every", "2", "--grad-log-every", "2", "--run-dir", str(run), "--quiet",
            *extra]  # fmt: skip
    assert cli.main(args) == 0


@pytest.mark.parametrize("task, extra", [("charlm", ("--seq-len", "8", "--embed", "4")),
                                         ("adding", ("--T", "8"))])  # fmt: skip
def test_plot_says_why_a_run_has_no_lag_profile(task, extra, tmp_path, capsys):
    """README: `rnnlab plot RUN  # ... lag profile`. A charlm run carries its state across
    windows, so its gradient records hold no lag profile ("lags": null) and no
    lag-history.png is drawn: plot said nothing of it. It now says why; a run with a
    profile draws it and says nothing."""
    if task == "charlm":
        (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 200)
        extra = (*extra, "--data", str(tmp_path / "t.txt"))
    _train(tmp_path / "run", task, *extra)
    capsys.readouterr()
    assert plot_command.main([str(tmp_path / "run"), "--out", str(tmp_path / "p")]) == 0
    out, err = capsys.readouterr()
    drawn = (tmp_path / "p" / "lag-history.png").exists()
    assert drawn == (task == "adding")
    warned = [ln for ln in err.splitlines() if "no lag profile" in ln]
    if drawn:
        assert warned == []
    else:
        assert warned == [
            'rnnlab: warning: no lag profile in metrics.jsonl ("lags" is null in every '
            "gradient record), so no lag-history.png: it is logged at evaluation steps "
            "(multiples of --eval-every) that start from a zero state, which a run shorter "
            "than --eval-every, one that carries its state across windows (charlm, --bptt) or "
            "an output-feedback model has none of (docs/gradients.md)"
        ]
