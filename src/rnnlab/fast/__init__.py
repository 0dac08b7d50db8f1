"""The speed path of the time loop: each cell's whole loop over time compiled with numba.

rnnlab.recurrence runs a Python loop that calls the cell once per step; at small H that loop
costs more than the arithmetic. With the optional `fast` extra (numba, and scipy for numba's
`np.dot`) recurrence.forward/backward hand the loop to the functions below, which run it in
one compiled call per layer and direction, on exactly the arrays the NumPy loop uses and with
the same results to an ulp or two (rnnlab.fast.kernels). The matrix products go to MKL (the
`mkl` extra) or else NumPy's own OpenBLAS (rnnlab.fast.blas). Inside a session of
rnnlab.parallel a batch is split by rows over rnnlab's threads, every part one kernel call
on its own rows. Without numba, or with the environment variable RNNLAB_NO_NUMBA=1,
`available()` is False and the NumPy loop runs.

    available() -> bool

    forward_loop(kind, XA, W_hhT, b_hh, hs, cs, extra, mask, reverse, b_ih=None) -> None
        kind   "tanh" | "relu" | "lstm" | "gru" (reset_after=True) | "gru_orig" (reset_after=False)
        XA     (T, B, G·H)   X W_ihᵀ + b_ih, C-contiguous; X W_ihᵀ alone when b_ih is given.
                             May share memory with the gate tape (LSTM, GRU) or with the
                             output rows of hs (tanh, relu): each step reads its row of XA
                             before it writes there
        W_hhT  (H, G·H)      W_hhᵀ, any strides (W_hh.T is packed or copied without NumPy's
                             slow transpose), or what step_weights made of it
        b_hh   (G·H,)
        hs     (T+1, B, H)   in/out: h_0 in hs[0] (hs[T] when reverse); steps write the rest
        cs     (T+1, B, H)   the same for the LSTM's cell state; None for the other cells
        extra  dict          the cell's new_tape(T, B, H, dtype), filled as its forward_step
                             fills it ("ifgo" for the LSTM; "rzn", "hn" for the GRU)
        mask   (T, B) bool   or None; a False step copies the previous state (as recurrence)
        reverse bool         step t reads hs[t+1] and writes hs[t]

    backward_loop(kind, W_hh, hs, cs, extra, mask, reverse, dys, dh, dc, dXA, dHA,
                  dh_trace=None) -> (dh0, dc0)
        W_hh   (G·H, H), or step_weights(kind, W_hh, B, backward=True)
        hs, cs, extra, mask, reverse   the forward's tape (from either loop)
        dys    (T, B, H) ∂L/∂ys or None; entries at masked steps are ignored
        dh, dc (B, H) ∂L/∂h_T, ∂L/∂c_T or None (zeros); not modified
        dXA    (T, B, G·H)   out: ∂L/∂(pre-activations) as seen by W_ih, zero at masked steps.
                             May be the gate tape itself (extra["ifgo"] / extra["rzn"]): the
                             kernels turn the gates into these gradients in place, step by
                             step; any other array gets a copy of the gates first
        dHA    out: as seen by W_hh, where that differs: for "gru" the n block only
                             (T, B, H); for the other cells the two coincide and only dXA is
                             written (pass dXA twice)
        dh_trace (T, B, H) or None; out: the total ∂L/∂h_t of every step, as in recurrence
        returns dh0 (B, H) and dc0 (B, H) for the LSTM, None otherwise

    Both take a keyword `numpy_blas=False` to run the products on numba's np.dot (scipy's
    BLAS) even where NumPy's is found: for tests and benchmarks.

    step_weights(kind, W, rows, backward=False, inference=False) -> StepWeights
        W_hhᵀ (or W_hh for BPTT) prepared once for several loops of one direction (the
        segments of gradient checkpointing), or for a loop without a tape; each loop call
        otherwise prepares its own

    packs((K, N), dtype, inference=False) -> bool
        whether the per-step products take such a weight in MKL's packed format: with the
        `mkl` extra, weights of ≥ 2^18 values in training and ≥ 2^16 in inference, unless
        RNNLAB_PACKED=0. MKL packs the weight once per loop instead of repacking its panels
        inside every per-step product

    transposed(a) -> aᵀ, C-contiguous (a blocked copy, ~5x NumPy's for a large W_hh)

    infer_loop(kind, X, W_ih, W_hh, b_ih, b_hh, hs, cs, mask, reverse) -> None
        forward without a tape for "tanh", "relu", "lstm": each step multiplies x_t and
        h_{t-1} where they lie (no projection array; X may be a batch-first view; cs may
        have two rows, c_t in row t mod 2); used where infers_without_projection(kind, I,
        H, dtype)

    squared_error(pred, targets, mask, count) -> (Σ squares, 2 (pred − targets) / count)
        the mean squared error's one compiled pass (rnnlab.losses), or None for a layout
        it does not take

All arrays share one dtype, float32 or float64. Outputs (hs, cs, extra, dXA, dHA, dh_trace)
must be C-contiguous, except that hs may also be a block of columns of a C-contiguous array
(rows of H contiguous values, evenly spaced: each direction's states inside a bidirectional
layer's output); inputs are made so (a copy only when needed).

The first call of each cell and dtype compiles its kernel (seconds); numba caches the machine
code beside the package (`cache=True`), so later processes load it in well under a second.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import numpy as np

from rnnlab import _checks

KINDS = ("tanh", "relu", "lstm", "gru", "gru_orig")


def available() -> bool:
    """True when the kernels import (numba and scipy installed) and RNNLAB_NO_NUMBA is unset
    or "0". The first call imports numba (about half a second)."""
    if os.environ.get("RNNLAB_NO_NUMBA", "0") not in ("", "0"):
        return False
    return _importable()


@functools.cache
def _importable() -> bool:
    try:
        import scipy.linalg  # noqa: F401  (numba's np.dot calls scipy's BLAS)

        from rnnlab.fast import kernels  # noqa: F401  (numba, and its options we rely on)
    except ImportError:
        return False
    except Exception as exc:  # a numba that refuses our kernels: run the NumPy loop, and say so
        warnings.warn(f"rnnlab.fast is off, its kernels failed to load: {exc!r}", stacklevel=2)
        return False
    keep_freed_memory()
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value
TRIM_THRESHOLD = 1024 * 1024 * 1024  # free memory kept at the top of the heap


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of returning
    them to the system (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD: up to 1 GB of free heap
    is kept; the heap never grows past the process's peak use).

    Every forward pass allocates its tape anew (several MB) and every backward pass its
    gradient buffers. By default glibc maps blocks that large fresh from the kernel and
    unmaps them when freed, so each step touched its arrays' pages for the first time again:
    ~2,000 page faults per LSTM training step at (B, T, I, H) = (32, 100, 64, 128), which took
    20 ms with them and 14 ms without. The process then keeps its peak memory mapped after a
    step instead of handing it back. Done once, when the compiled loops are first used;
    RNNLAB_MALLOC=system leaves glibc's settings alone. Returns True when applied."""
    if os.environ.get("RNNLAB_MALLOC", "").strip().lower() == "system":
        return False
    import ctypes
    import ctypes.util
    import platform

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "mallopt") or platform.libc_ver()[0] != "glibc":
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok)


MIN_ROWS = 4  # the fewest batch rows worth a thread of their own
MIN_LOOP_FLOPS = 8_000_000  # a loop with fewer recurrent-product FLOPs runs on one thread


def _run_parts(kernel, args: tuple, dims: tuple[int, int, int, int], numpy_blas: bool) -> None:
    """kernel(*args, b0, b1) over row ranges of the batch, split over rnnlab's threads inside
    a session (rnnlab.parallel); only on a CBLAS whose threads rnnlab controls (numba's np.dot
    would start threads of its own BLAS in every part), and only for loops big enough to
    repay the hand-over to another thread (~110 µs here): with k ≈ √T checkpointing, splitting the
    ~32-step segments of an LSTM at (B, H) = (16, 64) made a training step 1.6x slower.
    dims = (T, B, G·H, H)."""
    from rnnlab import parallel

    T, B, GH, H = dims
    big = 2 * T * B * GH * H >= MIN_LOOP_FLOPS
    parts = parallel.row_parts(B, MIN_ROWS) if numpy_blas and big else [(0, B)]
    parallel.run_parts(lambda b0, b1: kernel(*args, b0, b1), parts)


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
    from rnnlab import parallel
    from rnnlab.fast import kernels

    if pred.ndim > 3 or targets.shape != pred.shape or targets.dtype != pred.dtype:
        return None
    if pred.dtype not in (np.float32, np.float64):  # the kernels' dtypes (float16 is not)
        return None
    grad = np.empty_like(pred)
    views = [_rows3(a) for a in (pred, targets, grad)]
    if any(v is None for v in views):
        return None
    p3, y3, g3 = views
    m, has_mask = _mask_arg(mask)
    B = p3.shape[0]
    with parallel.session():
        parts = parallel.row_parts(B, 1) if pred.size >= MIN_LOSS_ELEMENTS else [(0, B)]
        sums = np.zeros(len(parts))
        index = {b0: i for i, (b0, _) in enumerate(parts)}
        n = pred.dtype.type(count)
        parallel.run_parts(
            lambda b0, b1: kernels.squared_error_rows(
                p3, y3, g3, m, has_mask, n, sums, index[b0], b0, b1
            ),
            parts,
        )
    return float(sums.sum()), grad


def _rows3(a: np.ndarray) -> np.ndarray | None:
    """a as a (B, T, C) view with its last axis contiguous, or None."""
    if a.ndim < 3:
        a = a.reshape(a.shape + (1,) * (3 - a.ndim))  # adding unit axes never copies
    return a if a.strides[2] == a.itemsize or a.shape[2] <= 1 else None


def transposed(a: np.ndarray) -> np.ndarray:
    """aᵀ of a 2-D array as a new C-contiguous array (the recurrent weight for the per-step
    products), copied block by block (kernels.transpose_into: 0.9 instead of NumPy's 4.4 ms
    for an LSTM's W_hh at H = 512)."""
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
    loop, W goes to the products as it is. Measured on one core of each of the two, both
    running (the batch split), per-step shapes (rows × K)·(K × N), plain → packed:
    (32×256)·(256×1024) 164 → 128 µs, (32×1024)·(1024×256) 157 → 140, (64×512)·(512×2048)
    1021 → 881, (64×2048)·(2048×512) 989 → 910, (64×512)·(512×1536) 795 → 659; at
    (16×64)·(64×256) 9.4 → 10.0 µs on one core, a loss. Packing a 4 MB weight takes ~0.5 ms.
    Whole layers, A/B in one process: LSTM inference (B, T, I, H) = (32, 100, 64, 128)
    4.12 → 3.86 ms, (64, 100, 128, 256) 29.9 → 26.0, (128, 50, 256, 512) 115 → 85; training
    at (64, 100, 128, 256) 79.4 → 77.1 ms, at (128, 50, 256, 512) 253 → 236, but level at
    (32, 100, 64, 128), where the packed buffers (MKL writes ~1.4 MB of them for a 256 KB
    W_hh) made a training step's peak memory 12.5 → 13.9 MB: hence the larger bound in
    training."""
    from rnnlab.fast import blas

    if not blas.PACKS or os.environ.get("RNNLAB_PACKED", "").strip() == "0":
        return False
    least = MIN_PACKED_VALUES_INFER if inference else MIN_PACKED_VALUES
    return np.dtype(dtype) in (np.float32, np.float64) and shape[0] * shape[1] >= least


_NOT_PACKED = np.empty(0, np.uint8)


def _weight(b: np.ndarray, dt: np.dtype, rows: int, np_blas: bool, inference: bool) -> tuple:
    """A right factor b (K, N) of the per-step products (any strides: W_hhᵀ may be W_hh.T) as
    kernels.gemm takes it: (empty, b packed) where `packs`, else (b C-contiguous, empty)."""
    if np_blas and b.dtype == dt and packs(b.shape, dt, inference):
        from rnnlab import _mkl

        packed = _mkl.load().pack(b, rows)
        if packed is not None:
            return np.empty((0, 0), dt), packed
    if b.dtype == dt and b.T.flags.c_contiguous and not b.flags.c_contiguous:
        return transposed(b.T), _NOT_PACKED  # the blocked copy, not NumPy's
    return _c(b, dt), _NOT_PACKED


@dataclass(frozen=True)
class StepWeights:
    """A direction's recurrent weight prepared for the per-step products of one compiled loop
    (`step_weights`): what forward_loop and backward_loop make of their weight argument
    themselves, made once for several calls (gradient checkpointing's segments) or with
    inference's bound on packing."""

    kind: str
    backward: bool
    dtype: np.dtype
    factors: tuple  # one (dense, packed) pair per product of the loop's kernel


def step_weights(
    kind: str,
    W: np.ndarray,
    rows: int,
    *,
    backward: bool = False,
    inference: bool = False,
    numpy_blas: bool | None = None,
) -> StepWeights:
    """W prepared for the loop of `kind`: W_hhᵀ (H, G·H) for the forward loop (any strides:
    W_hh.T needs no copy of its own), W_hh (G·H, H) for BPTT (backward=True); `rows`, the
    batch rows the loop will run; `inference`: a forward loop without a tape (see packs)."""
    from rnnlab.fast import blas

    np_blas = blas.NUMPY_CBLAS and numpy_blas is not False
    return _prepared(kind, W, W.dtype, rows, np_blas, backward, inference)


def _prepared(kind, W, dt, rows, np_blas, backward, inference=False) -> StepWeights:
    if isinstance(W, StepWeights):
        if W.kind != kind or W.backward != backward or W.dtype != dt:
            _checks.fail(
                "W_hh",
                f"weights prepared for the {'backward' if backward else 'forward'} {kind!r} "
                f"loop in {dt}",
                f"weights for the {'backward' if W.backward else 'forward'} {W.kind!r} loop "
                f"in {W.dtype}",
            )
        return W
    W = np.asarray(W)

    def weight(b):
        return _weight(b, dt, rows, np_blas, inference)

    if kind not in ("gru", "gru_orig"):
        return StepWeights(kind, backward, dt, (weight(W),))
    H = W.shape[1] if backward else W.shape[0]
    none = (np.empty((0, 0), dt), _NOT_PACKED)
    if kind == "gru":  # one product on all of W_hh
        return StepWeights(kind, backward, dt, (weight(W), none, none))
    blocks = (W[: 2 * H], W[2 * H :]) if backward else (W[:, : 2 * H], W[:, 2 * H :])
    return StepWeights(kind, backward, dt, (none, *(weight(b) for b in blocks)))


def forward_loop(
    kind: str,
    XA: np.ndarray,
    W_hhT: np.ndarray,
    b_hh: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray | None,
    extra: dict[str, np.ndarray],
    mask: np.ndarray | None,
    reverse: bool,
    *,
    b_ih: np.ndarray | None = None,
    numpy_blas: bool | None = None,
) -> None:
    """Run the forward time loop of cell `kind`, writing hs[, cs] and `extra` in place.

    With `b_ih` given, XA is X W_ihᵀ without the bias and the kernels add it as they read
    each row (one pass over XA fewer; the same sums in the same order)."""
    _checks.choice(kind, "kind", KINDS)
    from rnnlab.fast import blas, kernels

    np_blas = blas.NUMPY_CBLAS and numpy_blas is not False
    dt = hs.dtype
    B, H = hs.shape[1], hs.shape[2]
    dims = (XA.shape[0], B, XA.shape[2], H)
    W = _prepared(kind, W_hhT, dt, B, np_blas, backward=False)
    hs = _wide(hs)
    XA, b_hh = _c(XA, dt), _c(b_hh, dt)
    b_ih = np.zeros(XA.shape[2], dt) if b_ih is None else _c(b_ih, dt)
    m, has_mask = _mask_arg(mask)
    reverse = bool(reverse)
    if kind in ("tanh", "relu"):
        a = np.empty((B, H), dt)
        args = (XA, b_ih, W.factors[0], b_hh, hs, m, has_mask, reverse, kind == "relu", np_blas, a)
        _run_parts(kernels.elman_forward, args, dims, np_blas)
    elif kind == "lstm":
        z = np.empty((B, 4 * H), dt)
        args = (XA, b_ih, W.factors[0], b_hh, hs, cs, extra["ifgo"], np.empty((B, H), dt), m,
                has_mask, reverse, np_blas, z)  # fmt: skip
        _run_parts(kernels.lstm_forward, args, dims, np_blas)
    else:
        reset_after = kind == "gru"
        ha = np.empty((B, 3 * H if reset_after else 2 * H), dt)
        a_n = np.empty((B, H), dt)
        args = (XA, b_ih, *W.factors, b_hh, hs, extra["rzn"], extra["hn"], m, has_mask,
                reverse, reset_after, np_blas, ha, a_n)  # fmt: skip
        _run_parts(kernels.gru_forward, args, dims, np_blas)


INFER_KINDS = ("tanh", "relu", "lstm")
MAX_INFER_K = 256  # I + H up to which unpacked inference takes [x_t | h_{t-1}] in one product


def infers_without_projection(kind: str, I: int, H: int, dtype=np.float32) -> bool:
    """Whether `infer_loop` serves this layer: Elman and LSTM cells with I + H ≤ 256, or of
    any size where the stacked weight would be packed (`packs`). The fused product skips the
    projection's write and read and a thread hand-over; measured on one core per half batch,
    LSTM float32 S1 (I + H = 96) 1.05 -> 0.99 ms, S2 (192) 4.86 -> 4.38 ms, but S3 (384)
    22.2 -> 25.0 ms: at larger K the big projection ran nearer the GEMM peak (162 against
    105-150 GFLOP/s) than the per-step product gained. Packed, the per-step product keeps
    up: whole layers, fused against projected, A/B in one process, (B, T, I, H) =
    (64, 100, 128, 256) LSTM 26.3 -> 25.2 ms, bidirectional 48.3 -> 44.3, Elman 7.07 ->
    6.67; (128, 50, 256, 512) level for the LSTM (82.2 vs 82.5), Elman 22.5 -> 21.9 ms."""
    if kind not in INFER_KINDS:
        return False
    G = (4 if kind == "lstm" else 1) * H
    return I + H <= MAX_INFER_K or packs((I + H, G), dtype, inference=True)


def _infer_weights(W_ih, W_hh, dt, rows: int, np_blas: bool) -> tuple[tuple, tuple]:
    """(W_x, W_h) as kernels.lstm_infer and elman_infer take them: W_ihᵀ and W_hhᵀ packed
    apiece where the stacked weight would be packed (`packs`), else [W_ih | W_hh]ᵀ and an
    empty W_h. Packed apart, nothing is concatenated or gathered and x_t, h_{t-1} are
    multiplied where they lie. Whole layers, A/B in one process against the stacked weight
    packed: (B, T, I, H) = (64, 100, 128, 256) LSTM 23.95 -> 23.65 ms, bidirectional
    46.1 -> 45.0, Elman 8.03 -> 7.84, 15.3 -> 14.5; (128, 50, 256, 512) LSTM level
    (84.5 vs 83.6, 155 vs 155), Elman 23.6 -> 22.3, 43.4 -> 40.6; (32, 100, 64, 128) level
    (0.98-1.04x, a bidirectional LSTM 11.2 -> 9.7)."""
    I, H = W_ih.shape[1], W_hh.shape[1]
    G = W_ih.shape[0]
    if np_blas and packs((I + H, G), dt, inference=True):
        from rnnlab import _mkl

        mkl = _mkl.load()
        parts = [mkl.pack(_c(w, dt).T, rows) for w in (W_ih, W_hh)]
        if all(p is not None for p in parts):
            return tuple((np.empty((0, 0), dt), p) for p in parts)
    W_cat = np.concatenate([_c(W_ih, dt), _c(W_hh, dt)], axis=1)
    return _weight(W_cat.T, dt, rows, np_blas, inference=True), (np.empty((0, 0), dt), _NOT_PACKED)


def infer_loop(
    kind: str,
    X: np.ndarray,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray | None,
    mask: np.ndarray | None,
    reverse: bool,
) -> None:
    """Forward without a tape (inference) for kind in INFER_KINDS: each step computes
    [x_t | h_{t-1}] [W_ih | W_hh]ᵀ + (b_ih + b_hh) (one product on the stacked weight, or two
    on the packed halves: _infer_weights), writing hs (and cs) as forward_loop does; the
    results differ from forward_loop's by float rounding only. A time-major view X (T, B, I)
    of a batch-first input is read where it lies; X is copied only where its rows are not
    contiguous or not evenly spaced at least a row apart (_spaced_rows)."""
    from rnnlab.fast import blas, kernels

    np_blas = blas.NUMPY_CBLAS
    dt = hs.dtype
    T, B, I = X.shape
    H = hs.shape[2]
    hs = _wide(hs)
    G = W_ih.shape[0]
    W_x, W_h = _infer_weights(W_ih, W_hh, dt, B, np_blas)
    bias = (_c(b_ih, dt) + _c(b_hh, dt)).astype(dt)
    X = _spaced_rows(_rows(X, dt))
    m, has_mask = _mask_arg(mask)
    reverse = bool(reverse)
    xh = np.empty((B, I + H), dt)
    dims = (T, B, G, I + H)
    if kind == "lstm":
        z, tc = np.empty((B, G), dt), np.empty((B, H), dt)
        args = (X, W_x, W_h, bias, hs, cs, m, has_mask, reverse, np_blas, xh, z, tc)
        _run_parts(kernels.lstm_infer, args, dims, np_blas)
    else:
        a = np.empty((B, H), dt)
        args = (X, W_x, W_h, bias, hs, m, has_mask, reverse, kind == "relu", np_blas, xh, a)
        _run_parts(kernels.elman_infer, args, dims, np_blas)


def backward_loop(
    kind: str,
    W_hh: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray | None,
    extra: dict[str, np.ndarray],
    mask: np.ndarray | None,
    reverse: bool,
    dys: np.ndarray | None,
    dh: np.ndarray | None,
    dc: np.ndarray | None,
    dXA: np.ndarray,
    dHA: np.ndarray,
    dh_trace: np.ndarray | None = None,
    *,
    numpy_blas: bool | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """BPTT through the time loop of cell `kind`: fills dXA (and dHA), returns (dh0, dc0)."""
    _checks.choice(kind, "kind", KINDS)
    from rnnlab.fast import blas, kernels

    np_blas = blas.NUMPY_CBLAS and numpy_blas is not False
    dt = hs.dtype
    B, H = hs.shape[1], hs.shape[2]
    dims = (dXA.shape[0], B, dXA.shape[2], H)
    hs = _wide(hs)
    gates = extra.get("ifgo" if kind == "lstm" else "rzn")
    if gates is not None and dXA is not gates:  # the kernels write the gradients over the gates
        np.copyto(dXA, gates)
    W = _prepared(kind, W_hh, dt, B, np_blas, backward=True)
    m, has_mask = _mask_arg(mask)
    reverse = bool(reverse)
    has_dys, has_trace = dys is not None, dh_trace is not None
    dys = _rows(dys, dt) if has_dys else np.empty((0, 0, 0), dt)
    trace = dh_trace if has_trace else np.empty((0, 0, 0), dt)
    dh = np.zeros((B, H), dt) if dh is None else np.array(dh, dtype=dt, order="C")
    dh_new = np.empty((B, H), dt)
    if kind in ("tanh", "relu"):
        args = (W.factors[0], hs, m, has_mask, reverse, dys, has_dys, dh, dXA, trace,
                has_trace, kind == "relu", np_blas, dh_new)  # fmt: skip
        _run_parts(kernels.elman_backward, args, dims, np_blas)
        return dh, None
    if kind == "lstm":
        dc = np.zeros((B, H), dt) if dc is None else np.array(dc, dtype=dt, order="C")
        args = (W.factors[0], cs, dXA, np.empty((B, H), dt), m, has_mask, reverse, dys,
                has_dys, dh, dc, trace, has_trace, np_blas, dh_new)  # fmt: skip
        _run_parts(kernels.lstm_backward, args, dims, np_blas)
        return dh, dc
    reset_after = kind == "gru"
    da_n_rows, drh = np.zeros((B, H), dt), np.empty((B, H), dt)
    da_h = np.zeros((B, 3 * H if reset_after else 2 * H), dt)
    if reset_after and dHA.shape != (dims[0], B, H):  # the kernel trusts it (no bounds checks)
        _checks.fail(
            "dHA", f"an array of shape {(dims[0], B, H)} for kind 'gru'", f"shape {dHA.shape}"
        )
    dHA_n = dHA if reset_after else np.empty((0, 0, 0), dt)
    args = (*W.factors, hs, dXA, extra["hn"], m, has_mask, reverse, dys, has_dys, dh, dHA_n,
            trace, has_trace, reset_after, np_blas, dh_new, da_n_rows, drh, da_h)  # fmt: skip
    _run_parts(kernels.gru_backward, args, dims, np_blas)
    return dh, None
