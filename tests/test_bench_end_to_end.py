"""`rnnlab bench --end-to-end`: rnnlab's Trainer and the plain PyTorch loop train the same
character LM to the same losses, and the report says so.

A tiny model (embedding 8, 2-layer LSTM 16, batch 4 x 16) keeps this fast; the NumPy loop runs
(RNNLAB_NO_NUMBA) so nothing compiles. No test looks at how fast anything is.

The tolerance of the agreement test, 1e-6 relative, comes from the float32 noise of this
model measured against a float64 PyTorch run from the same weights on the same batches
(30 steps): PyTorch float32 drifted from float64 by at most 8.4e-8 and rnnlab float32 by at
most 1e-8, so rnnlab and PyTorch, both float32, differed by at most 8.6e-8 (about one float32
ulp of the loss). 1e-6 leaves ten times that for other BLAS libraries and kernels; a wrong
model, loss, clipping or update differs by orders of magnitude more (the gate-order bug
below: 7e-4 at the first step).
"""

import contextlib
import io
import json
import sys

import numpy as np
import pytest
from helpers import oracle

from rnnlab import bench
from rnnlab.bench import end_to_end

oracle("torch")

AGREEMENT = 1e-6
TINY = end_to_end.Model(embed=8, hidden=16, layers=2, batch=4, window=16)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One run through main(): (exit status, stdout, stderr, --out file)."""
    out_file = tmp_path_factory.mktemp("e2e") / "e2e.json"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, np.errstate(all="raise"):
        mp.setattr(end_to_end, "Model", lambda: TINY)
        mp.setenv("RNNLAB_NO_NUMBA", "1")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            argv = ["--end-to-end", "--steps", "4", "--warmup-steps", "1", "--pause", "0",
                    "--quick", "--json", "--out", str(out_file)]  # fmt: skip
            status = bench.main(argv)
    return status, out.getvalue(), err.getvalue(), out_file


def test_losses_agree_step_by_step(report):
    status, stdout, stderr, _ = report
    assert status == 0, stderr
    e = json.loads(stdout)["end_to_end"]
    ours, theirs = e["rnnlab"]["losses"], e["torch"]["losses"]
    assert len(ours) == len(theirs) == 5  # 1 warm-up + 4 timed steps
    assert all(np.isfinite(ours)) and ours[-1] < ours[0]  # it trains
    assert e["max_rel_loss_diff"] == end_to_end.max_relative_difference(ours, theirs)
    assert e["max_rel_loss_diff"] <= AGREEMENT
    assert e["losses_agree"] is True


def test_json_and_report(report):
    _, stdout, stderr, out_file = report
    result = json.loads(stdout)
    assert json.loads(out_file.read_text()) == result
    machine = result["machine"]
    choice = machine["loops_blas_choice"]
    assert machine["cpu_model"] and choice["blas"] in ("mkl", "numpy")
    assert choice["large"] in ("mkl", "numpy") and choice["large_why"]
    e = result["end_to_end"]
    assert e["model"] == {"embed": 8, "hidden": 16, "layers": 2, "batch": 4, "window": 16,
                          "lr": 2e-3, "clip_at": 1.0, "seed": 0}  # fmt: skip
    assert (e["steps"], e["warmup_steps"]) == (4, 1)
    for side in ("rnnlab", "torch"):
        for clock in ("wall_s", "cpu_s"):
            st = e[side][clock]
            assert st["steps"] == 4 and 0 <= st["min"] <= st["median"] <= st["max"]
    assert e["ratio_wall"] == e["torch"]["wall_s"]["median"] / e["rnnlab"]["wall_s"]["median"]
    assert e["ratio_cpu"] == e["torch"]["cpu_s"]["median"] / e["rnnlab"]["cpu_s"]["median"]
    # with --json the human report goes to stderr, after the progress lines
    assert "rnnlab bench: warning: --quick does not apply to --end-to-end; ignored" in stderr
    assert machine["cpu_model"] in stderr and "ratio torch / rnnlab per step:" in stderr
    assert f"large products on {choice['large']}," in stderr
    assert "loss curves: max relative difference" in stderr and "step  rnnlab loss" in stderr


def test_a_different_computation_is_never_timed(monkeypatch):
    """torch's copy of W_hh with the forget and cell gate blocks swapped (a gate-order bug):
    the warm-up losses disagree (by ~7e-4 at the first step) and nothing is timed."""
    copy = end_to_end.torch_state_dict

    def swapped(model):
        weights = copy(model)
        W = weights["1.weight_hh_l0"]
        H = W.shape[0] // 4
        weights["1.weight_hh_l0"] = np.concatenate(
            [W[:H], W[2 * H : 3 * H], W[H : 2 * H], W[3 * H :]]
        )
        return weights

    monkeypatch.setattr(end_to_end, "torch_state_dict", swapped)
    monkeypatch.setenv("RNNLAB_NO_NUMBA", "1")
    with pytest.raises(RuntimeError, match="losses disagree over the warm-up steps"):
        end_to_end.run(steps=1, warmup=1, model=TINY, pause_s=0.0, log=lambda line: None)


def test_bad_step_counts(capsys):
    assert bench.main(["--end-to-end", "--steps", "0"]) == 2
    assert "`steps` must be a positive integer; got 0 (int) instead" in capsys.readouterr().err
    assert bench.main(["--end-to-end", "--warmup-steps", "-1"]) == 2
    assert "`warmup_steps` must be an integer ≥ 0; got -1" in capsys.readouterr().err
    assert bench.main(["--steps", "5", "--cells", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "warning: --steps does not apply to the layer benchmark (it needs --end-to-end)" in err


def test_without_torch_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert bench.main(["--end-to-end"]) == 2
    assert capsys.readouterr().err.endswith("pip install 'rnnlab[bench]'\n")
