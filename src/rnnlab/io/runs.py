"""Run directories and the checkpoints in them.

A run directory holds `config.json`, `metrics.jsonl` and `checkpoints/step-XXXXXXXX/`, each
checkpoint built in a temporary directory and renamed into place, with `checkpoints/latest`
naming the newest; `model.safetensors` and `config.json` at the top level are the latest
weights and settings (after early stopping `model.safetensors` holds the best validated
weights, as `best.safetensors` does, which rnnlab.runs then reads for the run's model). A
checkpoint records the SHA-256 of its weights files (hashes.json), and an error about a
damaged one ends with the way back to an earlier one (`way_back`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shlex
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab._checks import describe, fail, read_bounded
from rnnlab.io import tensors
from rnnlab.io.files import (
    PathLike,
    RunDirError,
    as_path,
    atomic_write_bytes,
    atomic_write_text,
    decode_utf8,
    fsync_dir,
    fsync_file,
    json_text,
    naming,
    parse_json,
    read_json,
    refuse,
    remove_orphans,
)
from rnnlab.io.tensors import CheckpointError, load_safetensors

_STEP_DIR = re.compile(r"step-(\d{8,})")
_NAME_HINT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def is_run_dir(path: PathLike) -> bool:
    """True when `path` is a directory holding a config.json."""
    path = as_path(path, "path")
    return path.is_dir() and (path / "config.json").is_file()


def open_run_dir(path: PathLike) -> Path:
    """`path` as a Path, after checking that it is a run directory (RunDirError otherwise)."""
    path = as_path(path, "run")
    if not path.exists():
        why = "does not exist"
    elif not path.is_dir():
        why = "is not a directory"
    elif not (path / "config.json").is_file():
        why = "has no config.json"
    else:
        return path
    refuse(RunDirError, "run", "a run directory (with config.json)", f"'{path}', which {why}")


def make_run_dir(
    base: PathLike | None,
    name_hint: str,
    *,
    config: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Path:
    """Create a fresh directory `base/<name_hint>-YYYYMMDD-HHMMSS` and return its path.

    `base` defaults to ./runs and is created if needed. When the name is taken (two runs in the
    same second) "-2", "-3", ... is appended; the directory is created exclusively, so two
    processes never share one. With `config` its config.json is written, making it a run
    directory at once.
    """
    base = Path("runs") if base is None else as_path(base, "base")
    if not isinstance(name_hint, str) or not _NAME_HINT.fullmatch(name_hint):
        fail(
            "name_hint",
            "a name of letters, digits, '.', '_' or '-' (not starting with '.')",
            describe(name_hint),
        )
    if now is not None and not isinstance(now, datetime):
        fail("now", "None or a datetime", describe(now))
    text = None if config is None else json_text(config, "config")
    if base.exists() and not base.is_dir():
        refuse(RunDirError, "base", "a directory", f"'{base}', which is not a directory")
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{name_hint}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    suffix = 1
    while True:
        path = base / (stem if suffix == 1 else f"{stem}-{suffix}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            suffix += 1
    if text is not None:
        atomic_write_text(path / "config.json", text)
    return path


LOCK_NAME = ".rnnlab-lock"
"""The file a training process holds locked in its run directory (flock) while it trains."""


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for one training process: a second process training the same
    run (a `--resume` while it still trains) would write over its checkpoints and log, so it
    is refused, naming the process that holds it. The lock goes with the process (flock):
    a crashed run leaves nothing to clear. Where the file system has no locks (fcntl missing,
    or a mount that refuses them) training goes on without one."""
    try:
        import fcntl
    except ImportError:  # (not POSIX)
        yield
        return
    path = run_dir / LOCK_NAME
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NONBLOCK", 0))  # (a FIFO there is refused below, not waited on)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise RunDirError(f"'{path}' cannot be opened to hold the run ({e.strerror})") from None
    try:
        # A FIFO, device or socket there took the lock, then failed writing the pid
        # ('rnnlab: error: [Errno 22] Invalid argument', no file named)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or a socket"
            raise RunDirError(f"'{path}' must be a regular file (the lock rnnlab holds while it "
                              f"trains the run); it is {kind}: remove it and train again.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            raise RunDirError(
                f"'{run_dir}' is being trained by another process (pid {holder}); two "
                "processes training one run would write over each other's checkpoints and "
                "log. Wait for it to end (or stop it), then resume."
            ) from None
        except OSError:  # no locks on this file system
            pass
        else:
            with naming(path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns: the directory it read and its contents."""

    path: Path
    step: int
    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    state: dict[str, Any]
    config: dict[str, Any]


def resume_command(run_dir: PathLike) -> str:
    """`rnnlab train --resume RUN` as a shell reads it, to be pasted from a message (a run
    directory with a space split there)."""
    return f"rnnlab train --resume {shlex.quote(str(run_dir))}"


def checkpoint_steps(run_dir: PathLike) -> list[int]:
    """The steps of the complete checkpoints in `run_dir`, ascending (temporaries ignored)."""
    directory = as_path(run_dir, "run_dir") / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(s for p in directory.iterdir() if p.is_dir()
                  and (s := _step_of(p.name)) is not None)  # fmt: skip


def _step_of(name: str) -> int | None:
    """The step a checkpoint directory's `name` is of, None for any other name. Only the name
    `_step_name` writes counts: a "step-000000050" (one zero more) would be step 50, which
    save_checkpoint then looked for as "step-00000050" to prune it, and every save failed."""
    match = _STEP_DIR.fullmatch(name)
    if match is None or _step_name(int(match.group(1))) != name:
        return None
    return int(match.group(1))


def _write_durably(path: Path, data: bytes) -> None:
    """Inside the temporary checkpoint directory no file needs its own rename (renaming the
    directory is the atomic step); the bytes need only be on disk before it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    run_dir: PathLike,
    step: int,
    *,
    model: Mapping[str, np.ndarray],
    optimizer: Mapping[str, np.ndarray],
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    keep: int | None = 3,
    beside: Mapping[str, Path] | None = None,
) -> Path:
    """Save a checkpoint as `run_dir/checkpoints/step-XXXXXXXX/` and return its path.

    The directory holds model.safetensors, optimizer.safetensors, hashes.json (the SHA-256 of
    both, checked by load_checkpoint), state.json (the caller's progress: the Trainer's step,
    best metric and its step, evaluation history; no random state, as a run's draws are
    functions of its seed and step) and config.json. It is built in a
    temporary sibling and renamed into place; then the top-level config.json and
    model.safetensors are rewritten, then `checkpoints/latest`, then old checkpoints are
    pruned, each step atomic. So a crash at any point leaves the previous checkpoint and
    `latest` usable, and a `latest` naming a step means the run's files are of that step. The
    run's metrics.jsonl is put on disk first, so a checkpoint that survives a power cut has
    the log of its steps beside it.

    `keep` is how many checkpoints remain: the new one plus the `keep - 1` others with the
    highest steps (None keeps all). Saving a step that exists replaces it. `beside`: files
    copied into the checkpoint as they are now, {name in the checkpoint: path}: the run's
    best weights, which it goes on rewriting, so that a resume from this checkpoint finds
    the best it knew.
    """
    run_dir = as_path(run_dir, "run_dir")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        fail("step", "a non-negative integer", describe(step))
    step = int(step)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        fail("keep", "None or a positive integer", describe(keep))
    model_arrays, _ = tensors.checked(model, None, "model")
    optimizer_arrays, _ = tensors.checked(optimizer, None, "optimizer")
    for value, name in ((state, "state"), (config, "config")):
        if not isinstance(value, Mapping):
            fail(name, "a dict of JSON data", describe(value))
    state_text = json_text(state, "state").encode("utf-8")
    config_text = json_text(config, "config").encode("utf-8")

    if run_dir.exists() and not run_dir.is_dir():
        refuse(RunDirError, "run_dir", "a directory", f"'{run_dir}', which is not a directory")
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_symlink():
        refuse(RunDirError, "run_dir", "a run directory whose checkpoints/ is a directory",
               f"'{checkpoints}', a symbolic link",
               "rnnlab does not write through links.")  # fmt: skip
    checkpoints.mkdir(parents=True, exist_ok=True)
    # The log's records are appended without fsync (one a few steps); a checkpoint is where
    # they must be on disk too, or a power cut could keep a checkpoint of step 500 and lose
    # the losses logged up to it: a resume logs again only from the checkpoint on.
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and not metrics.is_symlink():
        with naming(metrics):
            fsync_file(metrics)
    name = _step_name(step)
    final = checkpoints / name
    tmp = checkpoints / f".tmp-{name}-{secrets.token_hex(4)}"
    with naming(final):
        tmp.mkdir()
    try:
        # (an error names the file as it will be: the temporary directory is gone by then)
        for file, arrays in (("model.safetensors", model_arrays),
                             ("optimizer.safetensors", optimizer_arrays)):  # fmt: skip
            with naming(final / file):
                tensors.write(tmp / file, arrays, name=final / file)
        for file, text in (("state.json", state_text), ("config.json", config_text)):
            with naming(final / file):
                _write_durably(tmp / file, text)
        for kept, source in (beside or {}).items():  # (copies: a hard link would share an
            data = Path(source).read_bytes()  # edit made in place)
            with naming(final / kept):
                _write_durably(tmp / kept, data)
        hashes = {f: _sha256(tmp / f) for f in ("model.safetensors", "optimizer.safetensors")}
        with naming(final / "hashes.json"):
            _write_durably(tmp / "hashes.json", json_text({"sha256": hashes}, "hashes").encode())
        with naming(final):
            fsync_dir(tmp)
            if final.exists():  # re-saving a step (a resumed run): move the old one aside first
                os.rename(final, checkpoints / f".trash-{name}-{secrets.token_hex(4)}")
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with naming(final):
        fsync_dir(checkpoints)
    atomic_write_bytes(run_dir / "config.json", config_text)
    # (with its step and hash: what the commands that read a run's model fall back to
    # where its checkpoints were removed, load_top_level)
    tensors.save_weights(run_dir / "model.safetensors", model_arrays, step=step)
    # `latest` last: once it names the step, the run's files are all of that step. Written
    # before the top-level copies, a crash between left model.safetensors a checkpoint behind
    # for good where the step was the run's last (a resume found nothing to train or save).
    atomic_write_text(checkpoints / "latest", name + "\n")

    if keep is not None:
        older = sorted((s for s in checkpoint_steps(run_dir) if s != step), reverse=True)
        for old in older[keep - 1 :]:
            # Renamed first, so that a crash mid-delete never leaves a partial "step-" dir.
            os.rename(
                checkpoints / _step_name(old),
                checkpoints / f".trash-{_step_name(old)}-{secrets.token_hex(4)}",
            )
    for leftover in checkpoints.iterdir():  # this save's trash and earlier crashed saves'
        if leftover.is_symlink():
            continue
        if leftover.is_dir() and leftover.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(leftover, ignore_errors=True)
    # the temporaries a crash left of this save's own files (its checkpoint's, with the
    # safetensors package's of its weights, went with the temporary directories above); the
    # rest, which may be another process's write in progress (an export of the run), are the
    # run's start's to remove
    remove_orphans(checkpoints, names=("latest",))
    remove_orphans(run_dir, names=("config.json", "model.safetensors"))
    return final


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(file: Path, hashes: dict[str, str] | None) -> None:
    """A weights file must have the SHA-256 its checkpoint recorded (hashes.json): a flipped
    byte in a weight is valid safetensors and would load without a word. Checkpoints saved
    before hashes were recorded have no hashes.json and load unchecked."""
    if hashes is None:
        return
    want = hashes.get(file.name)
    if not isinstance(want, str) or re.fullmatch(r"[0-9a-fA-F]{64}", want) is None:
        # (said of hashes.json: an entry missing or edited was said as the weights file not
        # matching "the SHA-256 recorded (None...)", blaming a sound file)
        what = "no SHA-256" if want is None else f"{describe(want)}, not a SHA-256,"
        raise CheckpointError(
            f"'{file.parent / 'hashes.json'}' records {what} for {file.name}; expected 64 "
            "hex digits, as rnnlab writes them (the file was edited or damaged)."
        )
    want, got = want.lower(), _sha256(file)
    if want != got:
        raise CheckpointError(
            f"'{file}' does not match the SHA-256 its checkpoint recorded in hashes.json "
            f"(recorded {str(want)[:16]}..., the file has {got[:16]}...): the file "
            "changed or is corrupt since it was saved."
        )


def _read_checkpoint_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        if path.exists():  # (a FIFO was said to be missing; reading it would wait for ever)
            kind = "a directory" if path.is_dir() else "a FIFO, device or socket"
            raise CheckpointError(f"The checkpoint file '{path}' is {kind}, not a file written "
                                  "by rnnlab (a damaged checkpoint).")  # fmt: skip
        raise CheckpointError(f"The checkpoint file '{path}' is missing (incomplete checkpoint).")
    value = parse_json(path, CheckpointError)
    if not isinstance(value, dict):
        raise CheckpointError(f"'{path}' must hold a JSON object, not {type(value).__name__}.")
    return value


def load_checkpoint(run_dir: PathLike, step: int | None = None) -> Checkpoint:
    """Load the checkpoint `step` of a run directory, or the latest one by default.

    The latest is the one `checkpoints/latest` names (or, if that file is missing, the highest
    step). A missing, truncated or corrupt file raises CheckpointError naming it.
    """
    run = open_run_dir(run_dir)
    checkpoints = run / "checkpoints"
    steps = checkpoint_steps(run)
    if step is None:
        latest = checkpoints / "latest"
        if latest.is_file():
            data = read_bounded(latest, 4096, "the file", CheckpointError)
            text = decode_utf8(data, latest, CheckpointError, "text").strip()
            named = _step_of(text)
            if named is None:
                raise CheckpointError(
                    f"'{latest}' must name a checkpoint like 'step-00000100'; "
                    f"it holds {text[:40]!r}." + (f" {way_back(run, -1)}" if steps else "")
                )
            if not (checkpoints / text).is_dir():  # (a crash while saving that step again)
                raise CheckpointError(
                    f"'{latest}' names {text} but '{checkpoints / text}' does not exist. "
                    + way_back(run_dir, named)
                )
            step = named
        elif steps:
            step = steps[-1]
        elif checkpoints_removed(run):
            raise CheckpointError(
                f"The run directory '{run}' has no checkpoints, but its model.safetensors says "
                "it saved one: its checkpoints were removed (its model still serves evaluate, "
                "sample, export and gradflow; training it further needs a new run)."
            )
        else:
            raise CheckpointError(
                f"The run directory '{run}' has no checkpoints: it stopped before its first "
                f"(train it with {resume_command(run)})."
            )
    elif isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step not in steps:
        saved = ", ".join(map(str, steps)) if steps else "none"
        fail("step", f"None or a saved step of '{run}' (saved: {saved})", describe(step))
    step = int(step)
    directory = checkpoints / _step_name(step)
    try:
        weights, state, config = _read_checkpoint(directory)
    except CheckpointError as e:
        raise CheckpointError(f"{e} {way_back(run, step)}") from None
    return Checkpoint(
        path=directory,
        step=step,
        model=weights["model"],
        optimizer=weights["optimizer"],
        state=state,
        config=config,
    )


def _read_checkpoint(
    directory: Path,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any], dict[str, Any]]:
    """The weights (checked against hashes.json), state and config of one checkpoint."""
    weights = {}
    hashes = None
    if (directory / "hashes.json").exists():
        record = _read_checkpoint_json(directory / "hashes.json").get("sha256")
        if not isinstance(record, dict):
            raise CheckpointError(
                f"'{directory / 'hashes.json'}' must hold {{\"sha256\": {{FILE: HASH}}}}."
            )
        hashes = record
    for part in ("model", "optimizer"):
        file = directory / f"{part}.safetensors"
        if not file.is_file():
            raise CheckpointError(
                f"The checkpoint file '{file}' is missing (incomplete checkpoint)."
            )
        weights[part], _ = load_safetensors(file)  # its own errors first: they say more
        _check_hash(file, hashes)
    state = _read_checkpoint_json(directory / "state.json")
    return weights, state, _read_checkpoint_json(directory / "config.json")


def checkpoints_removed(run_dir: PathLike) -> bool:
    """Whether `run_dir` holds no checkpoint but the top-level model.safetensors, which only
    a saved checkpoint writes (save_checkpoint, after the checkpoint is in place): its
    checkpoints were removed, and a fresh start would train over its weights and log."""
    run = as_path(run_dir, "run_dir")
    return not checkpoint_steps(run) and (run / "model.safetensors").is_file()


def load_top_level(run_dir: PathLike) -> Checkpoint:
    """A run's own latest weights and settings, model.safetensors and config.json at its top,
    as a checkpoint with no optimizer state or progress: what the commands that only read a
    run's model (evaluate, sample, export, gradflow) take where its checkpoints were removed
    (a finished run needs none of them to be used, and they hold most of its bytes). The file
    records its step and SHA-256 (save_checkpoint; after early stopping, the best step's
    weights, which a run that stopped so hands back anyway); one from before rnnlab recorded
    them is refused: its step cannot be told."""
    run = open_run_dir(run_dir)
    path = run / "model.safetensors"
    weights, step = tensors.load_weights_and_step(path)
    if step is None:
        raise CheckpointError(
            f"The run directory '{run}' has no checkpoints, and its model.safetensors records "
            "no step (it was saved before rnnlab recorded one): rnnlab cannot tell which "
            "weights it holds. Load it with rnnlab.io.load_safetensors into a model built "
            "from the run's config.json."
        )
    return Checkpoint(run, step, weights, {}, {}, read_json(run / "config.json"))


def way_back(run_dir: PathLike, step: int) -> str:
    """What to do when the checkpoint `step` of `run_dir` cannot be used: go back to another
    one (the run then continues from there, drawing what it drew the first time), or, with
    none left, start again. One sentence, for the end of an error message."""
    checkpoints = as_path(run_dir, "run_dir") / "checkpoints"
    others = [s for s in checkpoint_steps(run_dir) if s != step]
    if not others:  # (the top-level model too: a run holding one is refused a fresh start)
        # only what is there: a run that crashed before its first checkpoint has no
        # model.safetensors, one whose checkpoints were removed no checkpoints/
        there = [f"'{p}'" for p in (checkpoints, checkpoints.parent / "model.safetensors")
                 if p.exists() or p.is_symlink()]  # fmt: skip
        remove = f"remove {' and '.join(there)}, and " if there else ""
        return (f"The run has no other checkpoint: {remove}`{resume_command(checkpoints.parent)}` "
                "starts it again from step 0.")  # fmt: skip
    back = max((s for s in others if s < step), default=max(others))
    return (f"To go back to the checkpoint {_step_name(back)}, write {_step_name(back)} into "
            f"'{checkpoints / 'latest'}' and resume: the run continues from there.")  # fmt: skip
