"""Output-feedback (Jordan) networks: the notes' second design pattern.

Recurrence flows from the output of one step to the hidden units of the next:

    h_t = φ(U x_t + R y_{t-1} + b  [+ W h_{t-1}])
    o_t = V h_t + c

What is fed back as y_{t-1} depends on the mode:
- "teacher": the true target y_{t-1} (teacher forcing). Without the hidden-to-hidden term the
  steps decouple (each could be computed on its own), but they run on the same loop as the
  other modes: at one thread it was as fast as the two large products of the decoupled form
  (bench/README, "Output feedback");
- "free": the network's own prediction f(o_{t-1}), with gradients flowing through it
  (f = identity, softmax or sigmoid, chosen by `feedback`). A model of vectors (identity,
  sigmoid) is run so at inference; one of classes (softmax) is fed there the one-hot of the
  class chosen, as teacher forcing fed the true one (rnnlab.generate, models.FeedbackModel's
  `fed_back`, and the tasks' evaluation), not the softmax;
- "scheduled": scheduled sampling (Bengio et al. 2015): at each step each sequence is fed
  the truth with probability `p`, otherwise its own prediction.
y_0 is zero unless given (`y0`). Targets are float vectors (B, T, K), or class ids (B, T) for
`feedback="softmax"` which are fed as one-hot vectors.

Every mode runs on the library's loop (rnnlab.recurrence, compiled by rnnlab.fast): the Elman
cell with the output map and f around its step (recurrence.Feedback), the truth fed where a
step is teacher-forced. This module only checks the arguments and lays the parameters out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np
from numpy.typing import DTypeLike

from rnnlab import _checks, recurrence
from rnnlab.cells import ElmanCell
from rnnlab.layers import (
    Backward,
    Forward,
    PassOptions,
    RngLike,
    _dtype,
    _rng,
    _training_rng,
    load_params,
    pass_options,
)
from rnnlab.recurrence import valid_mask


class OutputFeedback:
    """A Jordan network layer; output (B, T, K) are the logits / values o_t.

    Parameters: `weight_ih` U (H, I), `weight_fh` R (H, K), `bias` b (H,), optionally
    `weight_hh` W (H, H) when `hidden_recurrence=True`, and the output map `weight_out` V (K, H),
    `bias_out` c (K,). Inputs are batch-first (B, T, I). Masks must be right-padding (lengths).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        nonlinearity: str = "tanh",
        feedback: str = "identity",
        hidden_recurrence: bool = False,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        self.input_size = _checks.positive_int(input_size, "input_size")
        self.hidden_size = _checks.positive_int(hidden_size, "hidden_size")
        self.output_size = _checks.positive_int(output_size, "output_size")
        self.nonlinearity = _checks.choice(nonlinearity, "nonlinearity", ("tanh", "relu"))
        self.feedback = _checks.choice(feedback, "feedback", ("identity", "softmax", "sigmoid"))
        # (bool() of it made the string "no" a layer with hidden-to-hidden recurrence)
        self.hidden_recurrence = _checks.boolean(hidden_recurrence, "hidden_recurrence")
        self.dtype = dt = _dtype(dtype)
        rng = _rng(rng)
        H, I, K = hidden_size, input_size, output_size

        def u(shape: tuple[int, ...], fan: int) -> np.ndarray:
            return rng.uniform(-1 / np.sqrt(fan), 1 / np.sqrt(fan), shape).astype(dt)

        self.params = {"weight_ih": u((H, I), H), "weight_fh": u((H, K), H), "bias": u((H,), H)}
        if self.hidden_recurrence:
            self.params["weight_hh"] = u((H, H), H)
        self.params["weight_out"] = u((K, H), H)
        self.params["bias_out"] = np.zeros(K, dt)
        self._cell = ElmanCell(self.nonlinearity)

    def __call__(self, x: Any, **options: Any) -> Forward:
        return self.forward(x, **options)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        load_params(self.params, state, strict)

    # ------------------------------------------------------------------ helpers
    def _loop_params(self) -> recurrence.Params:
        """The layer as the library's loop takes it: the Elman cell with W_hh = R (or [W R]:
        the carry is [h_{t-1}; y_{t-1}]), b_hh zero, and the output map V, c around it."""
        P, H = self.params, self.hidden_size
        W_rec = P["weight_fh"]
        if self.hidden_recurrence:
            W_rec = np.concatenate([P["weight_hh"], W_rec], axis=1)
        return recurrence.Params(P["weight_ih"], W_rec, P["bias"], np.zeros(H, self.dtype),
                                 W_hr=P["weight_out"], b_hr=P["bias_out"])  # fmt: skip

    def _targets(self, targets: object, B: int, T: int,
                 mask: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """The true outputs as vectors (B, T, K); class ids are checked at the valid steps
        only (`mask`, time-major): padding may hold any value, as the losses allow."""
        K = self.output_size
        if isinstance(targets, (list, tuple)):  # (class ids as a list were refused as floats)
            targets = np.asarray(targets)
        if isinstance(targets, np.ndarray) and targets.dtype.kind in "iu":
            if self.feedback != "softmax":
                _checks.fail(
                    "targets",
                    "float vectors (B, T, K) unless feedback='softmax'",
                    f"integer ids of shape {targets.shape}",
                )
            if targets.shape != (B, T):
                _checks.fail("targets", f"class ids of shape ({B}, {T})", f"shape {targets.shape}")
            seen = targets if mask is None else targets[mask.T]  # (padding: never fed back)
            if seen.size and (seen.min() < 0 or seen.max() >= K):
                _checks.fail(
                    "targets",
                    f"class ids in [0, {K}) at the valid steps",
                    f"values from {seen.min()} to {seen.max()}",
                )
            if mask is not None:
                targets = np.where(mask.T, targets, 0)
            return np.eye(K, dtype=self.dtype)[targets]
        return _checks.float_array(targets, "targets", shape=(B, T, K), dtype=self.dtype)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Any,
        *,
        targets: Any = None,
        mode: str = "teacher",
        p: float = 0.5,
        y0: Any = None,
        **options: Unpack[PassOptions],
    ) -> Forward:
        """Run the layer. `targets` is needed for "teacher" and "scheduled" modes; `state` is an
        initial hidden state (B, H) when `hidden_recurrence` (zeros otherwise); `y0` (B, K) is
        the value fed back at the first step (zeros by default; its gradient is backward's `y0`),
        which lets a sequence continue across calls. `cache["y_last"]` is what the next
        step would be fed."""
        o = pass_options(options, "OutputFeedback.forward")
        lengths, mask, state, rng, check, grad = (o["lengths"], o["mask"], o["state"], o["rng"],
                                                  o["check"], o["grad"])  # fmt: skip
        mode = _checks.choice(mode, "mode", ("teacher", "free", "scheduled"))
        p = _checks.probability(p, "p", allow_one=True)  # (read in scheduled mode only, but a
        # bad value is refused in any mode, not kept to fail when the mode changes)
        x = _checks.float_array(x, "x", ndim=3, finite=check)
        _checks.batch_of_steps(x)  # (as every layer: no sequence or no step is no pass)
        if x.shape[2] != self.input_size:
            _checks.fail(
                "x",
                f"an array with {self.input_size} features in its last axis",
                f"shape {x.shape}",
            )
        if x.dtype != self.dtype:
            _checks.fail(
                "x", f"of dtype {self.dtype} like the layer's parameters", f"dtype {x.dtype}"
            )
        B, T, _ = x.shape
        H, K = self.hidden_size, self.output_size
        m = valid_mask(lengths, mask, B, T)  # time-major (T, B)
        if m is not None and not (m[:-1] >= m[1:]).all():
            _checks.fail(
                "mask",
                "right padding (valid steps first)",
                "a mask with gaps",
                "OutputFeedback feeds back the previous step; pass right-padded batches.",
            )
        Y = None
        if mode != "free":
            if targets is None:
                _checks.fail("targets", f"the true outputs for mode={mode!r}", "None")
            Y = self._targets(targets, B, T, m)
        if mode == "scheduled":
            rng = _training_rng(rng, "scheduled sampling")
        if y0 is not None:
            y0 = _checks.float_array(y0, "y0", shape=(B, K), dtype=self.dtype)
        if state is not None:
            if not self.hidden_recurrence:
                _checks.fail(
                    "state",
                    "None (this layer has no hidden-to-hidden recurrence)",
                    _checks.describe(state),
                )
            h0 = _checks.float_array(state, "state", shape=(B, H), dtype=self.dtype)
        else:
            h0 = np.zeros((B, H), self.dtype)
        X = np.ascontiguousarray(np.swapaxes(x, 0, 1))  # (T, B, I)
        # what the carry is after step t, fed to step t + 1: the truth y*_t where `use` is 0
        # (teacher forcing: everywhere), else the prediction f(o_t)
        use = np.full((T, B), 0.0 if mode == "teacher" else 1.0, self.dtype)
        truth = np.zeros((T, B, K), self.dtype) if Y is None else np.swapaxes(Y, 0, 1).copy()
        if mode == "scheduled":  # the truth with probability p, per sequence and step; the
            # last step's too: what a next call (truncated BPTT's next window) is fed first
            use[:] = rng.random((T, B)) >= p
        fb = recurrence.Feedback(self.feedback, self.hidden_recurrence,
                                 np.empty((T, B, K), self.dtype), use, truth)  # fmt: skip
        y_0 = np.zeros((B, K), self.dtype) if y0 is None else y0
        carry0 = np.concatenate([h0, y_0], axis=1) if self.hidden_recurrence else y_0
        rp = self._loop_params()
        O, carry_T, _, tape = recurrence.forward(self._cell, rp, X, carry0, None, m,
                                                 keep_tape=grad, feedback=fb)  # fmt: skip
        h_T = carry_T[:, :H] if self.hidden_recurrence else None
        cache = {"tape": tape, "params": rp, "X": X, "mask": m,
                 "y_last": carry_T[:, H:] if self.hidden_recurrence else carry_T}  # fmt: skip
        return Forward(np.swapaxes(O, 0, 1), h_T, cache)

    # ------------------------------------------------------------------ backward
    def _own_forward(self, f: object) -> None:
        """Refuse what this layer's forward could not have made (another module's result:
        it failed with KeyError 'X', or an AttributeError for what is no Forward)."""
        c = getattr(f, "cache", None)
        fits = (isinstance(f, Forward) and isinstance(c, dict) and {"tape", "params", "X",
                "mask", "y_last"} <= c.keys() and isinstance(c["X"], np.ndarray)
                and c["X"].ndim == 3 and c["X"].shape[2] == self.input_size
                and np.shape(f.output) == (c["X"].shape[1], c["X"].shape[0], self.output_size))
        if not fits:
            _checks.fail("f", f"the result of this OutputFeedback's forward ({self.input_size} "
                         f"inputs, {self.output_size} outputs)", "the result of another "
                         "module's forward" if isinstance(f, Forward) else _checks.describe(f))
    def backward(
        self, f: Forward, d_output: Any, d_state: Any = None, d_y_last: Any = None, *,
        input_grad: bool = True, overwrite_d_output: bool = False,
    ) -> FeedbackBackward:
        """`d_y_last`: ∂L/∂cache["y_last"], when the value fed to a next call carries loss
        (free running and scheduled sampling; in teacher forcing it is the truth). The
        outputs' gradients enter the loop beside the carry's, so d_output is never written
        over (`overwrite_d_output` is the protocol's, and changes nothing here)."""
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output)
        self._own_forward(f)
        c, P = f.cache, self.params
        m, X = c["mask"], c["X"]
        T, B, I = X.shape
        H, K = self.hidden_size, self.output_size
        dO = _checks.float_array(d_output, "d_output", shape=f.output.shape, dtype=self.dtype)
        dO = np.swapaxes(dO, 0, 1)
        if m is not None:
            dO = np.where(m[:, :, None], dO, 0.0)
        if d_state is not None:
            if not self.hidden_recurrence:
                _checks.fail("d_state", "None (this layer has no hidden state)", "an array")
            d_state = _checks.float_array(d_state, "d_state", shape=(B, H), dtype=self.dtype)
        if c["tape"] is None:
            _checks.fail("f", "the result of a forward pass with grad=True", "grad=False")
        rp = c["params"]
        d_carry = np.zeros((B, rp.W_hh.shape[1]), self.dtype)
        if d_state is not None:
            d_carry[:, :H] = d_state
        if d_y_last is not None:
            d_carry[:, d_carry.shape[1] - K :] = _checks.float_array(
                d_y_last, "d_y_last", shape=(B, K), dtype=self.dtype
            )
        dX, g, dh0, _ = recurrence.backward(self._cell, rp, c["tape"], dO, d_carry,
                                            need_dX=input_grad)  # fmt: skip
        R = slice(H if self.hidden_recurrence else 0, None)  # R's columns of [W R]
        assert g.W_hr is not None and g.b_hr is not None  # the output map is this layer's own
        grads = {"weight_ih": g.W_ih, "bias": g.b_ih, "weight_fh": g.W_hh[:, R],
                 "weight_out": g.W_hr, "bias_out": g.b_hr}  # fmt: skip
        if self.hidden_recurrence:
            grads["weight_hh"] = g.W_hh[:, :H]
        d_h0 = dh0[:, :H] if self.hidden_recurrence else None
        if dX is not None:
            dX = np.swapaxes(dX, 0, 1)
        return FeedbackBackward(dX, d_h0, {k: grads[k] for k in P}, y0=dh0[:, H:] if
                                self.hidden_recurrence else dh0)  # fmt: skip


@dataclass
class FeedbackBackward(Backward):
    """Backward's result, and `y0`: ∂L/∂y0, the value fed back at the first step (the carry's
    last K columns), so that a sequence split over calls backpropagates through the seam
    (pass it as the earlier call's `d_y_last`)."""

    y0: np.ndarray | None = None
