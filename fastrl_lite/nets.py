"""Network builders shared by the algorithms: DQN's Q-network (with a dueling head), and DDPG's
actor, critic, initialisers and pixel block (the signatures of fastrl's DDPG page)."""
from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple, Type

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .core import check_flag, check_whole

__all__ = ["DQN", "DuelingHead", "init_xavier_uniform_weights", "init_uniform_weights", "init_kaiming_normal_weights",
           "ddpg_conv2d_block", "Critic", "Actor", "check_state_size", "TwinCritic", "SquashedGaussianActor",
           "SquashedGSDEActor",
           "squashed_gaussian_log_prob", "through", "watched"]


def _hooked(modules) -> bool:
    """Whether a forward or backward hook is registered on any of `modules` or globally. A network's
    forward runs every env step and twice every gradient round; where no hook is registered it calls
    each layer's own `forward` directly, the same maths without nn.Module's per-call machinery
    (measured ~8 µs less per forward of a [256, 256] MLP on the CPU, about 4 % of a DQN run)."""
    if (_module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks
            or _module._global_backward_pre_hooks):
        return True
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    return False


def through(parts, x: Tensor, modules=None) -> Tensor:
    """`x` through `parts` in order, each a layer or an `nn.Sequential` of layers. Where no hook is
    registered on any of `modules` (every module of the parts, containers included; the owner keeps
    the tuple, see `watched`) or globally, each layer's own `forward` runs directly (see `_hooked`);
    otherwise every part is called as usual, so its hooks fire."""
    if _hooked(watched(parts) if modules is None else modules):
        for part in parts:
            x = part(x)
        return x
    return _direct(parts, x)


def _direct(parts, x: Tensor) -> Tensor:
    "`through` once no hook is known to be registered."
    for part in parts:
        if isinstance(part, nn.Sequential):
            for layer in part:
                x = layer.forward(x)
        else:
            x = part.forward(x)
    return x


def watched(parts) -> tuple:
    "Every module of `parts` and inside them: the hook check of `through`."
    return tuple(m for part in parts for m in part.modules())


# Q-networks ----------------------------------------------------------------------------------------

class DuelingHead(nn.Module):
    "Q(s, a) = V(s) + A(s, a) - mean_a A(s, a), the advantage mean taken per sample."

    def __init__(self, hidden: int, action_sz: int):
        super().__init__()
        self.value = nn.Linear(hidden, 1)
        self.advantage = nn.Linear(hidden, action_sz)

    def forward(self, x: Tensor) -> Tensor:
        advantage = self.advantage(x)
        return self.value(x) + advantage - advantage.mean(dim=-1, keepdim=True)


def mlp_body(in_sz: int, hidden: Sequence[int], activation_fn: Type[nn.Module] = nn.ReLU) -> Tuple[nn.Sequential, int]:
    "Linear + activation for each size in `hidden`, and the width of its output."
    layers, width = [], check_whole(in_sz, "state_sz")
    hidden = [hidden] if isinstance(hidden, int) else list(hidden)
    for h in hidden:
        h = check_whole(h, f"Each hidden layer's width (hidden={hidden})")
        layers += [nn.Linear(width, h), activation_fn()]
        width = h
    return nn.Sequential(*layers), width


class DQN(nn.Module):
    "An MLP from a flat state to one Q-value per action; `dueling=True` swaps in a `DuelingHead`."

    def __init__(self, state_sz: int, action_sz: int, hidden: Sequence[int] = (256, 256),
                 activation_fn: Type[nn.Module] = nn.ReLU, dueling: bool = False):
        super().__init__()
        state_sz, action_sz = check_whole(state_sz, "DQN's state_sz"), check_whole(action_sz, "DQN's action_sz")
        self.state_sz, self.action_sz = state_sz, action_sz
        self.body, width = mlp_body(state_sz, hidden, activation_fn)
        self.dueling = check_flag(dueling, "dueling")
        self.head = DuelingHead(width, action_sz) if dueling else nn.Linear(width, action_sz)
        self._parts = (self.body, self.head)  # plain tuples: the modules stay registered once, above
        self._watched = watched(self._parts)

    def forward(self, state: Tensor) -> Tensor:
        return through(self._parts, state, self._watched)


# Actor-critic networks ------------------------------------------------------------------------------

def init_xavier_uniform_weights(m: nn.Module, bias: float = 0.01):
    "Initializes weights for linear layers using torch.nn.init.xavier_uniform_ (biases set to `bias`)."
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(m.bias, bias)


def init_uniform_weights(m: nn.Module, bound: float):
    """Initializes weights for linear layers using torch.nn.init.uniform_ on U(-bound, bound), as
    fastrl does: the bias keeps what the layer had (for the networks' heads, the 0.01 of
    `weight_init_fn`)."""
    if isinstance(m, nn.Linear):
        nn.init.uniform_(m.weight, -bound, bound)


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


def as_float(state: Tensor) -> Tensor:
    "Pixel observations are stored as uint8 (4x less replay memory); the networks see floats."
    return state if state.is_floating_point() else state.float()


class Critic(nn.Module):
    """Takes 2 tensors of size [B, state_sz], [B, action_sz] -> [B, 1], the Q value Q(s, a).

    With a `conv_block` the state is an image, `state_sz` is the block's flattened output and the
    action joins at the second linear layer (the paper's pixel critic); otherwise state and action
    are concatenated at the input. `batch_norm` normalises the layers before the action enters."""

    def __init__(self, state_sz: int, action_sz: int, hidden1: int = 400, hidden2: int = 300,
                 head_layer: Type[nn.Module] = nn.Linear, activation_fn: Type[nn.Module] = nn.ReLU,
                 weight_init_fn: Optional[Callable] = init_kaiming_normal_weights,
                 final_layer_init_fn: Optional[Callable] = partial(init_uniform_weights, bound=1e-4),
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
        if weight_init_fn is not None:  # None keeps PyTorch's default initialisation
            self.apply(weight_init_fn)
        if final_layer_init_fn is not None:
            self.head.apply(final_layer_init_fn)
        self._parts = (self.layer1, self.layer2, self.head)  # plain tuples for nets.through
        self._watched = watched((self.input_norm, *self._parts))

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        if self.conv_block is not None:
            return self.head(self.layer2(torch.cat((self.layer1(self.conv_block(as_float(state))), action), -1)))
        if _hooked(self._watched):
            return self.head(self.layer2(self.layer1(torch.cat((self.input_norm(state), action), -1))))
        return _direct(self._parts, torch.cat((self.input_norm.forward(state), action), -1))


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
        self._parts = (self.body, self.head)  # plain tuples for nets.through
        self._watched = watched(self._parts)

    def forward(self, state: Tensor) -> Tensor:
        if self.conv_block is not None:
            state = self.conv_block(as_float(state))
        return torch.tanh(through(self._parts, state, self._watched))


def flat_only(name: str, shape: Tuple[int, ...]) -> str:
    "The error for an MLP given observations that are not one vector."
    return (f"The {name} is an MLP over flat observations, but the env observes arrays of shape {shape}. Flatten "
            "them with make_vec_env(..., wrappers=[gymnasium.wrappers.FlattenObservation]), or, for images, give the "
            f"network a conv block (ddpg_conv2d_block({shape}) for DDPG's Actor and Critic).")


def check_state_size(model: nn.Module, space: gym.spaces.Space, name: str):
    "The model's input must fit the env's observations: say how to build it when it does not."
    shape = tuple(space.shape)
    conv_block = getattr(model, "conv_block", None)
    if conv_block is None:
        size = int(torch.Size(shape).numel())
        if getattr(model, "state_sz", size) != size:
            raise ValueError(f"{name}(state_sz={model.state_sz}) but the observations have shape {shape} "
                             f"({size} values); build it as {name}({size}, ...).")
        if len(shape) != 1 and hasattr(model, "state_sz"):
            raise ValueError(flat_only(name, shape))
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


# Twin critics and the stochastic actor (TD3, SAC) ---------------------------------------------------

class TwinCritic(nn.Module):
    """Two critics of the same (state, action): `forward(s, a)` returns both values side by side,
    [B, 2]; `q1` alone drives TD3's actor. Build it from two critics, or `TwinCritic.of(state_sz,
    action_sz, ...)` for two `Critic`s."""

    def __init__(self, q1: nn.Module, q2: nn.Module):
        super().__init__()
        if q1 is q2:
            raise ValueError("TwinCritic needs two separate critics; build a second one (they must not share weights).")
        sizes = {(getattr(q, "state_sz", None), getattr(q, "action_sz", None)) for q in (q1, q2)}
        if len(sizes) != 1:
            raise ValueError(f"The two critics take inputs of different sizes (state_sz, action_sz): {sorted(sizes, key=str)}.")
        self.q1, self.q2 = q1, q2
        self.state_sz, self.action_sz = next(iter(sizes))

    @classmethod
    def of(cls, state_sz: int, action_sz: int, hidden1: int = 400, hidden2: int = 300, **critic_kwargs) -> "TwinCritic":
        """Two independently initialised `Critic(state_sz, action_sz, hidden1, hidden2, **critic_kwargs)`,
        by default with PyTorch's default initialisation, as TD3's and SAC's reference code,
        Stable-Baselines3 and CleanRL initialise their critics (not DDPG's near-zero head: a critic
        that starts flat in the action gives the actor no direction, and on a sparse reward such as
        MountainCarContinuous's the policy then barely moves the car)."""
        critic_kwargs.setdefault("weight_init_fn", None)
        critic_kwargs.setdefault("final_layer_init_fn", None)
        return cls(Critic(state_sz, action_sz, hidden1, hidden2, **critic_kwargs),
                   Critic(state_sz, action_sz, hidden1, hidden2, **critic_kwargs))

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        return torch.cat((self.q1(state, action), self.q2(state, action)), dim=-1)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


def squashed_gaussian_log_prob(noise: Tensor, log_std: Tensor, u: Tensor) -> Tensor:
    """log π(a|s) of a = tanh(u), u = μ + σ ε, summed over the action dimensions, [B]:
    Σ_j [log 𝒩(u_j; μ_j, σ_j) − log(1 − tanh²(u_j))], with log 𝒩 = −ε²/2 − log σ − log(2π)/2 and
    log(1 − tanh²(u)) = 2 (log 2 − u − softplus(−2u)), exact where 1 − tanh²(u) rounds to 0 (SB3 and
    CleanRL add ε = 1e-6 inside the log instead)."""
    gaussian = -0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI
    log_det = 2 * (_LOG_2 - u - nn.functional.softplus(-2 * u))
    return (gaussian - log_det).sum(dim=-1)


class SquashedGaussianActor(nn.Module):
    """SAC's stochastic policy: a = tanh(u), u ~ 𝒩(μ(s), σ(s)²), actions in [-1, 1] (scaled onto the
    env's bounds at the env boundary). An MLP body of `hidden` layers feeds two linear heads, μ and
    log σ; log σ is clamped to [`log_std_min`, `log_std_max`] (SB3's -20 and 2). PyTorch's default
    initialisation, as SB3 and CleanRL use.

    `forward(s)` returns (μ, log σ); `sample(s)` a reparameterised action and its log-prob (so the
    gradient flows through both); `mode(s)` the greedy action tanh(μ)."""

    def __init__(self, state_sz: int, action_sz: int, hidden: Sequence[int] = (256, 256),
                 activation_fn: Type[nn.Module] = nn.ReLU, log_std_min: float = -20.0, log_std_max: float = 2.0):
        super().__init__()
        if state_sz < 1 or action_sz < 1:
            raise ValueError(f"SquashedGaussianActor needs state_sz >= 1 and action_sz >= 1, got {state_sz} and "
                             f"{action_sz}.")
        if not log_std_min < log_std_max:
            raise ValueError(f"Need log_std_min < log_std_max, got {log_std_min} and {log_std_max}.")
        self.state_sz, self.action_sz = state_sz, action_sz
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        self.body, width = mlp_body(state_sz, hidden, activation_fn)
        self.mu = nn.Linear(width, action_sz)
        self.log_std = nn.Linear(width, action_sz)
        self._watched = watched((self.body, self.mu, self.log_std))  # for nets.through

    def forward(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        if _hooked(self._watched):
            x = self.body(state)
            return self.mu(x), self.log_std(x).clamp(self.log_std_min, self.log_std_max)
        x = _direct((self.body,), state)
        return self.mu.forward(x), self.log_std.forward(x).clamp(self.log_std_min, self.log_std_max)

    def sample(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        "A reparameterised action tanh(μ + σ ε), ε ~ 𝒩(0, I), and its log-prob, [B, action_sz] and [B]."
        mean, log_std = self(state)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        return torch.tanh(u), squashed_gaussian_log_prob(noise, log_std, u)

    def mode(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        "The greedy action tanh(μ) and its log-prob (the density at ε = 0)."
        mean, log_std = self(state)
        return torch.tanh(mean), squashed_gaussian_log_prob(torch.zeros_like(mean), log_std, mean)


class SquashedGSDEActor(nn.Module):
    """SAC's squashed-Gaussian policy with generalized state-dependent exploration, gSDE (Raffin et
    al., 2022, "Smooth Exploration for Robotic Reinforcement Learning"): the noise is a function of
    the state, u = μ(s) + z(s) E, where z(s) is the body's last hidden layer (detached: the noise
    does not train the features) and E a [hidden, action_sz] matrix with entries E_ij ~ 𝒩(0, σ_ij²).
    Held fixed over several env steps, E gives smooth, state-consistent exploration; for a fixed E
    the action is still 𝒩(μ(s), σ(s)²)-distributed with σ_j(s)² = Σ_i z_i(s)² σ_ij² (+ `epsilon`).
    log σ is a learned [hidden, action_sz] parameter starting at `log_std_init`; μ is clipped to
    [-`clip_mean`, `clip_mean`] before the tanh. The defaults are Stable-Baselines3's
    (`use_sde=True`: full std, no expln, features not learned by the noise, clip_mean 2).

    `new_noise(n)` draws standard-normal ε, one [hidden, action_sz] matrix (or n of them, one per
    env); E = ε σ at use. `sample(s, noise)` takes such ε; without it, it draws one matrix for the
    whole batch (a fresh draw per call, so the gradient reaches log σ through E).
    `mode(s)` gives the greedy action tanh(μ)."""

    def __init__(self, state_sz: int, action_sz: int, hidden: Sequence[int] = (256, 256),
                 activation_fn: Type[nn.Module] = nn.ReLU, log_std_init: float = -3.0, clip_mean: float = 2.0,
                 epsilon: float = 1e-6):
        super().__init__()
        if state_sz < 1 or action_sz < 1:
            raise ValueError(f"SquashedGSDEActor needs state_sz >= 1 and action_sz >= 1, got {state_sz} and "
                             f"{action_sz}.")
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        if not hidden:
            raise ValueError("SquashedGSDEActor needs at least one hidden layer: its features drive the noise.")
        if not math.isfinite(log_std_init):
            raise ValueError(f"log_std_init must be a finite number, got {log_std_init}.")
        if not clip_mean > 0 or not epsilon >= 0:
            raise ValueError(f"Need clip_mean > 0 and epsilon >= 0, got {clip_mean} and {epsilon}.")
        self.state_sz, self.action_sz = state_sz, action_sz
        self.clip_mean, self.epsilon = float(clip_mean), float(epsilon)
        self.body, width = mlp_body(state_sz, hidden, activation_fn)
        self.mu = nn.Linear(width, action_sz)
        self.log_std = nn.Parameter(torch.full((width, action_sz), float(log_std_init)))
        self._watched = watched((self.body, self.mu))

    def forward(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        "(μ(s) clipped to ±clip_mean, the features z(s)), [B, action_sz] and [B, hidden]."
        if _hooked(self._watched):
            z = self.body(state)
            return self.mu(z).clamp(-self.clip_mean, self.clip_mean), z
        z = _direct((self.body,), state)
        return self.mu.forward(z).clamp(-self.clip_mean, self.clip_mean), z

    def new_noise(self, n: Optional[int] = None) -> Tensor:
        "Standard-normal ε for E = ε σ: [hidden, action_sz], or [n, hidden, action_sz] (one matrix per env)."
        shape = self.log_std.shape if n is None else (n, *self.log_std.shape)
        return torch.randn(shape, device=self.log_std.device, dtype=self.log_std.dtype)

    def _log_prob(self, mean: Tensor, z: Tensor, u: Tensor) -> Tensor:
        "log π(tanh(u)|s) under 𝒩(μ, σ(s)²) and the tanh, [B]."
        log_std = 0.5 * torch.log(z.pow(2) @ (2 * self.log_std).exp() + self.epsilon)
        return squashed_gaussian_log_prob((u - mean) * torch.exp(-log_std), log_std, u)

    def sample(self, state: Tensor, noise: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """tanh(μ(s) + z(s) E) and its log-prob, [B, action_sz] and [B]; E = ε σ from `noise` (one
        matrix, or one per row of `state`), else from one fresh matrix for the batch."""
        mean, z = self(state)
        z = z.detach()
        exploration = (self.new_noise() if noise is None else noise) * self.log_std.exp()
        u = mean + (z @ exploration if exploration.dim() == 2 else (z.unsqueeze(1) @ exploration).squeeze(1))
        return torch.tanh(u), self._log_prob(mean, z, u)

    def mode(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        "The greedy action tanh(μ) and its log-prob."
        mean, z = self(state)
        return torch.tanh(mean), self._log_prob(mean, z.detach(), mean)
