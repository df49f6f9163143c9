"""Few-shot methods, one module per family; importing this package registers them all."""

from .base import METHODS, FewShotMethod, LossOutput, StepOutput, build_method, check_support, register_method
from .metric import MatchingNet, ProtoNet, RelationNet
from .nonparametric import KNN, NearestPrototype, OneNN
from .siamese import SiameseNet

__all__ = ["METHODS", "FewShotMethod", "KNN", "LossOutput", "MatchingNet", "NearestPrototype", "OneNN", "ProtoNet", "RelationNet", "SiameseNet", "StepOutput", "build_method", "check_support", "register_method"]
