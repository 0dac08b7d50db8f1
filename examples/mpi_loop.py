"""Data-parallel training in a loop of your own, over MPI (pip install 'rnnlab[mpi]'):

    mpiexec -n 2 python examples/mpi_loop.py      # 2 ranks, 8 rows of the batch each
    python examples/mpi_loop.py                   # 1 process, all 16 rows: the same weights

Every rank draws the same global batch from (seed, step) and keeps its rows; after the
backward pass, one call sums the ranks' gradients (one allreduce of one flat buffer), so
every rank applies the same update and the weights stay equal without being sent again.
The model learns to continue a counting sequence (the next token is the current one + 1).
"""

import numpy as np

import rnnlab.optim
from rnnlab import LSTM, Embedding, Linear, Sequential, distributed
from rnnlab.losses import softmax_cross_entropy

comm = distributed.Communicator()  # MPI.COMM_WORLD: the processes mpiexec started
rng = np.random.default_rng(comm.rank)  # a different start on each rank, on purpose:
model = Sequential(Embedding(50, 16, rng=rng), LSTM(16, 32, rng=rng), Linear(32, 50, rng=rng))
comm.broadcast_params(model.params)  # every rank starts from rank 0's weights
opt = rnnlab.optim.Adam(lr=1e-2)
state = opt.init(model.params)

B = 16  # the global batch
b = B // comm.size  # this rank's rows
rows = slice(comm.rank * b, (comm.rank + 1) * b)
for step in range(40):
    start = np.random.default_rng([0, step]).integers(0, 50, (B, 1))  # the same on every rank
    tokens = ((start + np.arange(21)) % 50)[rows]
    f = model.forward(tokens[:, :-1], training=True)
    loss, d_logits = softmax_cross_entropy(f.output, tokens[:, 1:], reduction="mean")
    grads = model.backward(f, d_logits, input_grad=False).params
    grads = distributed.average_gradients(grads, comm)  # each rank's loss is a mean of b rows
    opt.update(model.params, grads, state)

comm.check_same(model.params, "after training")  # raises on every rank if they drifted
norm = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in model.params.values()))
if comm.rank == 0:
    print(f"{comm.size} rank(s): last loss of rank 0's rows {loss:.3f}, weight norm {norm:.6f}")
