"""The benchmark runs end to end and reports what bench/README.md documents.

One tiny configuration (rnn S1, one direction, 1 round, short blocks and pauses, the NumPy
loop so that no kernel compiles) goes through `main([... "--json"])`, memory subprocesses
and the scaling study included; the tests read its JSON and reports. No test looks at how
fast anything is: only at the structure, the bookkeeping (ratios, FLOP counts) and the
refusals. Locally the module is skipped without torch; under CI torch must be there.
"""

import contextlib
import inspect
import io
import json
import math
import os
import re
import sys

import numpy as np
import pytest
from helpers import oracle

from rnnlab import bench, settings
from rnnlab.bench import configs, environment, host, memory, runners, timing
from rnnlab.bench import report as tables
from rnnlab.layers import Recurrent

torch = oracle("torch")

ARGS = [
    "--cells",
    "rnn",
    "--shapes",
    "S1",
    "--directions",
    "uni",
    "--rounds",
    "1",
    "--block",
    "0.02",
    "--pause",
    "0.01",
    "--scaling-lengths",
    "8,16",
    "--json",
]
CONFIG_KEYS = {
    "cell",
    "shape",
    "bidirectional",
    "layers",
    "mode",
    "torch_ms",
    "rnnlab_ms",
    "ratio",
    "gflops",
    "peak_fraction",
    "torch_mem_mb",
    "rnnlab_mem_mb",
}
SUMMARY_KEYS = {
    "train_ratio_geomean",
    "train_ratio_min",
    "infer_ratio_min",
    "infer_ratio_geomean",
    "lstm_s4_train_peak_fraction",
    "memory_ratio_geomean",
    "scaling_time_exponent",
}
SCALING_KEYS = {
    "T",
    "torch_ms",
    "rnnlab_ms",
    "ratio",
    "checkpoint_every",
    "rnnlab_checkpoint_ms",
    "torch_mem_mb",
    "rnnlab_mem_mb",
    "rnnlab_checkpoint_mem_mb",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One run through main(): (exit status, stdout, stderr, --out file, --markdown file)."""
    where = tmp_path_factory.mktemp("bench")
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, np.errstate(all="raise"):
        mp.setattr(host, "GEMM_N", 256)  # the peak of a smaller product is enough here
        mp.setenv("RNNLAB_NO_NUMBA", "1")  # the NumPy loop: nothing to compile, here or in children
        settings.reload()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = bench.main(
                ARGS + ["--out", str(where / "r.json"), "--markdown", str(where / "r.md")]
            )
    settings.reload()
    return status, out.getvalue(), err.getvalue(), where / "r.json", where / "r.md"


def test_json_on_stdout_has_the_documented_keys(report):
    status, stdout, stderr, _, _ = report
    assert status == 0, stderr
    result = json.loads(stdout)  # stdout holds exactly one JSON object
    assert {"machine", "date", "peak_gflops", "configs", "summary", "scaling"} <= set(result)
    machine = result["machine"]
    assert {"cpu_model", "cores", "numpy", "torch", "blas"} <= set(machine)
    assert machine["torch"] == torch.__version__ and machine["numpy"] == np.__version__
    assert machine["rnnlab_fast_path"] is False  # RNNLAB_NO_NUMBA was set
    assert result["peak_gflops"] > 0
    peaks = (result["numpy_gemm_gflops"], result["torch_gemm_gflops"],
             *([result["mkl_gemm_gflops"]] if result["mkl_gemm_gflops"] else []),
             *(result["gemm_gflops_unforced"] or {}).values())  # fmt: skip
    assert result["peak_gflops"] == max(peaks)
    assert machine["cpu_vendor"] and machine["loops_blas_choice"]["blas"] in ("mkl", "numpy")
    assert "cpu_family" in machine and "cpu_model_number" in machine  # which generation
    assert [
        (c["mode"], c["cell"], c["shape"], c["layers"], c["bidirectional"])
        for c in result["configs"]
    ] == [("train", "rnn", "S1", 1, False), ("infer", "rnn", "S1", 1, False)]
    for c in result["configs"]:
        assert CONFIG_KEYS <= set(c)
        assert c["torch_ms"] > 0 and c["rnnlab_ms"] > 0
        assert math.isclose(c["ratio"], c["torch_ms"] / c["rnnlab_ms"])
        flops = configs.step_flops(configs.Config("rnn", "S1", False), c["mode"])
        assert math.isclose(c["gflops"], flops / c["rnnlab_ms"] * 1e-6)
        assert math.isclose(c["peak_fraction"], c["gflops"] / result["peak_gflops"])
        assert c["max_rel_err"] <= runners.TOLERANCE
    train, infer = result["configs"]
    assert isinstance(train["torch_mem_mb"], float) and isinstance(train["rnnlab_mem_mb"], float)
    assert infer["torch_mem_mb"] is None and infer["rnnlab_mem_mb"] is None  # training only
    assert SUMMARY_KEYS <= set(result["summary"])
    assert math.isclose(result["summary"]["train_ratio_geomean"], train["ratio"])
    assert result["summary"]["lstm_s4_train_peak_fraction"] is None  # S4 did not run


def test_scaling_rows(report):
    result = json.loads(report[1])
    rows = result["scaling"]
    assert [r["T"] for r in rows] == [8, 16]
    has_checkpoint = "checkpoint_every" in inspect.signature(Recurrent.forward).parameters
    for r in rows:
        assert SCALING_KEYS <= set(r)
        assert isinstance(r["torch_mem_mb"], float) and isinstance(r["rnnlab_mem_mb"], float)
        if has_checkpoint:
            assert r["checkpoint_every"] == round(math.sqrt(r["T"]))
            assert r["rnnlab_checkpoint_ms"] > 0
            assert isinstance(r["rnnlab_checkpoint_mem_mb"], float)
        else:
            assert r["rnnlab_checkpoint_ms"] is None and r["rnnlab_checkpoint_mem_mb"] is None
        # the agreement with torch is recorded, as the layer rows record theirs
        assert 0 <= r["max_rel_err"] <= runners.TOLERANCE
        if has_checkpoint:
            assert 0 <= r["checkpoint_max_rel_err"] <= runners.TOLERANCE


def test_files_and_tables(report):
    _, stdout, stderr, json_file, md_file = report
    assert json.loads(json_file.read_text()) == json.loads(stdout)
    markdown = md_file.read_text()
    assert "| rnn | S1 | uni | train |" in markdown and "| rnn | S1 | uni | infer |" in markdown
    # with --json the human table goes to stderr, after the progress lines
    assert "rnn   S1     uni     train" in stderr and "training: rnnlab faster in" in stderr


def test_flop_count():
    B, T, I, H = configs.SHAPES["S1"]
    one = 2 * T * B * (I + H) * 4 * H
    assert configs.forward_flops("lstm", B, T, I, H) == one
    assert configs.forward_flops("lstm", B, T, I, H, bidirectional=True) == 2 * one
    # the second layer of a bidirectional stack reads 2H features
    second = 2 * T * B * (2 * H + H) * 3 * H
    assert configs.forward_flops("gru", B, T, I, H, 2, True) == 2 * (one // 4 * 3) + 2 * second
    config = configs.Config("rnn", "S1", False)
    f, recurrent = configs.step_flops(config, "infer"), 2 * T * B * H * 1 * H
    # layer 0's backward: the weights' products and h_{t-1}'s, not x's (input_grad=False)
    assert configs.step_flops(config, "train") == 2 * f + recurrent
    stack = configs.Config("gru", "S2", True, 2)
    B2, T2, I2, H2 = configs.SHAPES["S2"]
    first = configs.forward_flops("gru", B2, T2, I2, H2, 1, True)
    total = configs.forward_flops("gru", B2, T2, I2, H2, 2, True)
    assert configs.step_flops(stack, "train") == 3 * total - first + first * H2 / (I2 + H2)


def test_the_27_configurations():
    all_configs = configs.configs()
    assert len(all_configs) == 27 and len(set(all_configs)) == 27
    assert [c for c in all_configs if c.layers == 2] == [
        configs.Config(cell, "S2", False, 2) for cell in configs.CELLS
    ]
    assert all(c.layers == 1 for c in configs.configs(shapes=["S1", "S3"]))
    assert all(c.layers == 1 for c in configs.configs(directions=["bi"]))


def test_a_disagreement_is_never_timed():
    pair = runners.make_pair(torch, configs.Config("gru", "scaling", True, 1, 6))
    assert runners.check_agreement(torch, pair, "gru") < 1e-5
    with torch.no_grad():
        pair.theirs.weight_hh_l0_reverse[0, 0] += 0.5
    with pytest.raises(RuntimeError, match=r"gru: rnnlab and PyTorch disagree on the gradient"):
        runners.check_agreement(torch, pair, "gru")


def test_interleaved_times_every_call():
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1

        return fn

    times = timing.interleaved({"a": count("a"), "b": count("b")}, timing.Timing(3, 1e-4, 0.0))
    for name in ("a", "b"):
        assert len(times[name]) >= 3 and len(times[name]) % 3 == 0
        assert calls[name] == len(times[name]) + 3  # plus 2 warm-up calls and 1 calibration
        assert np.all(times[name] >= 0)


def test_without_torch_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert bench.main(["--no-memory", "--no-scaling"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "rnnlab bench: error: the benchmark needs PyTorch 2.13 as its reference: "
        "pip install 'rnnlab[bench]'\n"
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"cells": ["lstm", "tcn"]},
            r"`cells` must be a non-empty list drawn from 'rnn', "
            r"'lstm', 'gru', 'lstm-peephole', .*; got 'tcn' instead\.",
        ),
        ({"cells": []}, r"`cells` must be a non-empty list .*; got an empty list instead"),
        (
            {"shapes": ["S5"]},
            r"`shapes` must be a non-empty list drawn from 'S1', 'S2', 'S3', "
            r"'S4'; got 'S5' instead",
        ),
        (
            {"modes": "train"},
            r"`modes` must be a non-empty list drawn from 'train', 'infer'; "
            r"got 'train' \(str\) instead",
        ),
        ({"directions": ["both"]}, r"`directions` must be .* 'uni', 'bi'; got 'both' instead"),
        ({"rounds": 0}, r"`rounds` must be a positive integer; got 0 \(int\) instead"),
        (
            {"scaling_lengths": [100, 0]},
            r"`scaling_lengths` must be a non-empty list of "
            r"positive integers; got the entry 0 instead",
        ),
        ({"scaling_lengths": []}, r"`scaling_lengths` must be .*; got an empty list instead"),
        ({"block_s": -1.0}, r"`block_s` must be a finite number of seconds ≥ 0; got -1\.0"),
        ({"pause_s": float("inf")}, r"`pause_s` must be a finite number of seconds ≥ 0; got inf"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.run(**kwargs)


def test_bad_options_exit_2(capsys):
    assert bench.main(["--cells", "lstm,tcn", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "rnnlab bench: error: `cells` must be a non-empty list drawn from 'rnn', 'lstm', " in err
    assert "'lstm-zoneout'; got 'tcn' instead." in err
    assert bench.main(["--scaling-lengths", "100,x"]) == 2
    assert (
        "`scaling_lengths` must be a non-empty list of positive integers; got '100,x'"
        in capsys.readouterr().err
    )
    assert bench.main(["--rounds", "many"]) == 2  # argparse's own message
    assert "rnnlab bench: error: argument --rounds: invalid int value" in capsys.readouterr().err


HEAP_STEP = """
import numpy as np
from rnnlab.bench import memory
keep = []

def step():  # 32 MB in 16 KB arrays, each below the mmap threshold: they live in the heap,
    arrays = []  # with small long-lived arrays between them, as a framework's bookkeeping
    for i in range(2000):
        arrays.append(np.ones(4096, np.float32))
        if i % 100 == 99:
            keep.append(np.ones(1000))
    return len(arrays)

print(memory.peak_extra_mb(step)["delta_mb"])
"""


@pytest.mark.skipif(not memory.memory_supported(), reason="peak RSS cannot be reset here")
def test_memory_counts_what_a_step_reuses_from_the_heap():
    """A step of many small arrays reuses the heap its warm-up step freed; the measurement
    counts it all the same (it saw 0.5 of these 32 MB before the heap was released)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", HEAP_STEP],
        capture_output=True,
        text=True,
        env={**os.environ, **environment.CHILD_ENV},
        timeout=120,
        check=True,
    )
    assert 30 <= float(done.stdout) <= 40


def test_lstm_variants_are_timed_against_the_plain_lstm(monkeypatch):
    """`--cells lstm-peephole,...`: rnnlab against itself (PyTorch has no such cells)."""
    monkeypatch.setattr(host, "GEMM_N", 256)
    monkeypatch.setenv("RNNLAB_NO_NUMBA", "1")
    settings.reload()
    with np.errstate(all="raise"):
        result = bench.run(cells=["lstm-peephole", "lstm-coupled"], shapes=["S1"],
                           modes=["train"], rounds=1, block_s=0.0, pause_s=0.0, memory=False,
                           scaling=False, log=lambda line: None)  # fmt: skip
    assert result["configs"] == []  # no PyTorch row for a variant
    rows = result["variants"]
    assert [(r["cell"], r["shape"], r["mode"]) for r in rows] == [
        ("lstm-peephole", "S1", "train"),
        ("lstm-coupled", "S1", "train"),
    ]
    for r in rows:
        assert r["lstm_ms"] > 0 and r["variant_ms"] > 0
        assert math.isclose(r["ratio_to_lstm"], r["variant_ms"] / r["lstm_ms"])
    assert re.search(r"lstm-coupled +S1 +train", tables.format_table(result))
    assert "| lstm-peephole | S1 | train |" in tables.format_markdown(result)


def test_against_onnxruntime_adds_its_inference(monkeypatch):
    """`--against torch,onnxruntime`: every inference row gets onnxruntime's time on the same
    weights (checked against rnnlab's output first); training rows get none."""
    if not os.environ.get("CI"):
        oracle("onnxruntime")
    monkeypatch.setattr(host, "GEMM_N", 256)
    monkeypatch.setenv("RNNLAB_NO_NUMBA", "1")
    settings.reload()
    with np.errstate(all="raise"):
        result = bench.run(cells=["lstm", "gru"], shapes=["S1"], directions=["bi"], rounds=1,
                           block_s=0.0, pause_s=0.0, memory=False, scaling=False,
                           against=["onnxruntime", "torch"], log=lambda line: None)  # fmt: skip
    rows = result["configs"]
    assert [(r["cell"], r["mode"]) for r in rows] == [
        ("lstm", "train"), ("lstm", "infer"), ("gru", "train"), ("gru", "infer")
    ]  # fmt: skip
    for r in rows:
        if r["mode"] == "train":
            assert r["ort_ms"] is None and r["ort_ratio"] is None
            continue
        assert r["ort_ms"] > 0 and math.isclose(r["ort_ratio"], r["ort_ms"] / r["rnnlab_ms"])
        assert r["ort_max_rel_err"] <= runners.TOLERANCE
    assert result["method"]["against"] == ["torch", "onnxruntime"]
    assert result["summary"]["infer_ort_configs"] == 2
    table = tables.format_table(result)
    assert "onnxruntime ms" in table and "inference against onnxruntime" in table
    assert "| onnxruntime ms | ort ratio |" in tables.format_markdown(result)


def test_against_needs_torch_and_known_names(monkeypatch, capsys):
    with pytest.raises(ValueError, match="`against` must be a list with 'torch'"):
        bench.run(against=["onnxruntime"], memory=False, scaling=False)
    with pytest.raises(ValueError, match="`against` must be a non-empty list drawn from"):
        bench.run(against=["torch", "tvm"], memory=False, scaling=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert bench.main(["--against", "torch,onnxruntime", "--no-memory"]) == 2
    assert "pip install 'rnnlab[onnxruntime]'" in capsys.readouterr().err


def test_a_forced_kernel_is_said(monkeypatch):
    """The header names a variable that forces a BLAS kernel, with each library's GEMM speed
    without it (measured in a child process the variable does not reach): an MKL variable
    slows PyTorch's MKL and leaves NumPy's OpenBLAS as it is, so both are said."""
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    unforced = host.unforced_peaks(128)
    assert unforced is not None and unforced["numpy"] > 0 and unforced["torch"] > 0
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", " ")  # empty: forces nothing
    assert host.unforced_peaks(128) is None and not environment.forced_kernels()
    result = {"forced_kernels": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "numpy_gemm_gflops": 203.0,
              "torch_gemm_gflops": 77.0,
              "gemm_gflops_unforced": {"numpy": 201.0, "torch": 190.0}}  # fmt: skip
    text = tables.forced_text(result)
    assert "MKL_ENABLE_INSTRUCTIONS=AVX2" in text
    assert ("GEMM numpy 203 GFLOP/s with it, 201 without; "
            "torch 77 GFLOP/s with it, 190 without") in text  # fmt: skip
    old = {"forced_kernels": {"OPENBLAS_CORETYPE": "Haswell"}, "numpy_gemm_gflops": 10.0,
           "numpy_gemm_gflops_unforced": 40.0}  # a result from before torch's was measured too
    assert "GEMM numpy 10 GFLOP/s with it, 40 without" in tables.forced_text(old)
    machine = {"cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC", "cpu_family": "25",
               "cpu_model_number": "17"}  # fmt: skip
    assert tables._cpu_text(machine) == "AuthenticAMD AMD EPYC (family 25, model 17)"
    assert tables._cpu_text({"cpu_model": "Intel Xeon"}) == "Intel Xeon"  # an older result


def test_the_report_names_the_library_of_each_kind_of_product():
    from rnnlab.bench import report

    setup = {"kernel_blas": "MKL", "tiles": True, "large_blas": "NumPy's OpenBLAS",
             "split": True, "threads": 2}  # fmt: skip
    assert report._loops_text(setup) == (
        "per-step products on rnnlab's tiles where a weight fits them, else MKL; large products "
        "on NumPy's OpenBLAS; batch split over 2 threads")  # a report from before RNNLAB_SPIN
    assert report._loops_text({**setup, "spin_seconds": 0.005}).endswith(
        "batch split over 2 threads, each waiting busily 5 ms for its next part")
    assert report._loops_text({**setup, "spin_seconds": 0.0}).endswith(
        "batch split over 2 threads, asleep between parts")
    live = host.loop_setup()
    from rnnlab.fast import parallel

    assert live["spin_seconds"] == parallel.spin_seconds()  # recorded in every run's JSON
    if "kernel_blas" in live:  # the compiled loops run: the choice names the large library too
        assert live["large_blas"] in ("MKL", "NumPy's OpenBLAS")


def test_noisy_rows_are_timed_again_and_each_library_keeps_its_smaller_median(monkeypatch):
    """A row whose calls spread wide is timed a second time; each library keeps the smaller of
    its two medians (disturbances only slow calls), the ratio and GFLOP/s follow from them,
    both attempts are in the row, and the summary says so."""
    from rnnlab.bench import suite

    ms = lambda *v: np.array(v) * 1e-3  # noqa: E731
    attempts = {  # (rnnlab, torch) calls of each attempt, by mode
        "train": [(ms(1, 1, 1, 9, 9), ms(4, 4, 4, 4)), (ms(2, 2, 2, 2), ms(3, 3, 3, 3))],
        "infer": [(ms(1, 1, 1, 1), ms(1, 4, 5, 9)), (ms(2, 2, 2, 2), ms(1, 20, 30, 40))],
    }
    seen = {"train": 0, "infer": 0}

    def fake(fns, _timing):
        mode = "infer" if fns["rnnlab"].__name__ == "<lambda>" else "train"
        ours, theirs = attempts[mode][seen[mode]]
        seen[mode] += 1
        return {"rnnlab": ours, "torch": theirs}

    monkeypatch.setattr(suite, "interleaved", fake)
    monkeypatch.setattr(host, "GEMM_N", 128)
    monkeypatch.setenv("RNNLAB_NO_NUMBA", "1")
    settings.reload()
    try:
        result = suite.run(cells=["rnn"], shapes=["S1"], directions=["uni"], rounds=1,
                           memory=False, scaling=False, log=lambda _: None)  # fmt: skip
    finally:
        monkeypatch.delenv("RNNLAB_NO_NUMBA")
        settings.reload()
    train, infer = result["configs"]
    assert seen == {"train": 2, "infer": 2}
    assert (train["rnnlab_ms"], train["torch_ms"], train["ratio"]) == (1.0, 3.0, 3.0)
    assert train["kept_attempt"] == {"rnnlab": 1, "torch": 2}
    assert (infer["rnnlab_ms"], infer["torch_ms"]) == (1.0, 4.5)
    assert infer["kept_attempt"] == {"rnnlab": 1, "torch": 1}
    flops = configs.step_flops(configs.Config("rnn", "S1", False), "train")
    assert math.isclose(train["gflops"], flops / 1e-3 / 1e9)
    assert math.isclose(train["peak_fraction"], train["gflops"] / result["peak_gflops"])
    assert [a["rnnlab_ms"] for a in train["attempts"]] == [1.0, 2.0]
    assert "2 noisy rows were timed twice" in "\n".join(tables.summary_lines(result))
    assert suite.run.__kwdefaults__["rerun_noisy"] is True


def test_onnxruntimes_spread_makes_a_row_noisy_and_its_attempts_are_kept():
    """onnxruntime's ratio is reported beside PyTorch's, so a disturbed onnxruntime makes the
    row noisy too, and a row timed twice keeps onnxruntime's two attempts and its smaller
    median (they were dropped, and its spread never asked for a second attempt)."""
    from rnnlab.bench import suite

    calm = {"median": 2.0, "p10": 2.0, "p90": 2.1}
    row = {"cell": "lstm", "shape": "S1", "bidirectional": False, "layers": 1, "mode": "infer",
           "rnnlab_stats_ms": calm, "torch_stats_ms": calm,
           "ort_stats_ms": {"median": 3.0, "p10": 1.5, "p90": 9.0}}  # fmt: skip
    assert tables.noisy(row) and not tables.noisy({**row, "ort_stats_ms": None})
    first = suite._with_speeds(dict(row), 100.0)
    second = suite._with_speeds({**row, "ort_stats_ms": {"median": 1.8, "p10": 1.7,
                                                         "p90": 1.9}}, 100.0)  # fmt: skip
    kept = suite._less_disturbed(first, second, 100.0)
    assert kept["kept_attempt"] == {"rnnlab": 1, "torch": 1, "ort": 2}
    assert (kept["ort_ms"], kept["ort_ratio"]) == (1.8, 0.9)
    assert [a["ort_ms"] for a in kept["attempts"]] == [3.0, 1.8]
    assert [a["ort_stats_ms"]["p90"] for a in kept["attempts"]] == [9.0, 1.9]


def test_a_row_whose_calls_all_took_no_time_counts_as_noisy():
    stats = {"median": 1.0, "p10": 0.0, "p90": 1.0}
    assert tables.noisy({"rnnlab_stats_ms": stats, "torch_stats_ms": stats})


def test_unequal_thread_counts_are_warned_about(monkeypatch):
    """OMP_NUM_THREADS=1 held PyTorch to one thread while rnnlab split over two, and nothing
    said so: the ratios compared unequal shares of the machine (a row read 'peak 113%')."""
    from rnnlab.bench import host
    from rnnlab.fast import parallel

    class Torch:
        def __init__(self, n):
            self.n = n

        def get_num_threads(self):
            return self.n

    said = []
    monkeypatch.setattr(parallel, "num_threads", lambda: 2)
    assert host.warn_unequal_threads(Torch(1), said.append)
    assert "PyTorch runs on 1 thread(s) and rnnlab on 2" in said[0]
    said.clear()
    assert not host.warn_unequal_threads(Torch(2), said.append) and not said


def test_a_failed_unforced_measurement_keeps_the_forced_peak(monkeypatch):
    """The child that measures the GEMM without a forcing variable returns {} when it fails:
    max(peak, *{}.values()) was max(float), a TypeError traceback."""
    from rnnlab.bench import environment, host, suite

    monkeypatch.setattr(host, "measured_peaks", lambda *a: {"numpy": 100.0, "torch": 90.0})
    monkeypatch.setattr(environment, "forced_kernels", lambda: {"OPENBLAS_CORETYPE": "Haswell"})
    monkeypatch.setattr(host, "unforced_peaks", lambda *a: {})

    class Torch:
        def get_num_threads(self):
            return 2

    said = []
    _, peak, forced, _ = suite._machine_peak(Torch(), 0.0, said.append)
    assert peak == 100.0 and forced


def test_the_peak_counts_the_mkl_package_where_rnnlab_runs_on_it(monkeypatch):
    """rnnlab's products may run on the `mkl` package (the BLAS choice), whose GEMM the peak
    left out (NumPy's and PyTorch's only): where it is faster the peak was too low and the
    share of it rnnlab reached too high (helper 82). It is measured and counted where rnnlab
    uses it, and said in both reports."""
    from rnnlab import _mkl
    from rnnlab.bench import environment, host, report, suite

    class Fake:
        def gemm(self, a, b, out, beta=0.0):
            np.matmul(a, b, out=out)
            return True

    speeds = iter([100.0, 90.0, 150.0])
    monkeypatch.setattr(host, "gemm_gflops", lambda fn, n: (fn(), next(speeds))[1])
    monkeypatch.setattr(_mkl, "load", lambda large=False: Fake())
    measured = host.measured_peaks
    peaks = measured(torch, 8, 0.0)
    assert peaks == {"numpy": 100.0, "torch": 90.0, "mkl": 150.0}
    monkeypatch.setattr(host, "measured_peaks", lambda *a: dict(peaks))
    monkeypatch.setattr(environment, "forced_kernels", lambda: {})
    said = []
    assert suite._machine_peak(torch, 0.0, said.append)[1] == 150.0
    assert "mkl 150 GFLOP/s" in said[0]
    monkeypatch.setattr(_mkl, "load", lambda large=False: None)
    speeds = iter([100.0, 90.0])
    assert measured(torch, 8, 0.0) == {"numpy": 100.0, "torch": 90.0}
    result = {"forced_kernels": {"MKL_CBWR": "AVX2"}, "numpy_gemm_gflops": 100.0,
              "torch_gemm_gflops": 90.0, "mkl_gemm_gflops": 150.0,
              "gemm_gflops_unforced": {"numpy": 101.0, "torch": 91.0, "mkl": 300.0}}
    assert "mkl 150 GFLOP/s with it, 300 without" in report.forced_text(result)


def test_an_output_file_in_a_missing_folder_is_refused_before_the_run(tmp_path, capsys):
    """--out in a missing folder failed only after the whole run, and its results were lost."""
    from rnnlab.bench import cli

    code = cli.main(["--cells", "rnn", "--shapes", "S1", "--out", str(tmp_path / "no" / "x.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--out:" in err and "not a folder rnnlab can write in" in err and "load" not in err


def test_end_to_end_refuses_a_bad_pause():
    from rnnlab.bench import end_to_end

    for bad in (-1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match=r"`pause_s` must be a finite number of seconds"):
            end_to_end.run(steps=1, warmup=0, pause_s=bad)


def test_inference_rows_are_checked_against_pytorch_on_their_own_path(monkeypatch):
    """The infer rows carried the training step's agreement, though inference runs other
    code (no tape, the per-step projection): it is compared on its own, and a wrong
    inference output is never timed."""
    pair = runners.make_pair(torch, configs.Config("gru", "S1", True))
    assert runners.check_inference_agreement(torch, pair, "gru S1 bi") < 1e-5
    real = pair.ours.forward

    def wrong(x, **kw):
        f = real(x, **kw)
        if kw.get("grad") is False:
            f.output[0, 0, 0] += 1.0
        return f

    monkeypatch.setattr(pair.ours, "forward", wrong)
    assert runners.check_agreement(torch, pair, "gru S1 bi") < 1e-5  # training is right
    with pytest.raises(RuntimeError, match=r"disagree on the inference outputs"):
        runners.check_inference_agreement(torch, pair, "gru S1 bi")


@pytest.mark.parametrize("cell, which", [("lstm", 1), ("lstm", 0), ("gru", None)])
def test_a_wrong_final_state_in_inference_is_never_timed(monkeypatch, cell, which):
    """The inference check compared the outputs only: the final state (an LSTM's c_n above
    all, which no output shows) could be wrong, or missing, and the row timed."""
    pair = runners.make_pair(torch, configs.Config(cell, "S1", True))
    assert runners.check_inference_agreement(torch, pair, "x") < 1e-5
    real = pair.ours.forward

    def wrong(x, **kw):
        f = real(x, **kw)
        state = f.state[which] if which is not None else f.state
        state[1, 0, 0] += 1.0  # the reverse direction's: h_n of it is no output's last step
        return f

    monkeypatch.setattr(pair.ours, "forward", wrong)
    name = {0: "h_n", 1: "c_n", None: "h_n"}[which]
    with pytest.raises(RuntimeError, match=rf"disagree on the inference final {name}"):
        runners.check_inference_agreement(torch, pair, "x")


def test_a_nan_gradient_after_a_good_output_is_never_timed(monkeypatch):
    """check_agreement kept the worst error by `err > worst`, which is False for a NaN: a
    gradient of NaN after outputs that agreed passed the check and was timed."""
    pair = runners.make_pair(torch, configs.Config("rnn", "scaling", False, 1, 6))
    real = pair.ours.backward

    def nan_bias(*args, **kw):
        b = real(*args, **kw)
        b.params["bias_hh_l0"][:] = np.nan
        return b

    monkeypatch.setattr(pair.ours, "backward", nan_bias)
    with pytest.raises(RuntimeError, match=r"disagree on the gradient of bias_hh_l0 \(relative "
                                           r"error nan"):  # fmt: skip
        runners.check_agreement(torch, pair, "rnn")


def test_a_gradient_of_another_shape_or_missing_is_a_disagreement(monkeypatch):
    """relative_error broadcast one array against the other: a (1, n) gradient against an
    (n,) one, or one step's output against every step's, compared as if the same shape."""
    assert runners.relative_error(np.ones((1, 3)), np.ones(3)) == math.inf
    assert runners.relative_error(np.ones((2, 1, 3)), np.ones((2, 5, 3))) == math.inf
    assert runners.relative_error(np.ones(3), np.ones(3)) == 0.0
    pair = runners.make_pair(torch, configs.Config("rnn", "scaling", False, 1, 6))
    real = pair.ours.backward

    def reshaped(*args, **kw):
        b = real(*args, **kw)
        b.params["bias_ih_l0"] = b.params["bias_ih_l0"][None, :]
        del b.params["bias_hh_l0"]
        return b

    monkeypatch.setattr(pair.ours, "backward", reshaped)
    with pytest.raises(RuntimeError, match=r"disagree on the gradient of bias_ih_l0 \(relative "
                                           r"error inf"):  # fmt: skip
        runners.check_agreement(torch, pair, "rnn")


def test_the_report_names_the_commit_the_threads_and_the_load_at_the_end(report, monkeypatch):
    """The version is 0.1.0 at every commit: a result named its code only by its file name,
    given by hand. The markdown said neither PyTorch's threads nor the load at the end."""
    result = json.loads(report[1])
    m = result["machine"]
    source = host.source_commit()
    assert m["rnnlab_source"] == source
    if source is not None:  # (run from a git checkout, as the tests are)
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
        assert isinstance(source["modified"], bool)
    markdown = report[4].read_text()
    assert f"PyTorch's threads: {m['torch_threads']}" in markdown
    assert f"at the end {m['load_average_end'][0]:.2f}" in markdown
    for source, said in ((None, "rnnlab 0.1.0 (compiled"),
                         ({"commit": "ab" * 20, "modified": True},
                          "rnnlab 0.1.0 at commit abababa, with uncommitted changes (compiled"),
                         ({"commit": "cd" * 20, "modified": False},
                          "rnnlab 0.1.0 at commit cdcdcdc (compiled")):  # fmt: skip
        shown = {**result, "machine": {**m, "rnnlab": "0.1.0", "rnnlab_source": source}}
        assert said in tables.format_markdown(shown)
    # a package that git does not track (a wheel installed in a venv inside a checkout) names
    # no commit, though git would find the checkout around it
    import rnnlab

    monkeypatch.setattr(rnnlab, "__file__", os.path.join(os.path.dirname(os.path.realpath(
        rnnlab.__file__)), "not_tracked.py"))  # fmt: skip
    assert host.source_commit() is None


@pytest.mark.parametrize("flag", ["--out", "--markdown"])
@pytest.mark.parametrize("target", ["fifo", "link", "separator", "tilde"])
def test_an_output_no_file_can_be_written_to_is_refused_before_the_run(
    tmp_path, monkeypatch, capsys, flag, target
):
    """--out and --markdown were written only after the whole run: a FIFO (or a link to
    one, or a path ending in a separator) was refused then, naming `path`, and minutes of
    results were lost; a quoted `~/x` passed the folder check (which expanded it) and the
    write (which does not) failed. Refused first now, naming the option."""
    from rnnlab.bench import cli

    def no_run(args):
        pytest.fail("the benchmark ran before the output file was checked")

    monkeypatch.setattr(cli, "_run", no_run)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~ is a writable folder; ./~ is none
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.symlink(fifo, tmp_path / "link")
    path, said = {
        "fifo": (str(fifo), "a FIFO (named pipe)"),
        "link": (str(tmp_path / "link"), "a FIFO (named pipe)"),
        "separator": (str(tmp_path / "r") + os.sep, "a folder's path (it ends in a separator)"),
        "tilde": ("~/r.json", "not a folder rnnlab can write in"),
    }[target]
    assert cli.main(["--cells", "rnn", "--shapes", "S1", flag, path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab bench: error: `{flag}` must be " if target != "tilde"
                          else f"rnnlab bench: error: {flag}: '~/r.json' is in ")  # fmt: skip
    assert said in err and "`path`" not in err
    assert fifo.exists() and not fifo.is_file()  # the FIFO is still one
