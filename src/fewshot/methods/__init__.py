"""Few-shot methods, one module per family; importing this package registers them all."""

from .base import METHODS, FewShotMethod, LossOutput, StepOutput, build_method, check_support, register_method
from .bayesian import DiscriminativeKShot
from .metric import MatchingNet, ProtoNet, RelationNet
from .model_based import MANN, MetaNet, SequenceLSTM
from .nonparametric import KNN, NearestPrototype, OneNN
from .optimization import ANIL, FOMAML, MAML, LSTMMetaLearner, MetaSGD, Reptile
from .siamese import SiameseNet
from .transfer import Baseline, BaselinePlusPlus, FineTune, SimpleShot

__all__ = ["ANIL", "FOMAML", "LSTMMetaLearner", "MAML", "MANN", "METHODS", "Baseline", "BaselinePlusPlus",
           "DiscriminativeKShot", "FewShotMethod", "FineTune", "KNN", "LossOutput", "MatchingNet", "MetaNet", "MetaSGD",
           "NearestPrototype", "OneNN", "ProtoNet", "RelationNet", "Reptile", "SequenceLSTM", "SiameseNet",
           "SimpleShot", "StepOutput", "build_method", "check_support", "register_method"]
