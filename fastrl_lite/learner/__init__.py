from .stages import (LossCollector, BasicOptStepper, TargetModelUpdater, SoftTargetUpdater, get_target_model)
from .core import Learner

__all__ = ["Learner", "LossCollector", "BasicOptStepper", "TargetModelUpdater", "SoftTargetUpdater",
           "get_target_model"]
