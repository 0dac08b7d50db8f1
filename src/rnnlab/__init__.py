"""rnnlab: recurrent neural networks in NumPy with hand-written, exact BPTT.

import numpy as np, rnnlab
lstm = rnnlab.LSTM(input_size=8, hidden_size=32, num_layers=2, bidirectional=True)
f = lstm.forward(x, lengths=lengths)      # f.output (B, T, 64), f.state (h_n, c_n)
b = lstm.backward(f, d_output)            # b.input, b.state, b.params["weight_hh_l0"], ...
"""

from __future__ import annotations

import sys as _sys

# (typing.TYPE_CHECKING, which mypy reads the same: typing and what it imports took 6 ms of
# this file's 11, before the program holds its signals; see rnnlab.__main__. importlib, for
# the same reason, only where it is used.)
TYPE_CHECKING = False

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Backward",
    "Dropout",
    "Embedding",
    "Forward",
    "GradcheckReport",
    "LastStep",
    "Linear",
    "MeanOverTime",
    "Recurrent",
    "Sequential",
    "gradcheck",
]

# The names above are imported when one of them is first asked for, not with the package:
# every `rnnlab.x` module imports this file first, and NumPy with the layers took ~0.2 s of
# it, which the `rnnlab` command (rnnlab.__main__) spent before it could take Ctrl-C and
# SIGTERM over (a traceback, or a death by the signal). `import rnnlab` then `rnnlab.LSTM`
# reads the same as before.
if TYPE_CHECKING:
    from types import ModuleType as _ModuleType
    from typing import Any

    from rnnlab.gradcheck import GradcheckReport, gradcheck
    from rnnlab.layers import GRU, LSTM, RNN, Backward, Forward, Recurrent
    from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential
else:
    _ModuleType = type(_sys)  # (types.ModuleType: that module is one more import)

    def __getattr__(name: str) -> Any:
        if name in __all__:
            _load()
            return globals()[name]
        # The submodules the names above brought with them, bound as before: `import rnnlab`
        # then `rnnlab.cells.LSTMCell` worked. No other name imports anything (another
        # submodule is rnnlab's attribute once imported, and `from rnnlab import io` imports
        # it itself when this says there is no such attribute).
        # (each alone: `from rnnlab import _checks` inside a module the names import asks
        # here too, and must not import the names, whose import it is part of)
        if name in _SUBMODULES:
            import importlib

            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

    def __dir__() -> list[str]:
        own = {n for n in globals() if n not in ("TYPE_CHECKING", "annotations")}
        return sorted({*own, *__all__, *_SUBMODULES})


_SUBMODULES = ("_blaschoice", "_checks", "_mkl", "cells", "fast", "layers", "modules", "ops",
               "recurrence", "settings")  # fmt: skip
"""The submodules `import rnnlab` bound when it imported the names of __all__ itself."""

_HOMES = {
    "gradcheck": ("GradcheckReport", "gradcheck"),
    "layers": ("GRU", "LSTM", "RNN", "Backward", "Forward", "Recurrent"),
    "modules": ("Dropout", "Embedding", "LastStep", "Linear", "MeanOverTime", "Sequential"),
}  # (the imports under TYPE_CHECKING above)


def _load() -> None:
    """Bind the package's names (what this file imported before it waited)."""
    import importlib

    for home, names in _HOMES.items():
        module = importlib.import_module(f"{__name__}.{home}")
        globals().update({name: getattr(module, name) for name in names})


class _Package(_ModuleType):
    """The package's module: `rnnlab.gradcheck` is the function, as when this file imported it
    first. The import system binds a submodule to its package once it has run it, so an
    `import rnnlab.gradcheck` before any name was asked for would have bound the module."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "gradcheck" and isinstance(value, _ModuleType):
            value = value.gradcheck
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
