"""Character n-gram baselines: what a character language model has to beat.

Interpolated Kneser–Ney smoothing (Kneser & Ney 1995, in the interpolated form of Chen &
Goodman 1998, "An empirical study of smoothing techniques for language modeling", §2.7 and
§3): absolute discounting at every order, continuation counts for the lower orders, one
discount per order estimated from counts of counts. The recursion ends in an add-one
(Laplace) unigram over the whole vocabulary, so every id, even one never seen in training
(such as CharVocab's unknown id), has non-zero probability and held-out cross-entropy is
always finite. Reported in nats and bits per character, for orders 1 to 5 by default.

Everything is counted with NumPy: a k-gram (x_1 … x_k) is the int64 code Σ_j x_j V^(k−j),
counts come from np.unique, and look-ups are np.searchsorted, so the 420k-character default
corpus gives all five baselines in well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rnnlab import _checks
from rnnlab._checks import fail, positive_int

_INT64_LIMIT = 2**63

# The discount when an order has no singletons (n1 = 0, only on tiny corpora): the usual
# estimate n1 / (n1 + 2 n2) would be 0 there, leaving no mass for unseen continuations.
FALLBACK_DISCOUNT = 0.5


@dataclass(frozen=True)
class _Level:
    """The counts of one order k ≥ 2, as used in the recursion.

    `keys` are the sorted codes of the k-grams (h, w) with c(h w) > 0 and `counts` their
    counts c(h w); `contexts` are the sorted codes of the histories h, with `totals`
    c(h •) = Σ_w c(h w) and `types` N1+(h •) = #{w : c(h w) > 0}.
    """

    keys: np.ndarray
    counts: np.ndarray
    contexts: np.ndarray
    totals: np.ndarray
    types: np.ndarray
    discount: float


@dataclass(frozen=True)
class NGramModel:
    """A fitted interpolated Kneser–Ney model of one order (see `fit`).

    `unigram` is P_1 over all `vocab_size` ids; `levels[k - 2]` holds order k = 2..order.
    """

    order: int
    vocab_size: int
    unigram: np.ndarray
    levels: tuple[_Level, ...]

    @property
    def discounts(self) -> tuple[float, ...]:
        """D_k for k = 2..order."""
        return tuple(level.discount for level in self.levels)


def _check_ids(value: object, name: str, vocab_size: int, allow_empty: bool = False) -> np.ndarray:
    value = _checks.id_sequence(value, name)
    if len(value) == 0 and not allow_empty:
        fail(name, "a non-empty array of ids", "an empty array")
    bad = (value < 0) | (value >= vocab_size)
    if bad.any():
        fail(name, f"ids in [0, vocab_size) = [0, {vocab_size})", f"the id {int(value[bad][0])}")
    return value.astype(np.int64)


def _check_vocab(vocab_size: object) -> int:
    """A vocabulary size whose unigram (a float64 per id, with its counts and temporaries:
    24 bytes an id) fits in memory: vocab_size = 10**12 ended in NumPy's MemoryError."""
    V = positive_int(vocab_size, "vocab_size")
    _checks.affordable(24 * V, "vocab_size", f"unigram over {V:,} ids (24 bytes an id) would")
    return V


def _check_order(order: object, name: str, vocab_size: int) -> int:
    n = positive_int(order, name)
    if vocab_size**n >= _INT64_LIMIT:
        most = max((k for k in range(1, n) if vocab_size**k < _INT64_LIMIT), default=0)
        fail(
            name,
            f"at most {most} for a vocabulary of {vocab_size} ids (an n-gram is coded "
            f"as an int64, so vocab_size ** order must stay below 2 ** 63)",
            f"{n}",
        )
    return n


_Counts = list[tuple[np.ndarray, np.ndarray]]  # per order k, (sorted codes, counts)


def _grams(ids: np.ndarray, V: int, max_order: int) -> Iterator[np.ndarray]:
    """The codes of the k-grams of ids (x_1..x_k as Σ x_i V^(k−i)), k = 1..max_order, one
    order at a time: each made from the last, which is then let go."""
    codes = ids
    for k in range(1, max_order + 1):
        if k > 1:
            codes = codes[:-1] * V
            codes += ids[k - 1 :]
        yield codes


def _count(ids: np.ndarray, V: int, max_order: int) -> tuple[_Counts, _Counts]:
    """Raw counts c(x_1..x_k) for k = 1..max_order, and continuation counts
    N1+(• x_1..x_k) = #{v : c(v x_1..x_k) > 0} for k = 1..max_order − 1.

    Each is a pair (sorted codes, counts). A continuation count only needs the *distinct*
    (k+1)-grams: drop their first symbol (code mod V^k) and count what remains.
    """
    raw: _Counts = [np.unique(codes, return_counts=True) for codes in _grams(ids, V, max_order)]
    cont = [np.unique(raw[k][0] % V**k, return_counts=True) for k in range(1, max_order)]
    return raw, cont


def _level(keys: np.ndarray, counts: np.ndarray, V: int) -> _Level:
    counts = counts.astype(np.float64)
    contexts, inverse = np.unique(keys // V, return_inverse=True)
    totals = np.bincount(inverse, weights=counts, minlength=len(contexts))
    types = np.bincount(inverse, minlength=len(contexts)).astype(np.float64)
    # D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994), n_r = number of k-grams counted r times.
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    discount = n1 / (n1 + 2 * n2) if n1 > 0 else FALLBACK_DISCOUNT
    return _Level(keys, counts, contexts, totals, types, discount)


def _model(raw: _Counts, cont: _Counts, V: int, order: int) -> NGramModel:
    """Order `order` from shared counts: raw counts at the top, continuation counts below."""
    keys, counts = raw[0] if order == 1 else cont[0]
    c = np.bincount(keys, weights=counts.astype(np.float64), minlength=V)
    unigram = (c + 1.0) / (c.sum() + V)  # add-one: P_1(w) = (c(w) + 1) / (Σ c + V)
    levels = tuple(
        _level(*(raw[k - 1] if k == order else cont[k - 1]), V) for k in range(2, order + 1)
    )
    return NGramModel(order, V, unigram, levels)


def fit(train_ids: object, vocab_size: int, order: int) -> NGramModel:
    """Fit interpolated Kneser–Ney of order n on a stream of ids.

    With c_k the counts used at order k (raw counts c(h w) at k = n, continuation counts
    N1+(• h w) at k < n) and h' the history h without its oldest symbol:

        P_1(w)     = (c_1(w) + 1) / (Σ_v c_1(v) + V)
        P_k(w | h) = max(c_k(h w) − D_k, 0) / c_k(h •)
                     + D_k · N1+(h •) / c_k(h •) · P_{k−1}(w | h')      if c_k(h •) > 0
        P_k(w | h) = P_{k−1}(w | h')                                     otherwise

    with D_k = n1 / (n1 + 2 n2) from the number of k-grams counted once (n1) and twice (n2)
    at that order (0.5 if n1 = 0). 0 < D_k ≤ 1 and every count is ≥ 1, so each P_k(· | h) sums
    to one and is positive wherever P_1 is. The first positions of a text, with fewer than
    n − 1 symbols of history, use the longest history they have.
    """
    V = _check_vocab(vocab_size)
    n = _check_order(order, "order", V)
    ids = _check_ids(train_ids, "train_ids", V)
    raw, cont = _count(ids, V, n)
    return _model(raw, cont, V, n)


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query, 0 where the key is absent (keys sorted)."""
    if len(keys) == 0:
        return np.zeros(len(queries))
    i = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[i] == queries, values[i], 0.0)


def _probabilities(model: NGramModel, grams: np.ndarray, history: np.ndarray) -> np.ndarray:
    """P(grams[:, -1] | the `history` symbols before it in grams[:, :-1]), row by row.

    `grams` is (M, order), oldest symbol first; row r has `history[r]` valid symbols of
    history (right-aligned), the rest is filler that the mask below never reads.
    """
    V = model.vocab_size
    w = grams[:, -1]
    p: np.ndarray = model.unigram[w]
    code = w.copy()
    for k, level in enumerate(model.levels, start=2):
        code += grams[:, -k] * V ** (k - 1)  # the k-gram ending at w
        rows = history >= k - 1
        c = _lookup(level.keys, level.counts, code[rows])
        h = code[rows] // V
        total = _lookup(level.contexts, level.totals, h)
        types = _lookup(level.contexts, level.types, h)
        lower = p[rows]
        D = level.discount
        seen = total > 0
        interpolated = (np.maximum(c - D, 0.0) + D * types * lower) / np.where(seen, total, 1.0)
        p[rows] = np.where(seen, interpolated, lower)
    return p


def log_probs(model: NGramModel, ids: object) -> np.ndarray:
    """ln P(ids[i] | ids[i−n+1 : i]) for every position i (float64, one per id)."""
    ids = _check_ids(ids, "ids", model.vocab_size)
    n = model.order
    padded = np.concatenate([np.zeros(n - 1, np.int64), ids])
    grams = sliding_window_view(padded, n)  # row i = ids[i−n+1 .. i], zeros before the start
    history = np.minimum(np.arange(len(ids)), n - 1)
    logs: np.ndarray = np.log(_probabilities(model, grams, history))
    return logs


def next_probs(model: NGramModel, context: object) -> np.ndarray:
    """P(w | context) for every id w: a (vocab_size,) array that sums to 1.

    Only the last order − 1 ids of `context` matter; a shorter (or empty) context uses the
    history it has, as the first positions of a text do.
    """
    V, n = model.vocab_size, model.order
    ctx = _check_ids(context, "context", V, allow_empty=True)
    tail = ctx[len(ctx) - min(len(ctx), n - 1) :]
    grams = np.zeros((V, n), np.int64)
    grams[:, n - 1 - len(tail) : n - 1] = tail
    grams[:, -1] = np.arange(V)
    return _probabilities(model, grams, np.full(V, len(tail)))


# The peak memory of `ngram_baselines` (tracemalloc and the resident set's rise,
# bench/ngram_memory.py; bench/README.md, "The n-gram baselines' memory"): about 26.5 bytes
# a training id, whatever the text, and about 58 bytes more a distinct k-gram of the orders
# counted (each is kept as a code and a count, raw and as a continuation, then as a level).
# A text whose longer n-grams are nearly all distinct (random or base64 text) needs 130 to
# 255 bytes a character, prose or source code under 30. Rounded up:
PEAK_PER_ID = 30
PEAK_PER_GRAM = 64


def distinct_grams(train_ids: object, vocab_size: int, max_order: int) -> list[int]:
    """The number of distinct k-grams of the ids for k = 1..max_order, coded as `fit` codes
    them; one order at a time, at a peak of about 25 bytes an id."""
    V = positive_int(vocab_size, "vocab_size")
    top = _check_order(max_order, "max_order", V)
    ids = _check_ids(train_ids, "train_ids", V)
    out = []
    for codes in _grams(ids, V, top):
        ordered = np.sort(codes)
        out.append(1 + int(np.count_nonzero(ordered[1:] != ordered[:-1])))
        del ordered
    return out


def baseline_memory(n_ids: int, vocab_size: int, max_order: int,
                    grams: list[int] | None = None) -> int:  # fmt: skip
    """About how many bytes `ngram_baselines` takes at its peak on `n_ids` training ids (at
    most: PEAK_PER_ID and PEAK_PER_GRAM bound every text measured). `grams`: the number of
    distinct k-grams for k = 1..max_order (`distinct_grams`); None: a bound that counts
    nothing, as if every k-gram were distinct as far as the vocabulary allows (V ** k)."""
    if grams is None:
        grams = [min(max(n_ids - k + 1, 0), vocab_size**k) for k in range(1, max_order + 1)]
    return PEAK_PER_ID * n_ids + PEAK_PER_GRAM * sum(grams)


def name_of(order: int) -> str:
    """'unigram', 'bigram', 'trigram', then '4-gram', '5-gram', ..."""
    return {1: "unigram", 2: "bigram", 3: "trigram"}.get(order, f"{order}-gram")


def ngram_baselines(
    train_ids: object, eval_ids: object, vocab_size: int, max_order: int = 5, *, start: int = 0
) -> dict[str, dict[str, Any]]:
    """Held-out cross-entropy of interpolated Kneser–Ney models of orders 1..max_order.

    Returns {"unigram": {"order": 1, "nats_per_char": ..., "bits_per_char": ...},
    "bigram": ..., "trigram": ..., "4-gram": ..., "5-gram": ...}, with
    nats_per_char = −(1/M) Σ_i ln P(eval_ids[i] | history) over the M held-out ids from
    `start` on (the ids before it are history only: a model that predicts from the second
    id on is compared on the ids it predicts) and bits_per_char = nats_per_char / ln 2.
    Counts are shared between orders.
    """
    V = _check_vocab(vocab_size)
    top = _check_order(max_order, "max_order", V)
    train = _check_ids(train_ids, "train_ids", V)
    held_out = _check_ids(eval_ids, "eval_ids", V)
    # (a NumPy integer is a position too, as it is an order: np.int64(1) was refused)
    if (isinstance(start, bool) or not isinstance(start, (int, np.integer))
            or not 0 <= start < len(held_out)):  # fmt: skip
        fail("start", f"an id's position in eval_ids (0 to {len(held_out) - 1})",
             _checks.describe(start))  # fmt: skip
    start = int(start)
    raw, cont = _count(train, V, top)
    results = {}
    for n in range(1, top + 1):
        nats = -float(np.mean(log_probs(_model(raw, cont, V, n), held_out)[start:]))
        results[name_of(n)] = {
            "order": n,
            "nats_per_char": nats,
            "bits_per_char": nats / math.log(2),
        }
    return results
