"""Cells: the pointwise math of one time step, one file per family.

A cell owns the equations of a single step and their derivatives; rnnlab.recurrence owns the
loop over time, masks, direction, initial states, the hoisted input projection and the
deferred weight-gradient products. The contract a cell keeps:

- `gates`: how many H-row blocks W_ih and W_hh have; `has_c`: whether it carries a cell state;
- `new_tape(T, B, H, dtype)`: arrays, indexed by time step, for what its backward needs;
- `forward_step(t, xa, h_prev, c_prev, W_hhT, b_hh, h, c, tape)`: writes h_t (and c_t) in place;
- `backward_step(t, dh, dc, h_prev, c_prev, h, c, W_hh, tape, da_x, da_h)`: writes the
  pre-activation gradients seen by W_ih (`da_x`) and by W_hh (`da_h`: unused when
  `shares_preact_grad`, else `hh_grad_width(H)` columns of what differs from da_x, G·H
  when a cell does not say) and returns (dh_{t-1}, dc_{t-1});
- optional `weight_grad_blocks(hs_prev, tape, dA_x, dA_h)`: how dW_hh is formed when its rows
  did not all multiply h_{t-1} by one gradient (the GRU), as (rows, gradients, inputs);
- optional `preact_tape`: the tape entry of the same shape as the pre-activations (the gate
  activations). The compiled loops write the input projection there and, in BPTT, the
  pre-activation gradients over it (one (T, B, G·H) array for all three), so a tape
  serves one backward pass (rnnlab.recurrence);
- optional `hh_grad_tape`: the tape entry BPTT may overwrite with da_h, each step reading it
  just before (the GRU's W_hn h + b_hn, reset-after);
- optional `preact_in_output`: the input projection may go into the output rows of the
  states (an Elman cell: each step reads its row of X W_ihᵀ before it writes h_t there).
"""

from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell

__all__ = ["ElmanCell", "GRUCell", "LSTMCell"]
