"""Few-shot methods, one module per family; :mod:`.registry` lists the ones buildable by name."""

from .base import FewShotMethod, LossOutput, StepOutput, check_support
from .bayesian import DiscriminativeKShot
from .bpl import BPL
from .metric import MatchingNet, ProtoNet, RelationNet
from .model_based import MANN, MetaNet, SequenceLSTM
from .nonparametric import KNN, NearestPrototype, OneNN
from .optimization import ANIL, FOMAML, MAML, LSTMMetaLearner, MetaSGD, Reptile
from .params import coerce_params
from .registry import ALIASES, METHODS, build_method, canonical_name, method_class
from .siamese import SiameseNet
from .transfer import Baseline, BaselinePlusPlus, FineTune, SimpleShot

__all__ = ["ALIASES", "ANIL", "BPL", "FOMAML", "LSTMMetaLearner", "MAML", "MANN", "METHODS", "Baseline", "BaselinePlusPlus",
           "DiscriminativeKShot", "FewShotMethod", "FineTune", "KNN", "LossOutput", "MatchingNet", "MetaNet", "MetaSGD",
           "NearestPrototype", "OneNN", "ProtoNet", "RelationNet", "Reptile", "SequenceLSTM", "SiameseNet",
           "SimpleShot", "StepOutput", "build_method", "canonical_name", "check_support", "coerce_params",
           "method_class"]
