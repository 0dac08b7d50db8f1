"""Sequence models described by a small JSON-able spec, so a run directory can rebuild them.

A spec is a plain dict, saved in a run's config.json beside the weights (never a pickle):

    {"input": {"type": "tokens", "vocab_size": 96, "embed_dim": 32}      # or
              {"type": "vectors", "size": 8},
     "rnn": {"cell": "lstm", "hidden_size": 256, "num_layers": 1, "bidirectional": false,
             "dropout": 0.0, "initial_state": "zeros", "forget_bias": 1.0},
     "readout": "steps",          # an output at every step | "last" valid step | "mean"
     "output_size": 96,
     "output_dropout": 0.0}

and builds Sequential([Embedding], RNN/LSTM/GRU, [LastStep | MeanOverTime], [Dropout], Linear).
Cells: "rnn" (tanh), "relu", "irnn" (relu with the identity initialisation), "lstm",
"gru" (reset-after, PyTorch's form), "gru-orig" (the original form).
"""

from __future__ import annotations

import copy

import numpy as np

from rnnlab import _checks
from rnnlab.layers import GRU, LSTM, RNN, Recurrent
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

CELLS = ("rnn", "relu", "irnn", "lstm", "gru", "gru-orig")
READOUTS = ("steps", "last", "mean")


def make_recurrent(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
                   bidirectional: bool = False, dropout: float = 0.0,
                   initial_state="zeros", forget_bias=None, dtype=np.float32,
                   rng=None) -> Recurrent:
    """The recurrent layer for a cell name (see the module docstring)."""
    cell = _checks.choice(cell, "cell", CELLS)
    common = dict(bidirectional=bidirectional, dropout=dropout, initial_state=initial_state,
                  dtype=dtype, rng=rng)
    if cell == "rnn":
        return RNN(input_size, hidden_size, num_layers, **common)
    if cell == "relu":
        return RNN(input_size, hidden_size, num_layers, nonlinearity="relu", **common)
    if cell == "irnn":
        return RNN(input_size, hidden_size, num_layers, nonlinearity="relu", init="irnn", **common)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, num_layers, forget_bias=forget_bias, **common)
    return GRU(input_size, hidden_size, num_layers, reset_after=cell == "gru", **common)


def build(spec: dict, *, dtype=np.float32, rng=None) -> Sequential:
    """Build the model a spec describes, with freshly initialised weights."""
    if not isinstance(spec, dict):
        _checks.fail("spec", "a dict (see rnnlab.models)", _checks.describe(spec))
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    try:
        inp, r = spec["input"], spec["rnn"]
        readout, K = spec.get("readout", "steps"), spec["output_size"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"`spec` must have 'input', 'rnn' and 'output_size'; missing {e}") from None
    modules = []
    if inp["type"] == "tokens":
        modules.append(Embedding(inp["vocab_size"], inp["embed_dim"], dtype=dtype, rng=rng))
        features = inp["embed_dim"]
    elif inp["type"] == "vectors":
        features = inp["size"]
    else:
        _checks.fail("spec['input']['type']", "'tokens' or 'vectors'", repr(inp["type"]))
    rnn = make_recurrent(
        r["cell"], features, r["hidden_size"], r.get("num_layers", 1),
        bidirectional=r.get("bidirectional", False), dropout=r.get("dropout", 0.0),
        initial_state=r.get("initial_state", "zeros"), forget_bias=r.get("forget_bias"),
        dtype=dtype, rng=rng,
    )
    modules.append(rnn)
    readout = _checks.choice(readout, "spec['readout']", READOUTS)
    if readout == "last":
        modules.append(LastStep())
    elif readout == "mean":
        modules.append(MeanOverTime())
    if spec.get("output_dropout", 0.0) > 0:
        modules.append(Dropout(spec["output_dropout"]))
    modules.append(Linear(rnn.output_features, K, dtype=dtype, rng=rng))
    return Sequential(modules)


def recurrent_layer(model: Sequential) -> Recurrent:
    """The recurrent layer inside a built model."""
    for m in model.modules:
        if isinstance(m, Recurrent):
            return m
    raise ValueError("`model` must contain a recurrent layer; got none")


def with_defaults(spec: dict) -> dict:
    """A complete copy of `spec` with every optional field filled in (what config.json stores)."""
    s = copy.deepcopy(spec)
    r = s["rnn"]
    r.setdefault("num_layers", 1)
    r.setdefault("bidirectional", False)
    r.setdefault("dropout", 0.0)
    r.setdefault("initial_state", "zeros")
    r.setdefault("forget_bias", None)
    s.setdefault("readout", "steps")
    s.setdefault("output_dropout", 0.0)
    return s
