"""numba's versions of the pointwise vocabulary (rnnlab.cells.pointwise), for one batch row.

In the compiled loops a cell's step gets 1-D rows: `units(a)` becomes `range(n)`, so
`for j in units(h)` is a plain counted loop, and `tanh`, `sigmoid` become the scalar
functions of rnnlab.fast.kernels, which LLVM vectorises. Everything is inlined into the
loop that calls the step (numba's `inline="always"`, at the level of its own IR): a loop
over a range object made in another function, or a step left to LLVM's inliner, was not
vectorised and ran 1.7-2.3x slower (an LSTM forward loop at (B, T, H) = (32, 100, 128),
float32).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import types
from numba.extending import overload
from numba.misc.special import literally  # (numba's __all__ leaves it out)

from rnnlab.cells import pointwise
from rnnlab.fast import kernels

_INLINE: dict[str, Any] = {"inline": "always", "jit_options": kernels.SCALAR}


def _dtype_of(x) -> np.dtype:
    t = x.dtype if isinstance(x, types.Array) else x
    return np.dtype(str(t))


@overload(pointwise.units, **_INLINE)
def _units(a):
    return lambda a: range(a.shape[-1])


@overload(pointwise.blocks, **_INLINE)
def _blocks(a, n, H):
    if not isinstance(n, types.IntegerLiteral):
        return lambda a, n, H: literally(n)
    return _blocks_of(n.literal_value)


@functools.cache
def _blocks_of(count: int):
    """blocks(a, count, H) for the compiled loops, as NumPy's: the tuple of `count` slices
    written out (numba returns a tuple whose length it knows when it compiles). Made for
    any count: it was written out for 1 to 4 alone (the same text as now: the loops'
    vectorisation depends on it), and a cell of five blocks met a TypeError traceback
    compiled that its NumPy run and the cell check had not."""
    cuts = [":H", "H : 2 * H"] + [f"{i} * H : {i + 1} * H" for i in range(2, count)]
    parts = "".join(f"a[..., {cut}], " for cut in cuts[: max(count, 0)])
    namespace: dict[str, object] = {}
    exec(f"def impl(a, n, H):\n    return ({parts})\n", namespace)  # noqa: S102
    return namespace["impl"]


@overload(pointwise.one, **_INLINE)
def _one(x):
    value = _dtype_of(x).type(1.0)
    return lambda x: value


@overload(pointwise.zero, **_INLINE)
def _zero(x):
    value = _dtype_of(x).type(0.0)
    return lambda x: value


@overload(pointwise.tanh, **_INLINE)
def _tanh(x):
    if isinstance(x, types.Float):
        return lambda x: kernels.tanh_scalar(x)


@overload(pointwise.sigmoid, **_INLINE)
def _sigmoid(x):
    if isinstance(x, types.Float):
        return lambda x: kernels.sigmoid_scalar(x)


@overload(pointwise.relu, **_INLINE)
def _relu(x):
    if isinstance(x, types.Float):
        z = _dtype_of(x).type(0.0)
        return lambda x: z if x <= z else x  # NaN in, NaN out, as np.maximum (x > z made it 0)


@overload(pointwise.positive, **_INLINE)
def _positive(x):
    if isinstance(x, types.Float):
        z, o = _dtype_of(x).type(0.0), _dtype_of(x).type(1.0)
        return lambda x: o if x > z else z


@overload(pointwise.clip, **_INLINE)
def _clip(x, bound):
    if isinstance(x, types.Float):
        cast = _dtype_of(x).type

        def impl(x, bound):
            b = cast(bound)
            return -b if x < -b else (b if x > b else x)

        return impl


@overload(pointwise.inside, **_INLINE)
def _inside(x, bound):
    if isinstance(x, types.Float):
        cast = _dtype_of(x).type

        def impl(x, bound):
            b = cast(bound)
            return abs(x) < b

        return impl


@overload(pointwise.select, **_INLINE)
def _select(condition, a, b):
    return lambda condition, a, b: a if condition else b


@overload(pointwise.total, jit_options=kernels.SCALAR)  # IR-inlined, its loop's sum trips
# numba's SSA check (NumbaIRAssumptionWarning); LLVM inlines it all the same
def _total(x):
    if isinstance(x, types.Array):
        z = _dtype_of(x).type(0.0)

        def impl(x):
            s = z
            for j in range(x.shape[-1]):
                s += x[j]
            return s

        return impl


@overload(pointwise.dot, jit_options=kernels.SCALAR)  # as total
def _dot(x, y):
    if isinstance(x, types.Array):
        z = _dtype_of(x).type(0.0)

        def impl(x, y):
            s = z
            for j in range(x.shape[-1]):
                s += x[j] * y[j]
            return s

        return impl


@overload(pointwise.sqrt, **_INLINE)
def _sqrt(x):
    if isinstance(x, types.Float):
        return lambda x: np.sqrt(x)


@overload(pointwise.column, **_INLINE)
def _column(a, k):
    return lambda a, k: a[k]


@overload(pointwise.normalise, jit_options=kernels.SCALAR)  # not IR-inlined: as total
def _normalise(v, out, eps):
    if isinstance(v, types.Array):
        z = _dtype_of(v).type(0.0)

        def impl(v, out, eps):
            n = v.shape[-1]
            s = z
            for j in range(n):
                s += v[j]
            mu = s / n
            for j in range(n):
                out[j] = v[j] - mu
            ss = z
            for j in range(n):
                ss += out[j] * out[j]
            r = 1.0 / np.sqrt(ss / n + eps)
            for j in range(n):
                out[j] = out[j] * r
            return r

        return impl


@overload(pointwise.normalise_back, jit_options=kernels.SCALAR)
def _normalise_back(dv, v_hat, r):
    if isinstance(dv, types.Array):
        z = _dtype_of(dv).type(0.0)

        def impl(dv, v_hat, r):
            n = dv.shape[-1]
            s1, s2 = z, z
            for j in range(n):
                s1 += dv[j]
                s2 += dv[j] * v_hat[j]
            m1, m2 = s1 / n, s2 / n
            for j in range(n):
                dv[j] = r * (dv[j] - m1 - v_hat[j] * m2)

        return impl
