"""The benchmark anyone can rerun: rnnlab's RNN, LSTM and GRU layers against PyTorch 2.13's.

`rnnlab bench` (or `python -m rnnlab.bench`) times what a user calls, `layer.forward` and
`layer.backward`, beside torch.nn.RNN(tanh)/LSTM/GRU holding the SAME float32 weights, on four
shapes (S1–S4) in one and two directions plus a 2-layer S2 stack, for a training step
(forward over the sequence, mean squared error on every output, full BPTT to every parameter
gradient, no optimiser) and for inference (forward only; torch under inference_mode). Before
anything is timed, each configuration's outputs and gradients are compared with torch's, so
a wrong computation is never timed. Blocks of the two implementations are interleaved with
pauses, and the ratio is torch time / rnnlab time (above 1: rnnlab is faster). It also
reports achieved GFLOP/s against the machine's float32 GEMM speed measured at start-up, the
peak extra memory of a training step, and how a training step scales with the length T;
`--against torch,onnxruntime` adds onnxruntime's inference on the same weights, and
`--end-to-end` trains the same character LM with both libraries.

One file per concern:

- configs.py: the shapes, cells, variants and directions; FLOP counts
- runners.py: rnnlab's and torch's sides of a comparison and their agreement check
- ort.py: onnxruntime's side (inference)
- timing.py: interleaved blocks with pauses, per-call statistics
- host.py: the CPU, BLAS libraries, rnnlab's loops, the measured GEMM peak
- environment.py: every read of the process environment
- memory.py: the peak extra memory of a step, in a fresh process
- scaling.py, variants.py: the study in T, the LSTM variants against the plain LSTM
- suite.py: one run of all of it; summary.py: its headline numbers
- report.py: the terminal table and the markdown
- end_to_end.py: a character LM trained for N steps by rnnlab's Trainer and by plain PyTorch
- cli.py: the options and main

PyTorch is imported only inside the bench, lazily: it is the reference, never a dependency of
the library.
"""

from rnnlab.bench.cli import main
from rnnlab.bench.suite import run

__all__ = ["main", "run"]
