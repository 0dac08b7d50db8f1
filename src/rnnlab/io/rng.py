"""Random generators as JSON data, so that a resumed run draws the same numbers.

`numpy_rng_state` describes a Generator completely (its bit generator's state and its
SeedSequence, for `spawn`) in JSON types; `rng_from_state` rebuilds it. Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def _decode_state(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "values"}:
            return np.array(value["values"], dtype=value["__ndarray__"])
        return {key: _decode_state(item) for key, item in value.items()}
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


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """The generator saved by `numpy_rng_state` (also after a round trip through JSON text)."""
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
    try:
        sequence = state["seed_sequence"]
        if sequence is None:
            bit_generator = cls()
        else:
            bit_generator = cls(
                np.random.SeedSequence(
                    sequence["entropy"],
                    spawn_key=tuple(sequence["spawn_key"]),
                    pool_size=sequence["pool_size"],
                    n_children_spawned=sequence["n_children_spawned"],
                )
            )
        bit_generator.state = _decode_state(dict(inner))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        fail("state", expected, f"a dict that {name} refuses ({type(e).__name__}: {e})")
    return np.random.Generator(bit_generator)
