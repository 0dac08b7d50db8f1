"""The per-host choice of the loops' BLAS (rnnlab._blaschoice) and `rnnlab info`."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from rnnlab import _blaschoice, _mkl, settings
from rnnlab.cli import main
from rnnlab.fast import parallel

FAST_MKL = {"mkl": [10.0, 50.0, 300.0], "numpy": [20.0, 90.0, 600.0]}
FAST_NUMPY = {"mkl": [20.0, 90.0, 600.0], "numpy": [10.0, 50.0, 300.0]}


@pytest.fixture
def auto(monkeypatch, setenv, tmp_path):
    """RNNLAB_BLAS unset, a cache folder of the test's own, MKL 'installed', and a fake
    measurement that counts its calls (the real one is timed in its own test)."""
    setenv(RNNLAB_BLAS=None)
    setenv(RNNLAB_CACHE_DIR=str(tmp_path))
    # the real library (or None) loaded first: the fake below is for the choice, and a loader
    # that met it would warn that it does not load (the first test of an xdist worker)
    _mkl._library()
    monkeypatch.setattr(_blaschoice, "library_files", lambda: ["/fake/libmkl_rt.so.2"])
    calls = []
    timings = {"value": FAST_MKL}

    def fake():
        calls.append(1)
        return timings["value"]

    monkeypatch.setattr(_blaschoice, "_measure_in_child", fake)
    _blaschoice.choice.cache_clear()
    yield calls, timings, tmp_path
    _blaschoice.choice.cache_clear()


def test_the_faster_library_is_chosen():
    assert _blaschoice.decide(FAST_MKL).blas == "mkl"
    assert _blaschoice.decide(FAST_NUMPY).blas == "numpy"
    tie = {"mkl": [99.0, 99.0, 99.0], "numpy": [100.0, 100.0, 100.0]}  # within the margin
    assert _blaschoice.decide(tie).blas == "numpy"
    assert "1.93x" in _blaschoice.decide(FAST_MKL).why  # geometric mean of 2, 1.8, 2


def test_a_measurement_is_cached_and_reused(auto):
    calls, timings, folder = auto
    first = _blaschoice.choice()
    assert first.blas == "mkl" and len(calls) == 1 and first.cache is not None
    record = json.loads(pathlib.Path(first.cache).read_text())
    assert record["blas"] == "mkl" and record["key"] == _blaschoice.key()
    _blaschoice.choice.cache_clear()
    timings["value"] = FAST_NUMPY  # would change the choice, if it were measured again
    again = _blaschoice.choice()
    assert again.blas == "mkl" and len(calls) == 1 and again.cache == first.cache


def test_a_new_key_measures_again(auto, monkeypatch):
    calls, timings, folder = auto
    assert _blaschoice.choice().blas == "mkl"
    _blaschoice.choice.cache_clear()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # an older kernel: another setup
    timings["value"] = FAST_NUMPY
    assert _blaschoice.choice().blas == "numpy" and len(calls) == 2
    assert len(list(folder.glob("blas-choice-*.json"))) == 2  # each setup keeps its own


@pytest.mark.parametrize("content,said", [("{not json", "corrupt"),
                                          ('{"blas": "fortran"}', "corrupt"),
                                          ("foreign", "another machine")])  # fmt: skip
def test_a_bad_cache_is_not_trusted(auto, content, said):
    calls, timings, folder = auto
    path = _blaschoice.cache_path(_blaschoice.key())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if content == "foreign":
        other = {**_blaschoice.key(), "cpu": {"model": "elsewhere", "flags": []}}
        content = json.dumps({"key": other, "blas": "numpy", "why": "measured",
                              "timings": FAST_NUMPY})  # fmt: skip
    with open(path, "w") as f:
        f.write(content)
    with pytest.warns(UserWarning, match=said):
        made = _blaschoice.choice()
    assert made.blas == "mkl" and len(calls) == 1
    assert json.loads(pathlib.Path(path).read_text())["key"] == _blaschoice.key()  # made again


def test_the_environment_overrides_and_is_checked(auto, setenv, monkeypatch):
    calls, _, _ = auto
    setenv(RNNLAB_BLAS="numpy")
    assert _blaschoice.choice().blas == "numpy" and not calls
    _blaschoice.choice.cache_clear()
    monkeypatch.setenv("RNNLAB_BLAS", "openblas")
    with pytest.raises(ValueError, match="RNNLAB_BLAS.*'auto', 'mkl' or 'numpy'.*'openblas'"):
        settings.reload()
    with pytest.raises(ValueError, match="RNNLAB_BLAS"):
        _blaschoice.choice()


def test_without_mkl_and_with_the_tiles_set_nothing_is_measured(auto, monkeypatch):
    calls, _, _ = auto  # (RNNLAB_TILES=off: tests/conftest.py)
    monkeypatch.setattr(_blaschoice, "library_files", lambda: [])
    made = _blaschoice.choice()
    assert made.blas == "numpy" and not made.tiles and not calls
    assert made.tiles_why == "RNNLAB_TILES=off"


FAST_TILES = {**FAST_MKL, "tiles": [6.0, 40.0, 250.0]}


def test_the_tiles_are_chosen_where_faster_than_the_chosen_library():
    made = _blaschoice.decide(FAST_TILES)
    # (5/3 · 5/4 · 6/5)^(1/3) = 1.36
    assert made.blas == "mkl" and made.tiles and "1.36x as fast as MKL" in made.tiles_why
    slow = {**FAST_MKL, "tiles": [12.0, 60.0, 350.0]}
    assert not _blaschoice.decide(slow).tiles
    tie = {**FAST_MKL, "tiles": [9.9, 49.5, 297.0]}  # 1.01x: within the margin
    made = _blaschoice.decide(tie)
    assert not made.tiles and "chosen only above 1.03x" in made.tiles_why
    # against the library chosen, not the slower one: faster than OpenBLAS is not enough
    assert not _blaschoice.decide({**FAST_MKL, "tiles": [15.0, 70.0, 400.0]}).tiles
    assert _blaschoice.decide({"numpy": [20.0, 90.0, 600.0], "tiles": [15.0, 70.0, 400.0]}).tiles
    assert not _blaschoice.decide(FAST_MKL).tiles  # not measured
    assert _blaschoice.decide(FAST_MKL, tiles="on").tiles  # the setting wins
    assert not _blaschoice.decide(FAST_TILES, tiles="off").tiles


IN_PLACE = {"mkl in place": [10.0, 60.0, 300.0], "numpy in place": [20.0, 90.0, 600.0]}


def test_bptt_takes_large_weights_on_the_tiles_up_to_the_rows_where_well_ahead():
    """Choice.tiles_in_place_rows: the most rows a thread up to which the tiles beat the
    chosen library by IN_PLACE_MARGIN (1.15) at every timed BPTT shape, in order of rows."""
    ahead = {**FAST_TILES, **IN_PLACE, "tiles in place": [5.0, 50.0, 290.0]}  # 2, 1.2, 1.03x
    made = _blaschoice.decide(ahead)
    assert made.tiles and made.tiles_in_place_rows == 32
    assert "2.00x / 1.20x / 1.03x at 16 / 32 / 64 rows" in made.tiles_why
    assert "on the tiles up to 32 rows" in made.tiles_why
    everywhere = {**ahead, "tiles in place": [5.0, 50.0, 250.0]}  # 1.2x at 64 rows too
    assert _blaschoice.decide(everywhere).tiles_in_place_rows == 64
    # a shape below the margin ends it, whatever the rows beyond (the lead shrinks with them)
    gap = {**ahead, "tiles in place": [5.0, 55.0, 250.0]}  # 1.09x at 32 rows
    assert _blaschoice.decide(gap).tiles_in_place_rows == 16
    behind = {**ahead, "tiles in place": [9.0, 55.0, 290.0]}
    made = _blaschoice.decide(behind)
    assert made.tiles and made.tiles_in_place_rows == 0 and "so on the BLAS" in made.tiles_why
    # against the chosen library's in-place times: OpenBLAS's where it was chosen
    numpy_chosen = {"numpy": [20.0, 90.0, 600.0], "tiles": [15.0, 70.0, 400.0], **IN_PLACE,
                    "tiles in place": [15.0, 70.0, 450.0]}  # fmt: skip
    assert _blaschoice.decide(numpy_chosen).tiles_in_place_rows == 64
    assert _blaschoice.decide({**numpy_chosen, "tiles in place": [15.0, 80.0, 450.0]}
                              ).tiles_in_place_rows == 16  # fmt: skip
    assert _blaschoice.decide(FAST_TILES).tiles_in_place_rows == 0  # not measured in place
    assert _blaschoice.decide(ahead, tiles="off").tiles_in_place_rows == 0
    assert _blaschoice.decide({}, tiles="on").tiles_in_place_rows == 0  # forced, not measured
    # a cache with in-place timings of the wrong length is not a measurement
    assert _blaschoice._timings_ok(ahead)
    assert not _blaschoice._timings_ok({**ahead, "tiles in place": [5.0, 50.0]})
    assert not _blaschoice._timings_ok({**ahead, "tiles large": [5.0, 50.0]})


def test_the_large_products_have_a_library_of_their_own():
    # MKL faster per step, slower at the large products (2x): each where it is faster
    large = {"mkl large": [2000.0, 4000.0], "numpy large": [1000.0, 2000.0]}
    made = _blaschoice.decide({**FAST_MKL, **large})
    assert made.blas == "mkl" and made.large == "numpy" and "0.50x" in made.large_why
    swapped = {"mkl large": [1000.0, 2000.0], "numpy large": [2000.0, 4000.0]}
    made = _blaschoice.decide({**FAST_NUMPY, **swapped})
    assert made.blas == "numpy" and made.large == "mkl"
    assert _blaschoice.decide({**FAST_MKL, **large}, blas="mkl").large == "mkl"  # the setting
    assert _blaschoice.decide(FAST_MKL).large == "mkl"  # not measured: as the loops' products
    assert _blaschoice._timings_ok({**FAST_MKL, **large})
    assert not _blaschoice._timings_ok({**FAST_MKL, "mkl large": [1.0, 2.0, 3.0]})  # a shape more


def test_the_large_library_is_the_one_the_products_call(auto, monkeypatch):
    """With MKL chosen for the per-step products and NumPy's OpenBLAS for the large ones, the
    large products (rnnlab.fast.parallel asks for load(large=True)) get no MKL."""
    _, timings, _ = auto
    timings["value"] = {**FAST_MKL, "mkl large": [2.0, 4.0], "numpy large": [1.0, 2.0]}
    from rnnlab import _mkl

    _mkl.load.cache_clear()
    try:
        assert _mkl.wanted() and not _mkl.wanted(large=True)
        assert _mkl.load(large=True) is None
    finally:
        _mkl.load.cache_clear()


def test_without_mkl_the_tiles_are_measured_and_cached(auto, setenv, monkeypatch):
    calls, timings, _ = auto
    setenv(RNNLAB_TILES=None)
    monkeypatch.setattr(_blaschoice, "library_files", lambda: [])
    timings["value"] = {"numpy": [20.0, 90.0, 600.0], "tiles": [15.0, 70.0, 400.0]}
    made = _blaschoice.choice()
    assert made.blas == "numpy" and made.tiles and len(calls) == 1
    assert made.why == "the `mkl` package is not installed"
    _blaschoice.choice.cache_clear()
    timings["value"] = {"numpy": [20.0, 90.0, 600.0], "tiles": [25.0, 99.0, 700.0]}
    assert _blaschoice.choice().tiles and len(calls) == 1  # from the cache
    # a setting over a cached measurement: applied without measuring again
    _blaschoice.choice.cache_clear()
    setenv(RNNLAB_TILES="off")
    assert not _blaschoice.choice().tiles and len(calls) == 1
    # RNNLAB_BLAS=numpy alone still measures the tiles against NumPy's OpenBLAS
    _blaschoice.choice.cache_clear()
    setenv(RNNLAB_TILES=None, RNNLAB_BLAS="numpy")
    made = _blaschoice.choice()
    assert made.blas == "numpy" and made.tiles and made.why == "RNNLAB_BLAS=numpy"


def test_a_cache_with_bad_timings_is_not_trusted(auto):
    calls, _, _ = auto
    path = _blaschoice.cache_path(_blaschoice.key())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bad = {"numpy": [1.0, 2.0], "tiles": [1.0, 2.0, 3.0]}  # a shape short
    with open(path, "w") as f:
        json.dump({"key": _blaschoice.key(), "timings": bad}, f)
    with pytest.warns(UserWarning, match="corrupt"):
        assert _blaschoice.choice().blas == "mkl"
    assert len(calls) == 1


def test_a_failed_measurement_keeps_the_installed_mkl(auto, monkeypatch):
    def broken():
        raise RuntimeError("the child died")

    monkeypatch.setattr(_blaschoice, "_measure_in_child", broken)
    with pytest.warns(UserWarning, match="the child died"):
        made = _blaschoice.choice()
    assert made.blas == "mkl" and "failed" in made.why


def test_the_real_measurement_times_both_libraries():
    if not _blaschoice.library_files():
        pytest.skip("the mkl extra is not installed")
    timings = _blaschoice._measure_in_child()
    for lib in ("mkl", "numpy", "tiles"):
        assert len(timings[lib]) == len(_blaschoice.SHAPES)
        assert all(0 < t < 1e6 for t in timings[lib])
        assert len(timings[f"{lib} in place"]) == len(_blaschoice.IN_PLACE_SHAPES)
        assert all(0 < t < 1e6 for t in timings[f"{lib} in place"])
    for lib in ("mkl large", "numpy large"):
        assert len(timings[lib]) == len(_blaschoice.LARGE_SHAPES)
        assert all(0 < t < 1e6 for t in timings[lib])
    # the larger products take longer: the timings are of the shapes they name
    assert timings["numpy"][0] < timings["numpy"][-1]
    assert timings["tiles in place"][0] < timings["tiles in place"][-1]
    assert _blaschoice._timings_ok(timings)


def test_rnnlab_info(capsys, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    _blaschoice.choice.cache_clear()
    try:
        assert main(["info"]) == 0
        text = capsys.readouterr().out
        assert "CPU: " in text and "loops' BLAS: mkl (RNNLAB_BLAS=mkl)" in text
        assert "large products' BLAS (input projection, weight gradients): mkl" in text
        assert "loops' own product kernel (tiles): off (RNNLAB_TILES=off)" in text
        assert "warning: OPENBLAS_CORETYPE=Haswell holds OpenBLAS" in text
        spin = parallel.spin_seconds()
        assert (f"waits busily {spin * 1e3:g} ms" in text) == (spin > 0)
        assert main(["info", "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["blas_choice"]["blas"] == "mkl" and info["cpu"]["cores"] >= 1
        assert info["blas_choice"]["tiles"] is False and info["blas_choice"]["large"] == "mkl"
        assert "OPENBLAS_CORETYPE" in info["forced_kernels"]
        assert info["threads"]["spin_seconds"] == spin
    finally:
        _blaschoice.choice.cache_clear()


MIXED_CHILD = """
import json, sys
import numpy as np
from rnnlab import _blaschoice
want = _blaschoice.key()
timings = json.loads(sys.argv[1])
assert not _blaschoice._write_cache(_blaschoice.cache_path(want), want, _blaschoice.decide(timings))
import rnnlab
from rnnlab import _mkl, fast
from rnnlab.fast import tiles
made = _blaschoice.choice()
assert made.cache and made.blas == "mkl" and made.large == "numpy"
assert made.tiles_in_place_rows == 64
assert _mkl.wanted() and not _mkl.wanted(large=True) and fast.tiles_on()
fast.MIN_TILED_IN_PLACE = 1  # every BPTT weight is "large": on the tiles, as measured
rng = np.random.default_rng(0)
H = tiles.panel_width(np.float64)  # so that W_hh (4H, H) fits the panels in BPTT
laid_out, lay_out = [], tiles.panels
tiles.panels = lambda W: laid_out.append(W.shape) or lay_out(W)
layer = rnnlab.LSTM(3, H, num_layers=2, bidirectional=True, dtype=np.float64, rng=rng)
report = rnnlab.gradcheck(layer, rng.standard_normal((4, 6, 3)), lengths=np.array([6, 5, 3, 6]))
assert (4 * H, H) in laid_out, laid_out  # BPTT's weight went to the tiles
print(json.dumps({"max_error": report.max_error}))
"""


def test_a_mixed_choice_computes_exact_gradients(tmp_path):
    """A cached choice of MKL for the per-step products, NumPy's OpenBLAS for the large
    products and BPTT's large weights on the tiles, read by a fresh process as a user's would
    be: the gradients of a 2-layer bidirectional LSTM pass the float64 finite-difference check."""
    import subprocess
    import sys

    if not _blaschoice.library_files():
        pytest.skip("the mkl extra is not installed")
    timings = {**FAST_TILES, "mkl large": [2.0, 4.0], "numpy large": [1.0, 2.0], **IN_PLACE,
               "tiles in place": [5.0, 30.0, 150.0]}
    env = {k: v for k, v in os.environ.items() if k not in ("RNNLAB_BLAS", "RNNLAB_TILES")}
    env["RNNLAB_CACHE_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", MIXED_CHILD, json.dumps(timings)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["max_error"] < 1e-7


def test_both_uses_of_mkl_share_one_loaded_library():
    """RNNLAB_BLAS=mkl (the suite's setting) chooses MKL for the loops and the large products:
    one library, set up once, serves both."""
    from rnnlab import _mkl

    if _mkl.load() is None:
        pytest.skip("the mkl extra is not installed")
    assert _mkl.load(large=True) is _mkl.load()


# ------------------------------------------------------------------ the cache, hardened
def test_each_part_of_the_key_makes_a_cache_of_its_own(auto, monkeypatch):
    """Whatever could change the measurement changes the cache file: a measurement made where
    numba was missing (no tiles timed) is never read where it is present, nor one with MKL's
    packed weights allowed where RNNLAB_PACKED=0."""
    here = _blaschoice.cache_path(_blaschoice.key())
    real_cpu, real_version = _blaschoice.cpu, _blaschoice.version
    threads = str(settings.current().threads + 1)
    changes = {
        "cpu": lambda m: m.setattr(_blaschoice, "cpu", lambda: {**real_cpu(), "model": "other"}),
        **{f"{p} version": (lambda m, p=p: m.setattr(
            _blaschoice, "version", lambda q: "0.0" if q == p else real_version(q)))
           for p in ("numpy", "numba", "mkl")},
        "threads": lambda m: m.setenv("RNNLAB_NUM_THREADS", threads),
        "tiles measurable": lambda m: m.setenv("RNNLAB_NO_NUMBA", "1"),
        "packed": lambda m: m.setenv("RNNLAB_PACKED", "0"),
        "a forcing variable": lambda m: m.setenv("MKL_CBWR", "COMPATIBLE"),
    }  # fmt: skip
    for what, change in changes.items():
        with monkeypatch.context() as m:
            change(m)
            settings.reload()
            assert _blaschoice.cache_path(_blaschoice.key()) != here, what
        settings.reload()
        assert _blaschoice.cache_path(_blaschoice.key()) == here, f"{what}, undone"
    monkeypatch.setenv("OPENBLAS_CORETYPE", " ")  # set but empty: forces nothing
    assert _blaschoice.cache_path(_blaschoice.key()) == here


def test_an_unwritable_cache_is_said_and_the_choice_still_made(auto, setenv, capsys):
    calls, _, folder = auto
    blocker = folder / "a-file"
    blocker.write_text("")
    setenv(RNNLAB_CACHE_DIR=str(blocker / "cache"))  # under a file: cannot be made
    with pytest.warns(UserWarning, match="cannot be cached.*measured again in every process"):
        made = _blaschoice.choice()
    assert made.blas == "mkl" and made.cache is None and str(blocker) in made.cache_error
    from rnnlab import info

    text = "\n".join(info._text(info.gather()))
    assert "not cached, so measured in every process" in text


def test_the_cache_file_is_replaced_whole_and_readable(auto, monkeypatch):
    calls, _, folder = auto
    path = _blaschoice.choice().cache
    before = pathlib.Path(path).read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def refused(src, dst):
        raise OSError("refused")

    monkeypatch.setattr(os, "replace", refused)
    made = _blaschoice.decide(FAST_NUMPY)
    assert _blaschoice._write_cache(path, _blaschoice.key(), made) == "refused"
    assert pathlib.Path(path).read_text() == before  # never written in place
    leftovers = [p.name for p in folder.iterdir()
                 if p.name.startswith(".") and not p.name.endswith(".lock")]  # fmt: skip
    assert leftovers == []  # (the lock beside the cache stays: see the next test)


def test_an_unreadable_cache_is_said(auto):
    calls, _, _ = auto
    os.makedirs(_blaschoice.cache_path(_blaschoice.key()))  # a folder where the file should be
    with pytest.warns(UserWarning) as said:
        assert _blaschoice.choice().blas == "mkl"
    messages = " ".join(str(w.message) for w in said)
    assert "cannot be read" in messages and "cannot be cached" in messages  # nor written
    assert len(calls) == 1


FIFO_CHILD = """
import json, os, sys, warnings
from rnnlab import _blaschoice
_blaschoice.library_files = lambda: ["/fake/libmkl_rt.so.2"]
_blaschoice._measure_in_child = lambda: json.loads(sys.argv[2])
path = _blaschoice.cache_path(_blaschoice.key())
os.makedirs(os.path.dirname(path), exist_ok=True)
lock = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
os.mkfifo(path if sys.argv[1] == "cache" else lock)
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    made = _blaschoice.choice()
print(json.dumps({"blas": made.blas, "said": " ".join(str(w.message) for w in said)}))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
@pytest.mark.parametrize("where", ["cache", "lock"])
def test_a_fifo_at_the_cache_or_its_lock_does_not_hang(tmp_path, where):
    """Opening a FIFO waits for the other end: the first forward pass of a process whose
    cache path (or the lock beside it) was a FIFO hung for good. Now the cache is read
    without blocking and refused as no regular file, and a lock that cannot be had is done
    without. (In a child process: a regression hangs it, not the suite.)"""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RNNLAB_BLAS"}
    env["RNNLAB_CACHE_DIR"] = str(tmp_path)
    try:
        done = subprocess.run([sys.executable, "-c", FIFO_CHILD, where, json.dumps(FAST_MKL)],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung on a FIFO at the {where}")
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["blas"] == "mkl"
    if where == "cache":
        assert "is not a regular file (a FIFO, a named pipe); measuring again" in got["said"]


@pytest.mark.parametrize("timing", ["0", "true", "Infinity", "NaN", "1e308", "-5"])
def test_a_cached_timing_that_is_no_measurement_is_not_trusted(auto, timing):
    calls, _, _ = auto
    path = _blaschoice.cache_path(_blaschoice.key())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:  # (JSON as Python writes and reads it: Infinity, NaN)
        key = json.dumps(_blaschoice.key())
        f.write(f'{{"key": {key}, "timings": {{"numpy": [{timing}, 2.0, 3.0]}}}}')
    with pytest.warns(UserWarning, match="corrupt"):
        assert _blaschoice.choice().blas == "mkl"
    assert len(calls) == 1


def test_a_deeply_nested_cache_is_corrupt_not_fatal(auto):
    calls, _, _ = auto
    path = _blaschoice.cache_path(_blaschoice.key())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pathlib.Path(path).write_text("[" * 60000)  # under the 64 KB read: a RecursionError
    with pytest.warns(UserWarning, match="corrupt"):
        assert _blaschoice.choice().blas == "mkl"


def test_mkl_asked_for_where_it_is_not_installed_is_an_error(auto, monkeypatch, setenv):
    monkeypatch.setattr(_blaschoice, "library_files", lambda: [])
    setenv(RNNLAB_BLAS="mkl")
    with pytest.raises(ValueError, match="`RNNLAB_BLAS` must be .*'mkl', and the mkl package "
                                         "is not installed here"):  # fmt: skip
        _blaschoice.choice()


def test_mkl_is_credited_its_packed_product_only_where_the_loops_pack(monkeypatch, setenv):
    """The child's MKL time per shape: its packed product counts only where a training loop
    packs such a weight (rnnlab.fast.MIN_PACKED_VALUES) and RNNLAB_PACKED allows it."""
    from rnnlab import _mkl
    from rnnlab.fast import MIN_PACKED_VALUES, calibration

    if _mkl.load() is None:
        pytest.skip("the mkl extra is not installed")
    fake = {"numpy": 3.0, "mkl": 2.0, "mkl-packed": 1.0, "tiles": 3.0}
    monkeypatch.setattr(calibration, "_best", lambda runs, repeats: {k: fake[k] for k in runs})
    monkeypatch.setattr(calibration, "_calls_per_block", lambda m, k, n: 1)
    monkeypatch.setattr(calibration, "_large", lambda mkl, rng, repeats: {})
    packs = [k * n >= MIN_PACKED_VALUES for _, k, n in _blaschoice.SHAPES]
    assert packs == [False, True, True]
    assert calibration.measure()["mkl"] == [2e6, 1e6, 1e6]  # plain where not packed
    in_place = [1e6 if k * n >= MIN_PACKED_VALUES else 2e6
                for _, k, n in _blaschoice.IN_PLACE_SHAPES]  # fmt: skip
    assert calibration.measure()["mkl in place"] == in_place
    setenv(RNNLAB_PACKED="0")
    assert calibration.measure()["mkl"] == [2e6, 2e6, 2e6]
    assert calibration.measure()["mkl in place"] == [2e6, 2e6, 2e6]


def test_the_per_step_products_are_timed_as_the_loops_call_them(monkeypatch):
    """Each per-step product is timed in blocks of calls made from compiled code (the kernels'
    own gemm, NumPy's CBLAS symbol), each block checked to compute A·W, and the time of a
    block is divided by its calls. Timed from Python, MKL's ctypes call added ~5 µs a product
    and the tiles' dispatcher ~0.4: the calibration put the tiles ahead where the loops lost
    on them (bench/README.md, "The calibration timed from compiled code")."""
    from numba.core.dispatcher import Dispatcher

    from rnnlab import _mkl
    from rnnlab.fast import calibration, tiles

    seen: dict[str, object] = {}

    def fake_best(runs, repeats):
        seen.update(runs)
        return {name: 8e-6 for name in runs}  # a block of calls: 8 µs

    monkeypatch.setattr(calibration, "_best", fake_best)
    monkeypatch.setattr(calibration, "_calls_per_block", lambda m, k, n: 4)
    mkl = _mkl.load()
    rng = np.random.default_rng(0)
    out = calibration._per_step(mkl, tiles, rng, ((4, 32, 64),), repeats=1)
    assert out["tiles"] == pytest.approx([2.0]) and out["numpy"] == pytest.approx([2.0])
    for name, run in seen.items():
        fn = run.func
        compiled = fn if isinstance(fn, Dispatcher) else calibration._compiled_kernel_calls()
        assert isinstance(compiled, Dispatcher), name
        assert run.args[-1] == 4, name
    assert set(seen) >= {"numpy", "tiles"} | ({"mkl", "mkl-packed"} if mkl else set())


def test_a_timed_product_that_computes_something_else_is_refused(monkeypatch):
    from rnnlab.fast import calibration, tiles

    monkeypatch.setattr(calibration, "_calls_per_block", lambda m, k, n: 1)
    wrong = tiles.panels  # the tiles handed W's panels of another matrix
    monkeypatch.setattr(tiles, "panels", lambda b: wrong(b[::-1].copy()))
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="computed something else"):
        calibration._per_step(None, tiles, rng, ((4, 32, 64),), repeats=1)


def test_without_numba_the_products_are_timed_from_python(monkeypatch):
    """RNNLAB_NO_NUMBA (or numba missing): nothing compiled, plain calls (the loops do not run
    then; the times only inform `rnnlab info`)."""
    from rnnlab import _mkl
    from rnnlab.fast import calibration

    monkeypatch.setattr(_blaschoice, "tiles_measurable", lambda: False)
    monkeypatch.setattr(calibration, "_numpy_calls",
                        lambda: pytest.fail("compiled code asked for without numba"))  # fmt: skip
    rng = np.random.default_rng(0)
    out = calibration._per_step(_mkl.load(), None, rng, ((4, 32, 64),), repeats=2)
    assert "tiles" not in out and all(t > 0 for times in out.values() for t in times)


ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve i8mm bf16 rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1

processor\t: 1
CPU part\t: 0xd4f
"""


def test_an_arm_host_is_named_by_its_implementer_and_part(monkeypatch, tmp_path):
    """ARM's /proc/cpuinfo has no model name: without the implementer and part every aarch64
    host would share one cache key and one name in the benchmark's report."""
    from rnnlab.bench import host

    path = tmp_path / "cpuinfo"
    path.write_text(ARM_CPUINFO)
    monkeypatch.setattr(_blaschoice, "CPUINFO", str(path))
    got = _blaschoice.cpu()
    assert got == {"vendor": "Arm", "model": "Arm CPU part 0xd40", "family": "8",
                   "model_number": "0xd40", "flags": ["asimd", "bf16", "i8mm", "sve"]}
    assert host._cpuinfo()["model"] == "Arm CPU part 0xd40"
    path.write_text(ARM_CPUINFO.replace("0xd40", "0xd4f", 1))  # another core: another key
    assert _blaschoice.cpu()["model_number"] == "0xd4f"


def test_info_says_why_and_where(monkeypatch, setenv):
    """The numba cache `rnnlab info` names is the one the kernels' cache uses; the reasons for
    loops that are off and for workers that sleep, and an empty list of loaded libraries, are
    said rather than left out."""
    from rnnlab import fast, info

    if fast.available():
        from rnnlab.fast import kernels

        got = info.gather()["kernels"]["numba_cache"]
        assert got == str(kernels.tanh_into._cache._cache_path)
    with settings.override(no_numba=True):
        assert info._loops_off_why() == "RNNLAB_NO_NUMBA is set"
    gathered = info.gather()
    gathered.update(compiled_loops=False, compiled_loops_why="RNNLAB_NO_NUMBA is set",
                    libraries=[])  # fmt: skip
    gathered["threads"].update(split=True, spin_seconds=0.0)
    with settings.override(spin=0.0):
        text = "\n".join(info._text(gathered))
    assert "compiled loops: off, the NumPy loop (RNNLAB_NO_NUMBA is set)" in text
    assert "loaded: no BLAS or OpenMP library found by threadpoolctl" in text
    assert "a worker sleeps at once between parts (RNNLAB_SPIN=0)" in text


CALIBRATING_CHILD = """
import json, os, sys, time
from rnnlab import _blaschoice
counter = sys.argv[1]
def slow():
    with open(counter, "a") as f:
        f.write("measured\\n")
    time.sleep(1.0)
    return {"mkl": [10.0, 50.0, 300.0], "numpy": [20.0, 90.0, 600.0]}
_blaschoice._measure_in_child = slow
_blaschoice.library_files = lambda: ["/fake/libmkl_rt.so.2"]
made = _blaschoice.choice()
print(json.dumps({"blas": made.blas, "cache": made.cache}))
"""


def test_processes_that_start_at_once_measure_once(tmp_path):
    """Two processes on a fresh machine (MPI ranks, pytest's workers): one measures, the
    other waits for its cache and reads it, and both choose the same."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RNNLAB_BLAS", "RNNLAB_TILES")}
    env.update(RNNLAB_CACHE_DIR=str(tmp_path / "cache"), RNNLAB_TILES="off")
    counter = tmp_path / "measured"
    children = [subprocess.Popen([sys.executable, "-c", CALIBRATING_CHILD, str(counter)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]  # fmt: skip
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert counter.read_text().splitlines() == ["measured"]  # once, not twice
    assert results[0] == results[1] and results[0]["blas"] == "mkl" and results[0]["cache"]


def test_a_measuring_process_that_prints_nothing_is_a_clear_failure(monkeypatch):
    import subprocess

    silent = subprocess.CompletedProcess(args=[], returncode=0, stdout="", stderr="")
    monkeypatch.setattr(_blaschoice.subprocess, "run", lambda *a, **k: silent)
    with pytest.raises(RuntimeError, match="the measuring process printed nothing"):
        _blaschoice._measure_in_child()
