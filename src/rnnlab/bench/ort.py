"""onnxruntime as a third side for inference: rnnlab's layer exported with rnnlab.onnx and run
by onnxruntime's fused RNN/LSTM/GRU kernels, the deployment a user would compare against.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rnnlab.bench.runners import TOLERANCE, Pair, relative_error

ORT_MISSING = "--against onnxruntime needs onnx and onnxruntime: pip install 'rnnlab[onnxruntime]'"


def ort_step(pair: Pair, threads: int, where: str) -> Callable[[], Any]:
    """Inference by onnxruntime on the same weights: rnnlab's layer exported with
    rnnlab.onnx (the standard RNN/LSTM/GRU operators; no lengths input, as the batch has no
    padding) into the directory `where`, run with `threads` intra-op threads (torch's), the
    same work a deployment would hand it. Its output is checked against rnnlab's first."""
    try:
        import onnxruntime as ort

        from rnnlab import onnx
    except ImportError as e:
        raise ImportError(ORT_MISSING) from e
    path = onnx.export(pair.ours, os.path.join(where, "layer.onnx"), lengths=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feeds = {"x": pair.x}
    return lambda: session.run(["y"], feeds)[0]


def check_ort_agreement(pair: Pair, step: Callable[[], Any], label: str) -> float:
    """onnxruntime's output against rnnlab's inference; RuntimeError above TOLERANCE."""
    err = relative_error(step(), pair.ours.forward(pair.x, grad=False).output)
    if not err <= TOLERANCE:
        raise RuntimeError(
            f"{label}: rnnlab and onnxruntime disagree on the outputs (relative error "
            f"{err:.2e} > {TOLERANCE:g}); not timing a wrong computation."
        )
    return err
