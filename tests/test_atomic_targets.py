"""rnnlab's atomic writes (io.atomic_path and the writers over it) refuse a path that no file
can be meant by, as the exporters do (_checks.file_to_write): the rename that ends an atomic
write replaced a FIFO or a device with a regular file, and a path ending in a separator
wrote a file named as the folder."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from rnnlab import io
from rnnlab.cli import main

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's")

WRITERS = {
    "atomic_write_text": lambda p: io.atomic_write_text(p, "x"),
    "atomic_write_bytes": lambda p: io.atomic_write_bytes(p, b"x"),
    "atomic_write_json": lambda p: io.atomic_write_json(p, {"a": 1}),
    "save_safetensors": lambda p: io.save_safetensors(p, {"w": np.zeros(2, np.float32)}),
    "save_weights": lambda p: io.save_weights(p, {"w": np.zeros(2, np.float32)}, step=1),
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("link", [False, True])
def test_a_fifo_is_refused_and_left_in_place(tmp_path, writer, link):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = fifo
    if link:  # (a link to one: the rename would replace the link, the pipe's name unchanged,
        target = tmp_path / "link"  # but the writer meant the pipe)
        target.symlink_to(fifo)
    with pytest.raises(ValueError, match=rf"^`path` must be a regular file's path \(or a new "
                       rf"one\); got '{target}', a FIFO \(named pipe\) instead\. Writing the "
                       r"file would replace it"):  # fmt: skip
        WRITERS[writer](target)
    assert stat.S_ISFIFO(target.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"pipe", target.name})


@pytest.mark.parametrize("writer", ["atomic_write_text", "atomic_write_bytes",
                                    "atomic_write_json"])  # fmt: skip
def test_a_path_ending_in_a_separator_is_a_folder_not_a_file_name(tmp_path, writer):
    with pytest.raises(ValueError, match=r"^`path` must be a file path; got '.*out/', a "
                       r"folder's path \(it ends in a separator\)"):  # fmt: skip
        WRITERS[writer](f"{tmp_path / 'out'}{os.sep}")
    assert not (tmp_path / "out").exists()


def test_a_regular_file_and_a_new_path_are_written(tmp_path):
    for name, write in WRITERS.items():
        write(tmp_path / f"new-{name}")
        (tmp_path / f"old-{name}").write_bytes(b"old")
        write(tmp_path / f"old-{name}")
        assert (tmp_path / f"old-{name}").read_bytes() != b"old"


def test_rnnlab_plot_refuses_a_fifo_where_it_writes_a_png(tmp_path, capsys):
    """`rnnlab plot RUN --out DIR` into a folder where a FIFO has a PNG's name: said, the
    FIFO kept."""
    run = tmp_path / "run"
    assert main(["train", "adding", "--T", "5", "--steps", "2", "--run-dir", str(run),
                 "--hidden", "4", "--batch-size", "4", "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "plots"
    out.mkdir()
    os.mkfifo(out / "loss.png")
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(out)]) != 0
    assert (f"rnnlab: error: `path` must be a regular file's path (or a new one); got "
            f"'{out / 'loss.png'}', a FIFO (named pipe)") in capsys.readouterr().err
    assert stat.S_ISFIFO((out / "loss.png").stat().st_mode)


def test_the_exporters_check_is_the_one_used():
    """One rule, not two copies: atomic_path's refusal is _checks.file_to_write's."""
    from rnnlab import _checks
    from rnnlab.io import files

    assert files.file_to_write is _checks.file_to_write


def test_a_file_name_of_up_to_255_bytes_is_written_and_its_leftover_found(tmp_path):
    """A temporary's name adds 14 bytes to its file's: a valid name of 242 to 255 bytes
    failed as "File name too long" (of a name that is not). Its temporary is now named after
    as much of the name as fits, and a crash's leftover of it is still found as ours."""
    from rnnlab.io import files

    for name in ("a" * 255, "é" * 127 + "x", "b" * 241):
        path = tmp_path / name
        files.atomic_write_bytes(path, b"data")
        assert path.read_bytes() == b"data"
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]
        path.unlink()
    name = "c" * 250
    stem = files._temporary_stem(name)
    assert len(stem.encode()) == 255 - 14 and name.startswith(stem)
    leftover = tmp_path / f".{stem}.0123abcd.tmp"
    leftover.write_bytes(b"torn")
    assert files.is_our_temporary(leftover)
    assert files.remove_orphans(tmp_path, names=("d" * 250,)) == []  # another file's name
    assert files.remove_orphans(tmp_path, names=(name,)) == [leftover]
