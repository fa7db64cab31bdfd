from .replay import ExperienceReplay, StepBatcher

__all__ = ["ExperienceReplay", "StepBatcher"]
