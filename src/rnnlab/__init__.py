"""rnnlab: recurrent neural networks in NumPy with hand-written, exact BPTT.

import numpy as np, rnnlab
lstm = rnnlab.LSTM(input_size=8, hidden_size=32, num_layers=2, bidirectional=True)
f = lstm.forward(x, lengths=lengths)      # f.output (B, T, 64), f.state (h_n, c_n)
b = lstm.backward(f, d_output)            # b.input, b.state, b.params["weight_hh_l0"], ...
"""

from rnnlab.gradcheck import GradcheckReport, gradcheck
from rnnlab.layers import GRU, LSTM, RNN, Backward, Forward, Recurrent
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

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
