"""A one-step bandit with non-symmetric action bounds, shared by the continuous-control tests: the
env receives a in [0, 5] and pays -(a - 3)², so an agent that keeps actions in one unit and scales
them only at the env boundary learns a ≈ 3."""
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode


class Bandit(gym.Env):
    "One step per episode: reward -(a - 3)² for the action a in [0, 5] the env receives."
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(0.0, 5.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), -float((float(action[0]) - 3.0) ** 2), True, False, {}


def bandit_env() -> gym.vector.SyncVectorEnv:
    "One `Bandit` as a vector env, resetting on the same step as the stepper expects."
    return gym.vector.SyncVectorEnv([Bandit], autoreset_mode=AutoresetMode.SAME_STEP)
