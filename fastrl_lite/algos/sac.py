"""SAC (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications"): maximum-entropy
actor-critic with a squashed-Gaussian policy, twin soft Q-functions and an automatically tuned
temperature α.

Algorithm 1, read top to bottom:
  1. initialise Q_θ1, Q_θ2, π_φ, log α; targets θ̄_i ← θ_i; replay D      TwinCritic, SquashedGaussianActor,
                                                                          EntropyCoefficient, SACLearner
  2. each env step: a ~ π_φ(·|s), a tanh-squashed Gaussian; store it     SACAgent (log π rides in the step)
     (uniform random actions for the first `learning_starts` steps)      SquashedGaussianRunner
  3. each gradient step, on N transitions from D:                         Collector(ReplayBuffer)
     y = r + γ^k (1 - terminated) (min_i Q_θ̄i(s', ã') - α log π(ã'|s')),  ã' ~ π_φ(·|s')
     θ_i ← θ_i - λ ∇ ½ Σ_i mean (Q_θi(s, a) - y)²                          SoftTwinCriticLoss, Update
     φ ← φ - λ ∇ mean (α log π(ã|s) - min_i Q_θi(s, ã)),  ã ~ π_φ(·|s)    SACActorLoss, Update
     α ← α - λ ∇ -log α (log π(ã|s) + H̄),  H̄ = -|A|                       EntropyCoefficientLoss, Update
     θ̄_i ← τ θ_i + (1 - τ) θ̄_i  (every `target_update_interval` steps)   SoftTargetUpdater

ã and ã' are reparameterised samples, a fresh draw per use (as CleanRL draws them). With a
`SquashedGSDEActor` the exploration is state-dependent (gSDE): a draw is a noise matrix, held by
each env for `sde_sample_freq` steps while collecting, fresh per use in the losses. Actions have
one unit wherever a network sees them, the policy's tanh [-1, 1]; the agent scales them onto the
env's bounds where the env receives them. The temperature loss takes log α, not α, as
Stable-Baselines3 does (the same minimiser, with a gradient that does not shrink with α).
SACLearner's parameters carry Stable-Baselines3's and rl-zoo's names and defaults.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Type, Union

import gymnasium as gym
import torch
from torch import Tensor, nn

from ..agents import ActionScaler, AgentBase, AgentHead, StepFieldSelector, check_continuous
from ..core import SimpleStep, TrainBatch, check_device, check_real, check_whole, register_field
from ..learner import Learner, target_copy, LossCollector, SoftTargetUpdater, Update, bootstrap_discount
from ..learner.wiring import (burst_rounds, check_actor_critic_sizes, check_actor_kind, check_agent,
                              check_bootstrap, check_bounded_actions, check_gamma, check_stage_gamma, env_pipeline,
                              make_optimizer)
from ..memory import Collector, ReplayBuffer
from ..nets import SquashedGaussianActor, SquashedGSDEActor, TwinCritic
from ..pipes import Pipe, find_pipe, pipe_to_device

__all__ = ["SquashedGaussianActor", "SquashedGSDEActor", "TwinCritic", "EntropyCoefficient", "SquashedGaussianRunner", "SACAgent",
           "SoftTwinCriticLoss", "SACActorLoss", "EntropyCoefficientLoss", "SACLearner"]

# the behaviour policy's log π(a|s) of the action taken; an n-step transition keeps its first action's
register_field("log_prob", nstep="first")


# 1. The temperature α --------------------------------------------------------------------------------

class EntropyCoefficient(nn.Module):
    """α, the weight of the entropy bonus, kept as log α. `learnable` makes log α a parameter that
    `EntropyCoefficientLoss` tunes (`ent_coef='auto'`); otherwise it is a fixed buffer. Either way it
    is part of the state dict, so a checkpoint restores it. `EntropyCoefficient.of(ent_coef)` reads
    Stable-Baselines3's `ent_coef`: 'auto' (tuned from 1), 'auto_0.1' (tuned from 0.1) or a number > 0."""

    def __init__(self, init: float = 1.0, learnable: bool = True):
        super().__init__()
        if not isinstance(init, numbers.Real) or isinstance(init, bool) or not 0 < init < math.inf:
            raise ValueError(f"The entropy coefficient must be a finite number > 0, got {init!r}.")
        log_alpha = torch.tensor(math.log(init))
        if learnable:
            self.log_alpha = nn.Parameter(log_alpha)
        else:
            self.register_buffer("log_alpha", log_alpha)
        self.learnable = learnable

    @classmethod
    def of(cls, ent_coef: Union[str, float]) -> "EntropyCoefficient":
        if isinstance(ent_coef, str):
            if ent_coef == "auto":
                return cls(1.0, learnable=True)
            if ent_coef.startswith("auto_"):
                try:
                    init = float(ent_coef[len("auto_"):])
                except ValueError:
                    init = math.nan
                if 0 < init < math.inf:
                    return cls(init, learnable=True)
            raise ValueError(f"ent_coef={ent_coef!r}: use 'auto' (tuned, starting at 1), 'auto_<start>' such as "
                             "'auto_0.1' (tuned, starting there), or a fixed number > 0 such as 0.2.")
        if not isinstance(ent_coef, numbers.Real) or isinstance(ent_coef, bool) or not 0 < ent_coef < math.inf:
            raise ValueError(f"ent_coef={ent_coef!r}: a fixed entropy coefficient must be a finite number > 0; "
                             "use 'auto' to tune it.")
        return cls(float(ent_coef), learnable=False)

    def forward(self) -> Tensor:
        "α, detached: the critic's target and the actor's loss take it as a constant."
        return self.log_alpha.detach().exp()

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}"


# 2. The agent: a ~ π(·|s), its log-prob carried into the step ---------------------------------------

class SquashedGaussianRunner(Pipe):
    """Runs the squashed-Gaussian `actor` on the states from its source, without gradients, and yields
    {"action": a, "log_prob": log π(a|s)}: a sample while the actor trains, the greedy tanh(μ) in eval
    mode. For the first `random_steps` env steps while it trains it yields uniform random actions in
    [-1, 1] without running the network (their log-prob is the uniform density's, -|A| log 2).

    With a gSDE actor (`SquashedGSDEActor`) each env keeps its exploration matrix for
    `sde_sample_freq` vector steps, then draws a new one; -1 means once per collection phase,
    which `SACLearner` sets to its `train_freq` (Stable-Baselines3's `sde_sample_freq=-1`: a new
    matrix at the start of each rollout). The matrices are part of the checkpoint."""
    state_attrs = ("steps", "calls", "noise")

    def __init__(self, source, actor: nn.Module, random_steps: int = 0, sde_sample_freq: int = -1):
        super().__init__(source)
        if not isinstance(random_steps, numbers.Integral) or isinstance(random_steps, bool) or random_steps < 0:
            raise ValueError(f"random_steps must be a whole number >= 0, got {random_steps!r}.")
        if (not isinstance(sde_sample_freq, numbers.Integral) or isinstance(sde_sample_freq, bool)
                or not (sde_sample_freq == -1 or sde_sample_freq >= 1)):
            raise ValueError(f"sde_sample_freq must be -1 (a new exploration matrix per collection phase) or a whole "
                             f"number >= 1 of env steps, got {sde_sample_freq!r}.")
        self.model, self.random_steps = actor, int(random_steps)
        self.action_sz = actor.action_sz
        self._probe = next(actor.parameters())  # Module.to() moves parameters in place: it tells the device
        self.sde = callable(getattr(actor, "new_noise", None))
        self.sde_sample_freq = int(sde_sample_freq)
        self.steps, self.calls, self.noise = 0, 0, None

    def _exploration(self, n: int, call: int) -> Tensor:
        "The gSDE matrices (one per env) of vector step `call`, drawn anew every `sde_sample_freq` vector steps."
        due = self.sde_sample_freq > 0 and call % self.sde_sample_freq == 0
        if self.noise is None or self.noise.shape[0] != n or due:
            self.noise = self.model.new_noise(n)
        return self.noise

    def next(self) -> dict:
        state = next(self.source)
        if not self.model.training:
            with torch.no_grad():
                action, log_prob = self.model.mode(state.to(self._probe.device, torch.float32))
            return {"action": action, "log_prob": log_prob}
        n = state.shape[0]
        calls, self.calls = self.calls, self.calls + 1
        if self.steps < self.random_steps:
            self.steps += n
            action = torch.rand(n, self.action_sz, device=self._probe.device) * 2 - 1
            return {"action": action, "log_prob": torch.full((n,), -self.action_sz * math.log(2.0),
                                                             device=self._probe.device)}
        with torch.no_grad():
            if self.sde:
                action, log_prob = self.model.sample(state.to(self._probe.device, torch.float32),
                                                     self._exploration(n, calls))
            else:
                action, log_prob = self.model.sample(state.to(self._probe.device, torch.float32))
        return {"action": action, "log_prob": log_prob}


def SACAgent(actor: nn.Module, random_steps: int = 0, action_space: Optional[gym.spaces.Box] = None,
             sde_sample_freq: int = -1) -> AgentHead:
    """SAC's agent: a ~ π(·|s) from the `SquashedGaussianActor` (or `SquashedGSDEActor`) while it
    trains, the greedy tanh(μ(s)) in eval mode, uniform random actions for the first `random_steps`
    env steps. It returns the action and its `log_prob`, which the stepper stores as a field of the
    step. Actions stay in [-1, 1]; the env receives them scaled onto its bounds (those of
    `action_space` when given). `sde_sample_freq` is how many vector steps a gSDE actor keeps each
    env's exploration matrix (-1: one collection phase, see `SquashedGaussianRunner`)."""
    for method in ("sample", "mode"):
        if not callable(getattr(actor, method, None)):
            raise TypeError(f"SACAgent needs a stochastic actor with sample(s) and mode(s) (a SquashedGaussianActor), "
                            f"got {type(actor).__name__}.")
    to_env = ActionScaler.of(action_space, "SAC") if action_space is not None else ActionScaler()
    pipe = AgentBase(actor)
    pipe = StepFieldSelector(pipe, field="state")
    pipe = SquashedGaussianRunner(pipe, actor, random_steps=random_steps, sde_sample_freq=sde_sample_freq)
    return AgentHead(pipe, model=actor, to_env=to_env)


# 3a. The soft Q target and the critics' loss -----------------------------------------------------------

class SoftTwinCriticLoss(Pipe):
    """losses['critic'] = ½ Σ_i mean (Q_i(s, a) − y)² with the soft target
    y = r + γ^k (1 − terminated) (min_i Q̄_i(s', ã') − α log π(ã'|s')), ã' ~ π(·|s') drawn from the
    current policy. `critics`/`t_critics` are `TwinCritic`s (online and target), `ent_coef` the
    `EntropyCoefficient`; k is each transition's `nsteps` (1 when absent)."""
    fills = "critic"

    def __init__(self, source, critics: TwinCritic, t_critics: TwinCritic, actor: nn.Module,
                 ent_coef: EntropyCoefficient, gamma: float = 0.99):
        super().__init__(source)
        self.critics, self.t_critics, self.actor, self.ent_coef = critics, t_critics, actor, ent_coef
        self.gamma = check_stage_gamma(source, gamma, "SoftTwinCriticLoss")

    def targets(self, step: SimpleStep) -> Tensor:
        next_action, next_log_prob = self.actor.sample(step.next_state)
        next_q = self.t_critics(step.next_state, next_action).amin(dim=-1) - self.ent_coef() * next_log_prob
        return step.reward + bootstrap_discount(step, self.gamma) * next_q

    def compute_loss(self, step: SimpleStep, targets: Tensor) -> Tensor:
        q = self.critics(step.state, step.action.reshape(len(step), -1).to(step.reward.dtype))
        return 0.5 * (q - targets.unsqueeze(-1)).pow(2).mean(dim=0).sum()

    def next(self) -> TrainBatch:
        batch = next(self.source)
        with torch.no_grad():
            batch.targets = self.targets(batch.step)
        batch.losses[self.fills] = self.compute_loss(batch.step, batch.targets)
        return batch


# 3b. The policy's loss ------------------------------------------------------------------------------

class SACActorLoss(Pipe):
    """losses['actor'] = mean (α log π(ã|s) − min_i Q_i(s, ã)), ã ~ π(·|s) reparameterised, so the
    gradient reaches the policy through the action and its log-prob. The critics are only a path for
    the gradient: their parameters stop requiring gradients for this forward pass, so backward
    computes none for them."""
    fills = "actor"

    def __init__(self, source, actor: nn.Module, critics: TwinCritic, ent_coef: EntropyCoefficient):
        super().__init__(source)
        self.actor, self.critics, self.ent_coef = actor, critics, ent_coef
        self._critic_params = None

    def compute_loss(self, state: Tensor) -> Tensor:
        action, log_prob = self.actor.sample(state)
        return (self.ent_coef() * log_prob - self.critics(state, action).amin(dim=-1)).mean()

    def next(self) -> TrainBatch:
        batch = next(self.source)
        if self._critic_params is None:
            self._critic_params = [p for p in self.critics.parameters() if p.requires_grad]
        for p in self._critic_params:
            p.requires_grad_(False)
        try:
            batch.losses[self.fills] = self.compute_loss(batch.step.state)
        finally:
            for p in self._critic_params:
                p.requires_grad_(True)
        return batch


# 3c. The temperature's loss ----------------------------------------------------------------------------

class EntropyCoefficientLoss(Pipe):
    """losses['ent_coef'] = −mean log α (log π(ã|s) + H̄), ã ~ π(·|s) drawn without gradients: its
    gradient −(mean log π + H̄) lowers α while the policy's entropy −log π exceeds the target H̄ and
    raises it while the entropy is below. α goes to the record bus as `ent_coef`."""
    fills = "ent_coef"

    def __init__(self, source, actor: nn.Module, ent_coef: EntropyCoefficient, target_entropy: float):
        super().__init__(source)
        if not ent_coef.learnable:
            raise ValueError("EntropyCoefficientLoss tunes a learnable EntropyCoefficient (ent_coef='auto'); a fixed "
                             "coefficient needs no loss.")
        self.actor, self.ent_coef, self.target_entropy = actor, ent_coef, float(target_entropy)

    def compute_loss(self, log_prob: Tensor) -> Tensor:
        return -(self.ent_coef.log_alpha * (log_prob + self.target_entropy)).mean()

    def next(self) -> TrainBatch:
        batch = next(self.source)
        with torch.no_grad():
            _, log_prob = self.actor.sample(batch.step.state)
        batch.losses[self.fills] = self.compute_loss(log_prob)
        self.record("ent_coef", self.ent_coef())
        return batch


# SAC assembled -----------------------------------------------------------------------------------------

def _target_entropy(target_entropy, action_sz: int) -> float:
    if isinstance(target_entropy, str) and target_entropy == "auto":
        return -float(action_sz)
    if (not isinstance(target_entropy, numbers.Real) or isinstance(target_entropy, bool)
            or not math.isfinite(target_entropy)):
        raise ValueError(f"target_entropy={target_entropy!r}: use 'auto' (-|A| = {-float(action_sz)}) or a finite "
                         "number.")
    return float(target_entropy)


def SACLearner(actor: nn.Module, critics: Union[TwinCritic, Sequence[nn.Module]], dls: Sequence, logger_bases=None,
               learning_rate: float = 3e-4, buffer_size: int = 1_000_000, learning_starts: int = 100,
               batch_size: int = 256, tau: float = 0.005, gamma: float = 0.99, train_freq: int = 1,
               gradient_steps: int = 1, ent_coef: Union[str, float] = "auto",
               target_entropy: Union[str, float] = "auto", target_update_interval: int = 1,
               optimizer_class: Type[torch.optim.Optimizer] = torch.optim.Adam, nsteps: int = 1, device=None,
               batches: int = 1000) -> Learner:
    """SAC on the env pipeline `dls[0]`, whose agent runs `actor` (`SACAgent(actor)` of a
    `SquashedGaussianActor`); `critics` is a `TwinCritic` or a pair of critics. The names and
    defaults are Stable-Baselines3's: `learning_rate` for the critics, the actor and α,
    `buffer_size`, `learning_starts` transitions before the first round, `train_freq` env steps →
    `gradient_steps` rounds (-1: `train_freq` rounds), `ent_coef` ('auto', 'auto_<start>' or a fixed number > 0),
    `target_entropy` ('auto' is -|A|), `target_update_interval` rounds between Polyak updates.
    `nsteps` and `gamma` must match the n-step merging of `dls[0]`; an epoch is `batches` gradient
    rounds. The learner's models are the actor, the critics and the entropy coefficient (log α), so
    checkpoints hold α and, with the update stages, its optimizer."""
    if not isinstance(critics, TwinCritic):
        if isinstance(critics, nn.Module) or len(critics) != 2:
            raise ValueError("SAC needs two critics: a TwinCritic (TwinCritic.of(state_sz, action_sz)) or a pair of "
                             f"critics, got {type(critics).__name__}.")
        critics = TwinCritic(*critics)
    gamma = check_gamma(gamma, "SACLearner")
    tau = check_real(tau, "tau", 0, 1, low_open=True, hint="1 is a hard copy; 0.005 is SAC's.")
    target_update_interval = check_whole(target_update_interval, "target_update_interval")
    train_freq, gradient_steps = burst_rounds(train_freq, gradient_steps)
    buffer_size, batch_size = check_whole(buffer_size, "buffer_size"), check_whole(batch_size, "batch_size")
    learning_starts, batches = check_whole(learning_starts, "learning_starts", 0), check_whole(batches, "batches")
    device = check_device(device)
    entropy = EntropyCoefficient.of(ent_coef)
    stepper, nstepper = env_pipeline(dls, "SACLearner", "SACAgent(actor)")
    space = check_continuous(stepper.env, "SAC")
    check_actor_kind(actor, "SACLearner", stochastic=True)
    check_agent(stepper, actor, "SACLearner", "actor", "SACAgent(actor)")
    check_bounded_actions(stepper, "SACLearner", "SACAgent(actor)")
    check_actor_critic_sizes(stepper, space, actor, [critics.q1, critics.q2])
    check_bootstrap(nstepper, nsteps, gamma, "SACLearner")
    target_entropy = _target_entropy(target_entropy, int(torch.Size(space.shape).numel()))
    critic_optimizer = make_optimizer(optimizer_class, critics.parameters(), learning_rate, "learning_rate")
    actor_optimizer = make_optimizer(optimizer_class, actor.parameters(), learning_rate, "learning_rate")
    ent_optimizer = make_optimizer(optimizer_class, [entropy.log_alpha], learning_rate, "learning_rate") \
        if entropy.learnable else None
    collector = Collector(dls[0], ReplayBuffer(buffer_size, device=device), bs=batch_size, warmup=learning_starts,
                          train_every=train_freq, updates=gradient_steps)
    runner = find_pipe(stepper.agent, SquashedGaussianRunner, required=False)
    if runner is not None and runner.sde and runner.sde_sample_freq == -1:
        runner.sde_sample_freq = train_freq  # a new gSDE matrix at the start of each collection phase
    for module in (actor, critics, entropy):
        module.to(device)

    t_critics = target_copy(critics)
    pipe = SoftTwinCriticLoss(collector, critics, t_critics, actor, entropy, gamma)
    pipe = Update(pipe, {"critic": critic_optimizer})
    pipe = SACActorLoss(pipe, actor, critics, entropy)
    pipe = Update(pipe, {"actor": actor_optimizer})
    if entropy.learnable:
        pipe = EntropyCoefficientLoss(pipe, actor, entropy, target_entropy)
        pipe = Update(pipe, {"ent_coef": ent_optimizer})
    pipe = SoftTargetUpdater(pipe, critics, tau=tau, target_sync=target_update_interval, target_model=t_critics)
    pipe = LossCollector(pipe)
    pipe_to_device(pipe, device)
    return Learner({"actor": actor, "critics": critics, "ent_coef": entropy}, pipe, dls=dls, batches=batches,
                   logger_bases=logger_bases, name="SAC", collector=collector, stepper=stepper)
