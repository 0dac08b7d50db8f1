"""Cells: the pointwise math of one time step, one file per family.

A cell owns the equations of a single step and their derivatives; rnnlab.recurrence owns the
loop over time, masks, direction, initial states, the hoisted input projection and the
deferred weight-gradient products. The contract a cell keeps:

- `gates`: how many H-row blocks W_ih and W_hh have; `has_c`: whether it carries a cell state;
- `new_tape(T, B, H, dtype)`: arrays, indexed by time step, for what its backward needs;
- `forward_step(t, xa, h_prev, c_prev, W_hhT, b_hh, h, c, tape)`: writes h_t (and c_t) in place;
- `backward_step(t, dh, dc, h_prev, c_prev, h, c, W_hh, tape, da_x, da_h)`: writes the
  pre-activation gradients seen by W_ih (`da_x`) and by W_hh (`da_h`, unused when
  `shares_preact_grad`) and returns (dh_{t-1}, dc_{t-1}).
"""

from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell

__all__ = ["ElmanCell", "GRUCell", "LSTMCell"]
