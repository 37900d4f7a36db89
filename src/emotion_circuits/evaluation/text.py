"""Text measures shared by every evaluator run: fluency (repetition, degenerate, continuation NLL), sentence
embeddings, and `score_all`, which joins the evaluators' declared columns into one table.

Repetition counts repeated *token* n-grams, not words: a steered model's loop "sharingsharingsharing" is one
word to a space splitter (rate 0) but the same tokens again and again."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

WORD = re.compile(r"[A-Za-z']+")  # a word, as the lexicon evaluator counts them
SPACES = re.compile(r"\s+")
CHARS_PER_TOKEN = 4  # English BPE averages ~4 characters a token: the text fallback's n-gram width per token
DEGENERATE_AT = 0.5  # fixed before any run, never tuned: half of a continuation's n-grams are repeats


def repetition_rate(tokens: Sequence, n: int = 3) -> float:
    """Share of token n-grams that already occurred earlier in the sequence (loops of any spelling: 'thank thank
    thank', 'sharingsharing'). Any hashable tokens: model token ids, or a list of strings. A `str` is refused:
    its characters are not tokens (use `text_repetition_rate`)."""
    if isinstance(tokens, str):
        raise TypeError("repetition_rate counts tokens, got a str: pass token ids, or use text_repetition_rate")
    toks = list(tokens)
    grams = [tuple(toks[i: i + n]) for i in range(len(toks) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def text_repetition_rate(text: str, n: int = 3) -> float:
    """The fallback for callers with only text: repeated character n-grams `n * CHARS_PER_TOKEN` wide (about a
    token n-gram) over the lower-cased, whitespace-collapsed text. Characters, not words, so a loop without
    spaces still repeats; wide enough that ordinary prose ('the', 'ing' recur) reads near 0."""
    chars = SPACES.sub(" ", text.lower()).strip()
    return repetition_rate(list(chars), n * CHARS_PER_TOKEN)


def embed_texts(lm, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings: attention-masked mean of the last hidden state, L2-normalised (MiniLM's recipe).
    Batches hold texts of similar length (then the input order is restored): far less padding to run."""
    import torch

    out = []
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = lm.tokenizer([texts[i] for i in order[start: start + batch_size]], padding=True, truncation=True,
                               max_length=256, return_tensors="pt")
            hidden = lm.hf_model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    if not out:
        return np.zeros((0, lm.d_model), dtype=np.float32)
    result = np.empty((len(texts), out[0].shape[1]), dtype=out[0].dtype)
    result[order] = np.concatenate(out)
    return result


def continuation_nll(lm, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                     batch_size: int = 32) -> np.ndarray:
    """Mean per-token negative log-likelihood of each continuation under the (unsteered) model.

    Teacher-forced with right padding: rows never attend to pads, so batching does not change the value.
    """
    import torch

    from emotion_circuits.model.padding import pad_with_mask
    from emotion_circuits.runtime.resources import run_with_backoff

    out = np.full(len(prompts), np.nan)
    pad = lm.tokenizer.pad_token_id

    def run(lo: int, hi: int) -> None:
        rows = list(range(lo, hi))
        ids, mask = pad_with_mask([list(prompts[i]) + list(continuations[i]) for i in rows], pad, "right")
        logits = lm.hf_model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        for j, i in enumerate(rows):
            p, c = len(prompts[i]), len(continuations[i])
            if c == 0:
                continue
            targets = torch.tensor(list(continuations[i]))
            out[i] = float(-logp[j, p - 1: p - 1 + c].gather(1, targets[:, None]).mean())

    with torch.inference_mode():
        run_with_backoff(len(prompts), batch_size, run, f"fluency NLL {lm.name}")
    return out


def score_all(evaluators, texts: Sequence[str], tokens: Sequence[Sequence[int]] | None = None) -> pd.DataFrame:
    """Every evaluator's declared columns side by side (one row per text), plus fluency: `repetition` (on each
    text's model token ids where `tokens` is given, else `text_repetition_rate`) and `degenerate` (1.0 where
    repetition >= DEGENERATE_AT). An evaluator whose frame is not exactly its declared `metrics` is an error
    here, not a column lost later."""
    if tokens is not None and len(tokens) != len(texts):
        raise ValueError(f"score_all: {len(tokens)} token sequences for {len(texts)} texts")
    frames = []
    for ev in evaluators:
        frame = ev.score(texts).reset_index(drop=True)
        if list(frame.columns) != [m.column for m in ev.metrics]:
            raise RuntimeError(f"evaluator {ev.name!r} scored {list(frame.columns)}, declared "
                               f"{[m.column for m in ev.metrics]}")
        frames.append(frame)
    out = pd.concat(frames, axis=1) if frames else pd.DataFrame(index=range(len(texts)))
    rates = [repetition_rate(t) for t in tokens] if tokens is not None else [text_repetition_rate(t) for t in texts]
    out["repetition"] = np.asarray(rates, dtype=float)
    out["degenerate"] = (out["repetition"] >= DEGENERATE_AT).astype(float)
    return out
