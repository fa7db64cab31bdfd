"""Loss stages the actor-critic algorithms share (DDPG, TD3)."""
from __future__ import annotations

from torch import Tensor, nn

from ..core import TrainBatch
from ..pipes import Pipe
from .compiling import CompileArg, maybe_compile

__all__ = ["ActorLossProcessor"]


class ActorLossProcessor(Pipe):
    """losses['actor'] = -mean Q(s, μ(s)): minimising it follows ∇_a Q(s, a)|_{a=μ(s)} ∇_θ μ(s).

    The critic is only a path for the gradient here: its parameters are switched to
    `requires_grad=False` for the forward pass, so backward computes no critic weight gradients
    (about a third of the critic's backward compute) and leaves none on the critic. With `every=d`
    the loss is computed only every d-th round (TD3's delayed policy update; pair it with
    `Update(..., every={"actor": d})`). `compile` as in `CriticLossProcessor`, for `compute_loss`."""
    fills = "actor"
    state_attrs = ("rounds",)

    def __init__(self, source, critic: nn.Module, actor: nn.Module, compile: CompileArg = False, every: int = 1):
        super().__init__(source)
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a whole number of rounds >= 1, got {every!r}.")
        self.critic, self.actor, self.every = critic, actor, every
        self._critic_params = None
        self._loss = maybe_compile(self.compute_loss, compile)
        self.rounds = 0

    def compute_loss(self, state: Tensor) -> Tensor:
        return -self.critic(state, self.actor(state)).mean()

    def next(self) -> TrainBatch:
        batch = next(self.source)
        self.rounds += 1
        if self.rounds % self.every:
            return batch
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
