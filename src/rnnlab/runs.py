"""A trained run read back from its directory: its settings, its model with the weights of a
checkpoint, and the record of its data (config.json's "data").

`rnnlab evaluate`, `sample`, `translate`, `export`, `gradflow` and the attention plot all start
from a run directory; each bad file is said with its path, as one line.
"""

from __future__ import annotations

import json
import sys
from os import PathLike
from pathlib import Path
from typing import Any

from rnnlab import _checks, io, models, tasks
from rnnlab.modules import _Module
from rnnlab.tasks.codecs import SPECIALS
from rnnlab.train import CONFIG_FORMAT, TrainConfig


def run_config(config: object, run_dir: object) -> dict[str, Any]:
    """A run's config.json as rnnlab wrote it: {"train": {...}, "model": {...}, ...}."""
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k), dict) for k in ("train", "model")
    ):
        raise io.RunDirError(
            f"'{run_dir}/config.json' must hold an rnnlab run's config (tables 'train' and "
            f"'model'); got {io.describe(config)}"
        )
    form = config.get("format", 1)  # (runs before "format" are of format 1)
    if isinstance(form, bool) or not isinstance(form, int) or form < 1:
        raise io.RunDirError(f"'{run_dir}/config.json' must say its \"format\" as an integer "
                             f"≥ 1; got {io.describe(form)}")  # fmt: skip
    if form > CONFIG_FORMAT:
        raise io.RunDirError(f"'{run_dir}/config.json' is of format {form}, written by a newer "
                             f"rnnlab than this one (which reads up to {CONFIG_FORMAT}): upgrade "
                             "rnnlab to read it")  # fmt: skip
    return config


def load_run(
    path: str | PathLike[str], *, vocabulary: bool = False
) -> tuple[Path, TrainConfig, _Module, dict[str, Any] | None]:
    """(run directory, settings, model with the latest weights, config.json's "data"); with
    `vocabulary`, a charlm run's data has its vocabulary even when the run is from before runs
    stored it (`data_record`)."""
    run_dir = io.open_run_dir(path)
    ckpt, cfg, model = load_checkpoint_model(run_dir)
    if vocabulary:
        return run_dir, cfg, model, data_record(run_dir, cfg, ckpt.config, ckpt.path)
    _stored_data_fits(ckpt.path, cfg, ckpt.config)
    return run_dir, cfg, model, ckpt.config.get("data")


def load_checkpoint_model(
    run_dir: Path, step: int | None = None
) -> tuple[io.Checkpoint, TrainConfig, _Module]:
    """(checkpoint, settings, model with its weights) of the checkpoint at `step` of an open
    run directory (default: the latest). A run that early stopping ended handed back the
    best weights it validated (best.safetensors), which its result.json's test used: without
    a `step`, those are its model's, not its last checkpoint's. A run whose checkpoints were
    removed gives its top-level model.safetensors and config.json (io.load_top_level)."""
    if step is None and io.checkpoints_removed(run_dir):
        # (another program's folder with a config.json and a model is said as such first,
        # not as a run whose model records no step)
        run_config(io.read_json(run_dir / "config.json"), run_dir)
        ckpt = io.load_top_level(run_dir)
    else:
        ckpt = io.load_checkpoint(run_dir, step=step)
    run_config(ckpt.config, ckpt.path)
    same_run(run_dir, ckpt)
    cfg = TrainConfig.from_run(
        ckpt.config, source=str(ckpt.path / "config.json"), tasks=tasks.TASK_NAMES
    )
    model = build_run_model(ckpt.config["model"], ckpt.path / "config.json", cfg.seed)
    load_weights(model, ckpt, run_dir)
    if step is None and ckpt.state.get("stopped_by") == "early stopping":
        best = run_dir / "best.safetensors"
        weights = io.load_weights(best, step=_best_step(ckpt, run_dir))
        _load_into(model, weights, best, ckpt, run_dir)
    return ckpt, cfg, model


def _best_step(ckpt: io.Checkpoint, run_dir: Path) -> int:
    """The step of the best weights an early-stopped checkpoint's state.json records, which
    best.safetensors must be of. Checked here, as `rnnlab train --resume` checks it
    (Trainer._check_progress): the commands that only read a run took an edited one as it
    came, blaming a sound best.safetensors for 4.0 or true ("holds the weights of step 4, not
    of step 4.0"), and loading it unchecked for "4" or null."""
    best = ckpt.state.get("best_step")
    if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best <= ckpt.step:
        raise io.CheckpointError(
            f"'{ckpt.path / 'state.json'}' must hold 'best_step' as the step of the best "
            f"evaluation, an integer from 0 to the checkpoint's step {ckpt.step} (the run "
            f"ended by early stopping); got {_checks.describe(best)}. "
            + io.way_back(run_dir, ckpt.step)
        )
    return best


def model_step(ckpt: io.Checkpoint, step: int | None = None) -> int:
    """The step of the weights `load_checkpoint_model(run_dir, step)` gives with `ckpt`: after
    early stopping and without a `step`, the best step's, not the last checkpoint's (gradflow
    said step 8 of weights of step 4, and step 4 of the same weights once checkpoints/ was
    removed: the top-level model records the best step)."""
    best = ckpt.state.get("best_step")
    if step is None and ckpt.state.get("stopped_by") == "early stopping" and isinstance(
            best, int) and not isinstance(best, bool):  # fmt: skip
        return best
    return ckpt.step


RESUME_MAY_CHANGE = ("steps", "time_limit")
"""The settings `rnnlab train --resume` takes (--steps and --time-limit; it refuses every other
one): from the resume on, the run's config.json holds the new value and the checkpoints saved
before it the old one, which `same_run` lets differ."""


def same_run(run_dir: Path, ckpt: io.Checkpoint) -> None:
    """Each checkpoint's config.json is written with the run's own (the same text): a
    checkpoint whose model, task or training settings differ from the run's was copied in
    from another run, or one of the two files was edited. Only the model and the task were
    compared: a checkpoint of the same model with another learning rate, batch size, seed,
    clip or data was resumed with its settings, written over the run's config.json without a
    word. What --resume may change (RESUME_MAY_CHANGE) may differ, and only the settings both
    files hold are compared (a run saved by an older rnnlab holds fewer, and a resume by a
    newer one writes config.json with today's), each read as the rnnlab that wrote it meant
    it (TrainConfig.from_run: a format-1 AdamW decay of 0 is today's none)."""
    top_path = run_dir / "config.json"
    if not top_path.is_file():
        return
    top = io.read_json(top_path)

    def task(config: object) -> object:
        train = config.get("train") if isinstance(config, dict) else None
        return train.get("task") if isinstance(train, dict) else None

    if not isinstance(top, dict):
        return
    # A run's config.json of a newer format is refused as the checkpoint's would be (and as
    # `train --resume` refuses it): its settings, compared below, are read as today's, and
    # `export` and `evaluate` loaded a run whose config.json says "format": 99.
    run_config(top, run_dir)
    ckpt_path = ckpt.path / "config.json"
    if top.get("model") != ckpt.config.get("model") or task(top) != task(ckpt.config):
        raise io.CheckpointError(
            f"'{ckpt_path}' is of another model or task than the run's '{top_path}': the "
            "checkpoint comes from another run. " + io.way_back(run_dir, ckpt.step)
        )
    ours = _as_trained(ckpt.config, ckpt_path)
    if ours is None:  # (a bad setting of the checkpoint's: TrainConfig.from_run says it)
        return
    theirs = _as_trained(top, top_path)
    if theirs is None:  # (a bad setting in the run's config.json: compared as it is written)
        theirs = top["train"] if isinstance(top.get("train"), dict) else {}
    for key, value in ours.items():
        if key in theirs and key not in RESUME_MAY_CHANGE and theirs[key] != value:
            raise io.CheckpointError(
                f"'{ckpt_path}' trains with {key} {_shown(value)}, the run's '{top_path}' with "
                f"{_shown(theirs[key])}: the checkpoint comes from another run, or one of the "
                "two files was edited. Edited? --resume keeps a run's settings (all but --steps "
                "and --time-limit): put the value back, or start a new run to change it. "
                "Copied in? " + io.way_back(run_dir, ckpt.step)
            )


def _as_trained(config: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The settings of a run's config.json `config`, as the rnnlab that wrote it trained with
    them (TrainConfig.from_run), of the keys the file holds; None if they are not valid."""
    train = config.get("train")
    if not isinstance(train, dict):
        return None
    try:
        read = TrainConfig.from_run(config, source=str(path)).to_dict()
    except (ValueError, TypeError):
        return None
    return {k: read[k] for k in train if k in read}


def _shown(value: object) -> str:
    """A setting's value as its JSON file writes it, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _stored_data_fits(where: Path, cfg: TrainConfig, config: dict[str, Any]) -> None:
    """A run's stored data record (config.json's "data") is of the form training writes and
    fits the model: a charlm vocabulary has as many symbols as the model has outputs (two
    characters cut from it were read as other characters: evaluate scored 3.453 nats for
    3.395, --resume trained on), a pytokens one as many as its embedding reads (one cut:
    accuracy 0.337 for 0.869), an encoder–decoder run's alphabets as many as its decoder
    writes and its encoder reads (one target character cut: an IndexError in beam search).
    A damaged one is said with the file, in one line, and so is an encoder–decoder run's
    missing one: every such run has stored its alphabets, and without them translate and
    evaluate made the training pairs again and fitted new alphabets to them without a word
    (docs/seq2seq.md: translate makes no data), the ids of another library version's."""
    data = config.get("data")
    path = Path(where) / "config.json"
    if not data and cfg.task in tasks.SEQ2SEQ_TASKS:
        raise ValueError(f"'{path}' holds no data record (\"data\": the source and target "
                         f"alphabets), which every {cfg.task} run stores: the file was edited. "
                         "Put the run's own config.json back.")  # fmt: skip
    if not data or not (cfg.task in ("charlm", "pytokens") or cfg.task in tasks.SEQ2SEQ_TASKS):
        return
    spec = config.get("model")
    spec = spec if isinstance(spec, dict) else {}
    have: dict[str, tuple[int | None, object, str]]  # what: (its size, the model's, of what)
    try:
        if cfg.task == "charlm":
            from rnnlab.tasks import text

            vocab = text._stored_vocab(data)
            have = {"vocabulary": (vocab.size if vocab is not None else None,
                                   spec.get("output_size"), "outputs")}  # fmt: skip
        elif cfg.task == "pytokens":
            from rnnlab.tasks import pytokens, text

            record = pytokens._stored_record(data)
            assert record is not None  # (data is not empty)
            if "vocab" not in record:  # {"split": "contiguous"}: rebuilt as before records
                return
            vocab = text.CharVocab.from_json({"type": "CharVocab", "chars": record["vocab"]})
            have = {"vocabulary": (vocab.size, _get(spec, "input", "vocab_size"),
                                   "input symbols")}  # fmt: skip
        else:
            from rnnlab.tasks import transduction

            record = transduction._checked_record(data)
            target = transduction._target_codec(record).size
            words = record.get("target_words") is not None  # (caption's outputs are words)
            have = {"target word list" if words else "target alphabet":
                    (target, spec.get("target_vocab"), "output symbols")}  # fmt: skip
            chars = cfg.task != "caption"  # (caption's encoder reads images, no alphabet)
            if (record["source_chars"] is not None) != chars:
                said = "no source alphabet" if chars else "a source alphabet"
                raise ValueError(f"'{path}' holds {said} (\"data\" \"source_chars\") for the "
                                 f"{cfg.task} task, whose encoder reads "
                                 f"{'characters' if chars else 'images'}: the file was edited. "
                                 "Put the run's own config.json back.")  # fmt: skip
            if chars:
                have["source alphabet"] = (len(record["source_chars"]) + len(SPECIALS),
                                           _get(spec, "source", "vocab_size"), "input symbols")
    except ValueError as e:
        raise ValueError(f"'{path}': {' '.join(str(e).split())}") from None
    for what, (size, want, of) in have.items():
        # (a model description without the size is the model's to say: build_run_model)
        if size is not None and isinstance(want, int) and size != want:
            raise ValueError(f"'{path}' holds a {what} of {size} symbols (\"data\") for a "
                             f"model of {want} {of}: the file was edited. Put the run's own "
                             "config.json back.")  # fmt: skip


def _get(spec: dict[str, Any], table: str, key: str) -> object:
    """spec[table][key], None where the description lacks it."""
    inner = spec.get(table)
    return inner.get(key) if isinstance(inner, dict) else None


def data_record(run_dir: Path, cfg: TrainConfig, config: dict[str, Any],
                where: Path | None = None) -> dict[str, Any] | None:  # fmt: skip
    """config.json's "data" (a charlm run's vocabulary), `config` read from the directory
    `where` (the run's by default; a checkpoint's). A charlm run from before runs stored
    it gets it rebuilt from its training text, as training built it, and checked against the
    model's number of symbols; said on stderr, since a text edited since training (with as
    many distinct characters) would map differently. A pytokens run from before runs stored
    it gets {"split": "contiguous"}: the split it was trained with, not a new run's."""
    data = config.get("data")
    if cfg.task == "pytokens" and not data:
        # a run from before pytokens runs stored a record: it trained on the contiguous
        # split, which make_task would not make for it without being told (a new run's)
        return {"split": "contiguous"}
    if cfg.task != "charlm" or data:
        _stored_data_fits(where or run_dir, cfg, config)
        return data
    from rnnlab.tasks import text

    txt = f"its training text '{cfg.data}'" if cfg.data else "the built-in corpus"
    old = f"'{run_dir}' is from before runs stored their vocabulary, which is rebuilt from {txt}"
    try:
        corpus = text.read_text(cfg.data) if cfg.data else text.default_corpus()
    except ValueError as e:
        relative = cfg.data and not Path(cfg.data).is_absolute()
        raise ValueError(
            f"{old}: {' '.join(str(e).split())} Run rnnlab from the directory the run was "
            "trained in" + (" (the path is relative)" if relative else "")
            + ", or put the text back where it was."
        ) from None
    vocab = text.CharVocab(text.split_text(corpus)[0])
    spec = config.get("model") or {}
    want = spec.get("output_size") if isinstance(spec, dict) else None
    if vocab.size != want:
        raise ValueError(
            f"{old}: that text gives {vocab.size} symbols but the model was trained with "
            f"{want}: it has changed since training. Put the training text back where it was."
        )
    print(f"rnnlab: warning: {old} ({vocab.size} symbols, as many as the model's); if that "
          "text changed since training, the mapping may differ", file=sys.stderr)  # fmt: skip
    return {"vocab": vocab.chars}


def build_run_model(spec: dict[str, Any], where: Path, seed: int = 0) -> _Module:
    """The model a run's config.json describes; a bad description is said with the file.
    An output-feedback run saved before 2026-12-04 may hold a dropout or a learned initial
    state that its model never had (models.build refuses them now): it is built as it
    trained, without them. A Trainer given a model of one's own without a `spec` writes
    an empty one: said as such (rnnlab cannot rebuild that model)."""
    if spec == {}:
        raise io.RunDirError(f"'{where}' has no model spec (\"model\": {{}}): the run trained "
                             "a model built in Python and given to Trainer without spec=, which "
                             "rnnlab's commands cannot rebuild; build it again and load its "
                             "weights (model.safetensors) with io.load_safetensors")  # fmt: skip
    try:
        model: _Module = tasks.build_model(models.without_feedback_extras(spec), seed=seed)
        return model
    except ValueError as e:
        raise io.RunDirError(f"'{where}' (its \"model\"): {e}") from None


def load_weights(model: _Module, ckpt: io.Checkpoint, run_dir: Path) -> None:
    """The checkpoint's weights into `model`, built from the checkpoint's config.json: each of
    the dtype training saved, the model's own (load_state_dict would cast integers or other
    floats silently), and of its shape."""
    _load_into(model, ckpt.model, ckpt.path / "model.safetensors", ckpt, run_dir)


def _load_into(model: _Module, weights: dict[str, Any], file: Path, ckpt: io.Checkpoint,
               run_dir: Path) -> None:  # fmt: skip
    """`weights`, read from `file`, into `model`, built from `ckpt`'s config.json (load_weights)."""
    for name, p in model.params.items():
        got = weights.get(name)
        if got is not None and got.dtype != p.dtype:
            raise io.CheckpointError(
                f"'{file}' holds {name!r} of dtype {got.dtype}; expected {p.dtype}, the "
                f"model's (training saves its weights so). {io.way_back(run_dir, ckpt.step)}"
            )
        # (said here, not by load_state_dict: its error asks whether the checkpoint is of
        # another model, and has no way back)
        if got is not None and got.dtype.kind == "f" and not _checks.all_finite(got):
            raise io.CheckpointError(
                f"'{file}' holds NaN or inf in {name!r}, which training never saves (it stops "
                f"at the last finite weights). {io.way_back(run_dir, ckpt.step)}"
            )
    try:
        model.load_state_dict(weights)
    except ValueError as e:
        # a checkpoint's directory, the run's own model (its checkpoints removed: the
        # checkpoint load_top_level gives is the run directory) or best.safetensors
        if file.parent != ckpt.path:
            what = f"the best weights '{file}' do"
        elif ckpt.path.resolve() == Path(run_dir).resolve():
            what = f"the run's model '{file}' does"
        else:
            what = f"the checkpoint {ckpt.path} does"
        raise io.CheckpointError(
            f"{what} not fit the model described in {ckpt.path / 'config.json'} (is it from "
            f"another model?): {e}"
        ) from None
