"""DDPG (Lillicrap et al., 2016): deterministic policy gradients (Silver et al., 2014) with deep
networks, a replay buffer and slowly tracking target networks.

Algorithm 1, read top to bottom:
  1. initialise the critic Q(s, a|θ^Q) and the actor μ(s|θ^μ)               Critic, Actor (+ initialisers)
  2. initialise the targets Q' ← Q, μ' ← μ and the replay buffer R           SoftTargetUpdater, ExperienceReplay
  3. act with a_t = μ(s_t) + N_t, N a random process, store (s, a, r, s')    OrnsteinUhlenbeck / GaussianNoise, DDPGAgent
     (optionally uniform random actions for the first steps)                 RandomStartRunner
  4. sample N transitions from R;  y_i = r_i + γ^k (1 - terminated) Q'(s'_i, μ'(s'_i))
     and minimise L = 1/N Σ (y_i - Q(s_i, a_i))²                             CriticLossProcessor
  5. update the actor along ∇_a Q(s, a)|_{a=μ(s)} ∇_θ μ(s): minimise -Q(s, μ(s))   ActorLossProcessor
  6. θ' ← τ θ + (1 - τ) θ' for both targets                                 SoftTargetUpdater
DDPGLearner assembles them; each piece is a stage that can be used, or swapped, on its own.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple, Type

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..agents import (ActionClip, ActionScaler, ActionUnbatcher, AgentBase, AgentHead, EpsilonSchedule,
                      SimpleModelRunner, StepFieldSelector)
from ..core import SimpleStep, TrainBatch
from ..learner import (BasicOptStepper, Learner, LossCollector, SoftTargetUpdater, TargetModelUpdater,
                       bootstrap_discount, get_target_model)
from ..learner.compiling import CompileArg, compile_options, maybe_compile
from ..memory import ExperienceReplay
from ..pipes import Pipe, find_pipe, find_pipes, pipe_to_device

__all__ = ["init_xavier_uniform_weights", "init_uniform_weights", "init_kaiming_normal_weights", "ddpg_conv2d_block",
           "Critic", "Actor", "pipe_to_device", "OrnsteinUhlenbeck", "GaussianNoise",
           "ExplorationComparisonLogger", "ActionClip", "ActionUnbatcher", "RandomStartRunner", "DDPGAgent", "check_continuous",
           "attach_action_bounds", "BasicOptStepper", "LossCollector", "SoftTargetUpdater", "get_target_model",
           "CriticLossProcessor", "ActorLossProcessor", "DDPGLearner"]


# 1. Networks -----------------------------------------------------------------------------------

def init_xavier_uniform_weights(m: nn.Module, bias: float = 0.01):
    "Initializes weights for linear layers using torch.nn.init.xavier_uniform_ (biases set to `bias`)."
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(m.bias, bias)


def init_uniform_weights(m: nn.Module, bound: float):
    "Initializes weights and biases of linear layers from U(-bound, bound) with torch.nn.init.uniform_."
    if isinstance(m, nn.Linear):
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.uniform_(m.bias, -bound, bound)


def init_kaiming_normal_weights(m: nn.Module, bias: float = 0.01):
    """Initializes weights for linear layers using torch.nn.init.kaiming_normal_ (biases set to `bias`);
    the closest standard scheme to the paper's U(-1/√fan_in, 1/√fan_in) for the hidden layers."""
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight)
        nn.init.constant_(m.bias, bias)


class ChannelsFirst(nn.Module):
    "[B, H, W, C] images (what gymnasium renders) to the [B, C, H, W] layout Conv2d expects."

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)


def ddpg_conv2d_block(state_sz: Tuple[int, int, int], filters: int = 32, activation_fn: Type[nn.Module] = nn.ReLU,
                      ignore_warning: bool = False, kernel_size: int = 3, stride: int = 2) -> Tuple[nn.Sequential, int]:
    """Three conv layers of `filters` filters each, no pooling (the paper's pixel network), with batch
    norm on the input; returns (block, n_features_out) where n_features_out is the block's real
    flattened output size for one `state_sz` image.

    `state_sz` is [channel, width, height]. A first dimension above 3 usually means a channels-last
    image: then the block starts by moving the channels first (with a warning, unless
    `ignore_warning`, which instead takes the first dimension as, e.g., stacked frames)."""
    if len(state_sz) != 3 or min(state_sz) < 1:
        raise ValueError(f"ddpg_conv2d_block needs state_sz=(channels, width, height), got {tuple(state_sz)}.")
    layers: List[nn.Module] = []
    channels = state_sz[0]
    if channels > 3 and not ignore_warning:
        warnings.warn(f"state_sz={tuple(state_sz)} has {channels} channels first; taking it as channels-last "
                      f"(height, width, channels={state_sz[-1]}) and transposing. Pass ignore_warning=True if "
                      f"the {channels} leading channels are real (e.g. stacked frames).", stacklevel=2)
        layers.append(ChannelsFirst())
        channels = state_sz[-1]
    layers.append(nn.BatchNorm2d(channels))
    for i in range(3):
        layers += [nn.Conv2d(channels if i == 0 else filters, filters, kernel_size, stride=stride), activation_fn()]
    layers.append(nn.Flatten())
    block = nn.Sequential(*layers)
    block.state_sz = tuple(state_sz)
    try:
        with torch.no_grad():
            n_features = block.eval()(torch.zeros(1, *state_sz)).shape[1]
    except RuntimeError as error:
        raise ValueError(f"Images of size {tuple(state_sz)} are too small for three {kernel_size}x{kernel_size} "
                         f"convolutions of stride {stride}; render larger frames or lower stride/kernel_size.") from error
    return block.train(), int(n_features)


def _as_float(state: Tensor) -> Tensor:
    "Pixel observations are stored as uint8 (4x less replay memory); the networks see floats."
    return state if state.is_floating_point() else state.float()


class Critic(nn.Module):
    """Takes 2 tensors of size [B, state_sz], [B, action_sz] -> [B, 1], the Q value Q(s, a).

    With a `conv_block` the state is an image, `state_sz` is the block's flattened output and the
    action joins at the second linear layer (the paper's pixel critic); otherwise state and action
    are concatenated at the input. `batch_norm` normalises the layers before the action enters."""

    def __init__(self, state_sz: int, action_sz: int, hidden1: int = 400, hidden2: int = 300,
                 head_layer: Type[nn.Module] = nn.Linear, activation_fn: Type[nn.Module] = nn.ReLU,
                 weight_init_fn: Callable = init_kaiming_normal_weights,
                 final_layer_init_fn: Callable = partial(init_uniform_weights, bound=1e-4),
                 conv_block: Optional[nn.Sequential] = None, batch_norm: bool = False):
        super().__init__()
        if state_sz < 1 or action_sz < 1:
            raise ValueError(f"Critic needs state_sz >= 1 and action_sz >= 1, got {state_sz} and {action_sz}.")
        self.state_sz, self.action_sz, self.conv_block = state_sz, action_sz, conv_block
        late_action = conv_block is not None
        first_in = state_sz if late_action else state_sz + action_sz
        self.input_norm = nn.BatchNorm1d(state_sz) if batch_norm and not late_action else nn.Identity()
        self.layer1 = nn.Sequential(nn.Linear(first_in, hidden1),
                                    *([nn.BatchNorm1d(hidden1)] if batch_norm and late_action else []),
                                    activation_fn())
        self.layer2 = nn.Sequential(nn.Linear(hidden1 + (action_sz if late_action else 0), hidden2), activation_fn())
        self.head = head_layer(hidden2, 1)
        self.apply(weight_init_fn)
        self.head.apply(final_layer_init_fn)

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        if self.conv_block is not None:
            return self.head(self.layer2(torch.cat((self.layer1(self.conv_block(_as_float(state))), action), -1)))
        x = torch.cat((self.input_norm(state), action), -1)
        return self.head(self.layer2(self.layer1(x)))


class Actor(nn.Module):
    """Takes a single tensor of size [B, state_sz] -> [B, action_sz]: the deterministic policy μ(s),
    bounded to [-1, 1] by a tanh; `DDPGAgent` scales it onto the environment's action bounds."""

    def __init__(self, state_sz: int, action_sz: int, hidden1: int = 400, hidden2: int = 300,
                 head_layer: Type[nn.Module] = nn.Linear, activation_fn: Type[nn.Module] = nn.ReLU,
                 weight_init_fn: Callable = init_kaiming_normal_weights,
                 final_layer_init_fn: Callable = partial(init_uniform_weights, bound=1e-4),
                 conv_block: Optional[nn.Sequential] = None, batch_norm: bool = False):
        super().__init__()
        if state_sz < 1 or action_sz < 1:
            raise ValueError(f"Actor needs state_sz >= 1 and action_sz >= 1, got {state_sz} and {action_sz}.")
        self.state_sz, self.action_sz, self.conv_block = state_sz, action_sz, conv_block
        norm = (lambda n: [nn.BatchNorm1d(n)]) if batch_norm else (lambda n: [])
        self.body = nn.Sequential(*(norm(state_sz) if conv_block is None else []),
                                  nn.Linear(state_sz, hidden1), *norm(hidden1), activation_fn(),
                                  nn.Linear(hidden1, hidden2), *norm(hidden2), activation_fn())
        self.head = head_layer(hidden2, action_sz)
        self.apply(weight_init_fn)
        self.head.apply(final_layer_init_fn)

    def forward(self, state: Tensor) -> Tensor:
        if self.conv_block is not None:
            state = self.conv_block(_as_float(state))
        return torch.tanh(self.head(self.body(state)))


# 3. Exploration: a_t = μ(s_t) + ε N_t ------------------------------------------------------------

class _EpsilonNoise(EpsilonSchedule):
    """Adds ε-scaled noise to the actions from its source: a = μ(s) + ε N, N drawn by the subclass's
    `noise(action)`, with ε on the schedule of `EpsilonSchedule`. While the agent's model is in eval
    mode the actions pass through untouched and ε holds, unless `explore_on_val` / `decrement_on_val`.
    With `ret_original` it yields (noisy action, original action) pairs, for
    `ExplorationComparisonLogger`."""

    def __init__(self, source, action_sz: Optional[int] = None, min_epsilon: float = 0.2, max_epsilon: float = 1.0,
                 max_steps: int = 100, decrement_on_val: bool = False, explore_on_val: bool = False,
                 ret_original: bool = False):
        super().__init__(source, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val)
        self.action_sz, self.ret_original = action_sz, ret_original

    def next(self):
        action = next(self.source)
        if self.action_sz is not None and action.shape[-1] != self.action_sz:
            raise ValueError(f"{type(self).__name__}(action_sz={self.action_sz}) got actions of size "
                             f"{action.shape[-1]}; make action_sz match the actor's output.")
        epsilon = self.advance(action.shape[0] if action.dim() > 1 else 1)
        explored = action if epsilon is None else action + epsilon * self.noise(action)
        return (explored, action) if self.ret_original else explored


class OrnsteinUhlenbeck(_EpsilonNoise):
    """Used for exploration in continuous action domains via temporally correlated noise, the
    paper's choice for "physical control problems with inertia":

        x ← x + θ (μ - x) dt + σ √dt 𝒩(0, 1),   a = μ(s) + ε x

    One process runs per row of the action batch (per env). θ=0.15, σ=0.2 are the paper's values."""

    def __init__(self, source, action_sz: Optional[int] = None, mu: float = 0.0, theta: float = 0.15,
                 sigma: float = 0.2, dt: float = 1e-2, min_epsilon: float = 0.2, max_epsilon: float = 1.0,
                 max_steps: int = 100, decrement_on_val: bool = False, explore_on_val: bool = False,
                 ret_original: bool = False):
        super().__init__(source, action_sz, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val,
                         ret_original)
        if theta < 0 or sigma < 0 or dt <= 0:
            raise ValueError(f"Need theta >= 0, sigma >= 0 and dt > 0; got theta={theta}, sigma={sigma}, dt={dt}.")
        self.mu, self.theta, self.sigma, self.dt = mu, theta, sigma, dt
        self.x: Optional[Tensor] = None

    def noise(self, action: Tensor) -> Tensor:
        if self.x is None or self.x.shape != action.shape or self.x.device != action.device:
            self.x = torch.full_like(action, self.mu)
        self.x += self.theta * (self.mu - self.x) * self.dt + self.sigma * self.dt ** 0.5 * torch.randn_like(action)
        return self.x

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self.x = initial_state["x"]

    def get_state(self):
        "The process value x is part of the state: resuming continues the same correlated noise."
        return {**super().get_state(), "x": self.x}


class GaussianNoise(_EpsilonNoise):
    """Uncorrelated exploration a = μ(s) + ε σ 𝒩(0, 1), the choice of TD3 and of rl-zoo's tuned DDPG.
    The actor's actions live in [-1, 1], so σ is a fraction of half the action range. ε stays at 1
    unless a decay is asked for."""

    def __init__(self, source, action_sz: Optional[int] = None, sigma: float = 0.1, min_epsilon: float = 1.0,
                 max_epsilon: float = 1.0, max_steps: int = 100, decrement_on_val: bool = False,
                 explore_on_val: bool = False, ret_original: bool = False):
        super().__init__(source, action_sz, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val,
                         ret_original)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.sigma = sigma

    def noise(self, action: Tensor) -> Tensor:
        return self.sigma * torch.randn_like(action)


class _Rows:
    "A growable 2-d tensor: rows are written in place, so no Python list of tensors piles up."

    def __init__(self):
        self.data: Optional[Tensor] = None
        self.n = 0

    def append(self, rows: Tensor):
        rows = rows.detach().reshape(-1, rows.shape[-1] if rows.dim() else 1)
        if self.data is None:
            self.data = torch.empty(max(1024, len(rows)), rows.shape[1], dtype=rows.dtype, device=rows.device)
        while self.n + len(rows) > len(self.data):
            self.data = torch.cat([self.data, torch.empty_like(self.data)])
        self.data[self.n:self.n + len(rows)] = rows
        self.n += len(rows)

    def values(self) -> Tensor:
        return self.data[:self.n] if self.data is not None else torch.empty(0, 1)


class ExplorationComparisonLogger(Pipe):
    """Allows for quickly doing a "what if" on exploration methods by comparing the actions selected
    via exploration with the ones chosen by the model. Its source must yield (explored, original)
    pairs (an exploration stage with `ret_original=True`); it passes the explored action on and
    `show()` plots both against the step."""

    def __init__(self, source):
        super().__init__(source)
        self.explored, self.original = _Rows(), _Rows()

    def next(self) -> Tensor:
        item = next(self.source)
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError("ExplorationComparisonLogger needs (explored, original) action pairs: build the "
                            "exploration stage with ret_original=True.")
        explored, original = item
        self.explored.append(explored)
        self.original.append(original)
        return explored

    def show(self, title: str = "Explored vs original actions", ax=None):
        "One line per action dimension for the explored actions, dashed for the model's originals."
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        explored, original = self.explored.values().float().cpu(), self.original.values().float().cpu()
        for d in range(explored.shape[1]):
            line, = ax.plot(explored[:, d].numpy(), label=f"explored[{d}]")
            ax.plot(original[:, d].numpy(), "--", color=line.get_color(), label=f"original[{d}]")
        ax.set(title=title, xlabel="step", ylabel="action")
        ax.legend()
        return ax


# 3. The agent: state -> μ(s) -> + noise -> clip to [-1, 1] -> scale to the env's bounds ---------

def check_continuous(env_or_space, algo: str = "DDPG") -> gym.spaces.Box:
    "The `Box` action space of an env, or an error that says what to use instead."
    space = getattr(env_or_space, "single_action_space", getattr(env_or_space, "action_space", env_or_space))
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{algo} needs a continuous (Box) action space, this environment has {space}. "
                         "For discrete actions use DQN (fastrl-lite train dqn).")
    if not (torch.isfinite(torch.as_tensor(space.low)).all() and torch.isfinite(torch.as_tensor(space.high)).all()):
        raise ValueError(f"{algo}'s actor is tanh-bounded, so it needs finite action bounds; this environment has "
                         f"low={space.low}, high={space.high}. Wrap it with gymnasium.wrappers.ClipAction or "
                         "RescaleAction to give it bounds.")
    return space


def attach_action_bounds(agent: AgentHead, action_space: gym.spaces.Box) -> AgentHead:
    "Point the agent's `ActionScaler` at `action_space`'s bounds (checked to be a finite `Box`)."
    space = check_continuous(action_space)
    scaler = find_pipe(agent, ActionScaler)
    device = scaler.low.device
    scaler.low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
    scaler.high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
    return agent


class RandomStartRunner(SimpleModelRunner):
    """Runs the actor, except for the first `random_steps` env steps while it trains: then it returns
    uniform random actions in [-1, 1] without running the network, so the replay starts out covering
    the whole action space instead of the untrained actor's near-zero outputs (SB3's and rl-zoo's
    `learning_starts`, the `start_timesteps` of Fujimoto et al.'s TD3)."""
    state_attrs = ("steps",)

    def __init__(self, source, model: nn.Module, random_steps: int = 0, action_sz: Optional[int] = None):
        super().__init__(source, model)
        action_sz = action_sz if action_sz is not None else getattr(model, "action_sz", None)
        if random_steps < 0 or (random_steps > 0 and action_sz is None):
            raise ValueError(f"random_steps must be >= 0 and needs the action size (model.action_sz or action_sz=); "
                             f"got random_steps={random_steps}, action_sz={action_sz}.")
        self.random_steps, self.action_sz = random_steps, action_sz
        self.steps = 0

    def next(self) -> Tensor:
        if self.steps >= self.random_steps or not self.model.training:
            return super().next()
        n = next(self.source).shape[0]
        self.steps += n
        return torch.rand(n, self.action_sz, device=next(self.model.parameters()).device) * 2 - 1


def DDPGAgent(model: Actor, logger_bases=None, min_epsilon: float = 0.2, max_epsilon: float = 1.0,
              max_steps: int = 100, dp_augmentation_fns: Optional[Sequence[Callable]] = None,
              action_space: Optional[gym.spaces.Box] = None, exploration: Optional[Callable] = None,
              random_steps: int = 0) -> AgentHead:
    """Produces continuous action outputs: μ(s), plus exploration noise while `model` trains, clipped
    to [-1, 1] and scaled onto the env's action bounds.

    The bounds come from `action_space` when given; otherwise they are [-1, 1] until `DDPGLearner`
    attaches the bounds of its env (`attach_action_bounds`). `exploration` builds the noise stage from
    its source (default: `OrnsteinUhlenbeck` with this ε schedule; e.g.
    `partial(GaussianNoise, sigma=0.1)`). For the first `random_steps` env steps the actor is replaced
    by uniform random actions (`RandomStartRunner`), the noise still added. Each of `dp_augmentation_fns` receives the agent pipeline
    before its head and returns the pipeline to use. `logger_bases` is accepted for fastrl
    compatibility: records go to the learner that runs the agent."""
    pipe = AgentBase(model)
    pipe = StepFieldSelector(pipe, field="state")
    pipe = RandomStartRunner(pipe, model, random_steps=random_steps) if random_steps else SimpleModelRunner(pipe, model)
    if exploration is None:
        pipe = OrnsteinUhlenbeck(pipe, action_sz=getattr(model, "action_sz", None), min_epsilon=min_epsilon,
                                 max_epsilon=max_epsilon, max_steps=max_steps)
    else:
        pipe = exploration(pipe)
    pipe = ActionClip(pipe, -1, 1)
    pipe = ActionScaler(pipe, -1.0, 1.0)
    for fn in dp_augmentation_fns or ():
        pipe = fn(pipe)
    agent = AgentHead(pipe)
    if action_space is not None:
        attach_action_bounds(agent, action_space)
    return agent


# 4. The critic's target and loss -----------------------------------------------------------------

def _target_of(model: nn.Module, pipe, given: Optional[nn.Module], stage: str) -> nn.Module:
    """`given`, else the target network of the `SoftTargetUpdater`/`TargetModelUpdater` upstream that
    tracks `model`, else `model` itself (no target network, with a warning saying how to add one)."""
    if given is not None:
        return given
    updaters = find_pipes(pipe, lambda n: isinstance(n, TargetModelUpdater) and n.model is model)
    if updaters:
        return updaters[0].target_model
    warnings.warn(f"{stage}: no target network for the {type(model).__name__} upstream, so it bootstraps from the "
                  f"online network. Put SoftTargetUpdater(pipe, {type(model).__name__.lower()}) before {stage} to "
                  "use one.", stacklevel=3)
    return model


class CriticLossProcessor(Pipe):
    """losses['critic'] = loss(Q(s, a), y) with y = r + γ^k (1 - terminated) Q'(s', μ'(s')).

    Q' and μ' are the target networks of the `SoftTargetUpdater`s upstream that track `critic` and
    `actor` (or `t_critic`/`t_actor` when given); k is each transition's `nsteps` (1 when the batch has
    none), so n-step transitions bootstrap with γ^k. `loss` is nn.MSELoss's functional form.
    `compile=True` (or a dict of `torch.compile` options) runs `targets` and `compute_loss` through
    `torch.compile`."""
    fills = "critic"

    def __init__(self, source, critic: nn.Module, actor: nn.Module, t_critic: Optional[nn.Module] = None,
                 t_actor: Optional[nn.Module] = None, loss: Callable = F.mse_loss, gamma: float = 0.99,
                 compile: CompileArg = False):
        super().__init__(source)
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}.")
        self.critic, self.actor, self.loss, self.gamma = critic, actor, loss, gamma
        self.t_critic = _target_of(critic, source, t_critic, "CriticLossProcessor")
        self.t_actor = _target_of(actor, source, t_actor, "CriticLossProcessor")
        self._targets = maybe_compile(self.targets, compile)
        self._loss = maybe_compile(self.compute_loss, compile)

    def targets(self, step: SimpleStep) -> Tensor:
        next_q = self.t_critic(step.next_state, self.t_actor(step.next_state)).squeeze(-1)
        return step.reward + bootstrap_discount(step, self.gamma) * next_q

    def compute_loss(self, step: SimpleStep, targets: Tensor) -> Tensor:
        q = self.critic(step.state, step.action.reshape(len(step), -1).to(step.reward.dtype)).squeeze(-1)
        return self.loss(q, targets)

    def next(self) -> TrainBatch:
        batch = next(self.source)
        with torch.no_grad():
            batch.targets = self._targets(batch.step)
        batch.losses[self.fills] = self._loss(batch.step, batch.targets)
        return batch


# 5. The actor's loss -------------------------------------------------------------------------------

class ActorLossProcessor(Pipe):
    """losses['actor'] = -mean Q(s, μ(s)): minimising it follows ∇_a Q(s, a)|_{a=μ(s)} ∇_θ μ(s).

    The critic is only a path for the gradient here: its parameters are switched to
    `requires_grad=False` for the forward pass, so backward computes no critic weight gradients
    (about a third of the critic's backward compute) and leaves none on the critic. `compile` as in
    `CriticLossProcessor`, for `compute_loss`."""
    fills = "actor"

    def __init__(self, source, critic: nn.Module, actor: nn.Module, compile: CompileArg = False):
        super().__init__(source)
        self.critic, self.actor = critic, actor
        self._critic_params = None
        self._loss = maybe_compile(self.compute_loss, compile)

    def compute_loss(self, state: Tensor) -> Tensor:
        return -self.critic(state, self.actor(state)).mean()

    def next(self) -> TrainBatch:
        batch = next(self.source)
        if self._critic_params is None:
            self._critic_params = [p for p in self.critic.parameters() if p.requires_grad]
        for p in self._critic_params:
            p.requires_grad_(False)
        try:
            batch.losses[self.fills] = self._loss(batch.step.state)
        finally:
            for p in self._critic_params:
                p.requires_grad_(True)
        return batch


# 6. DDPG assembled ---------------------------------------------------------------------------------

def _check_state_size(model: nn.Module, space: gym.spaces.Space, name: str):
    "The model's input must fit the env's observations: say how to build it when it does not."
    shape = tuple(space.shape)
    conv_block = getattr(model, "conv_block", None)
    if conv_block is None:
        size = int(torch.Size(shape).numel())
        if getattr(model, "state_sz", size) != size:
            raise ValueError(f"{name}(state_sz={model.state_sz}) but the observations have shape {shape} "
                             f"({size} values); build it as {name}({size}, ...).")
        return
    device = next(model.parameters()).device
    was_training = conv_block.training
    try:
        with torch.no_grad():
            features = conv_block.eval()(torch.zeros(1, *shape, device=device)).shape[-1]
    except RuntimeError as error:
        raise ValueError(f"{name}'s conv block does not take observations of shape {shape}: {error}. Build it with "
                         f"ddpg_conv2d_block({shape}).") from error
    finally:
        conv_block.train(was_training)
    if features != model.state_sz:
        raise ValueError(f"{name}'s conv block turns observations of shape {shape} into {features} features, but "
                         f"{name}(state_sz={model.state_sz}). Build the block with ddpg_conv2d_block({shape}) and "
                         "pass its n_features_out as state_sz.")


def _fast_opt(opt: Type[torch.optim.Optimizer]) -> dict:
    "Adam and AdamW step all parameters in one fused kernel when told to."
    return {"fused": True} if opt in (torch.optim.Adam, torch.optim.AdamW) else {}


def DDPGLearner(actor: Actor, critic: Critic, dls: Sequence, logger_bases=None, actor_lr: float = 1e-3,
                actor_opt: Type[torch.optim.Optimizer] = torch.optim.Adam, critic_lr: float = 1e-2,
                critic_opt: Type[torch.optim.Optimizer] = torch.optim.Adam, critic_target_copy_freq: int = 1,
                actor_target_copy_freq: int = 1, tau: float = 1e-3, bs: int = 128, max_sz: int = 10_000,
                nsteps: int = 1, device=None, batches: Optional[int] = None,
                dp_augmentation_fns: Optional[Sequence[Callable]] = None, debug: bool = False,
                warmup: int = 1000, train_every: int = 1, updates: int = 1, gamma: float = 0.99,
                compile: CompileArg = False) -> Learner:
    """DDPG on the env pipeline `dls[0]`, whose agent must run `actor` (`DDPGAgent(actor)`).

    Per gradient round: sample `bs` transitions from a replay of `max_sz`; soft-update the targets
    (τ, every `*_target_copy_freq` rounds); one critic step (lr `critic_lr`), then one actor step
    (lr `actor_lr`) through the updated critic. Replay starts after `warmup` transitions and the
    update-to-data ratio is `updates` rounds per `train_every` env steps. `nsteps` must match the
    n-step merging of `dls[0]`. An epoch is `batches` rounds (1000 when None). The agent's
    actions are scaled onto `dls[0]`'s action bounds. Each of `dp_augmentation_fns` receives the
    learner pipeline and returns the one to run; `debug` prints the device moves. `compile=True` (or a
    dict of `torch.compile` options) compiles the critic's target and the two losses; the learner,
    its checkpoints and the agent keep `actor` and `critic`."""
    compile_options(compile)
    if not dls:
        raise ValueError("DDPGLearner needs dls=[train_pipe] built with GymDataPipe/GymTransformBlock.")
    stepper = find_pipe(dls[0], lambda n: hasattr(n, "env_steps") and hasattr(n, "env"))
    check_continuous(stepper.env)
    if stepper.agent is None:
        raise ValueError("dls[0] has no agent: build it with GymDataPipe(..., agent=DDPGAgent(actor)).")
    if stepper.agent.model is not actor:
        raise ValueError("dls[0]'s agent runs a different model than `actor`: build it with DDPGAgent(actor).")
    attach_action_bounds(stepper.agent, stepper.env.single_action_space)
    for model, name in ((actor, "Actor"), (critic, "Critic")):
        _check_state_size(model, stepper.env.single_observation_space, name)
    action_sz = int(torch.Size(stepper.env.single_action_space.shape).numel())
    if getattr(actor, "action_sz", action_sz) != action_sz or getattr(critic, "action_sz", action_sz) != action_sz:
        raise ValueError(f"The env's actions have {action_sz} values but Actor/Critic were built with action_sz="
                         f"{getattr(actor, 'action_sz', '?')}/{getattr(critic, 'action_sz', '?')}.")
    from ..envs import NStepper
    nstepper = find_pipe(dls[0], NStepper, required=False)
    if (nstepper.n if nstepper is not None else 1) != nsteps:
        raise ValueError(f"DDPGLearner(nsteps={nsteps}) but the env pipeline merges "
                         f"{nstepper.n if nstepper else 1}-step transitions; build it with "
                         f"GymDataPipe(..., nsteps={nsteps}, firstlast=True).")
    device = torch.device(device) if device is not None else torch.device("cpu")
    actor.to(device)
    critic.to(device)

    pipe = ExperienceReplay(dls[0], bs=bs, max_sz=max_sz, warmup=warmup, train_every=train_every, updates=updates,
                            device=device)
    pipe = SoftTargetUpdater(pipe, critic, tau=tau, target_sync=critic_target_copy_freq)
    pipe = SoftTargetUpdater(pipe, actor, tau=tau, target_sync=actor_target_copy_freq)
    pipe = CriticLossProcessor(pipe, critic, actor, gamma=gamma, compile=compile)
    pipe = BasicOptStepper(pipe, critic, lr=critic_lr, opt=critic_opt, loss_key="critic", **_fast_opt(critic_opt))
    pipe = ActorLossProcessor(pipe, critic, actor, compile=compile)
    pipe = BasicOptStepper(pipe, actor, lr=actor_lr, opt=actor_opt, loss_key="actor", **_fast_opt(actor_opt))
    pipe = LossCollector(pipe)
    for fn in dp_augmentation_fns or ():
        pipe = fn(pipe)
    pipe_to_device(pipe, device, debug=debug)
    return Learner({"actor": actor, "critic": critic}, pipe, dls=dls, batches=batches or 1000,
                   logger_bases=logger_bases, name="DDPG")
