"""Review of `rnnlab reproduce`: a run on fewer steps than the table's (--steps) is said to be
reduced wherever its results are shown."""

import json

from rnnlab import reproduce
from rnnlab.cli import main as cli_main

_BASE = {"baseline_mse": 1 / 6, "baseline_mse_one": 0.17, "baseline_mse_empirical": 0.16}


def _record(budget, **more):
    return {"task": "adding", "T": 50, "cell": "rnn", "steps": budget, "budget": budget,
            "stopped_by": "steps", "wall_seconds": 5, "cpu_seconds": 4,
            "test": {"mse": 0.158, **_BASE}, **more}  # fmt: skip


def test_a_row_on_fewer_steps_than_the_table_s_says_so_in_the_table():
    full = reproduce.table_budget(reproduce.Row("adding", "rnn", 50))
    assert full == 60 * 50
    # (a record of before "table_budget": its row's is worked out)
    lines = reproduce.markdown([_record(100), _record(full), _record(full + 1),
                                _record(100, table_budget=90)]).splitlines()  # fmt: skip
    assert "| 100 (100, reduced from 3,000) |" in lines[2]
    assert "reduced" not in lines[3] and "reduced" not in lines[4]
    assert "reduced" not in lines[5]  # its own record says the table's budget was 90
    assert reproduce.reduced_from(_record(100)) == 3000
    assert reproduce.reduced_from(_record(100, task="nonsense")) is None


def test_a_reduced_run_is_said_in_every_place_its_results_are_shown(tmp_path, capsys):
    out = tmp_path / "repro"
    argv = ["reproduce", "adding", "--T", "10", "--steps", "3", "--cells", "rnn", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(
        f"reproducing 1 run (adding) into {out}, a reduced run (--steps 3, below the table's "
        "budget of 600 steps for every row): about")
    assert printed[1].startswith("[1/1] adding-T10-rnn: ")
    assert "(3 steps of a budget reduced to 3 from the table's 600, " in printed[1]
    row = "| adding | 10 | rnn | 3 (3, reduced from 600) |"
    assert any(line.startswith(row) for line in printed)
    assert printed[-1].startswith("1 run in ") and (
        "(a reduced run: 1 row on fewer steps than the table's, not its results); table: "
        in printed[-1])  # fmt: skip
    assert row in (out / "results.md").read_text()
    (record,) = json.loads((out / "results.json").read_text())
    assert (record["budget"], record["table_budget"]) == (3, 600)
    # the table's budget or more is not reduced
    capsys.readouterr()
    argv = ["reproduce", "adding", "--T", "2", "--steps", "120", "--cells", "rnn", "--jobs", "1",
            "--out", str(tmp_path / "full")]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "a reduced run" not in printed and "reduced from" not in printed and " (120)" in printed

