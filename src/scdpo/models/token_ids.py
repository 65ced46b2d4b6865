"""Token-level access to a :class:`~scdpo.models.t2i.T2IModel`'s text encoder(s), for the attacks
and for the trainer's P4D in the loop (:mod:`scdpo.train.adversary`).

``encode_prompts`` caches one (T, D) tensor per prompt, which a search over thousands of candidate
prompts must not fill; :func:`encode_texts` encodes without the cache, and :func:`encode_ids`
encodes token ids with some positions' input embeddings replaced (a forward hook on the encoder's
token-embedding layer), which is how the gradient attacks feed relaxed tokens. Both encode with
the model family's own ``encode_tokens`` (:mod:`scdpo.models.families`), as ``encode_prompts``
does. One token-id space is used for all encoders: SDXL's two CLIP tokenizers share one vocabulary
(checked; SD3's T5 has another, so the token-level attacks refuse it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scdpo.models.t2i import Conditioning
from scdpo.models.tokens import content_ids


@dataclass
class Layout:
    """Where the adversarial tokens sit in each encoder's input ids: ``ids`` (one (T,) tensor per
    encoder), ``positions`` (the adversarial slots, the same for every encoder)."""

    ids: list[torch.Tensor]
    positions: torch.Tensor


def check_shared_vocab(model) -> None:
    if any(t.get_vocab() != model.tokenizers[0].get_vocab() for t in model.tokenizers[1:]):
        raise ValueError("this model's text encoders use different vocabularies; token-level attacks need one "
                         "(use the paraphrase attack, which works on text)")


def specials(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a prompt's tokens."""
    word = content_ids(tokenizer, "a")
    full = tokenizer("a").input_ids
    for i in range(len(full) - len(word) + 1):
        if full[i:i + len(word)] == word:
            return full[:i], full[i + len(word):]
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


def room(tokenizer) -> int:
    """How many content tokens fit between the special tokens."""
    before, after = specials(tokenizer)
    return tokenizer.model_max_length - len(before) - len(after)


def build_ids(tokenizer, content: list[int]) -> torch.Tensor:
    """``content`` wrapped in the tokenizer's special tokens and padded to ``model_max_length``
    exactly as ``tokenizer(text, padding="max_length", truncation=True)`` does."""
    before, after = specials(tokenizer)
    ids = before + list(content)[:room(tokenizer)] + after
    return torch.tensor(ids + [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(ids)))


def layout(model, adv_len: int, after: list[int] = ()) -> Layout:
    """Ids for ``[start] adv(adv_len) after [end] pad``: the adversarial slots first (UnlearnDiffAtk's
    ``prefix_k``, P4D-N with ``after`` empty). The slots hold a placeholder until replaced."""
    fits = room(model.tokenizers[0])
    if adv_len > fits:
        raise ValueError(f"--tokens {adv_len} does not fit this text encoder's {fits} content tokens")
    return layout_slots(model, [None] * adv_len + list(after))


def interleaved(prompt_ids: list[int], every: int) -> list[int | None]:
    """P4D-K's sequence: an adversarial slot (None) before every ``every`` prompt tokens, and one
    more at the end when the count divides evenly (``len // every + 1`` slots, as the authors)."""
    slots, it = [], iter(prompt_ids)
    for i in range(len(prompt_ids) + len(prompt_ids) // every + 1):
        slots.append(None if i % (every + 1) == 0 else next(it))
    return slots


def layout_slots(model, slots: list[int | None]) -> Layout:
    """Ids for ``[start] slots [end] pad``, a None slot being an adversarial one. Slots past the
    encoder's length are cut, as the tokenizer truncates a long prompt."""
    slots = slots[:room(model.tokenizers[0])]
    if None not in slots:
        raise ValueError("no adversarial token fits this text encoder's length")
    start = len(specials(model.tokenizers[0])[0])
    placeholder = model.tokenizers[0].pad_token_id
    content = [placeholder if s is None else s for s in slots]
    ids = [build_ids(tok, content) for tok in model.tokenizers]
    return Layout(ids, torch.tensor([start + i for i, s in enumerate(slots) if s is None]))


def with_tokens(lay: Layout, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The layout's ids with the adversarial slots set to ``tokens`` (B, K) -> per encoder (B, T)."""
    out = []
    for ids in lay.ids:
        batch = ids.unsqueeze(0).repeat(len(tokens), 1)
        batch[:, lay.positions] = tokens.to(batch.device)
        out.append(batch)
    return out


def encode_ids(model, ids: list[torch.Tensor], adv: list[torch.Tensor | None] | None = None,
               positions: torch.Tensor | None = None, size=None) -> Conditioning:
    """Encode per-encoder token ids (B, T); where ``adv[i]`` is given, the input embeddings of
    encoder i at ``positions`` are replaced by it ((B, K, D_i) or (K, D_i)), so gradients reach it."""
    handles = []
    try:
        for i, encoder in enumerate(model.text_encoders):
            if adv is not None and adv[i] is not None:
                def hook(module, inputs, out, e=adv[i]):
                    out = out.clone()
                    out[:, positions.to(out.device)] = e.to(out.dtype)
                    return out
                handles.append(encoder.get_input_embeddings().register_forward_hook(hook))
        ids = [x.to(model.device) for x in ids]
        masks = [_mask(tok, i) for tok, i in zip(model.tokenizers, ids)]
        context, pooled = model.adapter.encode_tokens(model, ids, masks)
    finally:
        for handle in handles:
            handle.remove()
    return Conditioning(context, pooled, model._time_ids(len(context), size))


def _mask(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    # real tokens up to and including the first end token after the start (pad may equal the end token)
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    is_end = (ids == end).int()
    first = torch.where(is_end.any(1), is_end.argmax(1), torch.full_like(is_end[:, 0], ids.shape[1] - 1))
    return (torch.arange(ids.shape[1], device=ids.device)[None] <= first[:, None]).long()


def encode_texts(model, texts: list[str], batch_size: int = 256) -> Conditioning:
    """Encode prompts as ``encode_prompts`` does, without its cache (for searches over many prompts)."""
    parts = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            chunk = texts[s:s + batch_size]
            ids = [tok(chunk, padding="max_length", max_length=tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids for tok in model.tokenizers]
            parts.append(encode_ids(model, ids))
    return Conditioning.cat(parts)
