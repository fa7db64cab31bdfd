from .stages import (bootstrap_discount, LossCollector, BasicOptStepper, TargetModelUpdater, SoftTargetUpdater, get_target_model)
from .core import Learner, CheckpointError

__all__ = ["Learner", "CheckpointError", "LossCollector", "BasicOptStepper", "TargetModelUpdater", "SoftTargetUpdater",
           "get_target_model", "bootstrap_discount"]
