from .core import (AgentBase, AgentHead, StepFieldSelector, SimpleModelRunner, ArgMaxFeed, EpsilonSchedule,
                   DiscreteEpsilonRandomSelect, ActionClip, ActionUnbatcher, ActionScaler, is_exploring)

__all__ = ["AgentBase", "AgentHead", "StepFieldSelector", "SimpleModelRunner", "ArgMaxFeed", "EpsilonSchedule",
           "DiscreteEpsilonRandomSelect", "ActionClip", "ActionUnbatcher", "ActionScaler", "is_exploring"]
