from .core import (AgentBase, AgentHead, StepFieldSelector, SimpleModelRunner, ArgMaxFeed,
                   DiscreteEpsilonRandomSelect, ActionClip, ActionUnbatcher, ActionScaler, is_exploring)

__all__ = ["AgentBase", "AgentHead", "StepFieldSelector", "SimpleModelRunner", "ArgMaxFeed",
           "DiscreteEpsilonRandomSelect", "ActionClip", "ActionUnbatcher", "ActionScaler", "is_exploring"]
