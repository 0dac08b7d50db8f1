"""The speed path of the time loop: a layer's whole loop over time compiled with numba.

rnnlab.recurrence runs a Python loop that calls the cell once per step; at small H that loop
costs more than the arithmetic. With the optional `fast` extra (numba, and scipy for numba's
`np.dot`) recurrence.forward/backward hand the loop to the functions below, which run it in
one compiled call per layer and direction, on exactly the arrays the NumPy loop uses. The
loops are generic (rnnlab.fast.loops): numba makes one per cell from the cell's own step
functions, so the same written step runs on both paths. The per-step matrix products go to
rnnlab's own kernel (rnnlab.fast.tiles) where the host measured it faster and a weight fits
its panels, else to MKL (the `mkl` extra) or NumPy's own OpenBLAS (rnnlab.fast.blas), as
rnnlab._blaschoice chose. Inside a session of
rnnlab.fast.parallel a batch is split by rows over rnnlab's threads, every part one kernel call
on its own rows. Without numba, or with the environment variable RNNLAB_NO_NUMBA=1,
`available()` is False and the NumPy loop runs.

    available() -> bool

    forward_loop(cell, XA, W_hh, b_ih, b_hh, q, hs, cs, tape, mask, reverse,
                 xa_at=None) -> None
        XA     (T, B, G·H)   X W_ihᵀ without its bias, C-contiguous; for cells whose steps run
                             in place it may lie where the steps write: xa_at="tape" (its
                             first G·H columns) or "output" (hs's output rows, G = 1)
        W_hh   (G·H, H)      or what step_weights made of it
        b_ih, b_hh (G·H,);   q (n_extra, H) or None: the cell's extra parameters
        hs     (T+1, B, H)   in/out: h_0 in hs[0] (hs[T] when reverse); steps write the rest
        cs     (T+1, B, H)   the same for a cell state; (T+1, B, 0) for cells without one
        tape   (T, B, n·H)   out: the cell's tape (one step long when no backward follows)
        mask   (T, B) bool   or None; a False step copies the previous carry
        reverse bool         step t reads hs[t+1] and writes hs[t]

    backward_loop(cell, W_hh, q, hs, cs, tape, mask, reverse, dys, dh, dc, dXA, dHA, dq,
                  dh_trace=None) -> (dh0, dc0)
        hs, cs, tape, mask, reverse   the forward's
        dys    (T, B, H) ∂L/∂ys or None; entries at masked steps are ignored
        dh, dc (B, H) ∂L/∂h_T, ∂L/∂c_T or None (zeros); not modified
        dXA    (T, B, G·H) out: ∂L/∂(pre-activations) as seen by W_ih, zero at masked steps;
        dHA    (T, B, len(hh_own)·H) out: W_hh's own blocks. For cells with grads_over_tape
               both are ignored: the gradients go over the tape's first blocks
        dq     (B, n_extra·H) in/out: ∂L/∂q, one row per batch row (summed by the caller)
        dh_trace (T, B, H) or None; out: the total ∂L/∂h_t of every step, as in recurrence

    step_weights(cell, W_hh, rows, backward=False, inference=False) -> StepWeights
        W_hh prepared once for several loops of one direction (gradient checkpointing's
        segments), or for a loop without a tape; each loop call otherwise prepares its own

    tiles_on() -> bool, tiled((K, N), dtype) -> bool
        whether the loops use the tiles (RNNLAB_TILES=on, or auto and measured faster), and
        whether such a weight goes to them (laid out in panels once per loop; N a multiple
        of NR)

    packs((K, N), dtype, inference=False) -> bool
        whether the per-step products take such a weight in MKL's packed format: with the
        `mkl` extra, weights of ≥ 2^18 values in training and ≥ 2^16 in inference, unless
        RNNLAB_PACKED=0

    transposed(a) -> aᵀ, C-contiguous (a blocked copy, ~5x NumPy's for a large W_hh)

    projecting_loop(cell, X, W_ih, W_hh, b_ih, b_hh, q, hs, cs, tape, mask, reverse,
                    training=False) -> None
        forward without a projection array: each step multiplies x_t where it lies (X may
        be a batch-first view) and then runs the cell's steps, as forward_loop does; in
        inference tape has one step and cs may have two rows (c_t in row t mod 2). Used
        where projects_each_step says

    squared_error(pred, targets, mask, count) -> (Σ squares, 2 (pred − targets) / count)
        the mean squared error's one compiled pass (rnnlab.losses), or None for a layout
        it does not take

    softmax_cross_entropy(logits, targets, mask, count) -> (Σ −log softmax at the target,
                                                            (softmax − onehot) / count)
        softmax cross-entropy's one compiled pass (rnnlab.losses), or None likewise

    sum_of_squares(arrays) -> Σ x² in float64 over the arrays (the gradient norm), or None
        for a dtype it does not take

    adam_step(p, g, m, v, lr, t, betas, eps, weight_decay, decoupled, scale) -> bool | None
        Adam's or AdamW's step for one parameter in one pass (rnnlab.optim), the gradient
        scaled first, bit for bit the NumPy path's; whether the new values are all finite,
        or None for arrays it does not take, untouched

The loops take a keyword `numpy_blas=False` to run the products on numba's np.dot (scipy's
BLAS) even where NumPy's is found: for tests and benchmarks. All arrays share one dtype,
float32 or float64. Outputs must be C-contiguous, except that hs may also be a block of
columns of a C-contiguous array (rows of H contiguous values, evenly spaced: each
direction's states inside a bidirectional layer's output); inputs are made so (a copy only
when needed).

The first call of each cell and dtype compiles its loops (seconds); numba caches the machine
code on disk (beside the package, keyed by what the loops compute: rnnlab.fast.loops), so
later processes load it in well under a second.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab import _checks, settings
from rnnlab.fast.probe import available as available
from rnnlab.fast.probe import keep_freed_memory as keep_freed_memory

MIN_ROWS = 4  # the fewest batch rows worth a thread of their own
MIN_LOOP_FLOPS = 8_000_000  # a loop with fewer recurrent-product FLOPs runs on one thread


def _run_parts(kernel, args: tuple, dims: tuple[int, int, int, int], numpy_blas: bool) -> None:
    """kernel(*args, b0, b1) over row ranges of the batch, split over rnnlab's threads inside
    a session (rnnlab.fast.parallel); only on a CBLAS whose threads rnnlab controls (numba's np.dot
    would start threads of its own BLAS in every part), and only for loops big enough to
    repay the hand-over to another thread (docs/design.md, "Using the cores": split, the short
    segments of √T checkpointing made a small LSTM's training step slower).
    dims = (T, B, G·H, K), K the inner size of a step's products: H, or I + H where the loop
    multiplies x_t too (projecting_loop)."""
    from rnnlab.fast import parallel

    parallel.run_parts(lambda b0, b1: kernel(*args, b0, b1), _loop_parts(dims, numpy_blas))


def _loop_parts(dims: tuple[int, int, int, int], numpy_blas: bool) -> list[tuple[int, int]]:
    """The row ranges _run_parts splits a loop's batch into."""
    from rnnlab.fast import parallel

    T, B, GH, K = dims
    big = 2 * T * B * GH * K >= MIN_LOOP_FLOPS
    return parallel.row_parts(B, MIN_ROWS) if numpy_blas and big else [(0, B)]


def sums_by_id_fit(T: int, B: int, GH: int, H: int, U: int, dtype: np.dtype) -> bool:
    """Whether backward_loop may sum the pre-activation gradients by U ids (`sums`, `ids`):
    its float64 blocks, one (U, G·H) for each part of the batch the loop is split into, take
    no more memory than the T·B rows of gradients (of `dtype`) they sum. A word model's
    batch, most of its ids distinct, split over many threads, would otherwise hold up to
    threads × T·B float64 rows: 4.2 GB for a (128, 128) batch of 8,000 distinct ids into
    an LSTM at H = 1024 over 16 threads, whose gradients take 268 MB. Where they do not
    fit, the layer takes ∂L/∂X and sums it by id (recurrence._bptt), as without numba."""
    from rnnlab.fast import blas

    parts = _loop_parts((T, B, GH, H), blas.NUMPY_CBLAS)
    return len(parts) * U * 8 <= T * B * np.dtype(dtype).itemsize


MIN_LOSS_ELEMENTS = 1 << 18  # a loss over fewer elements runs on one thread


def squared_error(
    pred: np.ndarray, targets: np.ndarray, mask: np.ndarray | None, count: int
) -> tuple[float, np.ndarray] | None:
    """(Σ (pred − targets)² over the valid entries, 2 (pred − targets) / count zeroed where
    not valid) for pred and targets of one dtype, float32 or float64, and shape (B, T, C),
    (B, T) or (B,);
    mask (B, T) or None. None when a layout does not suit the kernel (the last axis not
    contiguous), for the caller's NumPy path. The gradient is laid out like pred in memory;
    large arrays are split by batch rows over rnnlab's threads."""
    from rnnlab.fast import kernels

    if pred.ndim > 3 or targets.shape != pred.shape or targets.dtype != pred.dtype:
        return None
    if pred.dtype not in (np.float32, np.float64):  # the kernels' dtypes (float16 is not)
        return None
    grad = np.empty_like(pred)
    p3, y3, g3 = (_rows3(a) for a in (pred, targets, grad))
    if p3 is None or y3 is None or g3 is None:
        return None
    total = _by_rows(kernels.squared_error_rows, (p3, y3, g3), mask, pred.dtype.type(count),
                     pred.size)  # fmt: skip
    return total, grad


def _by_rows(kernel, arrays: tuple, mask: np.ndarray | None, count: np.generic,
             size: int) -> float:  # fmt: skip
    """Σ_b sums[b] after kernel(*arrays, mask, has_mask, count, sums, b0, b1) over the batch
    rows (split over rnnlab's threads inside a session for arrays of MIN_LOSS_ELEMENTS values
    or more): each row's sum apart, added in the rows' order, so a loss does not depend on
    the number of threads."""
    from rnnlab.fast import parallel

    m, has_mask = _mask_arg(mask)
    B = arrays[0].shape[0]
    sums = np.zeros(B)
    with parallel.session():
        parts = parallel.row_parts(B, 1) if size >= MIN_LOSS_ELEMENTS else [(0, B)]
        parallel.run_parts(lambda b0, b1: kernel(*arrays, m, has_mask, count, sums, b0, b1),
                           parts)  # fmt: skip
    return float(sums.sum())


def softmax_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None, count: int
) -> tuple[float, np.ndarray] | None:
    """(Σ (log Σ_k e^{o_k} − o_y) over the valid steps, (softmax(o) − onehot(y)) / count
    zeroed where not valid) for float32 or float64 logits (B, T, K) or (B, K), class ids of
    their shape but the last, every one in [0, K) (the caller checks), and mask (B, T) or
    None; one compiled pass (kernels.softmax_cross_entropy_rows). None where the logits'
    last axis is not contiguous, for the caller's NumPy path. The gradient is laid out like
    the logits in memory; large arrays are split by batch rows over rnnlab's threads."""
    from rnnlab.fast import kernels

    if logits.dtype not in (np.float32, np.float64) or logits.ndim not in (2, 3):
        return None
    grad = np.empty_like(logits)
    targets = np.ascontiguousarray(targets, dtype=np.intp)  # (one compiled kernel for all)
    if logits.ndim == 2:  # one target per sequence: one step each
        o3, g3, y2 = logits[:, None], grad[:, None], targets[:, None]
    else:
        o3, g3, y2 = logits, grad, targets
    if o3.strides[2] != o3.itemsize or g3.strides[2] != g3.itemsize:
        return None
    total = _by_rows(kernels.softmax_cross_entropy_rows, (o3, y2, g3), mask,
                     logits.dtype.type(count), logits.size)  # fmt: skip
    return total, grad


SQUARES_CHUNK = 1 << 16  # values a partial sum of sum_of_squares covers


def sum_of_squares(arrays: list[np.ndarray]) -> float | None:
    """Σ over the arrays of Σ x², each square in float64 (kernels.squares_by_chunk), or None
    where an array is not float32 or float64 (the caller's NumPy path). Each array is summed
    in chunks of SQUARES_CHUNK values, the chunks split over rnnlab's threads inside a
    session and their sums added in their order: the result does not depend on the number
    of threads. Without the float64 copy of every gradient that NumPy's dot needs (the
    character LM's norm 0.41 ms against 0.61; bench/README.md, "The tail of the step")."""
    from rnnlab.fast import kernels, parallel

    if any(a.dtype not in (np.float32, np.float64) for a in arrays):
        return None
    total = 0.0
    with parallel.session():
        for a in arrays:
            flat = a.reshape(-1) if a.flags.c_contiguous else np.ravel(a)
            chunks = -(-flat.shape[0] // SQUARES_CHUNK)
            sums = np.zeros(chunks)
            part = functools.partial(kernels.squares_by_chunk, flat, SQUARES_CHUNK, sums)
            parallel.run_parts(part, parallel.row_parts(chunks, 1))
            total += float(sums.sum())
    return total


def adam_step(
    p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, t: int,
    betas: tuple[float, float], eps: float, weight_decay: float, decoupled: bool,
    scale: float = 1.0,
) -> bool | None:
    """Adam's (AdamW's, `decoupled`) step t for one parameter p in one compiled pass
    (kernels.adam_pass), the gradient multiplied by `scale` first (g itself unchanged), bit
    for bit the NumPy path of rnnlab.optim after `g *= scale`. Returns whether the new p and
    v are all finite; None, with nothing written, where the kernel does not take the arrays:
    not all four of one dtype, float32 or float64, and laid out alike in one contiguous
    block; overlapping in memory; or a scalar that would round to ±inf in the arrays' dtype
    (NumPy's cast warns of it there).
    Bit for bit in the values, not in floating-point signalling: a NaN or inf the step makes
    raises no RuntimeWarning (nor an error under np.errstate(invalid="raise")), as NumPy's
    passes do; the caller learns of it from the result."""
    from rnnlab.fast import kernels

    dt = p.dtype
    # (dtype equality holds the byte order: numba types only native floats, and a parameter
    # read big-endian from a file is a '>f4', whose char is 'f' all the same)
    if not (g.dtype == m.dtype == v.dtype == dt) or dt not in _NATIVE_FLOATS:
        return None
    flat = _flat(p, g, m, v)
    if flat is None:
        return None
    scalars = _adam_scalars(dt, lr, t, betas, eps, weight_decay, decoupled)
    if scalars is None or not abs(scale) <= _LARGEST[dt.char]:
        return None
    status = kernels.adam_pass(*flat, scale, *scalars)
    return None if status == 0 else status == 1


def _adam_scalars(dt: np.dtype, lr: float, t: int, betas: tuple[float, float], eps: float,
                  weight_decay: float, decoupled: bool) -> tuple | None:  # fmt: skip
    """kernels.adam_pass's scalars, each the Python float of optim._adam_step computed as
    there, and its decay kind; None where a scalar is past the dtype's largest finite value
    (NumPy's path rounds it to ±inf, with a warning)."""
    from rnnlab.fast import kernels

    beta1, beta2 = betas
    if not weight_decay:
        kind, decay = kernels.PLAIN, 0.0
    elif decoupled:
        kind, decay = kernels.DECOUPLED, 1.0 - lr * weight_decay
    else:
        kind, decay = kernels.L2, weight_decay
    values = (1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(1.0 - beta2**t), eps,
              lr / (1.0 - beta1**t), decay)  # fmt: skip
    if not max(map(abs, values)) <= _LARGEST[dt.char]:  # (NaN too, though none comes)
        return None
    return (*values, kind)  # (the kernel rounds them)


_LARGEST = {c: float(np.finfo(c).max) for c in "fd"}
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _flat(*arrays: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """1-D views of arrays of one shape that are all C-contiguous or all F-contiguous with
    the same strides (element i of every view then is the same index in every array), or None."""
    if all(a.flags.c_contiguous for a in arrays):
        return tuple(a.reshape(-1) for a in arrays)
    strides = arrays[0].strides
    if all(a.flags.f_contiguous and a.strides == strides for a in arrays):
        return tuple(a.T.reshape(-1) for a in arrays)
    return None


def _rows3(a: np.ndarray) -> np.ndarray | None:
    """a as a (B, T, C) view with its last axis contiguous, or None."""
    if a.ndim < 3:
        a = a.reshape(a.shape + (1,) * (3 - a.ndim))  # adding unit axes never copies
    return a if a.strides[2] == a.itemsize or a.shape[2] <= 1 else None


def transposed(a: np.ndarray) -> np.ndarray:
    """aᵀ of a 2-D array as a new C-contiguous array (the recurrent weight for the per-step
    products), copied block by block (kernels.transpose_into, faster than NumPy's copy)."""
    from rnnlab.fast import kernels

    a = np.ascontiguousarray(a)
    out = np.empty((a.shape[1], a.shape[0]), a.dtype)
    kernels.transpose_into(a, out)
    return out


def _wide(hs: np.ndarray) -> np.ndarray:
    """The states as the kernels take them: hs (n, B, H) itself when C-contiguous; a block of
    H columns of a wider C-contiguous array as a C-contiguous (n, B, W) view from hs's first
    element, of which the kernels touch the first H columns only (the W − H others may lie
    past the array's end: they are never read or written)."""
    if hs.flags.c_contiguous:
        return hs
    n, B, H = hs.shape
    item = hs.itemsize
    s0, s1, s2 = hs.strides
    if s2 == item and s1 % item == 0 and s1 >= H * item and s0 == B * s1:
        return np.lib.stride_tricks.as_strided(hs, (n, B, s1 // item), (s0, s1, item))
    _checks.fail(
        "hs",
        "a C-contiguous (T+1, B, H) array or a block of columns of one (evenly spaced rows)",
        f"shape {hs.shape} with strides {hs.strides}",
    )


def _c(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _rows(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` itself when its last axis is contiguous (the kernels read whole rows): a
    time-major view of a batch-first gradient, or one direction's half of a bidirectional
    one, needs no copy of its own."""
    a = np.asarray(a)
    if a.dtype == dtype and a.ndim == 3 and (a.strides[2] == a.itemsize or a.shape[2] <= 1):
        return a
    return _c(a, dtype)


def _spaced_rows(X: np.ndarray) -> np.ndarray:
    """X (T, B, I) itself when the rows of every X[t] lie evenly spaced at least a row apart,
    as a product's left factor needs them (a leading dimension: a time-major view of a
    batch-first input qualifies), else a C-contiguous copy: a reversed (x[::-1]), broadcast,
    overlapping or byte-offset batch axis would give MKL an invalid or wrong one."""
    step = X.strides[1]
    if X.shape[1] <= 1 or (step > 0 and step % X.itemsize == 0 and step >= X.shape[2] * X.itemsize):
        return X
    return np.ascontiguousarray(X)


def _mask_arg(mask: np.ndarray | None) -> tuple[np.ndarray, bool]:
    if mask is None:
        return np.ones((0, 0), bool), False
    return np.ascontiguousarray(mask, dtype=bool), True


MIN_PACKED_VALUES = 1 << 18  # in training, weights with fewer values are not packed
MIN_PACKED_VALUES_INFER = 1 << 16  # the same in inference (no tape)


def packs(shape: tuple[int, int], dtype, inference: bool = False) -> bool:
    """Whether the loops' per-step products take a weight of this (K, N) shape in MKL's packed
    format: with the `mkl` extra, for float32 and float64 weights of at least
    MIN_PACKED_VALUES values (MIN_PACKED_VALUES_INFER for inference), unless
    RNNLAB_PACKED=0.

    A product A·W on a plain W makes MKL repack W's panels at every call; packed once per
    loop, W goes to the products as it is. Packing paid from these sizes on and lost on small
    weights; in training the packed buffers' memory cost as much as the step gained at
    H = 128, hence the larger bound there (docs/design.md, "Using the cores", has the
    measurements)."""
    from rnnlab.fast import blas

    if not blas.PACKS or not settings.current().packed:
        return False
    least = MIN_PACKED_VALUES_INFER if inference else MIN_PACKED_VALUES
    return np.dtype(dtype) in (np.float32, np.float64) and shape[0] * shape[1] >= least


_NOT_PACKED = np.empty(0, np.uint8)


MIN_TILED_IN_PLACE = 1 << 18
"""A weight the BLAS would take where it lies (BPTT's W_hh blocks, C-contiguous) goes to the
tiles from this many values on only in loops of as few rows a thread as the host measured
them well ahead of the BLAS with (_blaschoice.IN_PLACE_MARGIN, `Choice.tiles_in_place_rows`):
their panels are a copy, 4 MB of a 94 MB LSTM training step at H = 512. The tiles' lead
shrinks with the rows: on an AMD EPYC with AVX2 1.61x OpenBLAS's speed at 16 rows, 1.24x at
32 and 1.04x at 64 (the steps level there), on one with AVX-512 1.35x MKL's at 64 rows
(bench/README.md, "BPTT's weights by the rows a thread"). Below this size the copy is small and
the products 1.5-1.8x faster. A forward weight is copied for the BLAS too (transposed), so it
always goes to the tiles."""


def tiles_on() -> bool:
    """Whether the loops use rnnlab's own kernel (rnnlab.fast.tiles) where a weight fits it:
    RNNLAB_TILES=on, or auto and the BLAS choice measured it faster on this host. The
    setting is read here, not only through the choice, which is made once per process."""
    from rnnlab import _blaschoice

    asked = settings.current().tiles
    return asked == "on" or (asked == "auto" and _blaschoice.choice().tiles)


def _tiles_in_place(rows: int) -> bool:
    """Whether BPTT takes a large weight where it lies on the tiles, in a loop over `rows`
    batch rows: by the rows each thread's part will have (parallel.row_parts)."""
    from rnnlab import _blaschoice
    from rnnlab.fast import parallel

    most = max(b - a for a, b in parallel.row_parts(rows, MIN_ROWS))
    return most <= _blaschoice.choice().tiles_in_place_rows


def tiled(shape: tuple[int, int], dtype) -> bool:
    """Whether the loops' per-step products take a weight of this (K, N) shape on the tiles:
    `tiles_on`, and the weight fits their panels (float32 or float64, N a multiple of the
    panel width)."""
    from rnnlab.fast import tiles

    return tiles_on() and tiles.takes(shape, dtype)


def _weight(b: np.ndarray, dt: np.dtype, rows: int, np_blas: bool, inference: bool) -> tuple:
    """A right factor b (K, N) of the per-step products (any strides: W_hhᵀ may be W_hh.T) as
    kernels.gemm takes it: (b in panels, empty) where `tiled` (and, for a b the BLAS takes
    as it is, under MIN_TILED_IN_PLACE values or in a loop of few rows a thread:
    _tiles_in_place), (empty, b packed) where `packs`, else
    (b C-contiguous, empty)."""
    in_place = b.dtype == dt and b.flags.c_contiguous  # what the BLAS takes without a copy
    large = in_place and b.size >= MIN_TILED_IN_PLACE
    if tiled(b.shape, dt) and (not large or _tiles_in_place(rows)):
        from rnnlab.fast import tiles

        return tiles.panels(b.astype(dt, copy=False)), _NOT_PACKED
    if np_blas and b.dtype == dt and packs(b.shape, dt, inference):
        from rnnlab import _mkl

        mkl = _mkl.load()  # (not None: packs() found it)
        packed = mkl.pack(b, rows) if mkl is not None else None
        if packed is not None:
            return np.empty((0, 0), dt), packed
    if b.dtype == dt and b.T.flags.c_contiguous and not b.flags.c_contiguous:
        return transposed(b.T), _NOT_PACKED  # the blocked copy, not NumPy's
    return _c(b, dt), _NOT_PACKED


@dataclass(frozen=True)
class StepWeights:
    """A direction's recurrent weight prepared for the per-step products of one compiled loop
    (`step_weights`): one (dense, packed) pair per product of the cell, the rows of W_hh the
    product takes, transposed for the forward loop (h_{t-1} W_hhᵀ) and as they are for BPTT
    (da W_hh); "dense" is the factor laid out in the tiles' panels where `tiled`."""

    cell_key: tuple
    backward: bool
    dtype: np.dtype
    factors: tuple  # one (dense, packed) pair per product of the cell; two pairs always


def step_weights(
    cell,
    W_hh: np.ndarray,
    rows: int,
    *,
    backward: bool = False,
    inference: bool = False,
    numpy_blas: bool | None = None,
) -> StepWeights:
    """W_hh (G·H, H) prepared for the loops of `cell`; `rows`: the batch rows the loop will
    run; `inference`: a forward loop without a tape (see packs)."""
    from rnnlab.fast import blas

    np_blas = blas.NUMPY_CBLAS and numpy_blas is not False
    return _prepared(cell, W_hh, W_hh.dtype, rows, np_blas, backward, inference)


def _prepared(cell, W, dt, rows, np_blas, backward, inference=False) -> StepWeights:
    if isinstance(W, StepWeights):
        if W.cell_key != cell.key or W.backward != backward or W.dtype != dt:
            _checks.fail(
                "W_hh",
                f"weights prepared for the {'backward' if backward else 'forward'} loop of "
                f"{cell!r} in {dt}",
                f"weights for the {'backward' if W.backward else 'forward'} loop of another "
                f"cell or dtype ({W.dtype})",
            )
        return W
    W = np.asarray(W)
    H = W.shape[0] // cell.gates  # W_hh's columns are the carry's (P with a projection)
    factors = []
    for (lo, hi), _ in cell.products:
        block = W[lo * H : hi * H]
        factors.append(_weight(block if backward else block.T, dt, rows, np_blas, inference))
    while len(factors) < 2:
        factors.append((np.empty((0, 0), dt), _NOT_PACKED))
    return StepWeights(cell.key, backward, dt, tuple(factors))


def _product_buffers(cell, B: int, H: int, dt) -> tuple[np.ndarray, np.ndarray]:
    """The (B, width) results of the cell's products, one buffer each (two always)."""
    bufs = [np.empty((B, (hi - lo) * H), dt) for (lo, hi), _ in cell.products]
    while len(bufs) < 2:
        bufs.append(np.empty((B, 0), dt))
    return bufs[0], bufs[1]


def _extra(q: np.ndarray | None, H: int, dt) -> np.ndarray:
    """The cell's extra parameters as the steps take them: one row of n_extra·H values."""
    return np.empty(0, dt) if q is None else _c(q, dt).reshape(-1)


def _carry(cs: np.ndarray | None, rows: int, B: int, dt) -> np.ndarray:
    return np.empty((rows, B, 0), dt) if cs is None else cs


def _around(W_hr, noise, own, own_c, B: int, dt, backward: bool, np_blas: bool,
            inference: bool = False, feedback=None):  # fmt: skip
    """The loops' key for the options around the cell's step, and their arguments:
    (W_r, keep, zh, zc, own, ownc) with empty stand-ins for what is off."""
    from rnnlab.fast.loops import FED

    keep = None if noise is None else noise.keep
    zh = None if noise is None else noise.zone_h
    zc = None if noise is None else noise.zone_c
    key = (W_hr is not None, keep is not None, zh is not None, zc is not None,
           0 if feedback is None else FED[feedback.f],
           feedback is not None and feedback.hidden)  # fmt: skip
    if W_hr is None:
        W_r = _no_weight(dt)
    else:
        W_r = _weight(W_hr if backward else W_hr.T, dt, B, np_blas, inference)
    none2, none3 = np.empty((0, 0), dt), np.empty((0, 0, 0), dt)
    args = (
        W_r,
        none2 if keep is None else _c(keep, dt),
        none3 if zh is None else _c(zh, dt),
        none3 if zc is None else _c(zc, dt),
        none3 if own is None else own,
        none3 if own_c is None else own_c,
    )
    return key, args


def _feedback_args(feedback, b_hr, dt) -> tuple:
    """(fb_b, outs, use, truth) for the forward loops: output feedback's arrays, or empty."""
    if feedback is None:
        none3 = np.empty((0, 0, 0), dt)
        return np.empty(0, dt), none3, np.empty((0, 0), dt), none3
    return (_c(b_hr, dt), feedback.outputs, _c(feedback.use, dt), _rows(feedback.truth, dt))


def _said_by_cell(loop: Any) -> Any:
    """A loop whose compilation numba refuses (a step calling a plain Python helper,
    allocating, importing) raises a ValueError naming the cell and numba's reason, where
    numba's error came with its colour codes and no word of the cell or of the rule."""

    @functools.wraps(loop)
    def run(cell: Any, *args: Any, **kwargs: Any) -> Any:
        from numba.core.errors import NumbaError, UnsupportedBytecodeError

        try:
            return loop(cell, *args, **kwargs)
        except (NumbaError, UnsupportedBytecodeError) as e:  # (the second is no NumbaError:
            # a step with an import or another statement numba does not read)
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
            said = [line.strip() for line in plain.splitlines() if line.strip()]
            reason = next((line for line in said[1:] if not line.startswith("During:")),
                          said[0] if said else "")  # fmt: skip
            _checks.fail("cell", "a cell whose steps the compiled loops can compile: "
                         "rnnlab.cells.pointwise's functions, arithmetic and helpers compiled "
                         "with @numba.njit", f"{type(cell).__name__}, whose steps numba "
                         f"refused ({reason})", "A helper of plain Python runs on NumPy only "
                         "(RNNLAB_NO_NUMBA=1).")  # fmt: skip

    return run


@_said_by_cell
def forward_loop(
    cell,
    XA: np.ndarray,
    W_hh,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    q: np.ndarray | None,
    hs: np.ndarray,
    cs: np.ndarray | None,
    tape: np.ndarray,
    mask: np.ndarray | None,
    reverse: bool,
    *,
    xa_at: str | None = None,
    numpy_blas: bool | None = None,
    W_hr: np.ndarray | None = None,
    noise=None,
    own: np.ndarray | None = None,
    own_c: np.ndarray | None = None,
    b_hr: np.ndarray | None = None,
    feedback=None,
    ids: np.ndarray | None = None,
) -> None:
    """Run the forward time loop of `cell`, writing hs[, cs] and the tape in place. `xa_at`:
    where XA lies if not apart, "tape" (its first G·H columns) or "output" (where the step
    writes h), for cells whose steps run in place: the loop reads it there (see loops).
    `ids` (T, B), integers in [0, U): XA is the projections of the input's U distinct rows
    (U, G·H) and step t of row b reads XA[ids[t, b]] (xa_at "lookup", an Embedding's
    output: the caller vouches for the range).
    Around the cell (rnnlab.recurrence.step_forward): W_hr (P, H) a projection of the
    carry, noise (recurrence.Noise) the dropout and zoneout masks, own (own_c) (T, B, H)
    where the cell writes h̃_t (c̃_t) when the library makes the carry from them; with output
    feedback (recurrence.Feedback) W_hr is the output map (K, H) and b_hr its bias, and the
    loop writes feedback.outputs."""
    from rnnlab.fast import blas, loops

    np_blas = blas.NUMPY_CBLAS and numpy_blas is not False
    dt = hs.dtype
    if ids is not None:
        xa_at, ids = "lookup", np.ascontiguousarray(ids, dtype=np.intp)
    T, B, P = (XA if ids is None else ids).shape[0], hs.shape[1], hs.shape[2]
    H = P if own is None else own.shape[2]
    GH = cell.gates * H
    W = _prepared(cell, W_hh, dt, B, np_blas, backward=False)
    hs = _wide(hs)
    if xa_at in (None, "lookup"):
        XA = _c(XA, dt)
    ha0, ha1 = _product_buffers(cell, B, H, dt)
    m, has_mask = _mask_arg(mask)
    key, around = _around(W_hr, noise, own, own_c, B, dt, False, np_blas, feedback=feedback)
    loop = loops.forward_for(cell, xa_at or "apart", key)
    width = P if W_hr is None else W_hr.shape[0]
    args = (XA, _no_weight(dt), _c(b_ih, dt), *W.factors, _c(b_hh, dt), _extra(q, H, dt),
            hs, _carry(cs, T + 1, B, dt), tape, m, has_mask, bool(reverse), np_blas, H, P,
            np.empty((0, 0), dt), ha0, ha1, *around, *_around_buffers(key, B, P, dt, width),
            *_feedback_args(feedback, b_hr, dt), _NO_IDS if ids is None else ids)  # fmt: skip
    _run_parts(loop, args, (T, B, GH, H), np_blas)


_NO_IDS = np.empty((0, 0), np.intp)


def _around_buffers(key: tuple, B: int, P: int, dt, width: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(h_{t-1} ⊙ keep, the projection's result): (B, P) and (B, width) where used (width:
    W_hr's rows, P or output feedback's K)."""
    proj, drop = key[0], key[1]
    width = P if width is None else width
    return (np.empty((B, P if drop else 0), dt), np.empty((B, width if proj else 0), dt))


@functools.cache
def _no_weight(dt) -> tuple:
    return (np.empty((0, 0), dt), _NOT_PACKED)


def projects_each_step(cell, I: int, H: int, dtype=np.float32, training: bool = False) -> bool:
    """Whether a forward pass runs `projecting_loop` (no projection array, x_t multiplied
    where it lies at every step) for a layer of this cell and size, so that each step's
    product on x_t runs as fast as its share of the hoisted projection:
    - in inference, where the input weight runs on the tiles (`tiled`) or would be packed
      (`packs`): an LSTM's inference 1.08-1.16x at the bench's shapes (bench/README.md,
      "The loops' own product kernel");
    - in training, where it runs on the tiles: the projection's (T, B, G·H) result is then
      never written to memory and read back by the loop; an LSTM's training step 1-14 %
      shorter at S1-S4 (bench/README.md, "The input's product inside the training loop").
    On a plain BLAS the one large projection before the loop runs nearer the GEMM peak than
    the per-step products gain."""
    shape = (I, cell.gates * H)
    if training:
        return tiled(shape, dtype)
    return tiled(shape, dtype) or packs(shape, dtype, inference=True)


@_said_by_cell
def projecting_loop(
    cell,
    X: np.ndarray,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    q: np.ndarray | None,
    hs: np.ndarray,
    cs: np.ndarray | None,
    tape: np.ndarray,
    mask: np.ndarray | None,
    reverse: bool,
    *,
    W_hr: np.ndarray | None = None,
    noise=None,
    own: np.ndarray | None = None,
    own_c: np.ndarray | None = None,
    training: bool = False,
) -> None:
    """A forward pass whose steps each compute x_t W_ihᵀ from x_t where it lies (a time-major
    view X (T, B, I) of a batch-first input is read in place; X is copied only where its rows
    are not evenly spaced at least a row apart, _spaced_rows), then the cell's products and
    steps as forward_loop does, into the same tape: the step reads x_t's product from a
    (B, G·H) buffer instead of from a projection array. In inference `tape` (own, own_c) has
    one step; in training (`training=True`, a full tape) the weights are prepared as for the
    training loops (see packs)."""
    from rnnlab.fast import blas, loops

    np_blas = blas.NUMPY_CBLAS
    inference = not training
    dt = hs.dtype
    T, B, I = X.shape
    P = hs.shape[2]
    H = P if own is None else own.shape[2]
    GH = cell.gates * H
    hs = _wide(hs)
    W_x = _weight(_c(W_ih, dt).T, dt, B, np_blas, inference)
    W = _prepared(cell, W_hh, dt, B, np_blas, backward=False, inference=inference)
    X = _spaced_rows(_rows(X, dt))
    ha0, ha1 = _product_buffers(cell, B, H, dt)
    m, has_mask = _mask_arg(mask)
    key, around = _around(W_hr, noise, own, own_c, B, dt, False, np_blas, inference=inference)
    loop = loops.forward_for(cell, "project", key)
    rows = 2 if cs is None else cs.shape[0]
    args = (X, W_x, _c(b_ih, dt), *W.factors, _c(b_hh, dt), _extra(q, H, dt), hs,
            _carry(cs, rows, B, dt), tape, m, has_mask, bool(reverse), np_blas, H, P,
            np.empty((B, GH), dt), ha0, ha1, *around, *_around_buffers(key, B, P, dt),
            *_feedback_args(None, None, dt), _NO_IDS)  # fmt: skip
    _run_parts(loop, args, (T, B, GH, I + H), np_blas)


@_said_by_cell
def backward_loop(
    cell,
    W_hh,
    q: np.ndarray | None,
    hs: np.ndarray,
    cs: np.ndarray | None,
    tape: np.ndarray,
    mask: np.ndarray | None,
    reverse: bool,
    dys: np.ndarray | None,
    dh: np.ndarray | None,
    dc: np.ndarray | None,
    dXA: np.ndarray | None,
    dHA: np.ndarray | None,
    dq: np.ndarray | None,
    dh_trace: np.ndarray | None = None,
    *,
    numpy_blas: bool | None = None,
    W_hr: np.ndarray | None = None,
    noise=None,
    own: np.ndarray | None = None,
    own_c: np.ndarray | None = None,
    dHR: np.ndarray | None = None,
    feedback=None,
    sums: np.ndarray | None = None,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """BPTT through the time loop of `cell`: fills dXA and dHA (or the tape, for cells with
    grads_over_tape), dq and, with a projection W_hr, dHR (T, B, P) (∂L/∂h_t, zero at
    masked steps); returns (dh0, dc0). The keywords are forward_loop's, and `sums` (U, G·H)
    float64, zero on entry: where given, it gets the pre-activation gradients of the valid
    rows summed while the loop has them in cache, by `ids` (T, B) integers in [0, U) where
    given (an Embedding's ids: row u the sum over the rows of id u), else all into row 0
    (b_ih's gradient; U = 1). Each thread sums its rows into a block of its own, the blocks
    are added after: a pass over the T·B rows of the gradients saved, at the price of
    ~G·H adds a row inside the loop."""
    from rnnlab.fast import blas, loops

    np_blas = blas.NUMPY_CBLAS and numpy_blas is not False
    dt = hs.dtype
    B, P = hs.shape[1], hs.shape[2]
    H = P if own is None else own.shape[2]
    GH = cell.gates * H
    if cell.grads_over_tape:
        T = tape.shape[0]
        dXA = dHA = np.empty((0, 0, 0), dt)
    else:
        assert dXA is not None  # the gradients go to dXA where they do not go over the tape
        T = dXA.shape[0]
        if dHA is None:
            dHA = np.empty((T, B, 0), dt)
        if cell.in_place and cell.tape >= cell.gates:  # the steps find the gates in da
            np.copyto(dXA, tape[:, :, :GH])
            np.copyto(dHA, tape[:, :, GH : GH + dHA.shape[2]])
    hs = _wide(hs)
    W = _prepared(cell, W_hh, dt, B, np_blas, backward=True)
    m, has_mask = _mask_arg(mask)
    has_dys, has_trace = dys is not None, dh_trace is not None
    dys = _rows(dys, dt) if dys is not None else np.empty((0, 0, 0), dt)
    trace = dh_trace if has_trace else np.empty((0, 0, 0), dt)
    dh = np.zeros((B, P), dt) if dh is None else np.array(dh, dtype=dt, order="C")
    if cell.has_c:
        dc = np.zeros((B, H), dt) if dc is None else np.array(dc, dtype=dt, order="C")
    else:
        dc = np.empty((B, 0), dt)
    own_width = len(cell.hh_own) * H
    if dq is None:
        dq = np.empty((B, 0), dt)
    hh = [np.empty((B, (hi - lo) * H if own_width else 0), dt) for (lo, hi), _ in cell.products]
    hh += [np.empty((B, 0), dt)] * (2 - len(hh))
    key, around = _around(W_hr, noise, own, own_c, B, dt, True, np_blas, feedback=feedback)
    loop = loops.backward_for(cell, key)
    proj, zone_h, zone_c = key[0], key[2], key[3]
    dHR = dHR if proj else np.empty((0, 0, 0), dt)
    dcell = np.empty((B, H if proj or zone_h else 0), dt)
    dccell = np.empty((B, H if zone_c else 0), dt)
    dims = (T, B, GH, H)
    parts = _loop_parts(dims, np_blas)
    if sums is None:
        mode, blocks = 0, np.zeros((0, 0, 0))
        slot, at = np.zeros(0, np.intp), np.zeros((0, 0), np.intp)
    else:
        if sums.dtype != np.float64 or sums.shape[1] != GH or not sums.flags.c_contiguous:
            _checks.fail("sums", f"a C-contiguous float64 (U, {GH}) array",
                         f"{sums.dtype} {sums.shape}")  # fmt: skip
        mode = 2 if ids is None else 1
        blocks = np.zeros((len(parts), *sums.shape))
        slot = np.empty(B, np.intp)
        for p, (b0, b1) in enumerate(parts):
            slot[b0:b1] = p
        # (by one row, the loop reads no ids: no (T, B) array of zeros for it)
        at = np.zeros((0, 0), np.intp) if ids is None else np.ascontiguousarray(ids, np.intp)
    args = (*W.factors, _extra(q, H, dt), hs, _carry(cs, T + 1, B, dt), tape, dXA, dHA, m,
            has_mask, bool(reverse), dys, has_dys, dh, dc, trace, has_trace, np_blas, H, dq,
            np.empty((B, H), dt), hh[0], hh[1], np.empty((B, P), dt), *around, dHR, dcell,
            dccell, np.empty((0, 0), dt) if feedback is None else _c(feedback.use, dt),
            blocks, slot, at, mode)  # fmt: skip
    from rnnlab.fast import parallel

    parallel.run_parts(lambda b0, b1: loop(*args, b0, b1), parts)
    if sums is not None:
        np.sum(blocks, axis=0, out=sums)
    return dh, (dc if cell.has_c else None)
