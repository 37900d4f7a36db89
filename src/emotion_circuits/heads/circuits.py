"""OV and QK circuits of attention heads, from the weights (TransformerLens conventions).

Per head h of layer L: W_Q, W_K, W_V [d_model, d_head] and W_O [d_head, d_model], so a head reading residual x (after
the block's input norm) writes x W_V W_O (the OV circuit) and scores query x_q against key x_k by
(x_q W_Q)(x_k W_K)^T / sqrt(d_head) (the QK circuit, with the family's own attention scale: 1 for GPT-Neo, query_pre_attn_scalar**-0.5 for
Gemma 3; rotary position embeddings, q/k norms (Gemma 3, Qwen 3) and biases are left out, as in TransformerLens'
`W_QK`/`W_OV`). The weights come from the family adapter (`arch`). Grouped-query attention: HF stores n_kv_heads key/value matrices; query head h uses
KV head h // (n_heads / n_kv_heads), so W_K/W_V are expanded with `repeat_interleave` (the TransformerLens bridge
returns the n_kv_heads matrices unexpanded; `bridge_weights` expands them the same way and a test checks both agree).

Token tables: vocabulary embeddings are passed through the layer's own input norm, as if the token sat in the
residual stream, then (OV) scored by how much the head writes them into the unit emotion direction of the layer's
output, and (QK) by how much the mean sentence-end residual of the emotion's sentences attends to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from emotion_circuits.heads import engine as H
from emotion_circuits.model.hooks import layer_list
from emotion_circuits.model.loading import LoadedModel


def head_weights(lm: LoadedModel, layer: int) -> dict[str, torch.Tensor]:
    """W_Q, W_K, W_V [H, d, dh] (KV expanded to query heads) and W_O [H, dh, d] of one layer, float32 on the CPU."""
    a = H.arch(lm)
    raw = lm.adapter.head_weights(lm.hf_model, layer)
    rep = a.n_heads // a.n_kv_heads
    return {"W_Q": raw["W_Q"].float().cpu(), "W_K": raw["W_K"].repeat_interleave(rep, 0).float().cpu(),
            "W_V": raw["W_V"].repeat_interleave(rep, 0).float().cpu(), "W_O": raw["W_O"].float().cpu()}


def bridge_weights(bridge, layer: int, n_heads: int) -> dict[str, torch.Tensor]:
    """The same four matrices from a TransformerBridge (`blocks[L].attn.W_Q` ...), KV heads expanded."""
    attn = bridge.blocks[layer].attn
    out = {}
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        w = getattr(attn, name).detach().float()
        if w.shape[0] != n_heads:
            w = w.repeat_interleave(n_heads // w.shape[0], 0)
        out[name] = w
    return out


def normed_embeddings(lm: LoadedModel, layer: int) -> torch.Tensor:
    """[V, d] token embeddings after layer `layer`'s input norm (float32, CPU)."""
    return _normed(lm, layer, lm.hf_model.get_input_embeddings().weight.detach())


def _normed(lm: LoadedModel, layer: int, x) -> torch.Tensor:
    """Rows of x [n, d] through layer `layer`'s input norm, on the model's device and in its dtype; returned as
    float32 on the CPU, where the small OV/QK products are computed."""
    norm = lm.adapter.input_norm(layer_list(lm.hf_model)[layer])
    x = torch.as_tensor(x).to(lm.device, next(lm.hf_model.parameters()).dtype)  # a norm wants its weights' dtype
    with torch.inference_mode():
        return norm(x).float().cpu()


def _token(tokenizer, i: int) -> str:
    return tokenizer.decode([int(i)])


def _heads_by_layer(lm: LoadedModel, heads: Sequence[tuple[int, int]]):
    """(layer, head, weights, normed embeddings) per head, each layer's weights built once."""
    for layer in sorted({m for m, _ in heads}):
        w = head_weights(lm, layer)
        emb = normed_embeddings(lm, layer)
        for m, h in heads:
            if m == layer:
                yield layer, h, w, emb


def ov_table(lm: LoadedModel, heads: Sequence[tuple[int, int]], directions: dict[int, np.ndarray],
             emotions: Sequence[str], n_tokens: int) -> pd.DataFrame:
    """Per head and emotion: the tokens the head's OV circuit writes most into (and most against) the emotion's
    unit direction at the head's layer output, plus `ov_gain`: how strongly the head copies the emotion direction
    of its input ((norm(u_in) W_V W_O) . u_out)."""
    rows = []
    for m, h, w, emb in _heads_by_layer(lm, heads):
        for j, emotion in enumerate(emotions):
            u_out = torch.as_tensor(directions[m][j], dtype=torch.float32)
            read = w["W_V"][h] @ (w["W_O"][h] @ u_out)  # [d]: input direction written into u_out
            u_in = _normed(lm, m, u_out[None])[0]
            gain = float(u_in @ read)
            scores = (emb @ read).numpy()
            order = np.lexsort((np.arange(len(scores)), -scores))
            for side, ids in (("top", order[:n_tokens]), ("bottom", order[::-1][:n_tokens])):
                for rank, t in enumerate(ids):
                    rows.append({"layer": m, "head": h, "head_label": H.head_label(m, h), "emotion": emotion,
                                 "side": side, "rank": rank + 1, "token_id": int(t),
                                 "token": _token(lm.tokenizer, t), "score": float(scores[t]), "ov_gain": gain})
    return pd.DataFrame(rows)


def qk_table(lm: LoadedModel, heads: Sequence[tuple[int, int]], queries: dict[tuple[str, int], np.ndarray],
             lexicon_ids: dict[str, list[int]], n_tokens: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """QK scores of the mean sentence-end residual of each emotion's sentences (query, layer input) against every
    vocabulary token embedding (key). Returns (top tokens per head x emotion, lexicon summary: the mean score of
    the emotion's lexicon tokens vs the vocabulary mean, as a z-score and percentile rank)."""
    scale = lm.adapter.attention_scale(lm.hf_model.config)
    top, summary = [], []
    for m, h, w, emb in _heads_by_layer(lm, heads):
        for emotion, ids in lexicon_ids.items():
            q = _normed(lm, m, queries[(emotion, m)][None])[0]
            qv = (q @ w["W_Q"][h]) * scale
            scores = (emb @ (w["W_K"][h] @ qv)).numpy()
            order = np.lexsort((np.arange(len(scores)), -scores))
            for rank, t in enumerate(order[:n_tokens]):
                top.append({"layer": m, "head": h, "head_label": H.head_label(m, h), "emotion": emotion,
                            "rank": rank + 1, "token_id": int(t), "token": _token(lm.tokenizer, t),
                            "score": float(scores[t])})
            lex = scores[ids]
            percentile = float(np.mean([np.mean(scores < s) for s in lex]))
            summary.append({"layer": m, "head": h, "head_label": H.head_label(m, h), "emotion": emotion,
                            "lexicon_mean": float(lex.mean()), "vocab_mean": float(scores.mean()),
                            "vocab_std": float(scores.std()),
                            "lexicon_z": float((lex.mean() - scores.mean()) / max(scores.std(), 1e-12)),
                            "lexicon_percentile": percentile, "n_lexicon_tokens": len(ids)})
    return pd.DataFrame(top), pd.DataFrame(summary)
