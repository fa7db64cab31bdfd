from .buffer import TensorStorage, RoundRobinWriter, Sampler, UniformSampler, MinibatchSampler, ReplayBuffer
from .replay import Collector, ExperienceReplay, StepBatcher, LEARNING_FIELDS
from .prioritized import SumTree, PrioritizedSampler, PriorityUpdater

__all__ = ["TensorStorage", "RoundRobinWriter", "Sampler", "UniformSampler", "MinibatchSampler", "ReplayBuffer",
           "Collector", "ExperienceReplay", "StepBatcher", "LEARNING_FIELDS", "SumTree", "PrioritizedSampler",
           "PriorityUpdater"]
