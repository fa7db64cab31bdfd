from .stages import bootstrap_discount, LossCollector, TargetModelUpdater, SoftTargetUpdater, get_target_model, target_copy
from .update import Update
from .core import Learner, CheckpointError

__all__ = ["Learner", "CheckpointError", "Update", "LossCollector", "TargetModelUpdater", "SoftTargetUpdater",
           "get_target_model", "target_copy", "bootstrap_discount"]
