"""Few-shot methods, one module per family; importing this package registers them all."""

from .base import METHODS, FewShotMethod, LossOutput, StepOutput, build_method, check_support, register_method
from .metric import ProtoNet

__all__ = ["METHODS", "FewShotMethod", "LossOutput", "ProtoNet", "StepOutput", "build_method", "check_support", "register_method"]
from .model_based import MANN, MetaNet, SequenceLSTM  # noqa: E402,F401
