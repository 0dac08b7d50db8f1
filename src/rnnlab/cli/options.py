"""The options of the rnnlab commands: the argparse pieces they share.

A bad value is said as one line naming the option ("`--hidden` must be a positive integer;
got '0' instead."), as every rnnlab error is.
"""

from __future__ import annotations

import argparse
import math

from rnnlab import _checks
from rnnlab._argparse import Parser as Parser  # (the commands import it from here)
from rnnlab._argparse import int_or_none, integer, real, shown


def option_type(name: str, expected: str, convert, ok):
    """An argparse type: `convert(text)` accepted when `ok(value)`; otherwise the message
    "`--name` must be …; got … instead." (ArgumentTypeError: argparse keeps its text).
    `convert` int or float is read as _argparse reads numbers: ASCII, an int within 64 bits."""
    convert = {int: integer, float: real}.get(convert, convert)

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            # (what int() took, in ASCII: an integer over 64 bits)
            beyond = value is None and convert is integer and text.isascii() and \
                int_or_none(text) is not None  # fmt: skip
            try:
                _checks.fail(name, expected + (" of 64 bits" if beyond else ""), shown(text))
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = name
    return parse


def positive_float(name: str):
    return option_type(name, "a positive finite number", float,
                       lambda v: math.isfinite(v) and v > 0)


def count(name: str):
    return option_type(name, "a positive integer", int, lambda v: v >= 1)


def number(name: str):
    return option_type(name, "a finite number", float, math.isfinite)


def path(name: str, what: str = "a file"):
    """A path (of `what`): an empty one is refused (as `--data ""` it silently meant the
    built-in corpus, the setting's default; `--config ""`, `--run-dir ""`, `--resume ""` and
    plot's `--out ""` were read as not given, and a run '' as the current directory)."""
    return option_type(name, f"the path of {what} (not empty)", str, bool)


def seconds(name: str):
    return option_type(name, "a finite number of seconds >= 0 (0: none)", float,
                       lambda v: math.isfinite(v) and v >= 0)  # fmt: skip


# ---------------------------------------------------------------------- shared option groups
# Each concept's options are defined once, here, and every command that takes them adds them
# with the functions below. `defaults`: argparse.SUPPRESS (the default) leaves an option out
# of the parsed namespace unless it was typed, so that only what the user typed overrides a
# task's defaults and --config; None (or any value) gives every option that default.
# `only`: the destinations of the options a command takes (default: all of the group).
# `checked`: each value is checked as it is parsed and said with the option's name, for
# commands that build no TrainConfig; otherwise TrainConfig checks it under the setting's name.

CELLS = ("rnn", "relu", "irnn", "lstm", "gru", "gru-orig", "jordan", "jordan-elman")
SUPPRESS = argparse.SUPPRESS


class _Group:
    """An argument group that adds only the options a command takes, with its defaults."""

    def __init__(self, parser, title: str, defaults, only):
        self.group = parser.add_argument_group(title)
        self.defaults, self.only = defaults, only

    def add(self, flag: str, **kw) -> None:
        dest = kw.get("dest") or flag.lstrip("-").replace("-", "_")
        if self.only is None or dest in self.only:
            kw.setdefault("default", self.defaults)
            self.group.add_argument(flag, **kw)


def _zoneout(text: str) -> float | list[float]:
    """--zoneout P or P_H,P_C (checked against [0, 1) by the run's settings), in ASCII digits
    as every number on the command line (float() read '٠.١' as 0.1)."""
    if not text.isascii():
        raise argparse.ArgumentTypeError(f"must be a probability or two (p_h,p_c) written in "
                                         f"ASCII digits (0-9); got {shown(text)} instead.")
    try:
        parts = [real(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a probability or two (p_h,p_c), got {text!r}"
        ) from None
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected one or two probabilities, got {text!r}")
    return parts[0] if len(parts) == 1 else parts


def _ascii_numbers(text: str) -> str:
    """--teacher-forcing's text ('p' or 'a:b'; read by the run's settings), refused unless in
    ASCII as every number on the command line (float() read '٠.٥' as 0.5)."""
    if not text.isascii():
        raise argparse.ArgumentTypeError(f"must be a probability 'p' or a schedule 'a:b' "
                                         f"written in ASCII digits (0-9); got {shown(text)} "
                                         "instead.")  # fmt: skip
    return text


def add_model_options(
    parser, defaults=SUPPRESS, *, only=None, checked: bool = False, cells=CELLS
) -> None:
    """--cell, --hidden, --layers, --bidirectional, --embed, --dropout, --initial-state, the
    LSTM's variants and forget-gate bias, and what goes around any cell (--proj-size,
    --recurrent-dropout, --zoneout). `cells`: the cells the command takes."""
    g = _Group(parser, "model", defaults, only)
    size = count if checked else (lambda flag: int)
    jordan = "; jordan = output feedback" if "jordan" in cells else ""
    g.add("--cell", choices=cells, help="recurrent cell (default: the task's)" + jordan)
    g.add("--hidden", type=size("--hidden"), help="hidden units per layer")
    g.add("--layers", type=size("--layers"), help="stacked recurrent layers")
    g.add("--bidirectional", action="store_true", help="read both directions")
    g.add("--embed", type=int, help="embedding size for token inputs")
    g.add("--dropout", type=float, help="dropout between and after layers (encoder-decoders: "
          "between stacked layers only)")  # fmt: skip
    g.add("--initial-state", dest="initial_state", choices=("zeros", "learned"),
          help="the recurrent layers' h_0 (and c_0): zeros, or learned parameters")  # fmt: skip
    g.add("--peephole", action="store_true", help="LSTM: peephole weights")
    g.add("--coupled", action="store_true", help="LSTM: input gate = 1 - forget gate")
    g.add("--cell-clip", dest="cell_clip", type=float, help="LSTM: clip |c_t| to this")
    g.add("--forget-bias", dest="forget_bias", type=number("--forget-bias") if checked else float,
          help="LSTM: the forget gate's initial bias (Jozefowicz et al. 2015; default: the "
          "task's and cell's: 1, copy's LSTM 3, rnnlab.tasks.tuned)")  # fmt: skip
    g.add("--layer-norm", dest="layer_norm", action="store_true",
          help="LSTM: layer-normalised (Ba et al. 2016)")  # fmt: skip
    g.add("--proj-size", dest="proj_size", type=int,
          help="LSTM/RNN: project h to this many units, below --hidden (Sak et al. 2014; "
          "PyTorch's proj_size; the GRU reads h itself and takes none)")  # fmt: skip
    g.add("--recurrent-dropout", dest="recurrent_dropout", type=float,
          help="dropout on h_{t-1} in the recurrent products, one mask per sequence "
          "(Gal 2016)")  # fmt: skip
    g.add("--zoneout", type=_zoneout,
          help="zoneout probability p, or p_h,p_c (Krueger et al. 2016)")  # fmt: skip


def add_seq2seq_options(parser, defaults=SUPPRESS, *, only=None) -> None:
    """The encoder-decoder's --attention, --attention-size, --source-conv, --input-dropout and
    --beam."""
    g = _Group(parser, "encoder-decoder (numbers, dates, caption)", defaults, only)
    g.add("--attention", choices=("none", "additive", "multiplicative"),
          help="attention over the source: additive (Bahdanau) or multiplicative "
          "(Luong)")  # fmt: skip
    g.add("--attention-size", dest="attention_size", type=int,
          help="additive attention: the size of its tanh layer (0: --hidden); its cost is "
          "batch x target x source x this")  # fmt: skip
    g.add("--source-conv", dest="source_conv", type=int,
          help="caption: a 3x3 convolution with this many channels and a ReLU over the image "
          "before the encoder (0: none)")  # fmt: skip
    g.add("--input-dropout", dest="input_dropout", type=float,
          help="dropout on what the encoder reads (caption: each pixel), in training")  # fmt: skip
    g.add("--beam", type=int, help="beam width of the final test evaluation (1: greedy)")


def add_optimisation_options(
    parser, defaults=SUPPRESS, *, only=None, checked: bool = False, title="optimisation"
) -> None:
    """--optimizer, --lr, --momentum, --weight-decay, --schedule, --warmup, --clip, --clip-at,
    the batch and window sizes, teacher forcing, and how long and how often (--steps,
    --time-limit, --eval-every, --grad-log-every, --checkpoint-every, --patience)."""
    g = _Group(parser, title, defaults, only)
    g.add("--optimizer", choices=("sgd", "nesterov", "rmsprop", "adagrad", "adam", "adamw"),
          help="the update rule (default: the task's and cell's)")  # fmt: skip
    g.add("--lr", type=positive_float("--lr") if checked else float,
          help="learning rate" + (" (default: the task's and cell's)" if checked else ""))
    g.add("--momentum", type=float, help="sgd and nesterov: the momentum, in [0, 1), above 0 "
          "for nesterov (default 0.9; the IRNN and ReLU on adding 0, "
          "rnnlab.tasks.tuned)")  # fmt: skip
    g.add("--weight-decay", dest="weight_decay", type=float,
          help="L2 (AdamW: decoupled) weight decay (default: the optimizer's, AdamW 0.01, "
          "else 0)")  # fmt: skip
    g.add("--schedule", choices=("constant", "cosine", "step"),
          help="learning rate after --warmup: constant; cosine, half a cosine down to 5%% of "
          "--lr over the steps after the warm-up; step, ×0.3 every --steps/3 steps (counted "
          "from the warm-up's end: with a long warm-up fewer than two decays fall in the "
          "run)")  # fmt: skip
    g.add("--warmup", type=int, help="linear warm-up steps")
    g.add("--clip", choices=("global_norm", "value", "none"),
          help="gradient clipping: by global norm, by value, or none")  # fmt: skip
    g.add("--clip-at", dest="clip_at", type=float,
          help="the clipping threshold (a norm or a value, per --clip)")  # fmt: skip
    g.add("--batch-size", dest="batch_size", type=int,
          help="sequences a step (under mpiexec, each rank's)")  # fmt: skip
    g.add("--seq-len", dest="seq_len", type=int,
          help="window length for tasks that cut sequences")  # fmt: skip
    g.add("--bptt", type=int,
          help="truncated BPTT in training: copy and pytokens cut each sequence into "
          "windows of this many steps, the state carried across them and the gradient cut "
          "at their edges; charlm reads its stream this many characters at a time instead "
          "of --seq-len. 0 (default): full BPTT over each sequence (charlm: windows of "
          "--seq-len, the state carried). Refused by the tasks with one target per sequence "
          "(adding, temporal-order, digits), the encoder-decoders (numbers, dates, caption) "
          "and bidirectional models")  # fmt: skip
    g.add("--teacher-forcing", dest="teacher_forcing", type=_ascii_numbers,
          help="training of the output-feedback cells (jordan, jordan-elman; on charlm, "
          "pytokens, copy) and the encoder-decoders (numbers, dates, caption): the "
          "probability that a step is fed the truth (the previous target), 'p', or 'a:b' "
          "linear from a at the first step to b at the last (e.g. 1.0:0.5: scheduled "
          "sampling; default 1.0). Otherwise a jordan cell is fed its own prediction (the "
          "softmax of its previous output), a decoder a token drawn from its distribution. "
          "Evaluation does not read it: a jordan cell is fed the class it ranked first at "
          "the previous step (charlm: the true previous character, to score the text's "
          "likelihood), a decoder the token it chose (greedy, or --beam)")  # fmt: skip
    g.add("--reverse-input", dest="reverse_input", action="store_true",
          help="feed each input sequence reversed (Sutskever et al. 2014); for tasks that "
          "read a whole sequence, then answer (per-step tasks refuse it)")  # fmt: skip
    g.add("--steps", type=int, help="optimizer steps (default: the task's; the memory tasks' "
          "grows with --T: adding 60 T, copy and temporal-order 40 T, and a run stops at the "
          "first validation that solves the task; rnnlab.tasks.tuned)")  # fmt: skip
    limit = (f"{defaults:g}" if isinstance(defaults, float) else
             "0, but charlm, numbers, dates and caption have their own: rnnlab.tasks")  # fmt: skip
    g.add("--time-limit", dest="time_limit", type=seconds("--time-limit") if checked else float,
          help=f"stop after this many seconds (0: no limit; default {limit})")  # fmt: skip
    g.add("--eval-every", dest="eval_every", type=int,
          help="validate every this many steps (early stopping, best.safetensors)")  # fmt: skip
    g.add("--grad-log-every", dest="grad_log_every", type=int,
          help="record gradient norms into metrics.jsonl every this many steps")  # fmt: skip
    g.add("--checkpoint-every", dest="checkpoint_every", type=int,
          help="save a checkpoint every this many steps (and at the end)")  # fmt: skip
    g.add("--patience", type=int,
          help="stop after this many evaluations without improvement (0: never)")  # fmt: skip


def add_data_options(parser, defaults=SUPPRESS, *, only=None, checked: bool = False) -> None:
    """--data, --T, --digits-mode, --valid-fold, --train-size and --seed (of the data and the
    weights)."""
    g = _Group(parser, "data", defaults, only)
    g.add("--data", type=path("--data"),
          help="charlm: a UTF-8 text file (default: built-in corpus)")  # fmt: skip
    g.add("--T", dest="T", type=count("--T") if checked else int,
          help="memory tasks: adding's sequence length; copy's delay (its sequences are "
          "T + 20 steps: 10 symbols, the delay, 10 to recall); temporal-order's scale (its "
          "sequences are T to T + T/10 steps; 100 is the paper's). Default: 100, copy "
          "50")  # fmt: skip
    g.add("--digits-mode", dest="digits_mode", choices=("rows", "pixels"),
          help="digits: read each image a row (8 steps) or a pixel (64 steps) at a "
          "time")  # fmt: skip
    g.add(
        "--valid-fold",
        dest="valid_fold",
        type=int,
        help="caption: which tenth (0-9) of the training images validates (never trained on)",
    )
    g.add("--train-size", dest="train_size", type=int,
          help="numbers, dates, caption: training pairs (default 50,000, 50,000, 20,000); "
          "pytokens: characters of source in all, 90 %% read from the training files and "
          "5 %% each from the validation and test files, whole files held out by a hash of "
          "their path whatever the seed and size (default 400,000)")  # fmt: skip
    g.add("--seed", type=int, help="the seed of the initialisation and the data")
