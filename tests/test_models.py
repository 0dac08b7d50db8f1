"""rnnlab.models: a spec's errors named where the spec has them, an output-feedback spec's
options typed as the other cells take them, and FeedbackModel's pass options (grad,
input_grad), its state pair and its backward's argument checked by name."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.models import build

V, E, H = 5, 3, 4


def _spec(cell="lstm", **kw):
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": E},
            "rnn": {"cell": cell, "hidden_size": H}, "output_size": V}  # fmt: skip
    for key, value in kw.items():
        where, _, inner = key.partition("__")
        if inner:
            spec[where][inner] = value
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize("cell", ["lstm", "jordan"])
@pytest.mark.parametrize("spec,name,got", [
    (dict(output_size=0), r"spec\['output_size'\]", "0"),
    (dict(output_size="5"), r"spec\['output_size'\]", "'5'"),
    (dict(input__vocab_size=0), r"spec\['input'\]\['vocab_size'\]", "0"),
    (dict(input__embed_dim=-1), r"spec\['input'\]\['embed_dim'\]", "-1"),
    (dict(input={"type": "vectors", "size": 2.0}), r"spec\['input'\]\['size'\]", "2.0"),
])  # fmt: skip
def test_a_spec_s_sizes_are_named_as_the_spec_has_them(cell, spec, name, got):
    """They were named by the modules' own arguments (`out_features`, `num_embeddings`,
    `embedding_dim`, `input_size`), keys a spec does not have."""
    with pytest.raises(ValueError, match=rf"`{name}` must be a positive integer; got {got}"):
        build(_spec(cell, **spec))


@pytest.mark.parametrize("spec,match", [
    (dict(rnn__num_layers=True), r"`spec\['rnn'\]\['num_layers'\]` must be a positive integer"),
    (dict(rnn__num_layers=1.0), r"`spec\['rnn'\]\['num_layers'\]` must be a positive integer"),
    (dict(rnn__bidirectional=0), r"`spec\['rnn'\]\['bidirectional'\]` must be True or False"),
    (dict(rnn__bidirectional="false"),
     r"`spec\['rnn'\]\['bidirectional'\]` must be True or False; got 'false'"),
    (dict(rnn__zoneout=[]), r"`spec\['rnn'\]\['zoneout'\]` must be left out or at its default"),
    (dict(rnn__zoneout=[0, 0, 0]), r"`spec\['rnn'\]\['zoneout'\]` must be left out"),
    (dict(rnn__layer_norm=0), r"`spec\['rnn'\]\['layer_norm'\]` must be left out .*; got 0 "
                              r"instead. Its default: False."),
    (dict(rnn__proj_size=0.0), r"`spec\['rnn'\]\['proj_size'\]` must be left out"),
    (dict(rnn__dropout=False), r"`spec\['rnn'\]\['dropout'\]` must be left out"),
    (dict(feedback="relu"), r"`spec\['feedback'\]` must be one of 'identity', 'softmax', "
                            r"'sigmoid'; got 'relu'"),
])  # fmt: skip
def test_an_output_feedback_spec_s_options_are_typed_as_the_other_cells_take_them(spec, match):
    """Compared by ==, True passed as one layer, 0 as not bidirectional, 0 as layer_norm
    False, 0.0 as proj_size 0 (each refused for an LSTM), and a zoneout list of any length
    at 0 as [p_h, p_c]; the defaults themselves, as a run's config.json holds them, build."""
    for cell in ("jordan", "jordan-elman"):
        with pytest.raises(ValueError, match=match):
            build(_spec(cell, **spec))
    at_defaults = _spec("jordan", rnn__num_layers=1, rnn__bidirectional=False, rnn__dropout=0,
                        rnn__zoneout=[0.0, 0], rnn__layer_norm=False, rnn__proj_size=0,
                        rnn__forget_bias=None, rnn__initial_state="zeros")  # fmt: skip
    assert type(build(at_defaults)).__name__ == "FeedbackModel"


@pytest.mark.parametrize("option,value", [("cell_clip", 0.0), ("peephole", 0),
                                          ("layer_norm", 0.0)])  # fmt: skip
def test_an_lstm_option_set_to_a_falsy_number_is_refused_for_the_other_cells(option, value):
    """`value not in (False, None)` let 0 and 0.0 by (0 == False) for a GRU or an RNN."""
    for cell in ("gru", "rnn"):
        with pytest.raises(ValueError, match=rf"`{option}` must be unset for cell '{cell}'"):
            build(_spec(cell, **{f"rnn__{option}": value}))


def _feedback(cell="jordan-elman", inputs="tokens"):
    spec = _spec(cell, feedback="softmax")
    if inputs == "vectors":
        spec = _spec(cell, input={"type": "vectors", "size": E}, feedback="sigmoid")
    return build(spec, dtype=np.float64, rng=0)


def test_a_feedback_model_keeps_no_tape_with_grad_false():
    """grad=False was ignored: sampling and evaluation kept the tape of a whole prime or
    stream for no backward. The outputs and the state are the same."""
    m = _feedback()
    ids = np.random.default_rng(1).integers(0, V, (2, 7))
    with_tape, without = m.forward(ids), m.forward(ids, grad=False)
    np.testing.assert_array_equal(without.output, with_tape.output)
    np.testing.assert_array_equal(without.state[1], with_tape.state[1])
    assert without.cache[1].cache["tape"] is None
    with pytest.raises(ValueError, match=r"grad=True"):
        m.backward(without, np.ones_like(without.output))
    m.backward(with_tape, np.ones_like(with_tape.output))


def test_a_feedback_model_skips_the_input_gradient_with_input_grad_false():
    """input_grad=False (what the trainer passes) was ignored: ∂L/∂x was computed for
    vector inputs anyway. The parameters' gradients are the same; a token model still
    gives its embedding's."""
    m = _feedback(inputs="vectors")
    x = np.random.default_rng(1).standard_normal((2, 6, E))
    f = m.forward(x)
    d = np.random.default_rng(2).standard_normal(f.output.shape)
    full, skipped = m.backward(f, d), m.backward(f, d, input_grad=False)
    assert full.input is not None and skipped.input is None
    for k in m.params:
        np.testing.assert_array_equal(skipped.params[k], full.params[k])
    t = _feedback()
    ids = np.random.default_rng(3).integers(0, V, (2, 6))
    ft = t.forward(ids)
    b = t.backward(ft, np.ones_like(ft.output), input_grad=False)
    assert np.abs(b.params["0.weight"]).max() > 0


def test_a_feedback_model_s_state_pair_is_checked_by_its_place():
    """A y of the wrong shape was said to be `y0`, an h given to a model without hidden
    recurrence `state`: names the caller never used."""
    ids = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"`state\[1\]` must be an array of shape \(2, 5\); "
                                         r"got shape \(2, 4\)"):  # fmt: skip
        _feedback().forward(ids, state=[None, np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"`state\[0\]` must be an array of shape \(2, 4\)"):
        _feedback().forward(ids, state=[np.zeros((3, 4)), None])
    with pytest.raises(ValueError, match=r"`state\[0\]` must be None \(this model has no "
                                         r"hidden-to-hidden recurrence"):  # fmt: skip
        _feedback("jordan").forward(ids, state=[np.zeros((2, 4)), None])
    m = _feedback()
    f = m.forward(ids)
    with pytest.raises(ValueError, match=r"`d_state\[1\]` must be an array of shape \(2, 5\)"):
        m.backward(f, np.zeros_like(f.output), [None, np.zeros((2, 3))])
    g = m.forward(ids, state=f.state)  # the pair it hands on is taken back
    assert g.output.shape == (2, 3, V)


def test_a_feedback_model_s_backward_refuses_another_module_s_forward():
    """It failed with "too many values to unpack (expected 2)", naming nothing."""
    from rnnlab.layers import RNN

    m = _feedback()
    other = RNN(E, V, dtype=np.float64, rng=0).forward(np.zeros((2, 3, E)))
    vectors = _feedback(inputs="vectors").forward(np.zeros((2, 3, E)))
    for fwd in (other, vectors, None):
        with pytest.raises(ValueError, match=r"`fwd` must be the result of this "
                                             r"FeedbackModel's forward"):  # fmt: skip
            m.backward(fwd, np.zeros((2, 3, V)))


def test_recurrent_layer_names_a_model_without_one():
    """A FeedbackModel was said to have "none" out of the house's form, anything that is no
    model failed with AttributeError."""
    from rnnlab.models import recurrent_layer

    m = build(_spec("gru"))
    assert recurrent_layer(m) is m.modules[1]
    with pytest.raises(ValueError, match=r"`model` must be a model with a recurrent layer "
                                         r"\(RNN, LSTM, GRU\); got a FeedbackModel without one "
                                         r"\(an output-feedback model\) instead"):  # fmt: skip
        recurrent_layer(_feedback())
    with pytest.raises(ValueError, match=r"`model` must be a model with a recurrent layer "
                                         r"\(RNN, LSTM, GRU\); got an int without one"):
        recurrent_layer(3)
