"""The built-in tasks: each family's data (every data set here is made or read offline) and,
beside it, its recipe as the Trainer drives it; the registry (names, defaults, make_task,
model_spec, build_model) is rnnlab.tasks.registry, its names exported here.

- `text`: corpora (CPython's pydoc topics by default), CharVocab, train/valid/test pieces, and
  (inputs, targets) windows or stateful stream blocks for character language models;
- `ngram`: interpolated Kneser–Ney character n-gram baselines for those language models;
- `synthetic`: the adding, copy-memory and temporal-order benchmarks with their baselines;
- `digits`: scikit-learn's 8×8 digits read row by row or pixel by pixel (needs the
  `digits` extra);
- `pytokens`: characters of Python source labelled with their token class;
- `transduction`: the encoder–decoder's pairs (number words English → German, dates → ISO
  8601, images of handwritten digits → their words; needs the `seq2seq` extra), held out by
  value;
- `codecs`: the symbols ↔ ids of those pairs, a character at a time (CharCodec) or a word at
  a time (WordCodec).
"""

from rnnlab.tasks import digits, ngram, pytokens, synthetic, text, transduction
from rnnlab.tasks.registry import (
    DEMO,
    SEQ2SEQ_TASKS,
    TASK_NAMES,
    build_model,
    defaults,
    defaults_for,
    describe,
    make_task,
    model_spec,
    report,
)

__all__ = [
    "DEMO",
    "SEQ2SEQ_TASKS",
    "TASK_NAMES",
    "build_model",
    "defaults",
    "defaults_for",
    "describe",
    "digits",
    "make_task",
    "model_spec",
    "ngram",
    "pytokens",
    "report",
    "synthetic",
    "text",
    "transduction",
]
