"""Generating sequences from a trained language model: one-to-many, run free.

The model reads the priming ids in one pass, then feeds each sampled id back as the next
input, carrying its recurrent state, one step at a time; an output-feedback (Jordan) model is
also fed back, as its previous output, the one-hot of the id that followed (the truth within
the prime, then the id sampled), as teacher forcing trained it:

    p(x_{t+1} | x_≤t) = softmax(o_t / temperature), restricted to the top-k ids if asked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.feedback import OutputFeedback
from rnnlab.layers import Module, Recurrent, RngLike, _rng
from rnnlab.modules import Linear


def sample_ids(
    model: Module,
    prime: np.ndarray,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: RngLike,
    exclude: object = None,
) -> np.ndarray:
    """Sample `length` ids after the 1-d array `prime` (at least one id) from a token model.
    `rng` has no default, so that whether a sample can be drawn again is the caller's choice:
    an integer seed (or a SeedSequence, a BitGenerator) draws the same ids at each call; a
    Generator is drawn from, advanced, as NumPy's own methods do; None takes fresh entropy
    from the operating system, NumPy's `default_rng()`: a new sample each call, which no
    seed reproduces. `top_k`: among the k
    most likely ids; a k at or above the vocabulary's size keeps every id, as no top_k does,
    draw for draw (Hugging Face's generate clamps it so too: the vocabulary is the model's,
    not the user's to count). `exclude`: an id or ids never sampled (their probability is
    0, the others renormalised; [] or None: none): a vocabulary's unknown id stands for no
    character, and printed it would be a U+FFFD in the text. `model` reads ids (rnnlab's: an
    Embedding first; batch-first or time-major layers after it, fed as they read; no tape is
    kept, no backward following); one with more outputs than its embedding has ids is
    refused unless those are excluded, as it could draw an id it cannot read back; an
    output-feedback model of classes is fed each prime id after the first back as a class,
    so there an id it has no output for is refused as the prime's. A
    bidirectional model is refused: it has no next token to give before the text after
    it is written."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        _checks.fail("length", "a non-negative integer", _checks.describe(length))
    _checks.affordable(int(length) * 8, "length", "sampled ids")
    temperature, top_k = sampling_settings(temperature, top_k)
    gen = _rng(rng)
    ids = _checks.int_array(prime, "prime", ndim=1)
    if ids.shape[0] == 0:
        _checks.fail("prime", "at least one token", "an empty prime")
    modules = _modules(model)
    for i, m in enumerate(modules):
        if getattr(m, "bidirectional", False) is True:
            _checks.fail("model", "a model that reads left to right", "a model with a "
                         f"bidirectional layer ({type(m).__name__}, module {i})",
                         "Its reverse direction reads the sequence from its end: each "
                         "step's output depends on tokens after it, which sampling has not "
                         "drawn yet.")  # fmt: skip
    first = modules[0] if modules else None
    if isinstance(first, (Recurrent, OutputFeedback, Linear)):  # (it said `x` must be floats)
        n = getattr(first, "input_size", getattr(first, "in_features", None))
        _checks.fail("model", "a token model (an Embedding first, reading the ids)",
                     f"a model whose first module, {type(first).__name__}, reads vectors of "
                     f"{n} features", "sample_ids feeds back ids.")  # fmt: skip
    # A layer reads (batch, time, ...) or, batch_first=False, (time, batch, ...): the ids go
    # in as the layers read them (a time-major model read the prime as that many sequences
    # of one step, then failed on its state's shape). Sequential refuses layers of both.
    time_major = any(getattr(m, "batch_first", True) is False for m in modules)
    vocab = getattr(first, "num_embeddings", None)  # (an ONNX Runtime's: 0 when unknown,
    # a file from before it was recorded, whose every id was refused as outside [0, 0))
    vocab = (int(vocab) if isinstance(vocab, (int, np.integer)) and not isinstance(vocab, bool)
             and vocab >= 1 else None)  # fmt: skip
    _checks.token_ids(ids, "prime", vocab)  # (named here: the embedding calls it `x`)
    if exclude is not None and not isinstance(exclude, bool) and isinstance(exclude, (int,
                                                                          np.integer)):
        exclude = [exclude]  # (one id, as Seq2Seq's `never` takes it)
    never = None if exclude is None else _checks.id_sequence(
        exclude, "exclude", "ids: an integer or a 1-D array of integers (a list, [] for none)")
    # An output-feedback model of classes (models.FeedbackModel, feedback='softmax') is fed
    # back the truth: within the prime each step's true class is the next id; after it, the
    # id just sampled. One that feeds back vectors (identity, sigmoid) runs free, as before.
    fed_back = getattr(model, "fed_back", None) if getattr(model, "feeds_back_classes",
                                                           False) else None  # fmt: skip
    teach: Any = model  # (its forward takes targets and teacher)
    ids = ids.astype(np.int64)
    if fed_back is not None:
        # each prime id after the first is fed back as the class that followed: one its
        # embedding reads but its outputs have not was refused as `targets`, never passed
        K = int(teach.layer.output_size)
        late = np.flatnonzero(ids[1:] >= K)
        if late.size:
            _checks.fail("prime", f"ids in [0, {K}) after its first (this output-feedback "
                         f"model is fed each next id back as one of its {K} classes)",
                         f"the id {int(ids[late[0] + 1])} at position {int(late[0]) + 1}")

    def shaped(a: np.ndarray) -> np.ndarray:  # one sequence, as the layers read it
        return a.reshape(-1, 1) if time_major else a.reshape(1, -1)

    # grad=False: no backward follows, so no tape (a long prime's was kept to no use)
    if fed_back is None:
        f = model.forward(shaped(ids), grad=False)
    else:  # (the prime's last target is a placeholder: what follows it is sampled below)
        f = teach.forward(shaped(ids), targets=shaped(np.append(ids[1:], 0)), teacher=1.0,
                          grad=False)  # fmt: skip
    state = f.state
    if np.ndim(f.output) != 3:
        _checks.fail("model", "a token model with an output at every step (batch, time, "
                     "scores of the next id)", f"an output of shape {np.shape(f.output)}",
                     "A model that reads a sequence, then answers once, has no next "
                     "token to feed back.")  # fmt: skip
    logits = f.output[-1, 0] if time_major else f.output[0, -1]
    size = logits.shape[-1]
    if never is not None and never.size:
        if never.min() < 0 or never.max() >= size:
            bad = int(never[(never < 0) | (never >= size)][0])
            _checks.fail("exclude", f"ids in [0, {size}) (the model's outputs)",
                         f"the id {bad}")  # fmt: skip
        if np.unique(never).size == size:
            _checks.fail("exclude", "some of the model's ids, not all of them",
                         f"all {size}")  # fmt: skip
    if vocab is not None and size > vocab:
        # an id it may draw but cannot read back: it failed mid-sample, as `x`, or not at
        # all if the seed never drew one
        unread = np.setdiff1d(np.arange(vocab, size), [] if never is None else never)
        if unread.size:
            _checks.fail("model", f"a model whose outputs are ids its embedding reads "
                         f"(at most {vocab} of them)", f"{size} outputs",
                         f"Pass exclude= the ids from {vocab} on to leave them "
                         "out.")  # fmt: skip
    out = np.empty(int(length), np.int64)
    for i in range(int(length)):
        if never is not None and never.size:
            logits = logits.astype(np.float64)  # (a copy: the model's output is left alone)
            logits[never] = -np.inf
        p = next_token_probabilities(logits, temperature, top_k)
        out[i] = gen.choice(p.size, p=p)
        if fed_back is None:
            f = model.forward(out[i : i + 1].reshape(1, 1), state=state, grad=False)
        else:
            f = teach.forward(out[i : i + 1].reshape(1, 1), state=fed_back(state, out[i : i + 1]),
                              targets=np.zeros((1, 1), np.int64), teacher=1.0,
                              grad=False)  # fmt: skip
        state = f.state
        logits = f.output[0, -1]
    return out


def sampling_settings(temperature: object, top_k: object) -> tuple[float, int | None]:
    """(temperature, top_k) checked: a finite temperature > 0 and a top_k ≥ 1 or None (0 or
    NaN gave NaN probabilities; a negative temperature inverts the distribution). A top_k
    above the vocabulary's size is no error: it keeps every id (next_token_probabilities)."""
    t = _checks.finite_float(temperature, "temperature")
    if t <= 0:
        _checks.fail("temperature", "a positive number", repr(temperature))
    return t, None if top_k is None else _checks.positive_int(top_k, "top_k")


def next_token_probabilities(
    logits: np.ndarray, temperature: float, top_k: int | None = None
) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, in float64, among the `top_k` most
    likely ids: exactly k of them, ties at the k-th broken by position, the lower ids kept
    (a threshold at the k-th value would keep every tie); a k at or above the number of ids
    keeps them all, the same probabilities as top_k=None. The logits are shifted by their
    maximum before the division, so a tiny temperature gives the argmax (the others → −inf) where
    logits / temperature would overflow to inf − inf = NaN. A +inf logit is a certainty:
    the +inf ids share the probability equally. A NaN logit, or a row of −inf only, has no
    distribution to draw from: refused by name rather than sampled from NaN probabilities."""
    temperature, top_k = sampling_settings(temperature, top_k)
    try:
        z = np.asarray(logits).astype(np.float64)
    except (TypeError, ValueError):  # (NumPy's own words: "could not convert string to float")
        _checks.fail("logits", "an array of numbers, ids on its last axis",
                     _checks.describe(logits))  # fmt: skip
    if z.ndim == 0 or z.shape[-1] == 0:  # (a scalar gave p = 1.0; no ids, "only −inf")
        _checks.fail("logits", "an array with one id or more on its last axis",
                     f"shape {z.shape}")  # fmt: skip
    if np.isnan(z).any():
        at = np.argwhere(np.isnan(z))[0].tolist()
        _checks.fail("logits", "numbers to sample from",
                     f"NaN (first at index {at[0] if len(at) == 1 else tuple(at)})",
                     "The model's weights or state are not finite.")  # fmt: skip
    certain = np.isposinf(z)
    if certain.any():
        z = np.where(certain.any(axis=-1, keepdims=True), np.where(certain, 0.0, -np.inf), z)
    if np.isneginf(z).all(axis=-1).any():
        _checks.fail("logits", "at least one id with a finite or +inf logit",
                     "only −inf (every id ruled out)")  # fmt: skip
    with np.errstate(over="ignore", under="ignore"):  # (−inf and 0 are the answers there)
        z = (z - z.max(axis=-1, keepdims=True)) / temperature  # ≤ 0, the maximum 0
        if top_k is not None and top_k < z.shape[-1]:
            # the k-th largest value (a partition, O(V): a full sort cost 3-7x at V = 32,000),
            # every larger id, then the lowest ids among those equal to it
            kth = -np.partition(-z, top_k - 1, axis=-1)[..., top_k - 1 : top_k]
            above, tied = z > kth, z == kth
            room = top_k - above.sum(axis=-1, keepdims=True)
            z = np.where(above | (tied & (np.cumsum(tied, axis=-1) <= room)), z, -np.inf)
        p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return np.asarray(p)


def _modules(model: object) -> list[object]:
    """The model's modules in order, inside its containers (Sequential, FeedbackModel: a
    `modules` list), depth first; the model itself when it holds none."""
    inner = getattr(model, "modules", None)
    if not isinstance(inner, list):
        return [model]
    return [leaf for m in inner for leaf in _modules(m)]
