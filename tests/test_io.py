"""Persistence: safetensors byte for byte, atomic writes, configs, RNG state, run directories."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy as st
from helpers import hang_guard

from rnnlab import io as rio
from rnnlab.io import CheckpointError, ConfigError, RunDirError, files, runs
from rnnlab.io import tensors as rtensors

DTYPES = [
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "uint16",
    "uint32",
    "uint64",
]


def sample(dtype, shape, rng):
    if dtype == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    if np.dtype(dtype).kind == "f":
        return np.asarray(rng.standard_normal(shape), dtype)
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


def every_dtype(rng):
    """One tensor per dtype and shape kind, plus a 0-d and an empty tensor of each."""
    tensors = {}
    for dtype in DTYPES:
        tensors[f"{dtype}.matrix"] = sample(dtype, (3, 5), rng)
        tensors[f"{dtype}.scalar"] = sample(dtype, (), rng)
        tensors[f"{dtype}.empty"] = sample(dtype, (0, 4), rng)
    tensors["weight_hh_l0_reverse"] = sample("float32", (2, 3, 4), rng)
    tensors["ünïcode ✓"] = sample("float64", (2,), rng)
    return tensors


def assert_same(got, want):
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def as_bytes_header(data):
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8 : 8 + n])


# --------------------------------------------------------------------------------------------
# safetensors: round trips
# --------------------------------------------------------------------------------------------


def test_round_trip_every_dtype_through_a_file(tmp_path, rng):
    tensors = every_dtype(rng)
    path = tmp_path / "t.safetensors"
    rio.save_safetensors(path, tensors, {"format": "np", "note": "ü"})
    loaded, metadata = rio.load_safetensors(path)
    assert_same(loaded, tensors)
    assert metadata == {"format": "np", "note": "ü"}
    for array in loaded.values():
        assert array.flags.writeable and array.flags.c_contiguous
    assert loaded["float32.scalar"].shape == ()


def test_round_trip_through_bytes_and_header_layout(rng):
    tensors = every_dtype(rng)
    data = rio.safetensors_bytes(tensors)
    n, header = as_bytes_header(data)
    assert n % 8 == 0 and data[8 + n - 1 : 8 + n] in (b"}", b" ")
    assert "__metadata__" not in header
    # Every tensor starts at a multiple of its item size, counted from the start of the file.
    for name, info in header.items():
        assert (8 + n + info["data_offsets"][0]) % tensors[name].dtype.itemsize == 0
    loaded, metadata = rio.parse_safetensors(data)
    assert_same(loaded, tensors)
    assert metadata == {}
    loaded["float64.matrix"][0, 0] = 123.0  # a copy, not a view of `data`
    assert rio.parse_safetensors(data)[0]["float64.matrix"][0, 0] != 123.0


def test_loaded_arrays_are_independent_of_the_file(tmp_path):
    path = tmp_path / "t.safetensors"
    rio.save_safetensors(path, {"w": np.arange(4.0)})
    loaded, _ = rio.load_safetensors(path)
    path.write_bytes(rio.safetensors_bytes({"w": np.full(4, 7.0)}))  # in place: not a map of it
    np.testing.assert_array_equal(loaded["w"], [0, 1, 2, 3])
    rio.save_safetensors(path, {"w": np.zeros(4)})
    loaded["w"] += 1
    np.testing.assert_array_equal(loaded["w"], [1, 2, 3, 4])
    np.testing.assert_array_equal(rio.load_safetensors(path)[0]["w"], np.zeros(4))


def test_special_floats_survive_bit_for_bit():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, np.finfo(np.float64).max])
    h = np.array([np.nan, np.inf, -np.inf, -0.0, 6e-8, 65504], np.float16)
    got, _ = rio.parse_safetensors(rio.safetensors_bytes({"x": x, "h": h}))
    assert got["x"].tobytes() == x.tobytes() and got["h"].tobytes() == h.tobytes()


def test_strided_and_big_endian_inputs_are_written_as_little_endian_c_order(rng):
    base = rng.standard_normal((4, 6))
    tensors = {
        "t": base.T,
        "s": base[::2, 1::3],
        "be": base.astype(">f8"),
        "bi": np.arange(3, dtype=">i4"),
    }
    got, _ = rio.parse_safetensors(rio.safetensors_bytes(tensors))
    for name, array in tensors.items():
        np.testing.assert_array_equal(got[name], array)
        assert got[name].dtype.isnative and got[name].flags.c_contiguous
    assert got["bi"].dtype == np.int32
    data = rio.safetensors_bytes({"bi": tensors["bi"]})
    assert data.endswith(np.arange(3, dtype="<i4").tobytes())


# A file as rnnlab's own writer wrote it before the safetensors package did (old runs).
OLD_FILE = (
    b'\xd8\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{"format":"pt"},"step":{"dtype":"I64",'
    b'"shape":[],"data_offsets":[0,8]},"weight_hh_l0":{"dtype":"F32","shape":[2,2],"data_offse'
    b'ts":[8,24]},"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[24,26]}}   \x03\x00\x00'
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00@\x00\x00@@\x01\x00"
)


def test_files_written_before_load_and_are_written_the_same(tmp_path):
    tensors = {"step": np.array(3), "weight_hh_l0": np.arange(4, dtype=np.float32).reshape(2, 2),
               "mask": np.array([True, False])}  # fmt: skip
    path = tmp_path / "old.safetensors"
    path.write_bytes(OLD_FILE)
    loaded, metadata = rio.load_safetensors(path)
    assert list(loaded) == ["step", "weight_hh_l0", "mask"]  # the header's order
    assert_same(loaded, tensors)
    assert metadata == {"format": "pt"}
    assert rio.safetensors_bytes(tensors, {"format": "pt"}) == OLD_FILE


def test_empty_file_round_trip():
    data = rio.safetensors_bytes({})
    assert data == b"\x08" + b"\x00" * 7 + b"{}      "
    assert rio.parse_safetensors(data) == ({}, {})


# --------------------------------------------------------------------------------------------
# safetensors: byte compatibility with the reference package
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_bytes_identical_to_the_safetensors_package(rng, metadata):
    tensors = every_dtype(rng)
    assert rio.safetensors_bytes(tensors, metadata) == st.save(tensors, metadata=metadata)


def test_files_readable_both_ways_with_the_safetensors_package(tmp_path, rng):
    tensors = every_dtype(rng)
    metadata = {"b": "2", "a": "1", "c": "ü"}  # several keys: the reference orders them freely
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    rio.save_safetensors(ours, tensors, metadata)
    st.save_file(tensors, theirs, metadata=metadata)
    assert_same(st.load_file(ours), tensors)
    loaded, got_metadata = rio.load_safetensors(theirs)
    assert_same(loaded, tensors)
    assert got_metadata == metadata
    assert_same(st.load(rio.safetensors_bytes(tensors)), tensors)
    assert_same(rio.parse_safetensors(st.save(tensors))[0], tensors)


# --------------------------------------------------------------------------------------------
# safetensors: corrupt files
# --------------------------------------------------------------------------------------------


def craft(header, data=b"", pad=True):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
GOOD = rio.safetensors_bytes({"a": np.arange(2, dtype=np.float32), "b": np.arange(3.0)})

CORRUPT = [
    ("too short", GOOD[:5], r"it has 5 bytes, fewer than the 8-byte header length \(truncated"),
    ("header longer than the file", GOOD[:40], r"header length says \d+ bytes but only 32 follow"),
    (
        "absurd header length",
        b"\xff" * 8 + b"{}",
        r"header length says \d+ bytes but only 2 follow",
    ),
    (
        "data truncated",
        GOOD[:-4],
        r"tensor 'a' ends at byte 32 of the data but the data has only 28",
    ),
    ("invalid JSON", craft(b'{"a": {"dtype": "F32",'), r"header is not valid JSON \(Expecting"),
    ("not UTF-8", craft(b'{"\xff": 1}'), r"the header is not UTF-8 text"),
    ("not an object", craft([1, 2]), r"the header must be a JSON object, not list"),
    # (once, not inside "the header is not valid JSON (...)" as well)
    ("duplicate name", craft(b'{"a": {}, "a": {}}'), r"the key 'a' appears twice in the "
     r"header\.$"),
    (
        "bad metadata",
        craft({"__metadata__": {"k": 1}}),
        r"__metadata__ must map strings to strings",
    ),
    ("metadata not a dict", craft({"__metadata__": []}), r"__metadata__ must map strings"),
    (
        "missing key",
        craft({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)),
        r"tensor 'a' must have the keys dtype, shape, data_offsets; found dtype, shape",
    ),
    (
        "unknown dtype",
        craft({"a": {**F32x2, "dtype": "X9"}}, bytes(8)),
        r"tensor 'a' has the unknown dtype 'X9'; supported: BOOL, U8",
    ),
    (
        "bfloat16",
        craft({"a": {**F32x2, "dtype": "BF16"}}, bytes(8)),
        r"unknown dtype 'BF16' \(NumPy has no such type\)",
    ),
    (
        "complex64",  # (NumPy has one: the message said it had not)
        craft({"a": {**F32x2, "dtype": "C64", "shape": [1]}}, bytes(8)),
        r"unknown dtype 'C64' \(complex numbers: rnnlab's tensors are real\); supported: BOOL",
    ),
    (
        "negative shape",
        craft({"a": {**F32x2, "shape": [-2]}}, bytes(8)),
        r"tensor 'a' has shape \[-2\], not a list of non-negative integers",
    ),
    (
        "offsets reversed",
        craft({"a": {**F32x2, "data_offsets": [8, 0]}}, bytes(8)),
        r"data_offsets \[8, 0\], expected \[begin, end\] with 0 <= begin <= end",
    ),
    (
        "size mismatch",
        craft({"a": {**F32x2, "shape": [3]}}, bytes(8)),
        r"tensor 'a' of shape \[3\] and dtype F32 needs 12 bytes "
        r"but its data_offsets \[0, 8\] span 8",
    ),
    (
        "out of range",
        craft({"a": {**F32x2, "data_offsets": [8, 16]}}, bytes(8)),
        r"tensor 'a' ends at byte 16 of the data but the data has only 8 bytes",
    ),
    (
        "overlap",
        craft({"a": F32x2, "b": {**F32x2, "data_offsets": [4, 12]}}, bytes(12)),
        r"tensors 'a' and 'b' overlap \(bytes \[0, 8\) and \[4, 12\)\)",
    ),
    (
        "hole",
        craft({"a": {**F32x2, "data_offsets": [4, 12]}}, bytes(12)),
        r"4 bytes before tensor 'a' belong to no tensor \(the data must be contiguous\)",
    ),
    ("trailing bytes", craft({"a": F32x2}, bytes(11)), r"3 bytes after the last tensor"),
    (
        "unknown key",  # the package would ignore it
        craft({"a": {**F32x2, "offset": 0}}, bytes(8)),
        r"tensor 'a' must have the keys dtype, shape, data_offsets; found dtype, shape, "
        r"data_offsets, offset",
    ),
    (
        "bool not 0/1",
        craft({"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x02"),
        r"the BOOL tensor 'm' holds bytes other than 0 and 1",
    ),
    # json's RecursionError escaped, not naming the file
    (
        "nested too deeply",
        craft(b"[" * 100_000 + b"]" * 100_000),
        r"the header is nested too deeply\.$",
    ),
    # the package takes an empty tensor whatever its other dimensions; NumPy then failed in
    # get_tensor ("array is too big", no file named)
    (
        "empty tensor too big",
        craft({"a": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}),
        r"tensor 'a' of shape \[0, 4611686018427387904, 4611686018427387904\] and dtype F32 is "
        r"too big for an array: its non-zero dimensions take more than 2\*\*63-1 bytes\.$",
    ),
    (
        "dimension of 65 bits",
        craft({"a": {"dtype": "U8", "shape": [2**64, 0], "data_offsets": [0, 0]}}),
        r"tensor 'a' of shape \[18446744073709551616, 0\] and dtype U8 is too big for an array",
    ),
    (
        "65 dimensions",
        craft({"a": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, bytes(1)),
        r"tensor 'a' has 65 dimensions; NumPy arrays have at most 64\.$",
    ),
    (
        "dtype a list",  # (was a TypeError: unhashable)
        craft({"a": {**F32x2, "dtype": []}}, bytes(8)),
        r"tensor 'a' has the unknown dtype \[\]; supported",
    ),
    (
        "integer of 5000 digits",  # (was Python's ValueError on int conversion)
        craft(b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}'),
        r"the header holds an integer of more than 4300 digits\.$",
    ),
    (
        "shape shown short",
        craft({"a": {**F32x2, "shape": ["x" * 10_000]}}, bytes(8)),
        r"tensor 'a' has shape \['xxxx*\.\.\., not a list of non-negative integers\.$",
    ),
    (
        "name shown short",  # (a megabyte-long name was printed whole)
        craft({"n" * 100_000: {**F32x2, "dtype": "F99"}}, bytes(8)),
        r"tensor 'n{76}\.\.\. has the unknown dtype 'F99'",
    ),
    (
        "duplicate name shown short",
        b"".join([len(h := (b'{"' + b"d" * 100_000 + b'": 1, "' + b"d" * 100_000 + b'": 2}'))
                  .to_bytes(8, "little"), h]),
        r"the key 'd{76}\.\.\. appears twice in the header\.$",
    ),
    (
        "bool name shown short",
        craft({"b" * 100_000: {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
              b"\x01\x02"),
        r"the BOOL tensor 'b{76}\.\.\. holds bytes other than 0 and 1",
    ),
    (
        "keys shown short",
        craft({"a": {**F32x2, "k" * 100_000: 0}}, bytes(8)),
        r"found dtype, shape, data_offsets, k{49}\.\.\.\.$",
    ),
]


@pytest.mark.parametrize("data,match", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_files_raise_checkpoint_error_naming_the_file(tmp_path, data, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    pattern = rf"^'{str(path)}' is not a valid safetensors file: .*{match}"
    with pytest.raises(CheckpointError, match=pattern) as info:
        rio.load_safetensors(path)
    assert "\n" not in str(info.value)
    with pytest.raises(
        CheckpointError, match=r"^the data is not a valid safetensors file: .*" + match
    ):
        rio.parse_safetensors(data)


def test_an_empty_tensor_as_large_as_numpy_allows_loads(tmp_path):
    data = craft({"a": {"dtype": "F32", "shape": [0, 2**61 - 1], "data_offsets": [0, 0]}})
    path = tmp_path / "empty.safetensors"
    path.write_bytes(data)
    for tensors, _ in (rio.parse_safetensors(data), rio.load_safetensors(path)):
        assert tensors["a"].shape == (0, 2**61 - 1)


def test_a_file_larger_than_the_memory_available_is_refused_before_it_is_read(
    tmp_path, monkeypatch
):
    """A header that promises 10**12 bytes is refused unless the file holds them, but a
    sparse file does at no cost of disk: its tensors were copied into memory until
    MemoryError or the OOM killer. (Here 300 MiB, said to be more than the memory.)"""
    nbytes = 300 << 20
    path = tmp_path / "sparse.safetensors"
    header = craft({"a": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}})
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + nbytes)  # (a hole: no block written)
    read = []
    monkeypatch.setattr(rtensors, "available_memory", lambda: read.append(1) or 200 << 20,
                        raising=False)  # fmt: skip
    monkeypatch.setattr(rtensors, "safe_open", lambda *a, **k: pytest.fail("the data was read"))
    with pytest.raises(CheckpointError, match=rf"^'{path}' holds 300.0 MiB of tensors, more "
                       r"than the memory available \(200.0 MiB\): it is not read\.$"):
        rio.load_safetensors(path)
    assert read


def test_what_the_package_refuses_after_our_checks_is_one_line_naming_the_file(
    tmp_path, monkeypatch
):
    """A file that changes between rnnlab's check of its header and the package's read."""
    path = tmp_path / "w.safetensors"
    rio.save_safetensors(path, {"w": np.zeros(3)})

    def changed(*args, **kwargs):
        raise safetensors.SafetensorError("Error while deserializing: header too small")

    monkeypatch.setattr(rtensors, "safe_open", changed)
    with pytest.raises(CheckpointError, match=rf"^'{path}' is not a valid safetensors file: "
                       r"Error while deserializing: header too small\.$"):  # fmt: skip
        rio.load_safetensors(path)


def test_checkpoint_error_is_a_value_error_and_missing_file(tmp_path):
    assert issubclass(CheckpointError, ValueError)
    with pytest.raises(
        CheckpointError, match=r"Cannot read '.*nope.safetensors': the file does not exist"
    ):
        rio.load_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match=r"it is a directory"):
        rio.load_safetensors(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's")
def test_a_fifo_is_refused_not_waited_on(tmp_path):
    """A run's best.safetensors (or any weights file) that is a FIFO: open() waited for a
    writer for ever (evaluate, early stopping's restore)."""
    fifo = tmp_path / "best.safetensors"
    os.mkfifo(fifo)
    with hang_guard(10), pytest.raises(CheckpointError, match=rf"^Cannot read '{fifo}': it is "
                                       r"not a regular file \(a FIFO, a named pipe\)\.$"):
        rio.load_safetensors(fifo)
    with hang_guard(10), pytest.raises(CheckpointError, match=r"not a regular file"):
        rio.load_weights(fifo, step=3)


@pytest.mark.parametrize(
    "tensors,metadata,match",
    [
        (
            [np.zeros(2)],
            None,
            r"`tensors` must be a dict of str -> NumPy array; got a list of length 1",
        ),
        ({"a": [1.0, 2.0]}, None, r"`tensors\['a'\]` must be a NumPy array; got a list"),
        (
            {"a": np.zeros(2, np.complex128)},
            None,
            r"`tensors\['a'\]` must be an array of dtype bool, uint8.*got dtype complex128",
        ),
        ({"a": np.array(["x"], object)}, None, r"got dtype object"),
        (
            {"__metadata__": np.zeros(1)},
            None,
            r"with str keys other than '__metadata__'; got the key '__metadata__'",
        ),
        ({3: np.zeros(1)}, None, r"got the key 3 instead"),
        # (the package's UnicodeEncodeError named no argument)
        (
            {"w\udcff": np.zeros(1)},
            None,
            r"^`tensors` must be a dict whose keys are text a file can hold \(UTF-8\); got the "
            r"key 'w\\udcff' instead\. It holds a lone surrogate",
        ),
        (
            {"a": np.zeros(1)},
            {"k": "\ud800"},
            r"^`metadata` must be a dict of text a file can hold \(UTF-8\); got '\\ud800' "
            r"instead\. It holds a lone surrogate",
        ),
        (
            {"a": np.zeros(1)},
            {"k": 1},
            r"`metadata` must be None or a dict of str -> str; got \{'k': 1\}",
        ),
    ],
)
def test_save_refuses_bad_arguments(tmp_path, tensors, metadata, match):
    with pytest.raises(ValueError, match=match):
        rio.safetensors_bytes(tensors, metadata)
    with pytest.raises(ValueError, match=match):
        rio.save_safetensors(tmp_path / "x.safetensors", tensors, metadata)
    assert list(tmp_path.iterdir()) == []


def test_path_and_data_arguments_are_checked(tmp_path):
    with pytest.raises(
        ValueError, match=r"`path` must be a path \(str or pathlib.Path\); got 3 \(int\)"
    ):
        rio.load_safetensors(3)
    with pytest.raises(ValueError, match=r"`data` must be bytes; got 'abc' \(str\)"):
        rio.parse_safetensors("abc")


def test_parse_safetensors_takes_any_bytes_like_view():
    """A memoryview that is not C-contiguous (every other byte of a buffer) was cast() to
    bytes, a TypeError ("casts are restricted to C-contiguous views")."""
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3.0)}
    data = rio.safetensors_bytes(tensors)
    spaced = np.zeros(2 * len(data), np.uint8)
    spaced[::2] = np.frombuffer(data, np.uint8)
    views = [memoryview(spaced)[::2], memoryview(bytearray(data)),
             memoryview(np.frombuffer(data, np.uint8).reshape(len(data) // 8, 8))]
    for view in views:
        got, metadata = rio.parse_safetensors(view)
        assert_same(got, tensors)
        assert metadata == {}


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def test_atomic_writes_leave_only_the_target(tmp_path):
    rio.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    rio.atomic_write_text(tmp_path / "a.txt", "héllo\r\n")
    rio.atomic_write_json(tmp_path / "a.json", {"x": [1, 2.5, None, True], "ü": "ö"})
    rio.atomic_write_json(tmp_path / "a.json", {"x": 2})  # replaces
    rio.save_safetensors(tmp_path / "a.safetensors", {"w": np.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.bin",
        "a.json",
        "a.safetensors",
        "a.txt",
    ]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_bytes() == "héllo\r\n".encode()
    assert rio.read_json(tmp_path / "a.json") == {"x": 2}
    # Permissions as for a file opened the ordinary way (the umask applies).
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (tmp_path / "a.bin").stat().st_mode == plain.stat().st_mode
    assert (tmp_path / "a.safetensors").stat().st_mode == plain.stat().st_mode


@pytest.mark.parametrize(
    "write",
    [
        lambda p: rio.atomic_write_bytes(p, b"x"),
        lambda p: rio.atomic_write_text(p, "x"),
        lambda p: rio.atomic_write_json(p, {"x": 1}),
        lambda p: rio.save_safetensors(p, {"w": np.zeros(3)}),
        lambda p: rio.save_weights(p, {"w": np.zeros(3)}),
    ],
    ids=["bytes", "text", "json", "safetensors", "weights"],
)
def test_atomic_writes_refuse_a_directory_by_the_argument_name(write, tmp_path):
    """A directory where the file should go: the rename would fail naming rnnlab's temporary
    file ("Is a directory: '.d.2a851544.tmp' -> 'd'"); the argument is named instead."""
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"^`path` must be a file path; got '.*d', a directory"):
        write(tmp_path / "d")
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and not any((tmp_path / "d").iterdir())


def test_checkpoint_files_get_the_mode_of_an_ordinary_file(tmp_path):
    old = os.umask(0o027)
    try:
        save(tmp_path / "run", 1)
        rio.save_weights(tmp_path / "run" / "best.safetensors", weights(1)[0])
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    want = (tmp_path / "plain").stat().st_mode
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) == 9 and all(p.stat().st_mode == want for p in files), files


@pytest.mark.parametrize("fail_at", ["fsync", "replace", "write"])
def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "w.safetensors"
    rio.save_safetensors(target, {"w": np.arange(3.0)})
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    if fail_at == "write":  # half of the data written, then the failure

        def half(path, arrays, metadata=None, **kwargs):
            path.write_bytes(b"\x10\x00\x00")
            raise OSError("disk on fire")

        monkeypatch.setattr(rtensors, "write", half)
    else:
        monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="disk on fire"):
        rio.save_safetensors(target, {"w": np.zeros(1000)})
    if fail_at != "write":
        with pytest.raises(OSError, match="disk on fire"):
            rio.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_json_writes_convert_numpy_scalars_and_refuse_what_json_cannot_hold(tmp_path):
    rio.atomic_write_json(
        tmp_path / "s.json",
        {"a": np.float32(1.5), "b": np.int64(3), "c": np.bool_(True), "d": (1, 2)},
    )
    assert rio.read_json(tmp_path / "s.json") == {"a": 1.5, "b": 3, "c": True, "d": [1, 2]}
    with pytest.raises(
        ValueError, match=r"`obj\['m'\]\['loss'\]` must be JSON data; got nan .*no NaN or infinity"
    ):
        rio.atomic_write_json(tmp_path / "x.json", {"m": {"loss": float("nan")}})
    with pytest.raises(
        ValueError,
        match=r"`obj\['w'\]\[1\]` must be JSON data .*got an array of shape \(2,\).*safetensors",
    ):
        rio.atomic_write_json(tmp_path / "x.json", {"w": [0, np.zeros(2)]})
    with pytest.raises(
        ValueError, match=r"`obj` must be JSON data \(a dict with str keys\); got the key 1 \(int\)"
    ):
        rio.atomic_write_json(tmp_path / "x.json", {1: 2})
    with pytest.raises(
        ValueError, match=r"`obj\['f'\]` must be JSON data .*got <built-in function print>"
    ):
        rio.atomic_write_json(tmp_path / "x.json", {"f": print})
    with pytest.raises(ValueError, match=r"`text` must be a str; got b'x' \(bytes\)"):
        rio.atomic_write_text(tmp_path / "x.txt", b"x")
    with pytest.raises(ValueError, match=r"`data` must be bytes; got 'x' \(str\)"):
        rio.atomic_write_bytes(tmp_path / "x.bin", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


# --------------------------------------------------------------------------------------------
# Reading configuration
# --------------------------------------------------------------------------------------------


def test_read_json_and_toml(tmp_path):
    (tmp_path / "c.json").write_text('{"hidden": 128, "cell": "lstm"}')
    (tmp_path / "c.toml").write_text('cell = "gru"\n[optim]\nlr = 1e-3\n')
    assert rio.read_json(tmp_path / "c.json") == {"hidden": 128, "cell": "lstm"}
    assert rio.read_toml(str(tmp_path / "c.toml")) == {"cell": "gru", "optim": {"lr": 1e-3}}


@pytest.mark.parametrize(
    "reader,name,content,match",
    [
        (
            rio.read_json,
            "c.json",
            None,
            r"Cannot read JSON file '.*c.json': the file does not exist",
        ),
        (
            rio.read_toml,
            "c.toml",
            None,
            r"Cannot read TOML file '.*c.toml': the file does not exist",
        ),
        (
            rio.read_json,
            "c.json",
            b'{\n  "a": 1,\n  "b" 2\n}',
            r"'.*c.json' is not valid JSON: Expecting ':' delimiter at line 3, column 7",
        ),
        (
            rio.read_toml,
            "c.toml",
            b"a = 1\nb = = 2\n",
            r"'.*c.toml' is not valid TOML: .*line 2, column 5\): 'b = = 2'\.$",
        ),
        (  # tomllib names no key: the line is quoted, the words say what is wrong
            rio.read_toml,
            "c.toml",
            b"lr = 0.1\r\n  lr = 0.2  \r\n",
            r"'.*c.toml' is not valid TOML: a key given a value twice \(at line 2, column "
            r"\d+\): 'lr = 0.2'\.$",
        ),
        (
            rio.read_toml,
            "c.toml",
            b"x = '" + b"a" * 120 + b"' y\n",
            r"'.*c.toml' is not valid TOML: .*\(at line 1, column \d+\): "
            r"\"x = 'a{72}\.\.\.\"\.$",  # (77 characters of the line, then ...)
        ),
        (
            rio.read_json,
            "c.json",
            b'{"a": "\xff"}',
            r"'.*c.json' is not valid JSON: byte 7 \(0xff\) is not UTF-8",
        ),
        (
            rio.read_toml,
            "c.toml",
            b'a = "\xfe"',
            r"'.*c.toml' is not valid TOML: byte 5 \(0xfe\) is not UTF-8",
        ),
    ],
)
def test_config_errors(tmp_path, reader, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        reader(tmp_path / name)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_json_numbers_python_cannot_hold_are_refused_where_they_are(tmp_path):
    """1e999 was read as inf (a metrics.jsonl holding one made --resume fail rewriting it:
    'Out of range float values are not JSON compliant', no file named); an integer of 5000
    digits was int()'s bare ValueError ('Exceeds the limit (4300 digits)...'), from a
    checkpoint's state.json too. Strings holding them, and big numbers Python holds, read."""
    path = tmp_path / "x.json"
    path.write_text('{"1e999": "1e999",\n "best": [1.5, -1e999]}')
    with pytest.raises(ConfigError, match=r"x.json' is not valid JSON: -1e999 is beyond the "
                       r"range of a float \(JSON has no infinity\) at line 2, column 16\.$"):
        rio.read_json(path)
    path.write_text('{"s": "' + "9" * 5000 + '",\n "bad_evals": ' + "9" * 5000 + "}")
    with pytest.raises(ConfigError, match=r"x.json' is not valid JSON: an integer of more "
                       r"digits than Python reads at line 2, column 15\.$"):
        rio.read_json(path)
    big = '{"a": 1e308, "b": -0.0, "c": ' + "9" * 400 + ', "d": 1' + "0" * 400 + '.5e-400}'
    path.write_text(big)
    assert rio.read_json(path) == json.loads(big)
    lines = tmp_path / "m.jsonl"
    lines.write_text('{"step": 1, "loss": 1e999}\n{"step": 2, "loss": 0.5}\n')
    with pytest.raises(ConfigError, match=r"m.jsonl' is not valid JSON Lines: 1e999 is beyond "
                       r"the range of a float \(JSON has no infinity\) at line 1, column 21\.$"):
        rio.keep_jsonl_until(lines, 1)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000001"
    checkpoint.mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text("{}")
    rio.save_safetensors(checkpoint / "model.safetensors", {"w": np.zeros(1)})
    rio.save_safetensors(checkpoint / "optimizer.safetensors", {"w": np.zeros(1)})
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "state.json").write_text('{"step": 1, "bad_evals": ' + "9" * 5000 + "}")
    with pytest.raises(CheckpointError, match=r"state.json' is not valid JSON: an integer of "
                       r"more digits than Python reads at line 1, column 26\."):
        rio.load_checkpoint(tmp_path / "run")


_WHICH = ("rnnlab does not guess which value is meant (a JSON reader keeps one of them "
          "without a word); remove the other.")


@pytest.mark.parametrize("text,key,first,second", [
    # a config.json edited by hand: the second "lr" was taken, without a word
    ('{\n  "train": {\n    "lr": 0.002,\n    "seed": 0,\n    "lr": 0.1\n  }\n}', '"lr"',
     (3, 5), (5, 5)),
    # the same key after an escape; keys of other objects, strings holding marks, before it
    ('{"history": [{"step": 1}, {"step": 2}], "a{": {"x": "}", "y": ["]", {"x": ","}]},'
     ' "b\\"": 1, "a\\u007b": 2}', '"a{"', (1, 41), (1, 93)),
    ('[{"k": [1, {"k": 2}], "k": 3}]', '"k"', (1, 3), (1, 23)),
    ('{"o": {"o": {"deep": 1, "deep": 2}}, "o": 0}', '"deep"', (1, 14), (1, 25)),
])  # fmt: skip
def test_a_json_key_given_twice_is_refused_naming_the_file_and_both_places(tmp_path, text, key,
                                                                           first, second):
    """json.loads keeps the last value of a key an object holds twice: a config.json edited by
    hand to hold "lr" twice (or a checkpoint's state.json) was read without a word. No file
    rnnlab writes holds one (its writers dump dicts)."""
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        rio.read_json(path)
    assert str(e.value) == (f"'{path}' holds the key {key} twice in one object, at line "
                            f"{first[0]}, column {first[1]} and at line {second[0]}, column "
                            f"{second[1]}: {_WHICH}")  # fmt: skip
    lines = text.split("\n")
    assert lines[first[0] - 1][first[1] - 1] == lines[second[0] - 1][second[1] - 1] == '"'


def test_a_key_given_twice_in_a_checkpoint_s_json_is_refused_with_the_way_back(tmp_path):
    run = tmp_path / "run"
    save(run, 1)
    save(run, 2)
    state = run / "checkpoints" / "step-00000002" / "state.json"
    state.write_text(state.read_text().replace('"step": 2,', '"step": 2, "step": 1,'))
    with pytest.raises(CheckpointError) as e:
        rio.load_checkpoint(run)
    assert str(e.value).startswith(f"'{state}' holds the key \"step\" twice in one object, at "
                                   f"line 2, column 3 and at line 2, column 14: {_WHICH} To go "
                                   "back to the checkpoint step-00000001")  # fmt: skip


def test_a_key_given_twice_in_a_metrics_log_is_read_as_json_reads_it(tmp_path):
    """metrics.jsonl is not checked for it (rnnlab appends dicts; the check costs 13-17% of a
    long log's parse, which a resume reads before its first step): the last value is taken."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "loss": 2.0, "loss": 1.0}\n')
    assert rio.read_jsonl(path) == [{"step": 1, "loss": 1.0}]


def test_a_toml_integer_python_cannot_hold_is_refused_naming_the_file(tmp_path):
    """tomllib lets int()'s ValueError through: rnnlab train --config said 'Exceeds the
    limit (4300 digits) for integer string conversion', naming no file."""
    path = tmp_path / "c.toml"
    path.write_text("lr = 0.1\n# 1" + "9" * 5000 + "\nhidden = 1_" + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"^'.*c.toml' is not valid TOML: an integer of more "
                       r"digits than Python reads \(at line 3, column 10\)\.$"):
        rio.read_toml(path)
    path.write_text("a = [1, " + "9" * 5000 + "]\n")  # (not said where: it is not a key's)
    with pytest.raises(ConfigError, match=r"^'.*c.toml' is not valid TOML: an integer of more "
                       r"digits than Python reads\.$"):
        rio.read_toml(path)
    path.write_text("a = " + "9" * 4300 + "\n")
    assert rio.read_toml(path) == {"a": int("9" * 4300)}


def test_read_json_of_a_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"Cannot read JSON file '.*': it is a directory"):
        rio.read_json(tmp_path)


def test_jsonl_append_and_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rio.append_jsonl(path, {"step": 1, "loss": np.float32(2.5)})
    rio.append_jsonl(path, {"step": 2, "text": "a\u2028b"})  # U+2028 is not a line break in JSONL
    assert rio.read_jsonl(path) == [{"step": 1, "loss": 2.5}, {"step": 2, "text": "a\u2028b"}]
    assert path.read_text().count("\n") == 2
    with pytest.raises(
        ValueError,
        match=r"`obj` must be a dict \(one JSON object per line\); got a list of length 1",
    ):
        rio.append_jsonl(path, [1])
    with pytest.raises(ValueError, match=r"`obj\['loss'\]` must be JSON data; got inf"):
        rio.append_jsonl(path, {"loss": float("inf")})
    assert len(rio.read_jsonl(path)) == 2


def test_jsonl_torn_last_line_is_skipped_then_cut_off(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rio.append_jsonl(path, {"step": 1})
    with open(path, "ab") as f:
        f.write(b'{"step": 2, "lo')  # a crash in the middle of an append
    assert rio.read_jsonl(path) == [{"step": 1}]
    rio.append_jsonl(path, {"step": 3})
    assert path.read_text() == '{"step": 1}\n{"step": 3}\n'


def test_jsonl_last_line_torn_inside_a_character_is_skipped_then_cut_off(tmp_path):
    """Records are written as UTF-8 (ensure_ascii=False): a crash in the middle of a
    character left a log that was not UTF-8, refused whole ("byte N (0xc3) is not UTF-8"),
    and a resume with it (keep_jsonl_until reads the log before the first step)."""
    path = tmp_path / "metrics.jsonl"
    rio.append_jsonl(path, {"step": 1, "note": "d\u00e9j\u00e0"})
    complete = path.read_bytes()
    torn = json.dumps({"step": 2, "note": "\u00e9t\u00e9"}, ensure_ascii=False).encode()
    with open(path, "ab") as f:
        f.write(torn[: torn.index(b"\xc3") + 1])  # the crash: half of the first "é"
    assert rio.read_jsonl(path) == [{"step": 1, "note": "d\u00e9j\u00e0"}]
    assert rio.keep_jsonl_until(path, 1) == 0
    rio.append_jsonl(path, {"step": 2})
    assert path.read_bytes() == complete + b'{"step": 2}\n'
    path.write_bytes(b'{"step": 1}\n{"note": "\xff"}\n')  # (a bad byte in a whole line: refused)
    with pytest.raises(ConfigError, match=r"is not valid JSON: byte 22 \(0xff\) is not UTF-8"):
        rio.read_jsonl(path)


def test_jsonl_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}')
    rio.append_jsonl(path, {"step": 3})
    assert [r["step"] for r in rio.read_jsonl(path)] == [1, 2, 3]


def test_jsonl_bad_line_in_the_middle(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2,}\n{"step": 3}\n')
    with pytest.raises(
        ConfigError, match=r"'.*metrics.jsonl' is not valid JSON Lines: .* at line 3, column 12"
    ):
        rio.read_jsonl(path)


# --------------------------------------------------------------------------------------------
# Random generators
# --------------------------------------------------------------------------------------------


def draws(rng):
    return [
        rng.random(3),
        rng.standard_normal(5),
        rng.integers(0, 1000, 7, dtype=np.int32),
        rng.integers(0, 2**40, 2),
        rng.permutation(6),
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.random.default_rng(7),
        lambda: np.random.default_rng(),  # fresh 128-bit entropy
        lambda: np.random.default_rng([3, 1, 4]),
        lambda: np.random.Generator(np.random.MT19937(1)),
        lambda: np.random.Generator(np.random.Philox(2)),
        lambda: np.random.Generator(np.random.SFC64(3)),
        lambda: np.random.Generator(np.random.PCG64DXSM(4)),
        lambda: np.random.default_rng(5).spawn(2)[1],
    ],
    ids=["pcg64", "entropy", "list-seed", "mt19937", "philox", "sfc64", "pcg64dxsm", "spawned"],
)
def test_rng_state_round_trips_through_json_text(make):
    rng = make()
    draws(rng)
    rng.integers(0, 10, dtype=np.int32)  # leaves half of a 64-bit word buffered
    text = json.dumps(rio.numpy_rng_state(rng))
    restored = rio.rng_from_state(json.loads(text))
    for a, b in zip(draws(rng), draws(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(rng.spawn(2), restored.spawn(2), strict=True):
        np.testing.assert_array_equal(a.random(4), b.random(4))


def test_rng_state_errors():
    with pytest.raises(ValueError, match=r"`rng` must be a np.random.Generator; got 0 \(int\)"):
        rio.numpy_rng_state(0)
    with pytest.raises(
        ValueError, match=r"`state` must be a dict made by numpy_rng_state; got \{'a': 1\}"
    ):
        rio.rng_from_state({"a": 1})
    state = rio.numpy_rng_state(np.random.default_rng(0))
    state["bit_generator"]["bit_generator"] = "Mystery"
    with pytest.raises(
        ValueError, match=r"\(for one of PCG64, .*\); got the bit generator 'Mystery'"
    ):
        rio.rng_from_state(state)
    state = rio.numpy_rng_state(np.random.Generator(np.random.MT19937(0)))
    state["bit_generator"]["state"]["key"]["values"] = [1, 2]
    with pytest.raises(
        ValueError,
        match=r"`state\['bit_generator'\]\['state'\]\['key'\]\['values'\]` must be a list of "
        r"624 ints in \[0, 2\*\*32\); got a list of length 2 instead\.",
    ):
        rio.rng_from_state(state)
    state["bit_generator"]["state"]["key"]["values"] = [1] * 624
    state["seed_sequence"]["n_children_spawned"] = -5
    with pytest.raises(
        ValueError,
        match=r"`state\['seed_sequence'\]\['n_children_spawned'\]` must be an int in "
        r"\[0, 4294967295\]; got -5 \(int\) instead\.",
    ):
        rio.rng_from_state(state)
    state = rio.numpy_rng_state(np.random.default_rng(0))
    del state["bit_generator"]["state"]["inc"]
    with pytest.raises(
        ValueError,
        match=r"`state\['bit_generator'\]\['state'\] \(a PCG64 state\)` must be a dict with "
        r"the keys state, inc; got the keys 'state' instead\.",
    ):
        rio.rng_from_state(state)


def _edit(path, value):
    """An edit of a numpy_rng_state dict: `value` at the keys `path` (None: delete the key)."""

    def apply(state):
        *parents, last = path
        for key in parents:
            state = state[key]
        if value is None:
            del state[last]
        else:
            state[last] = value

    return apply


BG, SS = "bit_generator", "seed_sequence"
MT_ZEROS = {"__ndarray__": "uint32", "values": [0] * 624}


# What NumPy's state setters took unchecked, and what it did then: MT19937's pos past its
# key crashed the first draw (SIGSEGV), a key of zeros drew only zeros (integers() never
# returned), a huge pool_size hashed for minutes, the rest drew silently wrong numbers.
@pytest.mark.parametrize(
    ("make", "edit", "match"),
    [
        (np.random.MT19937, _edit([BG, "state", "pos"], 10**6),
         r"`state\['bit_generator'\]\['state'\]\['pos'\]` must be an int in \[0, 624\]; "
         r"got 1000000 \(int\)"),
        (np.random.MT19937, _edit([BG, "state", "pos"], -1), r"\['pos'\]` must be an int in"),
        (np.random.MT19937, _edit([BG, "state", "key"], MT_ZEROS),
         r"\['key'\]` must be an MT19937 key with a non-zero bit .*; got a key of zeros"),
        (np.random.MT19937, _edit([BG, "state", "key", "values", 3], 2**32),
         r"\['key'\]\['values'\]\[3\]` must be an int in \[0, 4294967295\]"),
        (np.random.MT19937, _edit([BG, "state", "key", "values", 3], 1.5),
         r"\['values'\]\[3\]` must be an int .*; got 1.5 \(float\)"),
        (np.random.MT19937, _edit([BG, "state", "key", "__ndarray__"], "object"),
         r"\['key'\]\['__ndarray__'\]` must be 'uint32'; got 'object' \(str\)"),
        (np.random.PCG64, _edit([BG, "state", "inc"], 2**100),
         r"\['inc'\]` must be an odd int \(PCG's increment\)"),
        (np.random.PCG64DXSM, _edit([BG, "state", "state"], 2**128),
         r"\['state'\]\['state'\]` must be an int in \[0, 3402\d+\]"),
        (np.random.PCG64, _edit([BG, "has_uint32"], 2),
         r"\['has_uint32'\]` must be an int in \[0, 1\]"),
        (np.random.PCG64, _edit([BG, "uinteger"], 2**32), r"\['uinteger'\]` must be an int in"),
        (np.random.PCG64, _edit([BG, "uinteger"], True), r"got True \(bool\)"),
        (np.random.PCG64, _edit([BG, "extra"], 1),
         r"`state\['bit_generator'\] \(a PCG64 state\)` must be a dict with the keys "
         r"bit_generator, state, has_uint32, uinteger; got the keys .*'extra'"),
        (np.random.Philox, _edit([BG, "buffer_pos"], 5),
         r"\['buffer_pos'\]` must be an int in \[0, 4\]"),
        (np.random.Philox, _edit([BG, "buffer_pos"], -1), r"\['buffer_pos'\]` must be an int in"),
        (np.random.Philox, _edit([BG, "state", "counter", "values"], [1, 2, 3]),
         r"\['counter'\]\['values'\]` must be a list of 4 ints in \[0, 2\*\*64\)"),
        (np.random.Philox, _edit([BG, "state", "key", "__ndarray__"], "uint32"),
         r"\['key'\]\['__ndarray__'\]` must be 'uint64'"),
        (np.random.Philox, _edit([BG, "buffer", "extra"], 0),
         r"\['buffer'\]` must be a dict with the keys __ndarray__, values"),
        (np.random.SFC64, _edit([BG, "state", "state"], [1, 2, 3, 4]),
         r"\['state'\]\['state'\]` must be a dict with the keys __ndarray__, values; "
         r"got a list of length 4"),
        (np.random.SFC64, _edit([BG, "state", "state", "__ndarray__"], "object"),
         r"must be 'uint64'; got 'object' \(str\)"),
        (np.random.PCG64, _edit([SS, "pool_size"], 10_000),
         r"`state\['seed_sequence'\]\['pool_size'\]` must be an int in \[4, 256\] "
         r"\(NumPy's default is 4\); got 10000 \(int\)"),
        (np.random.PCG64, _edit([SS, "pool_size"], 3), r"\['pool_size'\]` must be an int in"),
        (np.random.PCG64, _edit([SS, "n_children_spawned"], 2**32),
         r"\['n_children_spawned'\]` must be an int in \[0, 4294967295\]"),
        (np.random.PCG64, _edit([SS, "spawn_key"], [1, -1]), r"\['spawn_key'\]\[1\]` must be"),
        (np.random.PCG64, _edit([SS, "entropy"], 2 ** (32 * 5000)),
         r"\['entropy'\]` must be an int >= 0 or a list .*; got 5001 words"),
        (np.random.PCG64, _edit([SS, "entropy"], ["1"]), r"\['entropy'\]` must be an int >= 0"),
        (np.random.PCG64, _edit([SS, "extra"], 0),
         r"`state\['seed_sequence'\]` must be a dict with the keys entropy, spawn_key, "
         r"pool_size, n_children_spawned; got the keys .*'extra'"),
    ],
    ids=[
        "mt-pos-huge", "mt-pos-negative", "mt-key-zeros", "mt-key-word", "mt-key-float",
        "mt-dtype-object", "pcg-even-inc", "pcg-state-129-bits", "has-uint32-2",
        "uinteger-33-bits", "uinteger-bool", "extra-key", "philox-buffer-pos-5",
        "philox-buffer-pos-negative", "philox-counter-short", "philox-key-dtype",
        "tagged-extra-key", "sfc64-untagged", "sfc64-dtype-object", "pool-size-huge",
        "pool-size-small", "children-33-bits", "spawn-key-negative", "entropy-huge",
        "entropy-str", "seed-sequence-extra-key",
    ],
)  # fmt: skip
def test_rng_from_state_checks_every_field(make, edit, match):
    state = json.loads(json.dumps(rio.numpy_rng_state(np.random.Generator(make(11)))))
    edit(state)
    with pytest.raises(ValueError, match=match):
        rio.rng_from_state(state)


def test_rng_from_state_refuses_zero_mt_key_before_a_draw_hangs():
    # Only the low 31 bits of key[0] are outside MT19937's recurrence: they alone draw zeros.
    state = rio.numpy_rng_state(np.random.Generator(np.random.MT19937(0)))
    state["bit_generator"]["state"]["key"]["values"] = [0x7FFFFFFF] + [0] * 623
    with pytest.raises(ValueError, match=r"got a key of zeros"):
        rio.rng_from_state(state)
    state["bit_generator"]["state"]["key"]["values"] = [0x80000000] + [0] * 623  # NumPy's seed
    rio.rng_from_state(state).integers(0, 10, 5)


def test_rng_from_state_mt_pos_past_key_is_refused_not_a_crash():
    # In a child process: NumPy read past the key on the first draw and the process died.
    code = (
        "import json, numpy as np\n"
        "from rnnlab import io as rio\n"
        "state = rio.numpy_rng_state(np.random.Generator(np.random.MT19937(0)))\n"
        "state['bit_generator']['state']['pos'] = 10**6\n"
        "try:\n"
        "    rng = rio.rng_from_state(json.loads(json.dumps(state)))\n"
        "except ValueError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    print('drew', rng.random(3))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "['pos']` must be an int in [0, 624]" in done.stdout


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.random.Generator(np.random.PCG64(np.random.SeedSequence(9, pool_size=8))),
        lambda: np.random.default_rng(5).spawn(3)[2].spawn(2)[1].spawn(1)[0],
        lambda: np.random.Generator(np.random.Philox(key=2**100 + 3)),  # no SeedSequence
        lambda: np.random.Generator(np.random.MT19937(np.random.SeedSequence([]))),
        lambda: np.random.Generator(np.random.SFC64(2**4000)),
    ],
    ids=["pool-size-8", "spawned-thrice", "philox-key", "empty-entropy", "big-entropy"],
)
def test_rng_state_round_trips_at_the_edges(make):
    rng = make()
    draws(rng)
    restored = rio.rng_from_state(json.loads(json.dumps(rio.numpy_rng_state(rng))))
    for a, b in zip(draws(rng), draws(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    if rng.bit_generator.seed_seq is not None:
        for a, b in zip(rng.spawn(2), restored.spawn(2), strict=True):
            np.testing.assert_array_equal(a.random(4), b.random(4))


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 5, 15, 0)


def test_make_run_dir_is_unique(tmp_path):
    base = tmp_path / "runs"
    paths = [rio.make_run_dir(base, "charlm", now=NOW) for _ in range(3)]
    assert [p.name for p in paths] == [
        "charlm-20261122-051500",
        "charlm-20261122-051500-2",
        "charlm-20261122-051500-3",
    ]
    assert all(p.is_dir() and not any(p.iterdir()) for p in paths)
    assert not rio.is_run_dir(paths[0])
    run = rio.make_run_dir(base, "digits", config={"hidden": 64})
    assert rio.is_run_dir(run) and rio.read_json(run / "config.json") == {"hidden": 64}


def test_make_run_dir_defaults_to_runs_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = rio.make_run_dir(None, "x", now=NOW)
    assert run == Path("runs") / "x-20261122-051500" and (tmp_path / run).is_dir()


def test_make_run_dir_errors(tmp_path):
    for bad in ["", "a/b", ".hidden", "a b", 3]:
        with pytest.raises(ValueError, match=r"`name_hint` must be a name of letters, digits"):
            rio.make_run_dir(tmp_path, bad)
    (tmp_path / "file").write_text("")
    with pytest.raises(
        RunDirError, match=r"`base` must be a directory; got '.*file', which is not a directory"
    ):
        rio.make_run_dir(tmp_path / "file", "x")
    with pytest.raises(ValueError, match=r"`config\['lr'\]` must be JSON data; got nan"):
        rio.make_run_dir(tmp_path, "x", config={"lr": float("nan")})
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_open_run_dir(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    cases = [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("empty", "has no config.json"),
    ]
    for name, why in cases:
        path = tmp_path / name
        assert not rio.is_run_dir(path)
        with pytest.raises(
            RunDirError,
            match=rf"^`run` must be a run directory \(with config.json\); "
            rf"got '{path}', which {why} instead.$",
        ):
            rio.open_run_dir(path)
    rio.atomic_write_json(tmp_path / "empty" / "config.json", {})
    assert rio.open_run_dir(str(tmp_path / "empty")) == tmp_path / "empty"


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

CONFIG = {"cell": "lstm", "hidden": 8}


def weights(step):
    """Model and optimizer tensors whose values identify the step."""
    model = {"weight_hh_l0": np.full((4, 2), step, np.float32), "bias_hh_l0": np.arange(4.0) + step}
    optimizer = {"m.weight_hh_l0": np.full((4, 2), -step, np.float32), "t": np.array(step)}
    return model, optimizer


def save(run, step, keep=3, **extra):
    model, optimizer = weights(step)
    return rio.save_checkpoint(
        run,
        step,
        model=model,
        optimizer=optimizer,
        state={"step": step, "epoch": step // 10, **extra},
        config=CONFIG,
        keep=keep,
    )


def assert_checkpoint(checkpoint, step):
    model, optimizer = weights(step)
    assert checkpoint.step == step and checkpoint.path.name == f"step-{step:08d}"
    assert_same(checkpoint.model, model)
    assert_same(checkpoint.optimizer, optimizer)
    assert checkpoint.state["step"] == step and checkpoint.config == CONFIG


def test_checkpoint_round_trip(tmp_path):
    run = tmp_path / "run"
    path = save(run, 100, best=0.25)
    assert path == run / "checkpoints" / "step-00000100"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "hashes.json",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    assert (run / "checkpoints" / "latest").read_text() == "step-00000100\n"
    assert rio.is_run_dir(run)
    assert rio.read_json(run / "config.json") == CONFIG
    assert_same(rio.load_safetensors(run / "model.safetensors")[0], weights(100)[0])
    save(run, 200)
    checkpoint = rio.load_checkpoint(run)
    assert isinstance(checkpoint, rio.Checkpoint)
    assert_checkpoint(checkpoint, 200)
    assert_checkpoint(rio.load_checkpoint(str(run), step=100), 100)
    assert rio.load_checkpoint(run, 100).state == {"step": 100, "epoch": 10, "best": 0.25}
    assert_same(rio.load_safetensors(run / "model.safetensors")[0], weights(200)[0])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest",
        "step-00000100",
        "step-00000200",
    ]
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.json",
        "model.safetensors",
    ]


def test_resume_is_bit_exact_with_the_rng_in_the_state(tmp_path):
    rng = np.random.default_rng(11)
    rng.standard_normal(10)
    save(tmp_path, 5, rng=rio.numpy_rng_state(rng))
    expected = rng.standard_normal(10)
    resumed = rio.rng_from_state(rio.load_checkpoint(tmp_path).state["rng"])
    np.testing.assert_array_equal(resumed.standard_normal(10), expected)


@pytest.mark.parametrize("keep,kept", [(3, [3, 4, 5]), (1, [5]), (None, [1, 2, 3, 4, 5])])
def test_keep_the_last_n(tmp_path, keep, kept):
    for step in range(1, 6):
        save(tmp_path, step, keep=keep)
    assert rio.checkpoint_steps(tmp_path) == kept
    assert rio.load_checkpoint(tmp_path).step == 5
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_resaving_a_step_and_saving_an_earlier_step(tmp_path):
    for step in (100, 200, 300):
        save(tmp_path, step)
    model, optimizer = weights(7)
    rio.save_checkpoint(
        tmp_path, 200, model=model, optimizer=optimizer, state={"step": 200}, config=CONFIG
    )
    assert rio.checkpoint_steps(tmp_path) == [100, 200, 300]
    assert rio.load_checkpoint(tmp_path).step == 200
    assert_same(rio.load_checkpoint(tmp_path).model, model)
    # A run resumed from an earlier step: the new checkpoint is always kept, and is the latest.
    save(tmp_path, 150, keep=2)
    assert rio.checkpoint_steps(tmp_path) == [150, 300]
    assert_checkpoint(rio.load_checkpoint(tmp_path), 150)


def test_only_the_names_save_checkpoint_writes_are_checkpoints(tmp_path):
    """A directory "step-000000050" (one zero more than save_checkpoint writes) was taken for
    step 50; pruning it then renamed "step-00000050", which is not there, and every save of
    the run failed with a FileNotFoundError. A `latest` naming it was followed the same way."""
    for step in (50, 60):
        save(tmp_path, step)
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(checkpoints / "step-00000050", checkpoints / "step-000000040")
    assert rio.checkpoint_steps(tmp_path) == [50, 60]
    for step in (70, 80, 90):
        save(tmp_path, step, keep=2)
    assert rio.checkpoint_steps(tmp_path) == [80, 90]
    assert (checkpoints / "step-000000040").is_dir()  # not rnnlab's: left alone
    (checkpoints / "latest").write_text("step-000000080\n")
    with pytest.raises(CheckpointError, match=r"'.*latest' must name a checkpoint like "
                       r"'step-00000100'; it holds 'step-000000080'"):  # fmt: skip
        rio.load_checkpoint(tmp_path)


def _fail_on_call(n, real):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("where", ["optimizer file", "state.json", "rename", "latest"])
def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    save(tmp_path, 100)
    ckpt = tmp_path / "checkpoints"
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    if where == "optimizer file":  # model.safetensors written, optimizer.safetensors not
        monkeypatch.setattr(rtensors, "write", _fail_on_call(2, rtensors.write))
    elif where == "state.json":  # both safetensors files written, state.json not
        monkeypatch.setattr(runs, "_write_durably", _fail_on_call(1, runs._write_durably))
    elif where == "rename":  # everything written, the directory not yet renamed into place
        real_rename = os.rename

        def rename(src, dst):
            if Path(dst).name.startswith("step-"):
                raise RuntimeError("interrupted")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", rename)
    else:  # the new directory is in place, `latest` not yet rewritten

        def latest(path, text):
            raise RuntimeError("interrupted")

        monkeypatch.setattr(runs, "atomic_write_text", latest)
    with pytest.raises(RuntimeError, match="interrupted"):
        save(tmp_path, 200, keep=1)
    monkeypatch.undo()

    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    new = {p for p in after if "step-00000200" in str(p)}
    if where == "latest":  # (the run's copies at the top were of the complete step 200 first)
        new |= {Path("config.json"), Path("model.safetensors")}
        assert rio.load_weights_and_step(tmp_path / "model.safetensors")[1] == 200
    assert {p: after[p] for p in after if p not in new} == {
        p: before[p] for p in before if p not in new}  # fmt: skip
    assert_checkpoint(rio.load_checkpoint(tmp_path), 100)
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]  # temporaries removed
    assert rio.checkpoint_steps(tmp_path) == ([100, 200] if where == "latest" else [100])
    # The next save succeeds and prunes as usual.
    save(tmp_path, 300, keep=1)
    assert rio.checkpoint_steps(tmp_path) == [300]
    assert_checkpoint(rio.load_checkpoint(tmp_path), 300)


def test_latest_names_a_step_only_once_the_run_s_model_is_of_it(tmp_path, monkeypatch):
    """`latest` was rewritten before the top-level model.safetensors: a crash between left
    the run's model a checkpoint behind, for good where the step was the run's last (the
    resume of a finished run trains and saves nothing; found killing `rnnlab train` at
    each file operation of a run, then resuming it). Evaluate, export and sample read that
    model once checkpoints/ is removed, as a finished run allows."""
    save(tmp_path, 100)

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(runs.tensors, "save_weights", killed)
    with pytest.raises(RuntimeError, match="killed"):
        save(tmp_path, 200)
    monkeypatch.undo()
    top = rio.load_weights_and_step(tmp_path / "model.safetensors")[1]
    assert rio.load_checkpoint(tmp_path).step == top == 100


def _disk_full_on_call(n, real):
    """`real` (os.fsync, os.replace...) that fails from its `n`-th call on as on a full disk:
    an OSError of errno ENOSPC, without a file name (as a write to an open file fails)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) >= n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("call,n,file", [
    ("fsync", 1, "step-00000200/model.safetensors"),
    ("fsync", 2, "step-00000200/optimizer.safetensors"),
    ("fsync", 3, "step-00000200/state.json"),
    ("fsync", 5, "step-00000200/hashes.json"),
    ("fsync", 6, "step-00000200"),  # the temporary directory
    ("replace", 2, "model.safetensors"),  # the run's copy at the top
    ("replace", 3, "latest"),  # (the last write: it names the step once all is in place)
])  # fmt: skip
def test_a_full_disk_while_saving_names_the_file_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, call, n, file
):
    """A full disk said "[Errno 28] No space left on device" and no file (or the name of a
    temporary): the error names the file as the checkpoint has it, keeps the errno, and the
    checkpoint before is what loads."""
    save(tmp_path, 100)
    monkeypatch.setattr(os, call, _disk_full_on_call(n, getattr(os, call)))
    with pytest.raises(OSError) as caught:
        save(tmp_path, 200, keep=1)
    monkeypatch.undo()
    where = tmp_path / ("checkpoints" if file != "model.safetensors" else "") / file
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno 28] cannot write '{where}' (No space left on device)"
    assert_checkpoint(rio.load_checkpoint(tmp_path), 100)
    save(tmp_path, 300, keep=1)
    assert rio.checkpoint_steps(tmp_path) == [300]
    assert [p.name for p in tmp_path.rglob(".*")] == []


def test_weights_with_a_step_and_a_hash_are_the_same_bytes_every_time(tmp_path):
    """save_weights' metadata (the step and the SHA-256) came out in the order of the
    package's hash map, which changes from call to call: the same weights made files of other
    bytes (a resumed reproduce row's model.safetensors against the uninterrupted row's)."""
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)}
    files = []
    for i in range(12):
        rio.save_weights(tmp_path / f"w{i}.safetensors", arrays, step=60)
        files.append((tmp_path / f"w{i}.safetensors").read_bytes())
    assert len(set(files)) == 1
    loaded, step = rio.load_weights_and_step(tmp_path / "w0.safetensors")
    assert step == 60 and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)


@pytest.mark.parametrize("recorded", ["\u00b2", "\u0663", "9" * 5000, "abc", "-1", "05", " 5"])
def test_a_step_not_as_save_weights_writes_it_is_refused_naming_the_file(tmp_path, recorded):
    """The step in a weights file's metadata is decimal ASCII digits, as save_weights writes
    it. '\u00b2' passed str.isdigit and failed in int() ("invalid literal", no file named:
    rnnlab evaluate of a run whose checkpoints were removed said only that), 5000 digits
    likewise; '\u0663' (an Arabic-Indic 3) was read as step 3 and '05' as step 5, each then
    refused as 'not of step 3/5'; 'abc' was said as a file from before steps were recorded."""
    arrays = {"w": np.arange(3, dtype=np.float32)}
    path = tmp_path / "model.safetensors"
    path.write_bytes(st.save(arrays, metadata={"step": recorded}))
    said = rf"^'{path}' records the step '.+ in its metadata; expected a non-negative integer"
    for load in (rio.load_weights_and_step, rio.load_weights,
                 lambda p: rio.load_weights(p, step=5)):  # fmt: skip
        with pytest.raises(CheckpointError, match=said):
            load(path)
    (tmp_path / "config.json").write_text("{}")  # (a run whose checkpoints were removed)
    with pytest.raises(CheckpointError, match=said):
        rio.load_top_level(tmp_path)


def test_save_weights_refuses_a_step_it_could_not_record(tmp_path):
    """int() truncated 1.7 to step 1 and took True as step 1; 'x' was int()'s ValueError;
    -1 was written, then read back as no step; 10^18 was written, then refused by
    load_weights (its 19 digits are more than a recorded step has)."""
    arrays = {"w": np.arange(3, dtype=np.float32)}
    for step in (1.7, True, "x", -1, np.float64(2.0), 10**18):
        with pytest.raises(ValueError, match=r"^`step` must be None or an integer from 0 to "
                           r"999,999,999,999,999,999 \(what a weights file's metadata records "
                           r"and load_weights reads back\); "
                           rf"got {re.escape(rio.describe(step))} instead\.$"):  # fmt: skip
            rio.save_weights(tmp_path / "w.safetensors", arrays, step=step)
    assert list(tmp_path.iterdir()) == []
    for step in (np.int64(7), 10**18 - 1):
        rio.save_weights(tmp_path / "w.safetensors", arrays, step=step)
        assert rio.load_weights_and_step(tmp_path / "w.safetensors")[1] == step


def test_a_checkpoint_puts_the_metrics_logged_before_it_on_disk_first(tmp_path, monkeypatch):
    """The log is appended without fsync; a checkpoint of step 200 on disk while the losses
    logged up to it are still in the page cache would, after a power cut, resume at 200 with
    a log that ends earlier (a resume logs again only from its checkpoint on)."""
    rio.append_jsonl(tmp_path / "metrics.jsonl", {"step": 200, "loss": 1.0})
    synced = []
    real_fsync = os.fsync

    def recording(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    save(tmp_path, 200)
    monkeypatch.undo()
    assert "metrics.jsonl" in synced
    assert synced.index("metrics.jsonl") < synced.index("model.safetensors")


def test_a_full_disk_while_appending_metrics_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    rio.append_jsonl(path, {"step": 1})
    real_open = os.fdopen

    def full_file(fd, mode):
        f = real_open(fd, mode)

        class Full:
            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return Full()

    monkeypatch.setattr(os, "fdopen", full_file)
    with pytest.raises(OSError, match=rf"^\[Errno 28\] cannot write '{path}' \(No space left"):
        rio.append_jsonl(path, {"step": 2})


def test_a_killed_save_leaves_a_temporary_that_is_ignored_then_removed(tmp_path):
    save(tmp_path, 100)
    ckpt = tmp_path / "checkpoints"
    tmp = ckpt / ".tmp-step-00000200-deadbeef"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\x10\x00")  # half written when killed
    assert rio.checkpoint_steps(tmp_path) == [100]
    assert_checkpoint(rio.load_checkpoint(tmp_path), 100)
    save(tmp_path, 200)
    assert not tmp.exists()


def test_latest_missing_falls_back_to_the_highest_step(tmp_path):
    save(tmp_path, 100)
    save(tmp_path, 200)
    (tmp_path / "checkpoints" / "latest").unlink()
    assert rio.load_checkpoint(tmp_path).step == 200


@pytest.mark.parametrize(
    "damage,match",
    [
        (
            lambda c: (c / "model.safetensors").write_bytes(
                (c / "model.safetensors").read_bytes()[:-3]
            ),
            r"'.*step-00000100/model.safetensors' is not a valid safetensors file: .*truncated",
        ),
        (
            lambda c: (c / "optimizer.safetensors").write_bytes(b"\x00" * 4),
            r"'.*step-00000100/optimizer.safetensors' is not a valid safetensors file: "
            r"it has 4 bytes",
        ),
        (
            lambda c: (c / "optimizer.safetensors").unlink(),
            r"The checkpoint file '.*step-00000100/optimizer.safetensors' is missing \(incomplete",
        ),
        (
            lambda c: (c / "state.json").write_text('{"step": 100,\n'),
            r"'.*step-00000100/state.json' is not valid JSON: .* at line 2, column 1",
        ),
        (
            lambda c: (c / "config.json").write_text("[1]"),
            r"'.*step-00000100/config.json' must hold a JSON object, not list",
        ),
        (
            lambda c: (c / "state.json").unlink(),
            r"The checkpoint file '.*step-00000100/state.json' is missing",
        ),
        (  # (it was said to be missing)
            lambda c: ((c / "config.json").unlink(), (c / "config.json").mkdir()),
            r"The checkpoint file '.*step-00000100/config.json' is a directory, not a file "
            r"written by rnnlab \(a damaged checkpoint\)",
        ),
        pytest.param(
            lambda c: ((c / "state.json").unlink(), os.mkfifo(c / "state.json")),
            r"The checkpoint file '.*step-00000100/state.json' is a FIFO, device or socket",
            marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's"),
        ),
        (
            lambda c: (c.parent / "latest").write_text("garbage\n"),
            r"'.*checkpoints/latest' must name a checkpoint like 'step-00000100'; "
            r"it holds 'garbage'",
        ),
        (
            lambda c: (c.parent / "latest").write_text("step-00000900\n"),
            r"'.*checkpoints/latest' names step-00000900 but '.*step-00000900' does not exist\. "
            r"To go back to the checkpoint step-00000100, write step-00000100 into",
        ),
    ],
)
def test_corrupt_checkpoints_name_the_file(tmp_path, damage, match):
    save(tmp_path, 100)
    damage(tmp_path / "checkpoints" / "step-00000100")
    with pytest.raises(CheckpointError, match=match):
        rio.load_checkpoint(tmp_path)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(
        RunDirError,
        match=r"`run` must be a run directory \(with config.json\); "
        r"got '.*', which has no config.json",
    ):
        rio.load_checkpoint(tmp_path)
    rio.atomic_write_json(tmp_path / "config.json", CONFIG)
    with pytest.raises(CheckpointError, match=r"The run directory '.*' has no checkpoints"):
        rio.load_checkpoint(tmp_path)
    save(tmp_path, 100)
    save(tmp_path, 200)
    with pytest.raises(
        ValueError,
        match=r"`step` must be None or a saved step of '.*' \(saved: 100, 200\); got 150 \(int\)",
    ):
        rio.load_checkpoint(tmp_path, step=150)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"step": -1}, r"`step` must be a non-negative integer; got -1"),
        ({"step": True}, r"`step` must be a non-negative integer; got True"),
        ({"keep": 0}, r"`keep` must be None or a positive integer; got 0"),
        ({"model": [np.zeros(1)]}, r"`model` must be a dict of str -> NumPy array; got a list"),
        (
            {"optimizer": {"m": np.zeros(1, np.complex64)}},
            r"`optimizer\['m'\]` must be an array of dtype",
        ),
        (
            {"state": {"rng": np.random.default_rng(0)}},
            r"`state\['rng'\]` must be JSON data .*Generator",
        ),
        (
            {"state": {"h": np.zeros(3)}},
            r"`state\['h'\]` must be JSON data .*Arrays belong in safetensors",
        ),
        ({"config": None}, r"`config` must be a dict of JSON data; got None"),
    ],
)
def test_save_checkpoint_refuses_bad_arguments_before_touching_the_disk(tmp_path, kwargs, match):
    model, optimizer = weights(1)
    args = {
        "step": 1,
        "model": model,
        "optimizer": optimizer,
        "state": {},
        "config": CONFIG,
        **kwargs,
    }
    step = args.pop("step")
    with pytest.raises(ValueError, match=match):
        rio.save_checkpoint(tmp_path / "run", step, **args)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("part", ["model", "optimizer"])
def test_a_flipped_byte_in_a_weights_file_is_noticed(tmp_path, part):
    """A flipped byte inside a weight is still valid safetensors; the SHA-256 the checkpoint
    recorded notices it."""
    path = save(tmp_path, 100)
    file = path / f"{part}.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor's data
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"'.*{part}.safetensors' does not match the "
                       r"SHA-256 its checkpoint recorded in hashes.json"):  # fmt: skip
        rio.load_checkpoint(tmp_path)


def test_a_checkpoint_from_before_hashes_still_loads(tmp_path):
    """Checkpoints saved before hashes.json existed load as they did (unchecked)."""
    path = save(tmp_path, 100)
    (path / "hashes.json").unlink()
    assert_checkpoint(rio.load_checkpoint(tmp_path), 100)


@pytest.mark.parametrize("name", ["metrics.jsonl", "checkpoints"])
def test_symlinks_in_a_run_directory_are_not_written_through(tmp_path, name):
    """A planted link must not make rnnlab append to, or write into, what it points to."""
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / ("victim.txt" if name == "metrics.jsonl" else "victim")
    if name == "metrics.jsonl":
        target.write_text("precious\n")
    else:
        target.mkdir()
    (run / name).symlink_to(target)
    with pytest.raises(RunDirError, match=r"symbolic link"):
        if name == "metrics.jsonl":
            rio.append_jsonl(run / name, {"step": 1})
        else:
            save(run, 1)
    if name == "metrics.jsonl":
        assert target.read_text() == "precious\n"
    else:
        assert list(target.iterdir()) == []


def test_orphaned_temporary_files_are_removed_by_the_next_save(tmp_path, monkeypatch):
    """A save removes the temporaries a crash left of what it writes itself: the top-level
    config.json and model.safetensors, checkpoints/latest, and a checkpoint's temporary
    directory, which holds the safetensors package's own temporaries (.tmpXXXXXX) of the
    checkpoint's weights: the package writes nowhere else in a save (the top-level model is
    encoded in memory and written through rnnlab's own temporary). The rest is left to the
    clean-up at a run's start (Trainer.run, under the run's lock): remove_orphans(run)."""
    run = tmp_path / "run"
    save(run, 1)
    crashed = run / "checkpoints" / ".tmp-step-00000002-0123abcd"
    crashed.mkdir()
    orphans = [run / ".model.safetensors.0123abcd.tmp", run / ".config.json.0123abcd.tmp",
               run / "checkpoints/.latest.deadbeef.tmp", crashed / ".tmpY5FPVa"]  # fmt: skip
    for p in orphans:
        p.write_bytes(b"half a file")
    keep = run / ".notes.tmp"  # not ours: left alone
    keep.write_text("x")
    others = [run / ".model.onnx.0123abcd.tmp", run / ".tmpY5FPVa"]  # (an export's, say)
    for p in others:
        p.write_bytes(b"half a file")
    written = []
    save_file = safetensors.numpy.save_file
    monkeypatch.setattr(safetensors.numpy, "save_file",
                        lambda arrays, path, **kw: (written.append(Path(path)),
                                                    save_file(arrays, path, **kw)))  # fmt: skip
    save(run, 3)
    assert not any(p.exists() for p in orphans) and not crashed.exists() and keep.exists()
    assert written and all(p.parent.name.startswith(".tmp-step-00000003-") for p in written)
    assert all(p.exists() for p in others)
    assert sorted(rio.remove_orphans(run)) == sorted(others) and keep.exists()


def test_a_save_leaves_the_temporary_files_of_another_process_s_write_alone(tmp_path):
    """Every save removed every temporary file in the run directory: `rnnlab export RUN`
    writing RUN/model.onnx while the run trained failed with "cannot write 'RUN/model.onnx'
    (No such file or directory)" when a checkpoint was saved during its write, and so did an
    export to safetensors (the package's own temporary, .tmpXXXXXX, beside it) or a result
    written by `rnnlab evaluate`. A save removes only the temporaries of its own files."""
    run = tmp_path / "run"
    save(run, 1)
    with files.atomic_path(run / "model.onnx") as tmp:  # (an export's write, in progress)
        tmp.write_bytes(b"graph")
        package = run / ".tmpAbC123"  # the package's, writing RUN/model.torch.safetensors
        package.write_bytes(b"half of it")
        with files.atomic_path(run / "result.json") as result:
            result.write_text("{}")
            save(run, 2)
        assert package.exists()
    assert (run / "model.onnx").read_bytes() == b"graph"
    assert (run / "result.json").read_text() == "{}"


def test_a_write_whose_temporary_file_was_removed_says_so(tmp_path):
    """A run's start still removes every temporary file in its directory (it cannot tell an
    interrupted write's from a write in progress of a process that holds no lock, an export):
    the writer said "cannot write 'RUN/model.onnx' (No such file or directory)", with RUN
    there. It says what happened and what to do."""
    with pytest.raises(OSError) as e:
        with files.atomic_path(tmp_path / "m.onnx") as tmp:
            tmp.write_bytes(b"graph")
            assert rio.remove_orphans(tmp_path) == [tmp]
    assert e.value.errno == errno.ENOENT and list(tmp_path.iterdir()) == []
    assert e.value.strerror == (f"cannot write '{tmp_path / 'm.onnx'}': its temporary file "
                                f"'{tmp}' was removed while it was written, by another process "
                                "(`rnnlab train` starting a run there removes the temporary "
                                "files of interrupted writes); write it again")  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's")
def test_the_training_lock_refuses_a_fifo_in_its_place(tmp_path):
    """A FIFO at RUN/.rnnlab-lock took the lock, then failed writing the pid: rnnlab train
    --resume said 'rnnlab: error: [Errno 22] Invalid argument', naming no file."""
    os.mkfifo(tmp_path / rio.LOCK_NAME)
    with hang_guard(10), pytest.raises(RunDirError, match=rf"^'{tmp_path / rio.LOCK_NAME}' must "
                                       r"be a regular file \(the lock rnnlab holds while it trains "
                                       r"the run\); it is a FIFO: remove it and train again\.$"):
        with rio.training_lock(tmp_path):
            pass
    (tmp_path / rio.LOCK_NAME).unlink()
    with rio.training_lock(tmp_path):  # (and an ordinary one is made and held)
        assert (tmp_path / rio.LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_keep_jsonl_until_drops_the_steps_a_resumed_run_writes_again(tmp_path):
    path = tmp_path / "m.jsonl"
    for step in (10, 20, 30, 30, 40):
        rio.append_jsonl(path, {"step": step})
    rio.append_jsonl(path, {"note": "no step"})
    assert rio.keep_jsonl_until(path, 30) == 1
    assert rio.read_jsonl(path) == [{"step": 10}, {"step": 20}, {"step": 30}, {"step": 30},
                                    {"note": "no step"}]  # fmt: skip
    assert rio.keep_jsonl_until(tmp_path / "missing.jsonl", 3) == 0


def test_keep_jsonl_until_refuses_a_log_that_is_no_regular_file(tmp_path):
    """A FIFO or a directory at metrics.jsonl was passed over as a missing file: the run's
    appends failed on it ("File or stream is not seekable", "Is a directory") only once
    steps had trained and a checkpoint was saved. Refused here, at the start of Trainer.run."""
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    for name, what in (("fifo.jsonl", "a FIFO, device or socket"), ("dir.jsonl", "a directory")):
        with pytest.raises(RunDirError, match=rf"^`path` must be a regular file \(a JSON Lines "
                           rf"log\); got '.*{name}', {what} instead\.$"):  # fmt: skip
            rio.keep_jsonl_until(tmp_path / name, 3)
    assert (tmp_path / "fifo.jsonl").is_fifo() and (tmp_path / "dir.jsonl").is_dir()


def test_a_write_that_fails_names_the_file_it_was_for(tmp_path, monkeypatch):
    """A full disk inside safetensors (its own exception type) and a folder that is not
    there both come out as an OSError naming the file being written, not a temporary's
    name or a traceback of another library's type."""
    from rnnlab.io import tensors

    def full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left")

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError, match="could not be written: .*No space left"):
        tensors.save(target, {"w": np.zeros(3, np.float32)})
    assert not target.exists() and list(tmp_path.iterdir()) == []  # no temporary left
    missing = tmp_path / "gone" / "config.json"
    with pytest.raises(OSError, match=f"cannot write '{missing}'"):
        rio.atomic_write_json(missing, {"a": 1})
