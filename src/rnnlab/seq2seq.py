"""The encoder–decoder: read one sequence into a state, write another from it (the notes'
sequence-to-sequence pattern; Sutskever, Vinyals & Le 2014; Cho et al. 2014).

    encoder:  (e_1 .. e_S) = Encoder(E_src[x_1 .. x_S])            any cell, stacked, bi
    bridge:   s_0 = the encoder's final state, or, where sizes or directions differ,
              h_0 = tanh(W_h [h_S ; h'_1] + b_h), c_0 = W_c [c_S ; c'_1] + b_c
    decoder:  (h_1 .. h_T) = Decoder(E_tgt[y_0 .. y_{T-1}], s_0)   y_0 = BOS
    attention (optional, after the decoder, as Luong, Pham & Manning 2015):
              score_tj = h_t · W_a e_j            "multiplicative" (Luong's general score)
                       = v · tanh(W_1 e_j + W_2 h_t)  "additive" (Bahdanau et al.'s score)
              α_t = softmax_j(score_t) over the source's valid steps, ctx_t = Σ_j α_tj e_j
              h̃_t = tanh(W_c [ctx_t ; h_t] + b_c)
    output:   logits_t = W_o h̃_t + b_o   (h_t without attention)

Training reads the target shifted by one (teacher forcing): the decoder runs over all T
steps in one call of its layer, and the attention is a few batched products after it.
Generation (`greedy`) feeds the model's own choice back one step at a time, through the same
functions, so a teacher-forced pass over a greedy output reproduces its logits: exactly in
float64, to float32's rounding in float32 (the batched products sum in another order than
the one-step ones: a few units in the last place, 3.6e-7 and 2.9e-6 apart on two short
trained runs of 2026-12-06 whose largest logits were 1.2 and 7.9; no choice changed).

Inside the model nothing checks that values are finite (the source is checked at the door):
a diverging run's inf reaches the output, where the Trainer's guard reports it with the step.

Every backward pass is written by hand here or in the modules it composes (Embedding,
Recurrent, Linear); rnnlab.gradcheck checks the whole in float64.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rnnlab import _checks
from rnnlab.generate import next_token_probabilities, sampling_settings
from rnnlab.layers import Backward, Forward, Module, RngLike, _dtype, _rng, one_generator
from rnnlab.models import make_recurrent
from rnnlab.modules import Dropout, Embedding, Linear, _Module
from rnnlab.ops import softmax
from rnnlab.recurrence import valid_mask

ATTENTIONS = ("none", "multiplicative", "additive")

State = np.ndarray | tuple[np.ndarray, ...]
"""A recurrent layer's state: h (L·D, B, H), or (h, c) for a cell with a cell state."""
# (patches, where the ReLU passed, the valid columns (B, S) or None)
ConvTape = tuple[np.ndarray, np.ndarray, np.ndarray | None]
BridgeTape = tuple[Forward, np.ndarray, Forward | None]  # (bridge_h's pass, h_0, bridge_c's)
AttentionTape = tuple[np.ndarray, np.ndarray]  # (α, K or U: the score's intermediate)
HeadTape = tuple[Forward] | tuple[Forward, AttentionTape, Forward, np.ndarray]
EncoderTape = tuple[Forward | None, Forward, ConvTape | None, Forward, BridgeTape | None]


class Memory(NamedTuple):
    """What every decoding step reads of the sources: the encoder's outputs (N, S, D·H), the
    attention's projection of them (`Seq2Seq._keys`, None without attention) and the mask of
    their valid steps (N, S) (None: all valid). Row n is the source of decoded row n."""

    enc: np.ndarray
    keys: np.ndarray | None
    mask: np.ndarray | None


class Seq2Seq(_Module):
    """An encoder–decoder whose target is token ids and whose source is token ids
    (`source_vocab`) or vectors (`source_vocab=None, source_features=F`: an image read column
    by column, for one-to-many "image to text"). Parameters are named by part:
    `src_embed.weight` (or `conv.weight`), `encoder.weight_ih_l0`, …, `bridge_h.weight`,
    `decoder.…`, `attention.…`, `combine.…`, `out.weight` (see the module's docstring for the
    equations).
    `recurrent`: further keyword arguments of rnnlab.models.make_recurrent for both the
    encoder and the decoder (dropout between layers, the LSTM's variants, recurrent dropout,
    zoneout); not `proj_size` (the bridge and the attention read h at full size)
    nor an `initial_state` but "zeros" (the decoder starts from the encoder's state).
    `input_dropout`: inverted dropout on what the encoder reads (the source's vectors, or
    its embeddings), in training only: for an image, each pixel is zeroed with this
    probability, a regulariser against memorising the training images. `source_conv` C
    (vector sources only; 0: none): the source read as an image, one column of
    `source_features` pixels a step, goes through a 3×3 convolution with C channels (zero
    padding) and a ReLU before the encoder, which then reads C·source_features values a step:
    local stroke detectors shared over the whole image (`conv.weight` (C, 9), `conv.bias`)."""

    def __init__(
        self,
        source_vocab: int | None,
        target_vocab: int,
        *,
        embed: int = 32,
        hidden: int = 64,
        cell: str = "lstm",
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        bidirectional: bool = False,
        attention: str = "none",
        attention_size: int | None = None,
        source_features: int | None = None,
        input_dropout: float = 0.0,
        source_conv: int = 0,
        recurrent: dict[str, Any] | None = None,
        dtype: npt.DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        dt, rng = _dtype(dtype), _rng(rng)
        if (source_vocab is None) == (source_features is None):
            _checks.fail(
                "source_vocab",
                "a vocabulary size for token sources, or None with source_features for vectors",
                f"source_vocab={source_vocab!r}, source_features={source_features!r}",
            )
        self.attention = _checks.choice(attention, "attention", ATTENTIONS)
        self.hidden = _checks.positive_int(hidden, "hidden")
        self.target_vocab = _checks.positive_int(target_vocab, "target_vocab")
        if source_vocab is not None:
            _checks.positive_int(source_vocab, "source_vocab")
        if attention_size is not None:
            if self.attention != "additive":
                _checks.fail("attention_size", "None (only additive attention has a size)",
                             f"{attention_size!r} with attention={attention!r}")  # fmt: skip
            _checks.positive_int(attention_size, "attention_size")
        # (checked here under the caller's names: the layers below would name their own,
        # `embedding_dim` or `num_layers`)
        _checks.positive_int(embed, "embed")
        _checks.positive_int(encoder_layers, "encoder_layers")
        _checks.positive_int(decoder_layers, "decoder_layers")
        self.dtype = dt
        self.tokens = source_vocab is not None
        recurrent = _recurrent_options(recurrent)
        self.src_embed = (
            Embedding(source_vocab, embed, dtype=dt, rng=rng) if source_vocab is not None else None
        )  # (None: not self.tokens)
        self.input_dropout = Dropout(_checks.probability(input_dropout, "input_dropout"))
        self.source_features = (
            None if self.tokens else _checks.positive_int(source_features, "source_features")
        )
        width = embed if self.source_features is None else self.source_features
        if (
            isinstance(source_conv, bool)
            or not isinstance(source_conv, (int, np.integer))
            or (source_conv < 0 or (source_conv and self.tokens))
        ):
            _checks.fail("source_conv", "a non-negative number of channels (0: none), for "
                         "vector sources only", repr(source_conv))  # fmt: skip
        self.conv_channels = int(source_conv)
        if self.conv_channels:
            C = self.conv_channels
            self.conv = {"weight": rng.normal(0.0, np.sqrt(2.0 / 9.0), (C, 9)).astype(dt),
                         "bias": np.zeros(C, dt)}  # fmt: skip
            width *= C
        self.encoder = make_recurrent(cell, width, hidden, encoder_layers,
                                      bidirectional=bidirectional, dtype=dt, rng=rng,
                                      **recurrent)  # fmt: skip
        self.tgt_embed = Embedding(target_vocab, embed, dtype=dt, rng=rng)
        self.decoder = make_recurrent(cell, embed, hidden, decoder_layers, dtype=dt, rng=rng,
                                      **recurrent)  # fmt: skip
        self.has_c = self.encoder.cell.has_c
        D = len(self.encoder.directions)
        self.enc_width = D * hidden
        # a learned bridge where the final states do not map layer for layer
        self.bridged = D > 1 or encoder_layers != decoder_layers
        parts: dict[str, Module] = {}
        if self.src_embed is not None:
            parts["src_embed"] = self.src_embed
        parts["encoder"] = self.encoder
        if self.bridged:
            self.bridge_h = Linear(self.enc_width, decoder_layers * hidden, dtype=dt, rng=rng)
            parts["bridge_h"] = self.bridge_h
            if self.has_c:
                self.bridge_c = Linear(self.enc_width, decoder_layers * hidden, dtype=dt, rng=rng)
                parts["bridge_c"] = self.bridge_c
        parts["tgt_embed"] = self.tgt_embed
        parts["decoder"] = self.decoder
        if self.attention != "none":
            A = hidden if attention_size is None else int(attention_size)
            b = 1.0 / np.sqrt(hidden)
            if self.attention == "multiplicative":
                self.attn = {"weight": rng.uniform(-b, b, (hidden, self.enc_width)).astype(dt)}
            else:
                self.attn = {
                    "weight_source": rng.uniform(-b, b, (A, self.enc_width)).astype(dt),
                    "weight_target": rng.uniform(-b, b, (A, hidden)).astype(dt),
                    "v": rng.uniform(-b, b, A).astype(dt),
                }
            self.combine = Linear(self.enc_width + hidden, hidden, dtype=dt, rng=rng)
            parts["combine"] = self.combine
        self.out = Linear(hidden, target_vocab, dtype=dt, rng=rng)
        parts["out"] = self.out
        self._parts = parts
        self.params = {f"{name}.{k}": v for name, m in parts.items() for k, v in m.params.items()}
        if self.conv_channels:
            self.params.update({f"conv.{k}": v for k, v in self.conv.items()})
        if self.attention != "none":
            self.params.update({f"attention.{k}": v for k, v in self.attn.items()})

    # ------------------------------------------------------------------ pieces
    def encode(
        self,
        src: np.ndarray,
        src_lengths: npt.ArrayLike | None = None,
        *,
        training: bool = False,
        rng: RngLike = None,
        grad: bool = True,
    ) -> tuple[np.ndarray, State, EncoderTape]:
        """(encoder outputs (B, S, D·H), the decoder's initial state, what backward needs).
        The source and its lengths are checked under the caller's names (`src`,
        `src_lengths`), as forward and the decoders check them, not as the encoder's `x`."""
        src = self._source(src)
        valid_mask(src_lengths, None, src.shape[0], src.shape[1], name="src_lengths")
        return self._encode(src, src_lengths, training=training, rng=one_generator(rng),
                            grad=grad)  # fmt: skip

    def _encode(self, src: np.ndarray, src_lengths: npt.ArrayLike | None, *, training: bool,
                rng: Any, grad: bool) -> tuple[np.ndarray, State, EncoderTape]:  # fmt: skip
        """encode on a source and lengths already checked (forward and the decoders check
        them first), with one Generator (or None) for the input dropout and the encoder."""
        fe = self.src_embed.forward(src) if self.src_embed is not None else None
        fi = self.input_dropout.forward(src if fe is None else fe.output, training=training,
                                        rng=rng)  # fmt: skip
        inp, fconv = fi.output, None
        if self.conv_channels:
            inp, fconv = self._conv(inp, src_lengths)
        fenc = self.encoder.forward(inp, lengths=src_lengths, training=training, rng=rng,
                                    grad=grad, check=False)  # fmt: skip
        state, fb = self._bridge(fenc.state)
        return fenc.output, state, (fe, fi, fconv, fenc, fb)

    def _conv(self, x: np.ndarray, lengths: npt.ArrayLike | None) -> tuple[np.ndarray, ConvTape]:
        """The 3×3 convolution and ReLU over an image (B, S columns, F pixels): (B, S, F·C),
        zero at columns past each source's length, and what the backward needs."""
        B, S, F = x.shape
        m = valid_mask(lengths, None, B, S)
        padded = np.zeros((B, S + 2, F + 2), x.dtype)
        padded[:, 1:-1, 1:-1] = x if m is None else np.where(m.T[:, :, None], x, 0)  # image edge
        patches = np.stack([padded[:, i : i + S, j : j + F] for i in range(3) for j in range(3)],
                           axis=-1)  # (B, S, F, 9): step t's column and its neighbours  # fmt: skip
        z = patches @ self.conv["weight"].T + self.conv["bias"]  # (B, S, F, C)
        keep = (z > 0) if m is None else (z > 0) & m.T[:, :, None, None]
        out = np.where(keep, z, 0).astype(self.dtype, copy=False)
        valid = None if m is None else np.ascontiguousarray(m.T)
        return out.reshape(B, S, F * self.conv_channels), (patches, keep, valid)

    def _conv_back(
        self, fconv: ConvTape, d_out: np.ndarray, grads: dict[str, np.ndarray], d_image: bool
    ) -> np.ndarray | None:
        """The convolution's gradients into grads; ∂L/∂image (B, S, F) if `d_image`: each
        pixel's share of the nine patches it sits in, zero past each source's length."""
        patches, keep, valid = fconv
        dz = np.where(keep, d_out.reshape(keep.shape), 0)
        grads["conv.weight"] = dz.reshape(-1, dz.shape[-1]).T @ patches.reshape(-1, 9)
        grads["conv.bias"] = dz.reshape(-1, dz.shape[-1]).sum(axis=0)
        if not d_image:
            return None
        B, S, F, _ = patches.shape
        d_patches = dz @ self.conv["weight"]  # (B, S, F, 9)
        d_padded = np.zeros((B, S + 2, F + 2), d_patches.dtype)
        for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
            d_padded[:, i : i + S, j : j + F] += d_patches[..., k]
        d_x = d_padded[:, 1:-1, 1:-1]
        if valid is not None:  # columns past a source's length were read as zeros
            d_x = np.where(valid[:, :, None], d_x, 0)
        return d_x.astype(self.dtype, copy=False)

    def _top(self, final: np.ndarray) -> np.ndarray:
        """The encoder's top layer's final state, its directions side by side: (B, D·H)."""
        D = len(self.encoder.directions)
        top = final[-D:]
        return np.concatenate(list(top), axis=1)

    def _bridge(self, enc_state: State) -> tuple[State, BridgeTape | None]:
        if not self.bridged:
            return enc_state, None
        h_n, c_n = enc_state if isinstance(enc_state, tuple) else (enc_state, None)
        L, H = self.decoder.num_layers, self.hidden
        fh = self.bridge_h.forward(self._top(h_n), check=False)
        h0 = np.tanh(fh.output)

        def layers(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a.reshape(-1, L, H).transpose(1, 0, 2))

        if c_n is None:  # (not self.has_c)
            return layers(h0), (fh, h0, None)
        fc = self.bridge_c.forward(self._top(c_n), check=False)
        return (layers(h0), layers(fc.output)), (fh, h0, fc)

    def _bridge_back(
        self, fb: BridgeTape | None, d_state: State, grads: dict[str, np.ndarray]
    ) -> State:
        """∂L/∂(decoder's initial state) → ∂L/∂(encoder's final state)."""
        if fb is None:  # (not self.bridged)
            return d_state
        fh, h0, fc = fb
        L, H, D = self.decoder.num_layers, self.hidden, len(self.encoder.directions)
        dh0, dc0 = d_state if isinstance(d_state, tuple) else (d_state, None)

        def flat(a: np.ndarray) -> np.ndarray:
            return a.transpose(1, 0, 2).reshape(a.shape[1], L * H)

        bh = self.bridge_h.backward(fh, flat(dh0) * (1 - h0 * h0))
        assert bh.input is not None  # (input_grad: the default)
        grads.update({f"bridge_h.{k}": v for k, v in bh.params.items()})
        n = self.encoder.num_layers * D

        def spread(d_top: np.ndarray) -> np.ndarray:
            """(B, D·H) back onto the top layer's rows of (L·D, B, H)."""
            out = np.zeros((n, d_top.shape[0], H), self.dtype)
            for d in range(D):
                out[n - D + d] = d_top[:, d * H : (d + 1) * H]
            return out

        if fc is None or dc0 is None:  # (not self.has_c)
            return spread(bh.input)
        bc = self.bridge_c.backward(fc, flat(dc0))
        assert bc.input is not None
        grads.update({f"bridge_c.{k}": v for k, v in bc.params.items()})
        return spread(bh.input), spread(bc.input)

    def _keys(self, enc: np.ndarray) -> np.ndarray | None:
        """The attention's projection of the source, which depends on the source alone:
        K = enc W_aᵀ (B, S, H) (multiplicative) or W_1 e_j (B, S, A) (additive); None without
        attention. Decoding computes it once per source, not at each of its steps (it was
        about 30 % of greedy decoding's time; docs/seq2seq.md)."""
        if self.attention == "none":
            return None
        w = self.attn["weight" if self.attention == "multiplicative" else "weight_source"]
        out: np.ndarray = enc @ w.T
        return out

    def _attend(
        self,
        Hd: np.ndarray,
        enc: np.ndarray,
        src_mask: np.ndarray | None,
        keys: np.ndarray | None = None,
    ) -> tuple[np.ndarray, AttentionTape]:
        """ctx (B, T, D·H) and what the backward needs, for decoder outputs Hd (B, T, H);
        `keys`: `_keys(enc)` if already computed (training computes it here, once for all T
        steps, so its gradient is summed once in `_attend_back`)."""
        p = self.attn
        if keys is None:
            keys = self._keys(enc)
        assert keys is not None  # (attention is on here)
        if self.attention == "multiplicative":
            K = keys  # (B, S, H)
            scores = Hd @ np.swapaxes(K, 1, 2)  # (B, T, S)
            extra = K
        else:
            E1 = keys  # (B, S, A)
            H2 = Hd @ p["weight_target"].T  # (B, T, A)
            U = np.tanh(E1[:, None, :, :] + H2[:, :, None, :])  # (B, T, S, A)
            scores = U @ p["v"]
            extra = U
        if src_mask is not None:
            scores = np.where(src_mask[:, None, :], scores, -np.inf)
        alpha = softmax(scores, axis=-1).astype(self.dtype, copy=False)
        return alpha @ enc, (alpha, extra)

    def _attend_back(
        self,
        d_ctx: np.ndarray,
        Hd: np.ndarray,
        enc: np.ndarray,
        cache: AttentionTape,
        grads: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """∂L/∂ctx → (∂L/∂Hd, ∂L/∂enc), the attention's own gradients into grads."""
        p, (alpha, extra) = self.attn, cache
        d_enc = np.swapaxes(alpha, 1, 2) @ d_ctx
        d_alpha = d_ctx @ np.swapaxes(enc, 1, 2)
        d_scores = alpha * (d_alpha - (alpha * d_alpha).sum(axis=-1, keepdims=True))
        if self.attention == "multiplicative":
            K = extra
            dHd = d_scores @ K
            dK = np.swapaxes(d_scores, 1, 2) @ Hd  # (B, S, H)
            grads["attention.weight"] = dK.reshape(-1, dK.shape[-1]).T @ enc.reshape(
                -1, enc.shape[-1]
            )
            d_enc += dK @ p["weight"]
            return dHd, d_enc
        U = extra
        grads["attention.v"] = np.einsum("bts,btsa->a", d_scores, U)
        dU = d_scores[..., None] * p["v"] * (1 - U * U)  # (B, T, S, A)
        dE1, dH2 = dU.sum(axis=1), dU.sum(axis=2)
        grads["attention.weight_source"] = dE1.reshape(-1, dE1.shape[-1]).T @ enc.reshape(
            -1, enc.shape[-1]
        )
        grads["attention.weight_target"] = dH2.reshape(-1, dH2.shape[-1]).T @ Hd.reshape(
            -1, Hd.shape[-1]
        )
        d_enc += dE1 @ p["weight_source"]
        return dH2 @ p["weight_target"], d_enc

    def _head(
        self,
        Hd: np.ndarray,
        enc: np.ndarray,
        src_mask: np.ndarray | None,
        keys: np.ndarray | None = None,
    ) -> tuple[np.ndarray, HeadTape]:
        """Logits from decoder outputs Hd (B, T, H), and what the backward needs (`keys`:
        as `_attend`)."""
        if self.attention == "none":
            fo = self.out.forward(Hd, check=False)
            return fo.output, (fo,)
        ctx, fa = self._attend(Hd, enc, src_mask, keys)
        fcomb = self.combine.forward(np.concatenate([ctx, Hd], axis=-1), check=False)
        z = np.tanh(fcomb.output)
        fo = self.out.forward(z, check=False)
        return fo.output, (fo, fa, fcomb, z)

    # ------------------------------------------------------------------ forward / backward
    # (type: ignore: a two-input model, forward(src, tgt_in), unlike the one-input modules
    # whose __call__ and state_dict it shares; it is not called as a module)
    def forward(  # type: ignore[override]
        self,
        src: npt.ArrayLike,
        tgt_in: npt.ArrayLike,
        *,
        src_lengths: npt.ArrayLike | None = None,
        tgt_lengths: npt.ArrayLike | None = None,
        training: bool = False,
        rng: RngLike = None,
        grad: bool = True,
    ) -> Forward:
        """Teacher forcing: logits (B, T, target_vocab) for the target read shifted by one,
        `tgt_in` = (BOS, y_1, …, y_{T-1}) as ids (B, T)."""
        src = self._source(src)
        rng = one_generator(rng)  # (one Generator for the encoder's and the decoder's masks)
        tgt_in = _checks.token_ids(tgt_in, "tgt_in", self.target_vocab, ndim=2)
        if src.shape[0] != tgt_in.shape[0]:
            _checks.fail("tgt_in", f"{src.shape[0]} rows, one per source", f"shape {tgt_in.shape}")
        if tgt_in.shape[1] == 0:
            _checks.fail("tgt_in", "one step at least (BOS, then the target)",
                         f"shape {tgt_in.shape}")  # fmt: skip
        B, S = src.shape[:2]
        m = valid_mask(src_lengths, None, B, S, name="src_lengths")
        valid_mask(tgt_lengths, None, B, tgt_in.shape[1], name="tgt_lengths")  # (checked here)
        src_mask = None if m is None else np.ascontiguousarray(m.T)  # (B, S)
        enc, state, enc_cache = self._encode(src, src_lengths, training=training, rng=rng,
                                             grad=grad)  # fmt: skip
        fd = self.tgt_embed.forward(tgt_in)
        fdec = self.decoder.forward(fd.output, lengths=tgt_lengths, state=state,
                                    training=training, rng=rng, grad=grad, check=False,
                                    check_state=False)  # fmt: skip
        logits, head = self._head(fdec.output, enc, src_mask)
        cache = {"enc": enc, "enc_cache": enc_cache, "fd": fd, "fdec": fdec, "head": head,
                 "src_mask": src_mask}  # fmt: skip
        return Forward(logits, None, cache)

    def backward(
        self, f: Forward, d_output: npt.ArrayLike, d_state: None = None, *,
        input_grad: bool = True, overwrite_d_output: bool = False, retain_tape: bool = False,
    ) -> Backward:
        """Gradients of the parameters, and of a vector source (B, S, F) (None for token ids,
        or with `input_grad=False`). `retain_tape=True` keeps `f` for another backward pass
        (Recurrent.backward)."""
        _checks.booleans(input_grad=input_grad, overwrite_d_output=overwrite_d_output,
                         retain_tape=retain_tape)  # fmt: skip
        c = f.cache
        d_output = _checks.float_array(d_output, "d_output", shape=f.output.shape,
                                       dtype=self.dtype)  # fmt: skip
        grads: dict[str, np.ndarray] = {}
        enc, Hd = c["enc"], c["fdec"].output
        head = c["head"]
        bo = self.out.backward(head[0], d_output)
        grads.update({f"out.{k}": v for k, v in bo.params.items()})
        d_enc = np.zeros_like(enc)
        if self.attention == "none":
            dHd = bo.input
        else:
            _, fa, fcomb, z = head
            bc = self.combine.backward(fcomb, bo.input * (1 - z * z))
            assert bc.input is not None  # (input_grad: the default)
            grads.update({f"combine.{k}": v for k, v in bc.params.items()})
            d_ctx, dHd = bc.input[..., : self.enc_width], bc.input[..., self.enc_width :]
            dHd_a, d_enc_a = self._attend_back(d_ctx, Hd, enc, fa, grads)
            dHd = dHd + dHd_a
            d_enc += d_enc_a
        bdec = self.decoder.backward(c["fdec"], dHd, overwrite_d_output=True,  # (made here)
                                     retain_tape=retain_tape)  # fmt: skip
        grads.update({f"decoder.{k}": v for k, v in bdec.params.items()})
        bd = self.tgt_embed.backward(c["fd"], bdec.input)
        grads.update({f"tgt_embed.{k}": v for k, v in bd.params.items()})
        fe, fi, fconv, fenc, fb = c["enc_cache"]
        d_enc_state = self._bridge_back(fb, bdec.state, grads)
        d_source = input_grad and not self.tokens
        benc = self.encoder.backward(fenc, d_enc, d_enc_state,
                                     input_grad=self.tokens or fconv is not None or d_source,
                                     overwrite_d_output=True,
                                     retain_tape=retain_tape)  # fmt: skip
        grads.update({f"encoder.{k}": v for k, v in benc.params.items()})
        d_read = benc.input  # ∂L/∂(what the encoder read)
        if fconv is not None:
            assert d_read is not None  # (input_grad=True for it)
            d_read = self._conv_back(fconv, d_read, grads, d_source)
        d_src = None
        if self.src_embed is not None:
            be = self.src_embed.backward(fe, self.input_dropout.backward(fi, d_read).input)
            grads.update({f"src_embed.{k}": v for k, v in be.params.items()})
        elif d_source:
            d_src = self.input_dropout.backward(fi, d_read).input
        return Backward(d_src, None, {k: grads[k] for k in self.params})

    def _source(self, src: npt.ArrayLike) -> np.ndarray:
        """The source checked under the caller's name for it, `src`: the encoder (or the
        convolution before it) would name its own input, `x`, and count C·F features."""
        if self.src_embed is not None:
            out = _checks.token_ids(src, "src", self.src_embed.num_embeddings, ndim=2)
        else:
            out = _checks.float_array(src, "src", ndim=3, dtype=self.dtype)
            F = self.source_features
            if out.shape[2] != F:
                _checks.fail("src", f"an array of {F} features a step (source_features={F})",
                             f"{out.shape[2]} features (shape {out.shape})")  # fmt: skip
        if out.shape[0] == 0:
            _checks.fail("src", "one source at least", f"shape {out.shape}")
        if out.shape[1] == 0:
            _checks.fail("src", "one step at least", f"shape {out.shape}")
        return out

    # ------------------------------------------------------------------ generation
    def _start(
        self, src: npt.ArrayLike, src_lengths: npt.ArrayLike | None, max_len: int, width: int = 1
    ) -> tuple[Memory, State, int]:
        """Encode once, repeat each source `width` times: (what the steps read of the sources,
        the decoder's state, B). The beam reorders the states of a source's `width` rows
        among themselves, never across sources, so the memory's rows stay in place."""
        src = self._source(src)
        _checks.positive_int(max_len, "max_len")
        B, S = src.shape[:2]
        m = valid_mask(src_lengths, None, B, S, name="src_lengths")
        src_mask = None if m is None else np.ascontiguousarray(m.T)
        enc, state, _ = self._encode(src, src_lengths, training=False, rng=None, grad=False)
        if width > 1:
            enc = np.repeat(enc, width, axis=0)
            src_mask = None if src_mask is None else np.repeat(src_mask, width, axis=0)
            state = _take(state, np.repeat(np.arange(B), width))
        return Memory(enc, self._keys(enc), src_mask), state, B

    def _special(self, bos: object, eos: object) -> None:
        """BOS and EOS ids of the target vocabulary: an EOS past it never ended a sequence,
        and a negative one ended it at another token."""
        for name, token in (("bos", bos), ("eos", eos)):
            if (
                isinstance(token, bool)
                or not isinstance(token, (int, np.integer))
                or not 0 <= token < self.target_vocab
            ):
                _checks.fail(name, f"a target token id in [0, {self.target_vocab})",
                             _checks.describe(token))  # fmt: skip

    def _step(self, prev: np.ndarray, state: State, memory: Memory) -> tuple[np.ndarray, State]:
        """One decoder step for tokens prev (N,): (logits (N, V), the next state)."""
        fdec = self.decoder.forward(self.tgt_embed.forward(prev[:, None]).output, state=state,
                                    grad=False, check=False, check_state=False)  # fmt: skip
        logits, _ = self._head(fdec.output, memory.enc, memory.mask, memory.keys)
        return logits[:, 0], fdec.state

    def _run(
        self,
        src: npt.ArrayLike,
        src_lengths: npt.ArrayLike | None,
        bos: int,
        eos: int,
        max_len: int,
        choose: Callable[[np.ndarray], np.ndarray],
        never: int | Sequence[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        self._special(bos, eos)
        banned = self._never(never, eos)
        memory, state, B = self._start(src, src_lengths, max_len)
        prev, done = np.full(B, bos), np.zeros(B, bool)
        ids: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        for _ in range(max_len):
            step, state = self._step(prev, state, memory)
            allowed = step
            if banned:  # (the logits returned stay the model's own)
                allowed = step.copy()
                allowed[:, banned] = -np.inf
            tok = np.where(done, eos, choose(allowed))
            ids.append(tok)
            logits.append(step)
            done |= tok == eos
            prev = tok
            if done.all():
                break
        return np.stack(ids, axis=1), np.stack(logits, axis=1)

    def _never(self, never: int | Sequence[int], eos: int) -> list[int]:
        """Token ids decoding may not choose (a task's padding and BOS, never a target: a
        decoder that ranked one first wrote it into the output, and the task's text dropped
        it unsaid): one id, or a collection of them (a set too). EOS may not be among them
        (decoding ends on it); an offending id is named."""
        V = self.target_vocab
        if isinstance(never, np.ndarray) and never.ndim == 0:  # (iterating one is a TypeError)
            never = never.item()
        if isinstance(never, (int, np.integer)) and not isinstance(never, bool):
            never = [never]
        if isinstance(never, (str, bytes, Mapping)) or not isinstance(never, Iterable):
            _checks.fail("never", "a target token id or a collection of them",
                         _checks.describe(never))  # fmt: skip
        never = list(never)  # (a set or a generator too, as before ids were checked)
        out = []
        for token in never:
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
                _checks.fail("never", f"target token ids in [0, {V})", _checks.describe(token))
            if not 0 <= token < V:
                _checks.fail("never", f"target token ids in [0, {V})", f"the id {int(token)}")
            if token == eos:
                _checks.fail("never", "ids other than eos (decoding ends on it)",
                             f"{int(token)}, the eos id")  # fmt: skip
            out.append(int(token))
        if len(set(out)) >= V - 1:
            _checks.fail("never", "ids that leave a token besides eos to choose",
                         f"{len(set(out))} of the {V} ids")  # fmt: skip
        return out

    def greedy(
        self,
        src: npt.ArrayLike,
        *,
        src_lengths: npt.ArrayLike | None = None,
        bos: int,
        eos: int,
        max_len: int,
        never: int | Sequence[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """The most likely token at every step, fed back: (ids (B, n), logits (B, n, V)),
        n ≤ max_len. A sequence's ids after its first EOS are EOS; decoding stops when every
        sequence has produced one. `never`: an id or ids never chosen, none by default (the
        logits are the model's)."""
        return self._run(src, src_lengths, bos, eos, max_len, lambda z: z.argmax(axis=-1),
                         never)  # fmt: skip

    def sample(self, src: npt.ArrayLike, *, src_lengths: npt.ArrayLike | None = None,
               bos: int, eos: int, max_len: int, temperature: float = 1.0,
               top_k: int | None = None, rng: RngLike = None,
               never: int | Sequence[int] = (),
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Tokens drawn from softmax(logits / temperature), among the `top_k` most likely if
        given (a k at or above the target vocabulary's size keeps every id: the same draws as
        no top_k); otherwise as `greedy` (`never` too: an untrained or weak decoder draws a
        BOS or a padding id as readily as any other)."""
        temperature, top_k = sampling_settings(temperature, top_k)
        gen = _rng(rng)

        def draw(z: np.ndarray) -> np.ndarray:
            # the id j with c_{j-1} ≤ u < c_j: no id of probability 0 (a `never` id, one
            # outside the top k) is drawn, not at u = 0 nor where the cumulative sum rounded
            # below u (then the last id that may be drawn)
            p = next_token_probabilities(z, temperature, top_k)
            u = gen.random((z.shape[0], 1))
            last = p.shape[-1] - 1 - np.argmax(p[:, ::-1] > 0, axis=-1)
            tok: np.ndarray = np.minimum((p.cumsum(axis=-1) <= u).sum(axis=-1), last)
            return tok

        return self._run(src, src_lengths, bos, eos, max_len, draw, never)

    def beam_search(self, src: npt.ArrayLike, *, src_lengths: npt.ArrayLike | None = None,
                    bos: int, eos: int, max_len: int, width: int = 5, alpha: float = 0.6,
                    never: int | Sequence[int] = (),
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The `width` best partial outputs kept at every step, batched over the sources; the
        winner by log-probability over the length penalty ((5 + |y|) / 6)^α of Wu et al.
        (2016) (α = 0: the raw sum). A finished hypothesis (it produced EOS) stays in the beam
        with its score, extended by EOS. Returns (ids (B, n), scores (B,)): n and the EOS
        padding as `greedy`, to which width 1 is equal (ties of the score go to the higher
        logit, as greedy's argmax, then the lower id). `never`: ids no hypothesis is
        extended by; the scores are then log-probabilities of the model's distribution over
        the other ids (renormalized: a decoder that puts its mass on a `never` id would
        otherwise find its shortest output, EOS at once, the most likely).

        Decoding stops at max_len or once no hypothesis still growing can change any row's
        winner (`_settled`). It waited for all `width` to finish, and a beam's free slots keep
        growing hypotheses long after they have fallen below a finished one for good: a
        decoder sure to end at once but to repeat itself otherwise ran every call to max_len
        (tests/test_seq2seq.py). The winners and their scores are those decoding on would
        give; n can be smaller (fewer columns of EOS padding)."""
        width = _checks.positive_int(width, "width")
        alpha = _checks.finite_float(alpha, "alpha")
        self._special(bos, eos)
        banned = self._never(never, eos)
        memory, state, B = self._start(src, src_lengths, max_len, width)
        k = width
        score = np.full((B, k), -np.inf)
        score[:, 0] = 0.0  # one live hypothesis at first: no copies of it
        done = np.zeros((B, k), bool)
        length = np.zeros((B, k), int)
        ids = np.zeros((B, k, 0), int)
        prev = np.full(B * k, bos)
        reach = _widest_penalty(max_len, alpha)
        for _ in range(max_len):
            logits, state = self._step(prev, state, memory)
            V = logits.shape[-1]
            if banned:  # the distribution over the ids that may be chosen
                logits = logits.copy()
                logits[:, banned] = -np.inf
            z = logits - logits.max(axis=-1, keepdims=True)
            with np.errstate(under="ignore"):  # (a logit 104 below the best, in float32: its
                # exp is 0, the right answer; under np.seterr(all="raise") it stopped decoding)
                logp = (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).reshape(B, k, V)
            cand = score[:, :, None] + logp
            ended = np.full(V, -np.inf)
            ended[eos] = 0.0
            cand = np.where(done[:, :, None], score[:, :, None] + ended, cand)
            flat = cand.reshape(B, k * V)
            # Ties of the score go to the higher logit, then to the lower id: logp rounds two
            # logits an ulp apart to one value, and width 1 then kept the lower id where
            # greedy's argmax keeps the higher. (-inf scores, hypotheses that cannot live,
            # keep their order by position.)
            best = _top_k(flat, k, done, ended, logits.reshape(B, k, V))
            parent, tok = best // V, best % V
            rows = np.arange(B)[:, None]
            score = flat[rows, best]
            was_done = done[rows, parent]
            length = length[rows, parent] + ~was_done
            done = was_done | (tok == eos)
            ids = np.concatenate([ids[rows, parent], tok[:, :, None]], axis=2)
            state = _take(state, (rows * k + parent).reshape(-1))
            prev = tok.reshape(-1)
            if _settled(score, done, length, alpha, reach):
                break
        pick = np.argmax(_penalised(score, length, alpha), axis=1)
        return ids[np.arange(B), pick], score[np.arange(B), pick]


def _penalised(score: np.ndarray, length: np.ndarray, alpha: float) -> np.ndarray:
    """What the winner's choice ranks: score / ((5 + L) / 6)^α, -inf for a score that is not
    finite. Where a decoded length's penalty leaves float64's range (an |α| in the
    thousands), s / pen is ±0 or -inf for every such hypothesis and the argmax took the first
    of them, whatever its score (with an overflow warning): then the same order comes from
    logarithms, −(log(−s) − α·log((5 + L) / 6)) (s ≤ 0; s = 0 ranks first, as 0 / pen does)."""
    finite = np.isfinite(score)
    with np.errstate(all="ignore"):
        base = (5.0 + length) / 6.0
        penalty = base**alpha
        ratio = score / penalty
        lost = ~np.isfinite(penalty) | (penalty == 0.0) | ~np.isfinite(ratio) | (
            (ratio == 0.0) & (score != 0.0))  # fmt: skip
        if (finite & lost).any():
            ratio = -(np.log(-score) - alpha * np.log(base))
    return np.where(finite, ratio, -np.inf)


def _widest_penalty(max_len: int, alpha: float) -> float:
    """The largest length penalty ((5 + L) / 6)^α any hypothesis can have, L = 1 .. max_len
    (at L = max_len for α ≥ 0, at L = 1 for α < 0), as computed by the winner's choice, with
    a margin of 1e-9 over the computed end points: a library's pow is within an ulp or a
    few of the exact value but not promised monotone, and `_settled` needs every computed
    penalty at or below this one. For an α so large that this overflows it is inf, and
    nothing stops early (s / inf is -0.0, below no finished score / penalty); without a
    word: the overflow is of a length perhaps never decoded (it warned, or raised under
    np.errstate(over="raise"), where every hypothesis ended at once). The other end may
    underflow to 0 (α < 0), which is not the largest: no word either."""
    with np.errstate(over="ignore", under="ignore"):
        ends = ((5.0 + np.array([1, max_len])) / 6.0) ** alpha
    return float(ends.max()) * (1.0 + 1e-9)


def _settled(score: np.ndarray, done: np.ndarray, length: np.ndarray, alpha: float,
             reach: float) -> bool:  # fmt: skip
    """Whether decoding on can change no row's winner: in every row each hypothesis still
    growing (not finished, score above -inf) has score / `reach` below the best finished
    one's score / penalty. Why that is exact (the winner and its score are the ones decoding
    on to max_len picks), for any α, with s ≤ 0 (log-probabilities, rounded sums of them):
    a descendant of a growing hypothesis h ends with a score s_d ≤ s_h (each step adds a
    logp ≤ 0) at some length L ≤ max_len, so its s_d / pen(L) ≤ s_h / pen(L) ≤ s_h / reach
    (s_h ≤ 0, pen(L) ≤ reach; rounding is monotone, so this holds for the computed values
    too). Hence no descendant beats f, the first finished hypothesis of the highest
    score / penalty. Nor does one push f out of the beam, which keeps the highest raw sums:
    s_h / reach < s_f / pen(L_f) with s_h, s_f ≤ 0 and pen(L_f) ≤ reach gives s_h < s_f,
    so every descendant ranks below f; the finished ones keep their scores and their order
    among themselves. So the winner decoding on would pick (the first highest score /
    penalty in the beam) is f, as now. A -inf hypothesis (the beam wider than the
    candidates so far) cannot live: it counts as finished. Once true the test stays true,
    so a batch stopping at its last row's step gives every row the same winner. (The
    bound at the growing hypothesis's next length, s_h / pen(|h| + 1), is not exact for
    α > 0: the penalty still grows, lifting s / pen toward 0, and a long continuation can
    overtake f; tests/test_seq2seq.py has such a decoder.)"""
    live = ~done & (score != -np.inf)  # (a NaN counts as growing: no stop on it)
    if not live.any():
        return True
    # (an inf `reach`, a penalty that overflowed or underflowed: -inf / inf, s / 0 and 0 / 0
    # are NaN or -inf, which stop nothing, and no reason to warn; the winner's choice
    # computes only the penalties of the lengths decoded)
    with np.errstate(all="ignore"):
        pen = ((5.0 + length) / 6.0) ** alpha  # as the winner's choice computes it
        best = np.where(done & np.isfinite(score), score / pen, -np.inf).max(axis=1)
        return bool(np.where(live, score / reach < best[:, None], True).all())


def _top_k(flat: np.ndarray, k: int, done: np.ndarray, ended: np.ndarray,
           logits: np.ndarray) -> np.ndarray:  # fmt: skip
    """The k best candidates of each row of `flat` (B, k·V), best first; ties of the score
    go to the higher raw logit (`logits` (B, k, V), `ended` for a hypothesis `done`), then
    to the lower position, and -inf scores keep their order by position. A stable argsort decides
    every row whose k + 1 best scores are distinct; the few rows with a tie among them are
    sorted again with the tie-break (a lexsort of every row cost 2x the argsort at
    V = 25,000)."""
    order = np.argsort(-flat, axis=1, kind="stable")
    top = np.take_along_axis(flat, order[:, : k + 1], axis=1)
    tied = ((top[:, 1:] == top[:, :-1]) & np.isfinite(top[:, :-1])).any(axis=1)
    best = order[:, :k]
    rows = np.flatnonzero(tied)
    if rows.size:
        sub = flat[rows]
        raw = np.where(done[rows, :, None], ended, logits[rows]).reshape(sub.shape)
        tie = np.where(np.isfinite(sub), -raw, 0.0)
        best[rows] = np.lexsort((tie, -sub), axis=1)[:, :k]
    return best


def _recurrent_options(recurrent: object) -> dict[str, Any]:
    """Seq2Seq's `recurrent`: a dict of make_recurrent's layer options. The sizes, the
    direction, the dtype and the generator are the model's own, and proj_size is refused
    (the bridge and attention read h at full size), as is an initial_state but "zeros" (the
    decoder starts from the encoder's state)."""
    if recurrent is None:
        return {}
    if not isinstance(recurrent, dict):
        _checks.fail("recurrent", "a dict of layer options", _checks.describe(recurrent))
    own = {"cell", "input_size", "hidden_size", "num_layers", "bidirectional", "dtype", "rng"}
    allowed = sorted(set(inspect.signature(make_recurrent).parameters) - own)
    for key, value in recurrent.items():
        if key == "proj_size" and value:
            _checks.fail("recurrent", "no proj_size (the bridge and attention read h at full "
                         "size)", f"proj_size={value!r}")  # fmt: skip
        if key == "initial_state" and value != "zeros":
            # the decoder starts from the encoder's state: its own learned state was a
            # parameter no pass read (decoder.h0_l0, always a zero gradient)
            _checks.fail("recurrent", "no initial_state but 'zeros' (the decoder starts from "
                         "the encoder's state)", f"initial_state={value!r}")  # fmt: skip
        if key not in allowed:
            _checks.fail("recurrent", f"layer options among {', '.join(allowed)}", repr(key),
                         "The cell, sizes, direction, dtype and rng are Seq2Seq's own "
                         "arguments.")  # fmt: skip
    return dict(recurrent)


def _take(state: State, index: np.ndarray) -> State:
    """A decoder state (L, N, H), or a pair of them, at batch rows `index`."""
    if isinstance(state, tuple):
        return tuple(np.ascontiguousarray(a[:, index]) for a in state)
    return np.ascontiguousarray(state[:, index])
