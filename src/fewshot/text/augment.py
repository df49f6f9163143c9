"""EDA-style text augmentation (Wei & Zou 2019, "EDA: Easy Data Augmentation"), WordNet-free.

Three of EDA's four operations need no lexicon: random swap, random deletion and random insertion
(here of a word taken from the sentence itself, since EDA's inserted synonyms need WordNet).
Synonym replacement runs when a ``synonyms`` mapping (word -> alternatives) is given.
Each new sentence applies one operation to ``max(1, round(alpha * words))`` words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

OPERATIONS = ("swap", "delete", "insert", "synonym")


def eda(text: str, rng: np.random.Generator, alpha: float = 0.1, operation: str = "swap",
        synonyms: Mapping[str, Sequence[str]] | None = None) -> str:
    """One augmented copy of ``text`` by ``operation`` (see :data:`OPERATIONS`)."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    words = text.split()
    if len(words) < 2:
        return text
    n = max(1, int(round(alpha * len(words))))
    if operation == "swap":
        for _ in range(n):
            i, j = rng.choice(len(words), 2, replace=False)
            words[i], words[j] = words[j], words[i]
    elif operation == "delete":
        keep = np.ones(len(words), bool)
        keep[rng.choice(len(words), min(n, len(words) - 1), replace=False)] = False
        words = [w for w, k in zip(words, keep) if k]
    elif operation == "insert":
        for _ in range(n):
            words.insert(int(rng.integers(len(words) + 1)), words[int(rng.integers(len(words)))])
    else:
        if not synonyms:
            raise ValueError("synonym replacement needs a synonyms mapping (word -> alternatives)")
        candidates = [i for i, w in enumerate(words) if synonyms.get(w.lower())]
        for i in rng.permutation(candidates)[:n]:
            alts = synonyms[words[i].lower()]
            words[i] = alts[int(rng.integers(len(alts)))]
    return " ".join(words)


def augment_texts(texts: Sequence[str], labels: Sequence, per_text: int = 4, alpha: float = 0.1, seed: int = 0,
                  operations: Sequence[str] = ("swap", "delete", "insert"),
                  synonyms: Mapping[str, Sequence[str]] | None = None) -> tuple[list[str], list]:
    """The originals followed by ``per_text`` augmented copies of each (operations in turn),
    with their labels; deterministic in ``seed``; copies equal to their original are dropped."""
    rng = np.random.default_rng(seed)
    out_t, out_y = list(texts), list(labels)
    for t, y in zip(texts, labels):
        seen = {t}
        for k in range(per_text):
            a = eda(t, rng, alpha, operations[k % len(operations)], synonyms)
            if a not in seen:
                seen.add(a)
                out_t.append(a)
                out_y.append(y)
    return out_t, out_y
