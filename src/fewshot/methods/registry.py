"""The registered methods: one explicit table, built from each class's ``name`` and ``aliases``.

To add a method: write the class (annotated ``__init__``, options stored as attributes, a ``name``
ClassVar) and list it in :data:`REGISTERED` below.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import FewShotMethod
from .bayesian import DiscriminativeKShot
from .bpl import BPL
from .metric import MatchingNet, ProtoNet, RelationNet
from .model_based import MANN, MetaNet, SequenceLSTM
from .nonparametric import KNN, NearestPrototype, OneNN, SoftKMeans
from .optimization import ANIL, FOMAML, MAML, LSTMMetaLearner, MetaSGD, Reptile
from .params import coerce_params
from .siamese import SiameseNet
from .transfer import Baseline, BaselinePlusPlus, FineTune, SimpleShot

REGISTERED: tuple[type[FewShotMethod], ...] = (
    ProtoNet, MatchingNet, RelationNet, SiameseNet,                        # metric
    KNN, OneNN, NearestPrototype, SoftKMeans,                              # non-parametric
    MAML, FOMAML, ANIL, MetaSGD, Reptile, LSTMMetaLearner,                 # optimization
    MANN, SequenceLSTM, MetaNet,                                           # model-based
    Baseline, BaselinePlusPlus, FineTune, SimpleShot, DiscriminativeKShot,  # transfer, Bayesian
    BPL,                                                                   # Bayesian Program Learning
)

#: canonical name -> class
METHODS: dict[str, type[FewShotMethod]] = {cls.name: cls for cls in REGISTERED}
#: earlier name -> canonical name
ALIASES: dict[str, str] = {alias: cls.name for cls in REGISTERED for alias in cls.aliases}

if len(METHODS) != len(REGISTERED) or set(ALIASES) & set(METHODS):
    raise RuntimeError("two registered methods share a name or an alias")


def canonical_name(name: str) -> str:
    """``name`` or one of its earlier aliases (``meta-sgd``, ``baseline++``) -> the canonical name."""
    if name in METHODS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")


def method_class(name: str) -> type[FewShotMethod]:
    return METHODS[canonical_name(name)]


def build_method(name: str, backbone: nn.Module | None = None, saved: bool = False, **options: Any) -> FewShotMethod:
    """Build a registered method; ``options`` may be strings (``-p``) or JSON values: they are
    coerced and validated by the constructor's annotations (``ValueError`` on bad names or values).
    ``saved``: the options come from a checkpoint (options removed since then are left out)."""
    cls = method_class(name)
    return cls(backbone=backbone, **coerce_params(cls, options, saved=saved))
