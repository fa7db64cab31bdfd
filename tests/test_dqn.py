"""The DQN family: network, TD targets, learner switches, determinism, learning CartPole, the CLI."""
import json
import math

import pytest
import torch
from torch import nn
from torchdata.nodes import IterableWrapper

from fastrl_lite import (GymDataPipe, GymStepper, SimpleStep, TrainBatch, DiscreteEpsilonRandomSelect, find_pipe,
                         set_seed)
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner, DoubleQTarget, DuelingHead, QLoss, QTarget
from fastrl_lite.cli import main as cli_main, train


class FixedQ(nn.Module):
    "Q(s, ·) read from a table indexed by the (integer) state."

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, state):
        return self.table[state[:, 0].long()]


def td_batch():
    return TrainBatch(SimpleStep(
        state=torch.tensor([[0.0], [0.0], [0.0]]), action=torch.tensor([0, 1, 0]),
        reward=torch.tensor([1.0, 2.0, 3.0]), next_state=torch.tensor([[1.0], [2.0], [1.0]]),
        terminated=torch.tensor([False, True, False]), truncated=torch.tensor([False, False, True]),
        nsteps=torch.tensor([1, 1, 3])))


def test_dueling_mean_is_taken_per_sample():
    head = DuelingHead(2, 3)
    with torch.no_grad():
        head.value.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.value.bias.zero_()
        head.advantage.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        head.advantage.bias.zero_()
    x = torch.tensor([[3.0, 0.0], [0.0, 6.0]])
    # sample 0: V=3, A=[3,0,0] (mean 1) -> [5,2,2]; sample 1: V=0, A=[0,6,0] (mean 2) -> [-2,4,-2]
    assert torch.equal(head(x), torch.tensor([[5.0, 2.0, 2.0], [-2.0, 4.0, -2.0]]))
    assert DQN(4, 3, dueling=True)(torch.zeros(5, 4)).shape == (5, 3)


def test_td_target_bootstraps_on_truncation_not_termination():
    target = FixedQ([[0.0, 0.0], [10.0, 4.0], [7.0, 9.0]])
    pipe = QTarget(IterableWrapper([td_batch()]), target_model=target, gamma=0.5)
    y = next(pipe).targets
    # row 0: 1 + 0.5 * max(10, 4); row 1 terminated: 2; row 2 truncated 3-step: 3 + 0.5**3 * 10
    assert torch.allclose(y, torch.tensor([6.0, 2.0, 3.0 + 0.125 * 10.0]))


def test_double_q_target_picks_with_online_values_with_target():
    online = FixedQ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])      # argmax at s'=1 is action 1
    target = FixedQ([[0.0, 0.0], [10.0, 4.0], [7.0, 9.0]])
    y = next(DoubleQTarget(IterableWrapper([td_batch()]), online, target, gamma=0.5)).targets
    assert torch.allclose(y, torch.tensor([1.0 + 0.5 * 4.0, 2.0, 3.0 + 0.125 * 4.0]))


def test_q_loss_needs_targets_and_uses_taken_actions():
    model = FixedQ([[1.0, 5.0], [0.0, 0.0], [0.0, 0.0]])
    batch = td_batch()
    batch.targets = torch.tensor([1.0, 5.0, 1.0])
    out = next(QLoss(IterableWrapper([batch]), model, loss_func=nn.functional.mse_loss))
    assert float(out.losses["q"].detach()) == 0.0
    with pytest.raises(RuntimeError, match="QTarget"):
        next(QLoss(IterableWrapper([td_batch()]), model))


def make_learner(seed=0, nsteps=1, firstlast=False, env_nsteps=None, **kwargs):
    set_seed(seed)
    model = DQN(4, 2, hidden=(64, 64))
    agent = DQNAgent(model, min_epsilon=0.05, max_steps=2000)
    dl = GymDataPipe(["CartPole-v1"], agent=agent, seed=seed, nsteps=env_nsteps or max(nsteps, 1), firstlast=firstlast)
    settings = dict(warmup=100, train_every=4, updates=2, batches=100, target_sync=50, nsteps=nsteps)
    settings.update(kwargs)
    return DQNLearner(model, [dl], **settings)


def test_same_seed_gives_identical_losses_for_200_rounds():
    losses = []
    for _ in range(2):
        learner = make_learner(seed=1)
        learner.fit(2)
        losses.append(learner.records.values("q_loss").clone())
    assert len(losses[0]) == 200 and torch.equal(losses[0], losses[1])
    other = make_learner(seed=2)
    other.fit(2)
    assert not torch.equal(losses[0], other.records.values("q_loss"))


@pytest.mark.parametrize("switches", [dict(target=False), dict(double=True), dict(dueling=True, model=None),
                                      dict(nsteps=3, firstlast=True)])
def test_learner_switches_train(switches):
    if switches.pop("model", 1) is None:
        set_seed(0)
        dl = GymDataPipe(["CartPole-v1"], agent=None, seed=0)
        with pytest.raises(ValueError, match="no agent"):
            DQNLearner(None, [dl], **switches)
        return
    learner = make_learner(**switches)
    rows = learner.fit(1)
    assert rows[0]["batch"] == 100 and math.isfinite(rows[0]["q_loss"])


def test_dueling_switch_builds_a_dueling_network():
    set_seed(0)
    model = DQN(4, 2, dueling=True)
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)
    learner = DQNLearner(model, [dl], dueling=True, warmup=64, batches=10)
    learner.fit(1)
    assert isinstance(learner.model.head, DuelingHead)
    with pytest.raises(ValueError, match="dueling head"):
        DQNLearner(DQN(4, 2), [GymDataPipe(["CartPole-v1"], agent=DQNAgent(DQN(4, 2)))], dueling=True)


def test_bad_input_errors():
    model = DQN(3, 2)
    with pytest.raises(ValueError, match="discrete action space.*DDPG"):
        DQNLearner(model, [GymDataPipe(["Pendulum-v1"], agent=DQNAgent(model))])
    with pytest.raises(ValueError, match="larger than the replay capacity"):
        make_learner(bs=256, max_sz=100)
    with pytest.raises(ValueError, match="nsteps must be >= 1"):
        make_learner(nsteps=0, env_nsteps=1)
    with pytest.raises(ValueError, match="merges 3-step"):
        make_learner(nsteps=1, env_nsteps=3, firstlast=True)
    with pytest.raises(ValueError, match="double=True needs a target"):
        make_learner(double=True, target=False)
    learner = make_learner()
    for epochs in (0, -2, 1.5):
        with pytest.raises(ValueError, match="positive whole number of epochs"):
            learner.fit(epochs)


def test_nan_loss_stops_training_with_a_clear_message():
    learner = make_learner(lr=1e30, clip_grad_norm=None, loss_func=nn.functional.mse_loss, batches=300)
    with pytest.raises(FloatingPointError, match="q_loss became NaN/inf at gradient round \\d+ .*computed by QLoss"):
        learner.fit(3)


def test_dqn_learns_cartpole_within_50k_steps(tmp_path):
    result = train("dqn", "CartPole-v1", steps=50_000, seed=0, out=tmp_path / "run", progress=False)
    assert result["env_steps"] <= 50_000
    assert result["eval_mean"] >= 195, result


def test_cli_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    cli_main(["train", "dqn", "--steps", "1500", "--seed", "3", "--out", str(out), "--eval-episodes", "2"])
    for name in ("metrics.csv", "returns.png", "model.pt", "eval.json"):
        assert (out / name).exists(), name
    result = json.loads((out / "eval.json").read_text())
    assert result["env_steps"] == 1500 and len(result["eval_returns"]) == 2
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,batch,env_steps,episodes,rolling_reward,q_loss")
    assert "Greedy evaluation over 2 episodes" in capsys.readouterr().out


def test_cli_reports_bad_env_and_continuous_actions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "dqn", "--env", "CartPol-v1"])
    assert exit_info.value.code == 2 and "Did you mean 'CartPole-v1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["train", "dqn", "--env", "Pendulum-v1", "--steps", "100"])
    assert "discrete action space" in capsys.readouterr().err


def test_validate_uses_the_validation_pipeline_greedily():
    learner = make_learner()
    model = learner.model
    valid = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model, min_epsilon=1.0, max_epsilon=1.0), seed=5)
    learner = DQNLearner(model, [learner.dls[0], valid], warmup=100, train_every=4, updates=2, batches=10)
    explorer = find_pipe(valid, DiscreteEpsilonRandomSelect)
    first = learner.validate(3)
    assert len(first["returns"]) == 3
    # this agent has ε = 1, yet validation ran greedily: its exploration stage never stepped
    assert explorer.steps == 0 and model.training
    assert find_pipe(valid, GymStepper).episodes == 3
    fresh = learner.validate(3, env_ids=["CartPole-v1"])
    assert len(fresh["returns"]) == 3


def test_networks_honour_hooks_on_their_layers_and_containers():
    "The direct-forward fast path (nets.through) steps aside whenever a hook is registered."
    from fastrl_lite.agents.policies import ActorCriticPolicy
    import gymnasium as gym
    torch.manual_seed(0)
    net, x = DQN(4, 2), torch.randn(5, 4)
    plain = net(x)
    calls = []
    handle = net.body.register_forward_hook(lambda m, inputs, out: calls.append("body"))
    assert torch.equal(net(x), plain) and calls == ["body"]
    handle.remove()
    net.head.register_forward_pre_hook(lambda m, inputs: calls.append("head"))
    assert torch.equal(net(x), plain) and calls == ["body", "head"]
    space = gym.spaces.Box(-1, 1, (4,))
    policy = ActorCriticPolicy(space, gym.spaces.Discrete(2))
    value = policy.value(x)
    policy.critic_body.register_forward_hook(lambda m, inputs, out: calls.append("critic"))
    assert torch.equal(policy.value(x), value) and calls[-1] == "critic"
    from fastrl_lite.nets import Actor, Critic, SquashedGaussianActor
    a = torch.rand(5, 2)
    for net, args, inner in ((Critic(4, 2), (x, a), "layer1"), (Actor(4, 2), (x,), "head"),
                             (SquashedGaussianActor(4, 2), (x,), "log_std")):
        plain = net(*args)
        getattr(net, inner).register_forward_hook(lambda m, inputs, out: calls.append(inner))
        again = net(*args)
        assert calls[-1] == inner
        for p, q in zip(plain if isinstance(plain, tuple) else (plain,), again if isinstance(again, tuple) else (again,)):
            assert torch.equal(p, q)
