from .core import EVAL_EPISODE_CAP, GymStepper, cap_episode_length, check_env_id, make_env, make_vec_env
from .nstep import NStepper, NSkipper
from .builders import GymDataPipe, GymTransformBlock
from .returns import EpisodeReturns

__all__ = ["GymStepper", "make_env", "make_vec_env", "check_env_id", "cap_episode_length", "EVAL_EPISODE_CAP",
           "NStepper", "NSkipper", "GymDataPipe", "GymTransformBlock", "EpisodeReturns"]
