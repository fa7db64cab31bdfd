from .core import GymStepper, make_env, make_vec_env, check_env_id
from .nstep import NStepper, NSkipper
from .builders import GymDataPipe, GymTransformBlock
from .returns import EpisodeReturns

__all__ = ["GymStepper", "make_env", "make_vec_env", "check_env_id", "NStepper", "NSkipper", "GymDataPipe",
           "GymTransformBlock", "EpisodeReturns"]
