"""Many-to-one after a bidirectional layer reads each direction where it has seen the whole
sequence: the forward direction at the last valid step, the backward one at step 0 (Keras'
Bidirectional(return_sequences=False), ONNX's Y_h)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CELLS, make

from rnnlab import gradcheck, models
from rnnlab.modules import LastStep, Linear, Sequential

B, T, I, H = 3, 6, 2, 4
LENGTHS = np.array([6, 2, 4])


@pytest.mark.parametrize("merge", ["concat", "sum"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_the_backward_direction_is_read_after_step_0(merge, padded):
    """The readout's backward half is that direction's final state; on the old readout (the
    output at the last valid step) it saw the last input only and ignored the first."""
    rng = np.random.default_rng(0)
    rnn = make(CELLS[2][1], {}, I, H, 2, True, rng, merge=merge)
    model = Sequential(rnn, LastStep())
    x = rng.standard_normal((B, T, I))
    lengths = LENGTHS if padded else None
    f = model.forward(x, lengths=lengths)
    h_n = f.cache[0].state[0]  # (L * D, B, H): the last layer's directions are -2, -1
    want = np.concatenate([h_n[-2], h_n[-1]], 1) if merge == "concat" else h_n[-2] + h_n[-1]
    np.testing.assert_allclose(f.output, want, rtol=0, atol=1e-15)
    # the label depends on the first input only: the backward direction must see it
    x2 = x.copy()
    x2[:, 0] += 1.0
    out2 = model.forward(x2, lengths=lengths).output
    if merge == "concat":
        assert np.abs(out2[:, H:] - f.output[:, H:]).min() > 1e-6
    # and the forward direction still reads the last valid step, not the padding
    if padded:
        x3 = x.copy()
        x3[1, 2:] = 7.0  # padding of the sequence of length 2
        np.testing.assert_array_equal(model.forward(x3, lengths=lengths).output[1], f.output[1])


@pytest.mark.parametrize("merge", ["concat", "sum"])
@pytest.mark.parametrize("name,ctor,kw", CELLS[::2], ids=[c[0] for c in CELLS[::2]])
def test_gradients_of_a_bidirectional_many_to_one_model(name, ctor, kw, merge):
    rng = np.random.default_rng(1)
    rnn = make(ctor, kw, I, H, 1, True, rng, merge=merge)
    F = 2 * H if merge == "concat" else H
    model = Sequential(rnn, LastStep(), Linear(F, 3, dtype=np.float64, rng=rng))
    x = rng.standard_normal((B, T, I))
    gradcheck(model, x, lengths=LENGTHS).assert_ok()
    gradcheck(model, x).assert_ok()


def test_a_spec_model_learns_a_label_of_the_first_input():
    """What `digits`, `adding`, `temporal-order` --bidirectional build: the model's output
    changes with the first input through the backward direction alone."""
    spec = models.with_defaults({
        "input": {"type": "vectors", "size": 1},
        "rnn": {"cell": "gru", "hidden_size": 3, "bidirectional": True},
        "readout": "last", "output_size": 2})  # fmt: skip
    model = models.build(spec, dtype=np.float64, rng=0)
    rnn = model.modules[0]
    for name, v in rnn.params.items():  # the forward direction says nothing
        if not name.endswith("_reverse"):
            v[...] = 0.0
    x = np.zeros((1, 8, 1))
    y0 = model.forward(x).output
    x[0, 0, 0] = 1.0
    assert np.abs(model.forward(x).output - y0).max() > 1e-3


def test_a_readout_merge_is_refused():
    rng = np.random.default_rng(2)
    rnn = make(CELLS[0][1], {}, I, H, 1, True, rng, merge="readout", output_size=2)
    with pytest.raises(ValueError, match=r"`LastStep's source` must be .*merge 'concat' or"):
        Sequential(rnn, LastStep()).forward(rng.standard_normal((B, T, I)))


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_a_left_padded_mask_reads_the_backward_direction_at_its_first_valid_step(merge):
    """Read at step 0, a left-padded sequence's backward half was a masked step's zero: the
    readout equals the unpadded sequence's (the sum merge reads the final states, which
    were right already), and its gradients are exact."""
    rng = np.random.default_rng(3)
    rnn = make(CELLS[2][1], {}, I, H, 1, True, rng, merge=merge)
    model = Sequential(rnn, LastStep())
    x = rng.standard_normal((B, T, I))
    mask = np.ones((B, T), bool)
    mask[0, :2] = False  # sequence 0 starts at step 2
    out = model.forward(x, mask=mask).output
    alone = model.forward(x[:1, 2:]).output
    np.testing.assert_allclose(out[0], alone[0], rtol=0, atol=1e-14)
    F = 2 * H if merge == "concat" else H
    head = Sequential(rnn, LastStep(), Linear(F, 3, dtype=np.float64, rng=rng))
    gradcheck(head, x, mask=mask).assert_ok()


def test_dropout_between_the_layer_and_laststep_keeps_the_directions():
    """A Dropout (the identity in evaluation) between a bidirectional layer and LastStep
    turned the per-direction read off: the backward half was read where it had seen one
    input. It is read by direction through the Dropout; a 'sum' layer, read from its final
    states past the Dropout, is refused."""
    from rnnlab.modules import Dropout

    rng = np.random.default_rng(4)
    rnn = make(CELLS[2][1], {}, I, H, 1, True, rng)
    x = rng.standard_normal((B, T, I))
    direct = Sequential(rnn, LastStep()).forward(x, lengths=LENGTHS).output
    through = Sequential(rnn, Dropout(0.5), LastStep()).forward(x, lengths=LENGTHS).output
    np.testing.assert_array_equal(through, direct)
    summed = make(CELLS[2][1], {}, I, H, 1, True, rng, merge="sum")
    with pytest.raises(ValueError, match=r"`modules\[2\]` must be LastStep right after a "
                       r"bidirectional layer with merge 'sum'.*Put the Dropout after"):
        Sequential(summed, Dropout(0.5), LastStep()).forward(x)


def test_mean_over_time_after_a_dropout_after_a_summed_bidirectional_layer():
    """MeanOverTime averages a layer's outputs, whatever their merge: past a Dropout after a
    merge='sum' layer it was refused with LastStep's reason (final states), and so was the
    model's export. It computes what it computes without the Dropout (the identity in
    evaluation), and its gradients are exact."""
    from rnnlab.modules import Dropout, MeanOverTime

    rng = np.random.default_rng(6)
    summed = make(CELLS[2][1], {}, I, H, 1, True, rng, merge="sum")
    x = rng.standard_normal((B, T, I))
    direct = Sequential(summed, MeanOverTime()).forward(x, lengths=LENGTHS).output
    model = Sequential(summed, Dropout(0.5), MeanOverTime())
    np.testing.assert_array_equal(model.forward(x, lengths=LENGTHS).output, direct)
    gradcheck(model, x, lengths=LENGTHS).assert_ok()


@pytest.mark.parametrize("readout", ["LastStep", "MeanOverTime"])
def test_a_readout_after_a_time_major_layer_is_refused(readout):
    """(T, B, F) read as (B, T, F): LastStep returned T rows of batch item B-1's values."""
    from rnnlab import modules

    rng = np.random.default_rng(5)
    rnn = make(CELLS[2][1], {}, I, H, 1, False, rng, batch_first=False)
    model = Sequential(rnn, getattr(modules, readout)())
    with pytest.raises(ValueError, match=rf"`modules\[1\]` must be a {readout} after "
                       r"batch-first outputs \(B, T, F\)"):  # fmt: skip
        model.forward(rng.standard_normal((T, B, I)))
