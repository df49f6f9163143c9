"""Few-shot methods, one module per family; importing this package registers them all."""

from .base import METHODS, FewShotMethod, LossOutput, StepOutput, build_method, check_support, register_method
from .metric import ProtoNet
from . import bayesian, transfer  # noqa: F401  (transfer and Bayesian family)

__all__ = ["METHODS", "FewShotMethod", "LossOutput", "ProtoNet", "StepOutput", "build_method", "check_support", "register_method"]
