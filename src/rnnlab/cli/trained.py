"""The commands on a trained run: `rnnlab evaluate`, `sample`, `translate` and `export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np

from rnnlab import _checks, runs
from rnnlab.cli._base import UsageError, finite_result
from rnnlab.cli.options import count, option_type, positive_float
from rnnlab.cli.options import path as path_option

# One forward step a character: a million take minutes; more is not a sample to read.
MAX_SAMPLE_LENGTH = 1_000_000

_RUN = path_option("run", "a run directory")


def add_parsers(sub) -> None:
    p = sub.add_parser("evaluate", help="held-out metrics of a trained run")
    p.add_argument("run", type=_RUN, help="a run directory")
    p.add_argument("--split", choices=("valid", "test"), default="test",
                   help="the held-out piece to score (default: test)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--data", type=path_option("--data"),
        help="charlm: evaluate on the held-out pieces of this text, read with the run's "
        "vocabulary (characters it does not know are counted in unknown_chars); the n-gram "
        "baselines beside it are fitted on this text's own training piece",
    )  # fmt: skip

    p.add_argument(
        "--beam", type=int, default=None,
        help="numbers, dates, caption: the beam width beside greedy (default: the run's, 5)",
    )  # fmt: skip

    p = sub.add_parser(
        "translate",
        help="translate text with a trained numbers or dates run",
        description="Decode sources with a trained encoder-decoder: one argument, or --file "
        "with one source a line.",
    )
    p.add_argument("run", type=_RUN, help="a run directory of the numbers or dates task")
    p.add_argument("text", nargs="?", help="the source text, e.g. 'twenty-three'")
    p.add_argument("--file", type=path_option("--file"), help="a UTF-8 file of sources, one a line")
    p.add_argument("--beam", type=int, default=None,
                   help="beam width (1: greedy; default: the run's, 5)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--unknown", choices=("error", "map"), default="error",
        help="characters the model never saw: error, refuse them (default), or map, map them "
        "to the unknown symbol",
    )  # fmt: skip

    p = sub.add_parser("sample", help="generate text from a trained charlm run")
    p.add_argument("run", type=_RUN, help="a run directory of the charlm task")
    p.add_argument("--prime", default=None,
                   help="text to start from (default: a line end, or a space or the first "
                   "character of the run's vocabulary if it has none)")  # fmt: skip
    length = option_type("--length", f"an integer from 0 to {MAX_SAMPLE_LENGTH:,}", int,
                         lambda v: 0 <= v <= MAX_SAMPLE_LENGTH)  # fmt: skip
    p.add_argument("--length", type=length, default=400,
                   help=f"characters to sample (at most {MAX_SAMPLE_LENGTH:,}; default "
                   "400)")  # fmt: skip
    p.add_argument("--temperature", type=positive_float("--temperature"), default=0.8,
                   help="divides the logits: below 1 surer, above 1 more varied (default "
                   "0.8)")  # fmt: skip
    p.add_argument("--top-k", dest="top_k", type=count("--top-k"), default=None,
                   help="sample among the K most likely characters (default: all; a K at or "
                   "above the run's vocabulary size keeps them all)")  # fmt: skip
    p.add_argument("--seed", default=0, type=option_type("--seed", "a non-negative integer",
                                                          int, lambda v: v >= 0),
                   help="the seed of the draws: the same seed, the same text (default "
                   "0)")  # fmt: skip
    p.add_argument(
        "--unknown", choices=("error", "map"), default="error",
        help="characters of --prime the run never saw: error, refuse them (default), or map, "
        "read them as the unknown symbol",
    )  # fmt: skip

    p = sub.add_parser(
        "export",
        help="a run's model as ONNX, a PyTorch state_dict or Keras weights",
        description="Export the latest weights of a run: --format onnx (the standard "
        "RNN/LSTM/GRU operators), safetensors-torch (a state_dict PyTorch's modules load "
        "with strict=True; the code building them is printed) or keras (Keras 3 weights, "
        "an .h5 file; the code building the model is printed).",
    )
    p.add_argument("run", type=_RUN, help="a run directory")
    p.add_argument("--format", dest="fmt", default="onnx",
                   help="onnx (default), safetensors-torch or keras")  # fmt: skip
    p.add_argument("--out", default=None,
                   help="the file to write (default: in the run directory), its name not one of "
                   "another format's (.onnx, .torch.safetensors, .weights.h5, ...); '-' writes "
                   "the ONNX graph to stdout (not a terminal; its note goes to stderr), refused "
                   "for the other formats, whose printed code loads the file by its path (a "
                   "file named '-' is ./-)")  # fmt: skip
    p.add_argument(
        "--state", action="store_true", help="onnx: initial-state inputs h0 (c0), to carry state"
    )
    p.add_argument("--no-lengths", dest="lengths", action="store_false",
                   help="onnx: no lengths input (every sequence full length)")  # fmt: skip


def cmd_evaluate(args) -> int:
    from rnnlab import tasks

    run_dir, cfg, model, data = runs.load_run(args.run, vocabulary=True)
    if args.data is not None:
        if cfg.task != "charlm":
            raise UsageError(f"`--data` is for charlm runs; '{run_dir}' is "
                             f"{_checks.a(cfg.task)} run")  # fmt: skip
        # the run's vocabulary, without its corpus's path and hash (checked by make_task)
        cfg.data, data = args.data, ({"vocab": data.get("vocab")} if isinstance(data, dict)
                                     else data)  # fmt: skip
    task = tasks.make_task(cfg, data)
    extra = {}
    if args.beam is not None and cfg.task not in tasks.SEQ2SEQ_TASKS:
        raise UsageError(f"`--beam` is for numbers, dates and caption runs; '{run_dir}' is "
                         f"{_checks.a(cfg.task)} run")  # fmt: skip
    if cfg.task in tasks.SEQ2SEQ_TASKS:  # greedy and beam search, on either split
        extra["beam"] = cfg.beam if args.beam is None else _checked_beam(args.beam, task)
    if cfg.task == "charlm":  # the n-gram baselines of the split evaluated, said beside it
        extra["baselines"] = True
    with np.errstate(all="ignore"):  # a diverged model's overflow is reported below
        result = task.evaluate(model, args.split, **extra)
    clean = finite_result(result, "the model's outputs overflow; its weights have diverged")
    if args.json:
        print(json.dumps(clean, sort_keys=True, allow_nan=False))
    else:
        for line in tasks.report(task, result, args.split):
            print(line)
    return 0


def cmd_sample(args) -> int:
    from rnnlab import tasks

    run_dir, cfg, model, data = runs.load_run(args.run, vocabulary=True)
    if cfg.task != "charlm":
        raise UsageError(
            f"`run` must be a charlm run to sample text; '{run_dir}' is {_checks.a(cfg.task)} run"
        )
    task = tasks.make_task(cfg, data, text=False)  # the run's vocabulary, no corpus
    _emit(
        task.sample(
            model,
            args.prime,
            args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
            unknown=args.unknown,
            name="--prime",
        ),
        "sample",
    )
    return 0


def _emit(text: str, what: str) -> None:
    """Print `text` (the model's, or a JSON object with its sources), whole or not at all: a
    standard output whose encoding cannot write one of its characters (PYTHONIOENCODING=ascii,
    a Latin-1 terminal) is said as such, with the remedy; Python's own words, "'ascii' codec
    can't encode character '\\xb0' in position 6", named neither stdout nor a way out."""
    try:
        print(text)
        sys.stdout.flush()  # (a full disk shows at the flush: its error said here, not later)
    except UnicodeEncodeError as e:
        raise UsageError(f"standard output's encoding, {e.encoding}, cannot write "
                         f"{e.object[e.start]!r} (character {e.start} of the {what}); set "
                         "PYTHONIOENCODING=utf-8 or a UTF-8 locale") from None  # fmt: skip
    except BrokenPipeError:
        raise  # (the reader gone: the command's silent exit, as every command's)
    except OSError as e:  # `> /dev/full`: it said "[Errno 28] No space left on device"
        _stdout_refused(e, f"the {what}", f"At most a part of the {what} reached it.")


def _stdout_refused(error: OSError, what: str, hint: str) -> NoReturn:
    """Refuse a standard output that failed to take `what` (a full disk; a broken pipe where
    the command says it), naming stdout: Python said only "[Errno 28] No space left on
    device". What its buffer still holds goes nowhere (it would fail again at exit)."""
    from rnnlab.progress import silence

    silence(sys.stdout)
    _checks.fail("stdout", f"what takes the whole of {what}",
                 f"a stdout refusing it ({error.strerror or error})", hint)


def cmd_translate(args) -> int:
    from rnnlab import tasks
    from rnnlab.tasks.transduction import _beam

    if (args.text is None) == (args.file is None):
        # (it ended "not neither" when given neither)
        raise UsageError("`translate` needs a source text or --file F (one source a line), one "
                         "of them; got " + ("both" if args.file else "neither"))  # fmt: skip
    beam = None if args.beam is None else _beam(args.beam)
    if args.file is not None:
        path = Path(args.file)
        texts = _source_lines(path)
        where = [f"line {i + 1} of {path}" for i in range(len(texts))]
        if not texts:
            raise UsageError(f"`--file` must hold one source a line; '{path}' is empty")
    else:
        texts, where = [args.text], ["source"]
    run_dir, cfg, model, data = runs.load_run(args.run)
    if cfg.task not in tasks.SEQ2SEQ_TASKS:
        raise UsageError(f"`run` must be a numbers or dates run to translate; '{run_dir}' is "
                         f"{_checks.a(cfg.task)} run")  # fmt: skip
    task = tasks.make_task(cfg, data)
    beam = cfg.beam if beam is None else _checked_beam(beam, task)
    outputs = task.translate(model, texts, beam=beam, unknown=args.unknown, where=where,
                             name="text" if args.file is None else "--file")  # fmt: skip
    if args.json:
        pairs = [{"source": s, "output": o} for s, o in zip(texts, outputs, strict=True)]
        _emit(json.dumps({"beam": beam, "translations": pairs}, ensure_ascii=False),
              "JSON output")  # fmt: skip
    else:
        _emit("\n".join(outputs), "translations")
    return 0


def _checked_beam(beam: int, task) -> int:
    """--beam, refused above the run's target vocabulary (Transduction.checked_beam: --beam
    100000 decoded for minutes). Only the option typed is checked: a run trained with a
    wider beam still loads."""
    return int(task.checked_beam(beam, "--beam", "this run"))


# Sources are short lines: a --file larger than this is not one of translate's.
MAX_SOURCE_BYTES = 1 << 26


def _source_lines(path: Path) -> list[str]:
    """The lines of translate's --file, read as charlm reads a corpus: a regular file of
    bounded size (a FIFO or /dev/zero is refused, not waited on or read until memory runs
    out), UTF-8 without its byte-order mark, CRLF and CR line ends as "\\n"; UTF-16 or
    UTF-32 is refused as such (text.decode_text: read as UTF-8, one without a byte-order
    mark gave sources with a NUL between their letters, which `--unknown map` translated
    into garbage without a word). Lines end at "\\n" only: a U+2028 or U+0085 inside a
    source is a character of it."""
    from rnnlab._checks import read_bounded
    from rnnlab.tasks.text import decode_text

    data = read_bounded(path, MAX_SOURCE_BYTES, "`--file`", UsageError)
    text = decode_text(data, path, "--file")
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def cmd_export(args) -> int:
    from rnnlab import export

    if args.fmt not in export.FORMATS:  # not argparse's choices: its error is two lines
        raise UsageError(
            f"`--format` must be one of {', '.join(export.FORMATS)}; got {args.fmt!r} instead."
        )
    code = args.fmt != "onnx"  # (ONNX's own text is a note on its graph's inputs)
    if code and sys.stdout is None and args.out != export.STDOUT:
        # `>&-`: print() to a closed stdout writes nothing and raises nothing, and the command
        # said "wrote PATH" with the code that loads the file gone. Refused before anything
        # is written, as an error leaves no file behind (--out - says its own refusal).
        _checks.fail("stdout", f"open, to take the code --format {args.fmt} prints (> model.py; "
                     "> /dev/null to keep only the file)", "a closed stdout",
                     "Nothing was written.")  # fmt: skip
    path, text = export.export_run(
        args.run, args.fmt, args.out, lengths=args.lengths, state=args.state
    )
    if path is None:  # --out -: the graph went to stdout, which holds nothing else
        print(text, end="", file=sys.stderr)
        print("wrote the ONNX graph to stdout", file=sys.stderr)
        return 0
    try:
        if sys.stdout is not None:  # (an ONNX note to a closed stdout is only a note)
            sys.stdout.write(text)
            sys.stdout.flush()
    except OSError as e:  # a reader gone, a full disk: the code is cut, the file written
        if not code:
            raise
        _stdout_refused(e, f"the code --format {args.fmt} prints", f"'{path}' is written, but "
                        "what reached stdout is not the whole code that loads it: export again "
                        "with stdout taking it (> model.py).")  # fmt: skip
    print(f"wrote {path}", file=sys.stderr)
    return 0
