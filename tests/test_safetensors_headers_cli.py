"""`rnnlab evaluate` on a run whose weights have a hostile safetensors header: one error line
naming the file (json's RecursionError and NumPy's "array is too big" escaped without it)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from helpers import hang_guard

from rnnlab.cli import main

TINY = ["--hidden", "4", "--batch-size", "2", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("headers")
    with hang_guard(180):
        assert main(["train", "adding", "--T", "5", "--steps", "2",
                     "--run-dir", str(base / "run"), *TINY]) == 0  # fmt: skip
    return base / "run"


def _header(text: bytes) -> bytes:
    return len(text).to_bytes(8, "little") + text


HOSTILE = [
    ("nested", _header(b"[" * 100_000 + b"]" * 100_000), r"the header is nested too deeply\."),
    (
        "empty tensor too big",
        _header(
            json.dumps(
                {"w": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}
            ).encode()
        ),
        r"tensor 'w' of shape \[0, 4611686018427387904, 4611686018427387904\] and dtype F32 is "
        r"too big for an array",
    ),
]


@pytest.mark.parametrize("data,match", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_evaluate_names_the_file_with_a_hostile_header(run, tmp_path, capsys, data, match):
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged, symlinks=True)
    for path in damaged.rglob("*.safetensors"):
        path.write_bytes(data)
    capsys.readouterr()
    with hang_guard(180):
        code = main(["evaluate", str(damaged)])
    err = capsys.readouterr().err
    assert code not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(
        rf"^rnnlab: error: '{re.escape(str(damaged))}/.*\.safetensors' is not a valid "
        rf"safetensors file: {match}",
        lines[0],
    ), err
