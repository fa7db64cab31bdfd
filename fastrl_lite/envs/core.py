"""Stepping `gymnasium.vector` environments as a pipe stage."""
from __future__ import annotations

import difflib
import pickle
import warnings
from typing import Callable, Iterable, List, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import EzPickle
from gymnasium.vector import AutoresetMode

from ..core import SimpleStep, check_seed, check_whole
from ..distributed import rank_seed
from ..pipes import Pipe

__all__ = ["GymStepper", "make_env", "make_vec_env", "check_env_id", "cap_episode_length", "EVAL_EPISODE_CAP"]


def check_env_id(env_id: str) -> str:
    "Raise a `ValueError` that suggests close ids when `env_id` is not a registered gymnasium env."
    if not isinstance(env_id, str):
        raise ValueError(f"An environment id is a string such as 'CartPole-v1', got {type(env_id).__name__} "
                         f"{env_id!r}. To train on an env object, give GymStepper a vector env of it: "
                         "GymStepper(gymnasium.vector.SyncVectorEnv([make_env], autoreset_mode=gymnasium.vector."
                         "AutoresetMode.SAME_STEP), agent), with make_env a function that returns a new env.")
    if env_id in gym.registry:
        return env_id
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    namespace = env_id.split("/")[0] if "/" in env_id else None
    if namespace and not any(key.startswith(namespace + "/") for key in gym.registry):
        package = {"ALE": "ale-py"}.get(namespace, "the package that provides it")
        hint += (f" No env of the namespace {namespace!r} is registered: install {package} and import it "
                 f"(gymnasium.register_envs) before making the env.")
    raise ValueError(f"Unknown environment id {env_id!r}.{hint} "
                     "`gymnasium.pprint_registry()` lists every registered id.")


class MissingEnvDependency(gym.error.DependencyNotInstalled, ValueError):
    "An env id whose package is not installed; says which to install."


def _gym_make(env_id: str, **env_kwargs) -> gym.Env:
    try:
        return gym.make(env_id, **env_kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise MissingEnvDependency(
            f"{env_id} needs a package that is not installed ({error}). For the Box2D envs (LunarLander, "
            "BipedalWalker, CarRacing) `pip install box2d` is enough (gymnasium[box2d] also pulls pygame-ce, which "
            "clashes with pygame); the MuJoCo envs need `pip install \"gymnasium[mujoco]\"`.") from error


def _flat_observations(env: gym.Env) -> gym.Env:
    """`env` itself when it observes arrays (a `Box`); otherwise wrapped in gymnasium's
    `FlattenObservation`, so a Discrete observation arrives one-hot and a Tuple or Dict of spaces as
    one vector, as the networks take them."""
    if isinstance(env.observation_space, gym.spaces.Box):
        return env
    try:
        gym.spaces.flatten_space(env.observation_space)
    except NotImplementedError as error:
        raise ValueError(f"{env.spec.id if env.spec else env}: observations of {env.observation_space} cannot be made "
                         "into one vector; the networks need Box (array) observations.") from error
    return gym.wrappers.FlattenObservation(env)


EVAL_EPISODE_CAP = 10_000


def cap_episode_length(env: gym.Env, cap: int = EVAL_EPISODE_CAP) -> gym.Env:
    """`env` wrapped in gymnasium's `TimeLimit(env, cap)` when it has no time limit of its own
    (CliffWalking, an env registered without `max_episode_steps`), else `env` itself. Greedy
    evaluation, GIFs and `enjoy` play through it, so a policy that never reaches a terminal state
    ends its episode, truncated, instead of running forever."""
    if env.spec is not None and env.spec.max_episode_steps is not None:
        return env
    return gym.wrappers.TimeLimit(env, max_episode_steps=cap)


def make_env(env_id: str, flatten_observations: bool = True, wrappers: Sequence[Callable] = (),
             **env_kwargs) -> gym.Env:
    """`gymnasium.make(env_id, **env_kwargs)` with `wrappers` applied in order, its observations
    flattened as `make_vec_env` flattens them: each env of `make_vec_env`, and the single env that
    greedy evaluation, GIF recording and `enjoy` play."""
    env = _gym_make(check_env_id(env_id), **env_kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
    return _flat_observations(env) if flatten_observations else env


def make_vec_env(env_ids: Union[str, Sequence[str]], num_envs: int = 1, async_envs: bool = False,
                 include_images: bool = False, wrappers: Sequence[Callable] = (), flatten_observations: bool = True,
                 **env_kwargs) -> gym.vector.VectorEnv:
    """A vector env with `num_envs` copies of each id in `env_ids`, autoresetting in `SAME_STEP` mode
    so the true final observation of an episode is reported with the step that ended it.

    `wrappers` are applied to each env in order. Then, with `flatten_observations`, an env whose
    observations are not arrays (Discrete, MultiDiscrete, MultiBinary, Tuple, Dict) gets gymnasium's
    `FlattenObservation`: a Discrete(n) observation becomes a one-hot vector of n values (as
    Stable-Baselines3 encodes it), a Tuple or Dict the concatenation of its parts."""
    env_ids = list(env_ids) if isinstance(env_ids, Iterable) and not isinstance(env_ids, str) else [env_ids]
    if not env_ids:
        raise ValueError("Give at least one environment id, e.g. ['CartPole-v1'].")
    num_envs = check_whole(num_envs, "num_envs")
    for env_id in env_ids:
        check_env_id(env_id)
    if include_images:
        env_kwargs.setdefault("render_mode", "rgb_array")

    def env_fn(env_id):
        return lambda: make_env(env_id, flatten_observations, wrappers, **env_kwargs)

    fns = [env_fn(env_id) for env_id in env_ids for _ in range(num_envs)]
    if async_envs:
        # forkserver: workers start from a clean process, not a fork of this one, so they inherit
        # neither torch's thread pools nor signal handlers (SDL's, after rendering, swallow SIGTERM
        # and would make closing the env hang)
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="forkserver")
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def _state_pickles(envs) -> bool:
    """Whether pickling these envs keeps their state. gymnasium's `EzPickle` envs (Box2D, MuJoCo,
    some toy-text) pickle their constructor arguments instead: unpickled, they are new envs that
    were never reset, and stepping them fails."""
    for env in envs:
        while True:
            if isinstance(env, EzPickle):
                return False
            if not isinstance(env, gym.Wrapper):
                break
            env = env.env
    return True


class GymStepper(Pipe):
    """Steps a vector env with an agent and yields one `SimpleStep` of `num_envs` transitions per
    vector step.

    The agent's actions are stored as it returned them; its `to_env` (an `ActionScaler` for a tanh
    policy), bound here to the env's action space, maps them onto what the env takes. An agent may
    return a dict with an `"action"` entry and extras (a log-prob, a value), which become fields of
    the step. Each step's `env_steps` is the number of env steps it holds (`num_envs`).

    The env is seeded once, on its first reset, so later episodes differ; in a data-parallel run
    each rank seeds its envs with `distributed.rank_seed(seed)`, so ranks see different episodes.
    `terminated` and `truncated` are kept apart. `episode_n` counts each env's finished episodes and `step_n` the
    steps of the current one (1 on an episode's first transition). With `agent=None` actions are
    sampled from the action space. `n` caps the total env steps (transitions) yielded: then it
    raises StopIteration, which ends a `Learner.fit` early (and refuses the next one). A NaN/inf
    observation (a reset's and an episode's final one included), reward or agent action stops
    stepping with an error unless `check_finite=False`.
    For a `Discrete(n, start=k)` action space the agent's actions are indices 0..n-1 (as its
    network's outputs are) and the env receives k + index; the steps store the index.
    Observations are stored as float32, except uint8 images (2 or more dims), which stay uint8.
    Finished episode returns go to the record bus as `episode_return`.
    """

    def __init__(self, env: gym.vector.VectorEnv, agent: Optional[Callable] = None, seed: Optional[int] = None,
                 include_images: bool = False, n: Optional[int] = None, check_finite: bool = True):
        super().__init__(None)
        self.check_finite = check_finite
        if n is not None and n < 1:
            raise ValueError(f"n (the env steps to run) must be >= 1, or None for no limit; got {n}.")
        if not isinstance(env, gym.vector.VectorEnv):
            raise ValueError(f"GymStepper steps a vector env, got {type(env).__name__}: build one with "
                             "make_vec_env(env_id), or gymnasium.vector.SyncVectorEnv([make_env], autoreset_mode="
                             "gymnasium.vector.AutoresetMode.SAME_STEP) for envs you make yourself.")
        mode = env.metadata.get("autoreset_mode", AutoresetMode.SAME_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"GymStepper needs a vector env that autoresets in SAME_STEP mode (an episode's final "
                             f"observation comes with the step that ends it), this one autoresets in {mode}: build it "
                             "with make_vec_env(env_id), or pass autoreset_mode=gymnasium.vector.AutoresetMode."
                             "SAME_STEP to gymnasium.make_vec / SyncVectorEnv / AsyncVectorEnv.")
        if not isinstance(env.single_observation_space, gym.spaces.Box):
            raise ValueError(f"GymStepper stores array (Box) observations, this env observes "
                             f"{env.single_observation_space}. Build it with make_vec_env(env_id), which flattens "
                             "them into one vector, or wrap each env in gymnasium.wrappers.FlattenObservation.")
        self.env, self.agent, self.seed = env, agent, None if seed is None else check_seed(seed)
        self.include_images, self.n = include_images, n
        self._episode_ended = getattr(agent, "episode_ended", None)  # AgentHead: tells its stages of episode ends
        to_env = getattr(agent, "to_env", None)
        self.to_env = to_env.bind(env.single_action_space) if hasattr(to_env, "bind") else to_env
        space = env.single_action_space
        self._action_start = int(space.start) if isinstance(space, gym.spaces.Discrete) and agent is not None else 0
        self.num_envs = env.num_envs
        self.env_steps = 0
        self.episodes = 0
        self._obs = None

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self._restore(initial_state)
        elif self._obs is None:
            self._start()

    def finished_per_env(self) -> np.ndarray:
        "How many episodes each env has finished (since its envs were last reset from the start)."
        return self._episode_n.copy() if self._obs is not None else np.zeros(self.num_envs, dtype=np.int64)

    def restart(self, seed: Optional[int] = None):
        """Start every env's episode afresh from a reset, seeded with `seed` when given: `validate`
        starts each evaluation on a validation pipeline this way, so it plays whole episodes of the
        current policy from the same starts every time."""
        self._start(None if seed is None else check_seed(seed))

    def _start(self, seed: Optional[int] = None):
        # seed once: a restart must not replay episodes; each rank of a data-parallel run its own seed
        if seed is None:
            seed = rank_seed(self.seed) if self.env_steps == 0 else None
        obs, _ = self.env.reset(seed=seed)
        if seed is not None:
            self.env.action_space.seed(seed)
        if self.check_finite and obs.dtype.kind == "f" and not np.isfinite(obs).all():
            self._not_finite("observation", obs, ", from a reset")
        self._obs = self._as_tensor(obs)
        self._env_id = torch.arange(self.num_envs)
        # per-env bookkeeping stays in NumPy: a NumPy op on a few numbers costs a fraction of a torch op
        self._set_counters(np.zeros(self.num_envs, dtype=np.int64), np.zeros(self.num_envs, dtype=np.int64))
        self._returns = np.zeros(self.num_envs)

    def _set_counters(self, episode_n: np.ndarray, step_n: np.ndarray):
        """Per-env episode and step counters. They are replaced, never written in place, so the
        tensors handed out with earlier steps keep their values: `episode_n`'s tensor is made only
        when an episode ends, `step_n`'s once per step without a copy."""
        self._episode_n, self._step_n = episode_n, step_n
        self._episode_n_t = torch.from_numpy(episode_n)

    @staticmethod
    def _as_tensor(obs) -> torch.Tensor:
        """Observations as float32 tensors, sharing memory where they already are; uint8 frames (2 or
        more dims per env) stay uint8."""
        obs = np.asarray(obs)
        if obs.dtype != np.uint8 or obs.ndim <= 2:
            obs = obs.astype(np.float32, copy=False)
        return torch.from_numpy(obs)

    def _actions(self):
        "The agent's actions (on the CPU) and its extras, if any."
        if self.agent is None:
            return torch.from_numpy(np.asarray(self.env.action_space.sample())), None
        out = self.agent(SimpleStep(state=self._obs))
        if isinstance(out, dict):
            if "action" not in out:
                raise ValueError(f"An agent that returns a dict must put its actions under 'action'; got {sorted(out)}.")
            extras = {k: v.cpu() for k, v in out.items() if k != "action"}
            return out["action"].cpu(), extras
        return out.cpu(), None

    def next(self) -> SimpleStep:
        if self.n is not None and self.env_steps >= self.n:
            raise StopIteration
        return self.step()

    @staticmethod
    def _bad_envs(values: np.ndarray) -> List[int]:
        "The envs whose row of `values` holds a NaN/inf."
        return np.flatnonzero(~np.isfinite(values).reshape(len(values), -1).all(1)).tolist()

    def _not_finite(self, what: str, values: np.ndarray, where: str = ""):
        raise FloatingPointError(f"GymStepper: the env returned a NaN/inf {what} at env step {self.env_steps} "
                                 f"(envs {self._bad_envs(values)}{where}). Fix or wrap the env; "
                                 "GymStepper(check_finite=False) turns this check off.")

    def step(self) -> SimpleStep:
        "One vector step, whatever the cap `n` says (validation runs its own budget)."
        if self._obs is None:
            self._start()
        action, extras = self._actions()
        env_action = (action if self.to_env is None else self.to_env(action)).numpy()
        if self.check_finite and env_action.dtype.kind == "f" and not np.isfinite(env_action).all():
            raise FloatingPointError(f"GymStepper: the agent chose a NaN/inf action at env step {self.env_steps} "
                                     f"(envs {self._bad_envs(env_action)}): its network has diverged (its weights or "
                                     "its input hold NaN/inf). Lower the learning rate or clip gradients, and check "
                                     "the observations and rewards; GymStepper(check_finite=False) turns this check "
                                     "off.")
        if self._action_start:
            env_action = env_action + self._action_start
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        done = terminated | truncated
        any_done = done.any()
        if self.check_finite:
            if obs.dtype.kind == "f" and not np.isfinite(obs).all():
                self._not_finite("observation", obs)
            if not np.isfinite(reward).all():
                self._not_finite("reward", reward)
        next_obs = self._as_tensor(obs)
        next_state = next_obs
        if any_done:  # SAME_STEP autoreset: obs already holds the reset observations of finished envs
            idx = np.flatnonzero(done)
            final = np.array(obs)
            final[idx] = np.stack(info["final_obs"][idx])
            if self.check_finite and final.dtype.kind == "f" and not np.isfinite(final).all():
                self._not_finite("observation", final, ", an episode's final one")
            next_state = self._as_tensor(final)
        self._step_n = self._step_n + 1  # a new array: the tensor below shares its memory
        step = SimpleStep(
            state=self._obs, action=action, reward=torch.from_numpy(reward.astype(np.float32)),
            next_state=next_state, terminated=torch.from_numpy(terminated), truncated=torch.from_numpy(truncated),
            env_id=self._env_id, episode_n=self._episode_n_t, step_n=torch.from_numpy(self._step_n),
            **(extras or {}))
        step.env_steps = self.num_envs
        if self.include_images:
            step.image = torch.from_numpy(np.stack(self.env.render()))
        self._returns += reward
        if any_done and self._episode_ended is not None:
            self._episode_ended(torch.from_numpy(done))
        if any_done:
            for ret in self._returns[done]:
                self.record("episode_return", (self.env_steps + self.num_envs, float(ret)))
            self._returns[done] = 0
            self._set_counters(self._episode_n + done, np.where(done, 0, self._step_n))
            self.episodes += int(done.sum())
        self._obs = next_obs
        self.env_steps += self.num_envs
        return step

    def get_state(self):
        """Counters, the observation being acted on, per-env episode state, the agent pipeline's state
        and, for sync vector envs whose envs pickle their state (the classic-control ones do), the
        envs themselves with their RNGs, so a restored stepper continues the very same episodes.
        Box2D and MuJoCo envs pickle only their constructor arguments (gymnasium's `EzPickle`), so
        they are not saved: a restored stepper starts their episodes from a reset."""
        if self._obs is None:
            self._start()
        state = {"env_steps": self.env_steps, "episodes": self.episodes, "obs": self._obs,
                 "episode_n": self._episode_n.copy(), "step_n": self._step_n.copy(), "returns": self._returns.copy(),
                 "agent": self.agent.state_dict() if hasattr(self.agent, "state_dict") else None, "envs": None}
        if isinstance(self.env, gym.vector.SyncVectorEnv) and _state_pickles(self.env.envs):
            try:
                state["envs"] = pickle.dumps((self.env.envs, self.env.action_space))
            except Exception:  # e.g. an env holding a window or a simulator handle
                state["envs"] = None
        return state

    def _restore(self, state):
        if self.agent is not None and state.get("agent") is not None:
            self.agent.reset(state["agent"])
        self.env_steps, self.episodes = state["env_steps"], state["episodes"]
        envs = None
        if state["envs"] is not None and isinstance(self.env, gym.vector.SyncVectorEnv):
            envs, action_space = pickle.loads(state["envs"])
        if envs is not None and _state_pickles(envs):  # older checkpoints hold EzPickle envs too
            self.env.envs, self.env.action_space = envs, action_space
            self._obs, self._returns = state["obs"], state["returns"].copy()
            self._env_id = torch.arange(self.num_envs)
            self._set_counters(state["episode_n"].copy(), state["step_n"].copy())
            return
        warnings.warn(f"{type(self.env).__name__} could not be saved with the checkpoint, so its episodes restart "
                      "from a reset; counters, replay and models are restored exactly.", RuntimeWarning)
        self._start()
        self._set_counters(state["episode_n"].copy(), self._step_n)

    def to(self, device):
        "Env steps stay on the CPU; the replay buffer moves them to its device when it stores them."
        return self
