"""Persistence without pickles: safetensors weights, JSON configuration, run directories.

One module per concern: `files` writes files atomically and reads JSON, JSON Lines and TOML;
`tensors` reads and writes safetensors through the `safetensors` package, with rnnlab's
checks and errors around it; `rng` turns random generators into JSON data and back; `runs`
makes run directories and saves and loads the checkpoints in them. Callers use the names
below as `rnnlab.io.NAME`.
"""

from rnnlab._checks import describe
from rnnlab.io.files import (
    ConfigError,
    RunDirError,
    append_jsonl,
    as_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    finite_or_null,
    is_our_temporary,
    keep_jsonl_until,
    read_json,
    read_jsonl,
    read_toml,
    remove_orphans,
)
from rnnlab.io.rng import numpy_rng_state, rng_from_state
from rnnlab.io.runs import (
    LOCK_NAME,
    Checkpoint,
    checkpoint_steps,
    checkpoints_removed,
    is_run_dir,
    load_checkpoint,
    load_top_level,
    make_run_dir,
    open_run_dir,
    resume_command,
    save_checkpoint,
    training_lock,
    way_back,
)
from rnnlab.io.tensors import (
    CheckpointError,
    load_safetensors,
    load_weights,
    load_weights_and_step,
    parse_safetensors,
    safetensors_bytes,
    save_safetensors,
    save_weights,
)

__all__ = [
    "LOCK_NAME",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "RunDirError",
    "append_jsonl",
    "as_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "checkpoint_steps",
    "checkpoints_removed",
    "describe",  # rnnlab.runs reaches _checks.describe through io
    "finite_or_null",
    "is_run_dir",
    "keep_jsonl_until",
    "load_checkpoint",
    "load_top_level",
    "load_safetensors",
    "load_weights",
    "load_weights_and_step",
    "make_run_dir",
    "numpy_rng_state",
    "open_run_dir",
    "parse_safetensors",
    "read_json",
    "read_jsonl",
    "read_toml",
    "is_our_temporary",
    "remove_orphans",
    "resume_command",
    "rng_from_state",
    "safetensors_bytes",
    "save_checkpoint",
    "save_safetensors",
    "save_weights",
    "training_lock",
    "way_back",
]
