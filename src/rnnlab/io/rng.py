"""Random generators as JSON data, so that a resumed run draws the same numbers.

`numpy_rng_state` describes a Generator completely (its bit generator's state and its
SeedSequence, for `spawn`) in JSON types; `rng_from_state` rebuilds it. Nothing is pickled.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import numpy as np

from rnnlab._checks import describe, fail
from rnnlab.io.files import refuse

# NumPy's bit generators, to rebuild one from the name in its state (a closed list, not a
# registry: these are the only classes whose state numpy_rng_state can describe).
_BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}


def _encode_state(value: Any) -> Any:
    # Arrays in bit-generator states (MT19937 key, Philox counter, SFC64 words) become tagged
    # lists; Python ints stay ints, however large (PCG64's are 128-bit; Python's json is exact).
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.dtype.name, "values": value.tolist()}
    if isinstance(value, dict):
        return {key: _encode_state(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The complete state of `rng` as JSON data; `rng_from_state` rebuilds the generator.

    Holds the bit generator's state (so the next draws are identical) and its SeedSequence
    (so `rng.spawn` gives the same children after a resume).
    """
    if not isinstance(rng, np.random.Generator):
        fail("rng", "a np.random.Generator", describe(rng))
    bit_generator = rng.bit_generator
    if type(bit_generator) not in _BIT_GENERATORS.values():
        fail(
            "rng",
            f"a Generator over one of NumPy's bit generators ({', '.join(_BIT_GENERATORS)})",
            f"a {type(bit_generator).__name__}",
        )
    seed_seq = bit_generator.seed_seq
    sequence = None
    if isinstance(seed_seq, np.random.SeedSequence):
        entropy = seed_seq.entropy
        if isinstance(entropy, (int, np.integer)):
            entropy = int(entropy)
        elif entropy is not None:
            entropy = [int(e) for e in entropy]
        sequence = {
            "entropy": entropy,
            "spawn_key": [int(k) for k in seed_seq.spawn_key],
            "pool_size": int(seed_seq.pool_size),
            "n_children_spawned": int(seed_seq.n_children_spawned),
        }
    return {"bit_generator": _encode_state(bit_generator.state), "seed_sequence": sequence}


# --------------------------------------------------------------------------------------------
# What rng_from_state accepts: each bit generator's state layout, field by field, as NumPy
# writes it (numpy/random/_mt19937.pyx, _pcg64.pyx, _philox.pyx, _sfc64.pyx). NumPy's
# setters copy these fields into C structs with no check of their own.
# --------------------------------------------------------------------------------------------


class _Int(NamedTuple):
    """An int in [low, high]."""

    low: int
    high: int


class _Words(NamedTuple):
    """An array tagged {"__ndarray__": dtype, "values": [...]} of `length` unsigned ints."""

    dtype: str
    length: int


_Layout = Mapping[str, "_Int | _Words | _Layout | None"]  # None: the name, checked before

_U32 = _Int(0, 2**32 - 1)
_FLAG = _Int(0, 1)
_MT_N = 624  # MT19937's key length; pos == 624 means "regenerate on the next draw"
_PHILOX_BUFFER = 4
_PCG_LAYOUT: _Layout = {
    "bit_generator": None,
    "state": {"state": _Int(0, 2**128 - 1), "inc": _Int(1, 2**128 - 1)},
    "has_uint32": _FLAG,
    "uinteger": _U32,
}
_LAYOUTS: dict[str, _Layout] = {
    "PCG64": _PCG_LAYOUT,
    "PCG64DXSM": _PCG_LAYOUT,
    "MT19937": {
        "bit_generator": None,
        "state": {"key": _Words("uint32", _MT_N), "pos": _Int(0, _MT_N)},
    },
    "Philox": {
        "bit_generator": None,
        "state": {"counter": _Words("uint64", 4), "key": _Words("uint64", 2)},
        "buffer": _Words("uint64", _PHILOX_BUFFER),
        "buffer_pos": _Int(0, _PHILOX_BUFFER),
        "has_uint32": _FLAG,
        "uinteger": _U32,
    },
    "SFC64": {
        "bit_generator": None,
        "state": {"state": _Words("uint64", 4)},
        "has_uint32": _FLAG,
        "uinteger": _U32,
    },
}

# SeedSequence bounds. NumPy's own pool_size is 4 (its minimum); hashing costs grow with the
# pool (10,000 words take 0.2 s, 2e6 minutes and gigabytes) and with the entropy (one int of
# 100,000 words takes a minute), so both are bounded far above any seed a person writes.
_POOL_SIZE = _Int(4, 256)
_ENTROPY_WORDS = 4096  # 32-bit words of entropy: 131,072 bits
_SPAWN_DEPTH = 1024  # entries of spawn_key: one per nested spawn
_CHILDREN = _Int(0, 2**32 - 1)  # n_children_spawned, and each spawn_key entry


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _span(field: _Int) -> str:
    return f"an int in [{field.low}, {field.high}]"


def _checked_int(value: object, where: str, field: _Int, note: str = "") -> int:
    number = operator.index(value) if _is_int(value) else None  # type: ignore[arg-type]
    if number is None or not field.low <= number <= field.high:
        fail(where, _span(field) + note, describe(value))
    return number


def _checked_keys(value: object, where: str, keys: Collection[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(where, f"a dict with the keys {', '.join(keys)}", describe(value))
    if set(value) != set(keys):
        found = ", ".join(repr(k) for k in list(value)[:8]) or "none"
        found += ", ..." if len(value) > 8 else ""
        fail(where, f"a dict with the keys {', '.join(keys)}", f"the keys {found}")
    return value


def _checked_words(value: object, where: str, field: _Words) -> np.ndarray:
    tagged = _checked_keys(value, where, ("__ndarray__", "values"))
    if tagged["__ndarray__"] != field.dtype:
        fail(f"{where}['__ndarray__']", repr(field.dtype), describe(tagged["__ndarray__"]))
    values = tagged["values"]
    bits = np.dtype(field.dtype).itemsize * 8
    expected = f"a list of {field.length} ints in [0, 2**{bits})"
    if not isinstance(values, (list, tuple)) or len(values) != field.length:
        fail(f"{where}['values']", expected, describe(values))
    word = _Int(0, 2**bits - 1)
    checked = [_checked_int(v, f"{where}['values'][{i}]", word) for i, v in enumerate(values)]
    return np.array(checked, dtype=field.dtype)


def _checked_fields(value: object, layout: _Layout, where: str, name: str) -> dict[str, Any]:
    """`value` checked against `layout` (exactly its keys), with tagged arrays decoded."""
    fields = _checked_keys(value, f"{where} (a {name} state)", tuple(layout))
    out: dict[str, Any] = {}
    for key, field in layout.items():
        item, at = fields[key], f"{where}[{key!r}]"
        if field is None:
            out[key] = item
        elif isinstance(field, _Int):
            out[key] = _checked_int(item, at, field)
        elif isinstance(field, _Words):
            out[key] = _checked_words(item, at, field)
        else:
            out[key] = _checked_fields(item, field, at, name)
    return out


def _check_degenerate(name: str, state: dict[str, Any]) -> None:
    """States that NumPy accepts but that draw badly or never: MT19937's 19,937 state bits
    (the top bit of key[0] and key[1:]) all zero draw only zeros, and integers() then never
    returns; an even PCG increment halves the period again and again (NumPy's is always odd)."""
    where = "state['bit_generator']['state']"
    if name == "MT19937":
        key = state["state"]["key"]
        if not key[0] & 0x80000000 and not key[1:].any():
            fail(
                f"{where}['key']",
                "an MT19937 key with a non-zero bit beyond the low 31 bits of key[0]",
                "a key of zeros (every draw after it would be 0)",
            )
    elif name in ("PCG64", "PCG64DXSM") and state["state"]["inc"] % 2 == 0:
        fail(f"{where}['inc']", "an odd int (PCG's increment)", describe(state["state"]["inc"]))


def _entropy_words(value: int) -> int:
    return max(1, -(-value.bit_length() // 32))


def _checked_seed_sequence(value: object) -> np.random.SeedSequence | None:
    where = "state['seed_sequence']"
    if value is None:
        return None
    fields = _checked_keys(
        value, where, ("entropy", "spawn_key", "pool_size", "n_children_spawned")
    )
    entropy = fields["entropy"]
    expected = (
        f"an int >= 0 or a list of ints >= 0, of at most {_ENTROPY_WORDS} 32-bit words "
        "in all (NumPy's entropy)"
    )
    if _is_int(entropy) and entropy >= 0:
        entropy, words = int(entropy), _entropy_words(int(entropy))
    elif isinstance(entropy, (list, tuple)) and all(_is_int(e) and e >= 0 for e in entropy):
        entropy = [int(e) for e in entropy]
        words = sum(_entropy_words(e) for e in entropy)
    else:
        fail(f"{where}['entropy']", expected, describe(entropy))
    if words > _ENTROPY_WORDS:
        fail(f"{where}['entropy']", expected, f"{words} words")
    spawn_key = fields["spawn_key"]
    if not isinstance(spawn_key, (list, tuple)) or len(spawn_key) > _SPAWN_DEPTH:
        fail(
            f"{where}['spawn_key']",
            f"a list of at most {_SPAWN_DEPTH} ints in [0, 2**32)",
            describe(spawn_key),
        )
    key = tuple(
        _checked_int(k, f"{where}['spawn_key'][{i}]", _CHILDREN) for i, k in enumerate(spawn_key)
    )
    pool_size = _checked_int(
        fields["pool_size"], f"{where}['pool_size']", _POOL_SIZE, " (NumPy's default is 4)"
    )
    children = _checked_int(
        fields["n_children_spawned"], f"{where}['n_children_spawned']", _CHILDREN
    )
    return np.random.SeedSequence(
        entropy, spawn_key=key, pool_size=pool_size, n_children_spawned=children
    )


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """The generator saved by `numpy_rng_state` (also after a round trip through JSON text).

    Every field is checked against its bit generator's layout before NumPy sees it: NumPy's
    state setters copy what they are given into C structs unchecked, and some values are
    harmful there (MT19937's `pos` past its key reads outside it, an all-zero key draws only
    zeros, a huge SeedSequence `pool_size` takes minutes and gigabytes to hash).
    """
    expected = "a dict made by numpy_rng_state"
    if not isinstance(state, Mapping) or set(state) != {"bit_generator", "seed_sequence"}:
        fail("state", expected, describe(state))
    inner = state["bit_generator"]
    name = inner.get("bit_generator") if isinstance(inner, Mapping) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        refuse(
            ValueError,
            "state",
            f"{expected} (for one of {', '.join(_BIT_GENERATORS)})",
            f"the bit generator {name!r}",
        )
    cls = _BIT_GENERATORS[name]
    bit_state = _checked_fields(inner, _LAYOUTS[name], "state['bit_generator']", name)
    _check_degenerate(name, bit_state)
    seed_seq = _checked_seed_sequence(state["seed_sequence"])
    try:
        bit_generator = cls() if seed_seq is None else cls(seed_seq)
        bit_generator.state = bit_state
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:  # (checked above)
        fail("state", expected, f"a dict that {name} refuses ({type(e).__name__}: {e})")
    return np.random.Generator(bit_generator)
