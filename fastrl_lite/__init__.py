"""fastrl_lite: reinforcement learning as chained pipe stages on torchdata.nodes."""
from .core import SimpleStep, TrainBatch, Records, register_field, set_seed, default_device, evaluating
from .pipes import Pipe, find_pipes, find_pipe, pipe_to_device
from .envs import GymStepper, GymDataPipe, GymTransformBlock, NStepper, NSkipper, make_vec_env
from .memory import (Collector, ReplayBuffer, UniformSampler, MinibatchSampler, ExperienceReplay, StepBatcher,
                     PrioritizedSampler, PriorityUpdater)
from .agents import (AgentBase, AgentHead, StepFieldSelector, SimpleModelRunner, ArgMaxFeed,
                     DiscreteEpsilonRandomSelect, ActionClip, ActionUnbatcher, ActionScaler)
from .learner import (Learner, Update, LossCollector, TargetModelUpdater, SoftTargetUpdater, get_target_model)
from .loggers import LoggerBase, ProgressBarLogger, CSVLogger, plot_returns

__version__ = "0.1.0"
