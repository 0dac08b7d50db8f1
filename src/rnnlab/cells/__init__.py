"""Cells: the math of one time step, written once (rnnlab.cells.base has the protocol).

A cell states its parameters' shape, its carry, its recurrent products and its step forward
and backward, row by row in the vocabulary of rnnlab.cells.pointwise; rnnlab.recurrence runs
those steps on NumPy, rnnlab.fast compiles the same functions into its loops, and
rnnlab.layers.Recurrent gives any cell depth, directions, masks and initial states.
"""

from rnnlab.cells.base import Cell
from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell

__all__ = ["Cell", "ElmanCell", "GRUCell", "LSTMCell"]
