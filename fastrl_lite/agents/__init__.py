from .core import (AgentBase, AgentHead, StepFieldSelector, SimpleModelRunner, ArgMaxFeed, EpsilonSchedule,
                   DiscreteEpsilonRandomSelect, ActionClip, ActionUnbatcher)
from .continuous import (OrnsteinUhlenbeck, GaussianNoise, action_noise, ExplorationComparisonLogger, RandomStartRunner,
                         ActionScaler, check_continuous, DeterministicAgent)

__all__ = ["AgentBase", "AgentHead", "StepFieldSelector", "SimpleModelRunner", "ArgMaxFeed", "EpsilonSchedule",
           "DiscreteEpsilonRandomSelect", "ActionClip", "ActionUnbatcher", "OrnsteinUhlenbeck", "GaussianNoise",
           "action_noise", "ExplorationComparisonLogger", "RandomStartRunner", "ActionScaler", "check_continuous",
           "DeterministicAgent"]
