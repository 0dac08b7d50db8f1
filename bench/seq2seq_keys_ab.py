"""A/B in one process: Seq2Seq decoding with the attention's projection of the source
computed once per call (`Seq2Seq._keys`, as the library does) against the path before it,
which computed it again at every output step (`_step` calling `_head` without the keys).
Both run in turn in one process, best of 5 each, twice; the ids, logits and scores are
compared to the bit. The model is untrained (the time does not depend on the weights):
the numbers task's size (hidden 128, additive attention of size 32), 250 sources of 60
tokens decoded greedily for 40 steps, and 50 of them by a beam of 5.

    OMP_NUM_THREADS=1 RNNLAB_NUM_THREADS=1 python bench/seq2seq_keys_ab.py
"""

from __future__ import annotations

import time

import numpy as np

from rnnlab.seq2seq import Seq2Seq


def per_step(self, prev, state, memory):
    """The decoding step before the keys were kept: the projection made again each step."""
    fdec = self.decoder.forward(self.tgt_embed.forward(prev[:, None]).output, state=state,
                                grad=False, check=False, check_state=False)  # fmt: skip
    logits, _ = self._head(fdec.output, memory.enc, memory.mask)
    return logits[:, 0], fdec.state


def best_of(f, repeats=5):
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    m = Seq2Seq(40, 40, embed=32, hidden=128, attention="additive", attention_size=32, rng=0)
    src = np.random.default_rng(0).integers(4, 40, (250, 60))
    once = Seq2Seq._step
    times: dict[str, list[tuple[float, float]]] = {"per step": [], "once": []}
    outs = {}
    try:
        for name, step in [("per step", per_step), ("once", once)] * 2:
            Seq2Seq._step = step
            tg, g = best_of(lambda: m.greedy(src, bos=1, eos=2, max_len=40))
            tb, b = best_of(lambda: m.beam_search(src[:50], bos=1, eos=2, max_len=40, width=5))
            times[name].append((tg, tb))
            outs[name] = (*g, *b)
    finally:
        Seq2Seq._step = once
    same = all(np.array_equal(a, b) for a, b in zip(outs["per step"], outs["once"], strict=True))
    print(f"ids, logits and scores the same to the bit: {same}")
    for name, rows in times.items():
        greedy = ", ".join(f"{g:.3f}" for g, _ in rows)
        beam = ", ".join(f"{b:.3f}" for _, b in rows)
        print(f"{name:>8}: greedy (250 sources) {greedy} s; beam 5 (50 sources) {beam} s")


if __name__ == "__main__":
    main()
