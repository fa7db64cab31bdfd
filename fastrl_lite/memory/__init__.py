from .replay import ExperienceReplay, StepBatcher, LEARNING_FIELDS

__all__ = ["ExperienceReplay", "StepBatcher", "LEARNING_FIELDS"]
