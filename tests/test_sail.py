"""SAIL-DQN: returns-to-go of finished, truncated and n-step episodes, the SAIL target by hand, bad
input, the collector's cadence with whole episodes, exact resume and learning CartPole."""
import copy
import json

import pytest
import torch
from torch import nn
from torchdata.nodes import IterableWrapper

from fastrl_lite import GymDataPipe, SimpleStep, TrainBatch, set_seed
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner, SAILTarget
from fastrl_lite.envs import NSkipper, NStepper
from fastrl_lite.envs.returns import EpisodeReturns, discounted_returns
from fastrl_lite.memory import Collector, ReplayBuffer

GAMMA = 0.9


def vector_steps(episodes, num_envs=2):
    """The steps a 2-env stepper yields for `episodes`: per env a list of (rewards, end) episodes,
    end 'terminated' or 'truncated'. States encode (env, episode, t) so outputs can be traced."""
    streams = []
    for env in range(num_envs):
        rows = []
        for ep, (rewards, end) in enumerate(episodes[env]):
            for t, r in enumerate(rewards):
                last = t == len(rewards) - 1
                rows.append(dict(reward=float(r), terminated=last and end == "terminated",
                                 truncated=last and end == "truncated", episode_n=ep, step_n=t + 1,
                                 state=[env, ep, t], next_state=[env, ep, t + 1]))
        streams.append(rows)
    length = min(len(s) for s in streams)
    steps = []
    for i in range(length):
        rows = [s[i] for s in streams]
        step = SimpleStep(state=torch.tensor([r["state"] for r in rows], dtype=torch.float32),
                          action=torch.zeros(num_envs, dtype=torch.long),
                          reward=torch.tensor([r["reward"] for r in rows]),
                          next_state=torch.tensor([r["next_state"] for r in rows], dtype=torch.float32),
                          terminated=torch.tensor([r["terminated"] for r in rows]),
                          truncated=torch.tensor([r["truncated"] for r in rows]),
                          env_id=torch.arange(num_envs), episode_n=torch.tensor([r["episode_n"] for r in rows]),
                          step_n=torch.tensor([r["step_n"] for r in rows]))
        step.env_steps = num_envs
        steps.append(step)
    return steps


def reference_returns(rewards, gamma, tail=0.0):
    out, g = [], tail
    for r in reversed(rewards):
        g = r + gamma * g
        out.append(g)
    return out[::-1]


EPISODES = [[([1, 2, 3], "terminated"), ([0.5, -1, 2, 4, 1], "truncated"), ([1] * 7, "terminated")],
            [([2, 2, 2, 2, 2, 2], "truncated"), ([-3, 1], "terminated"), ([1, 1, 1, 1, 1, 1], "terminated")]]


def collect(stage):
    out = []
    while True:
        try:
            out.append(next(stage))
        except StopIteration:
            return out


def by_origin(steps):
    "mc_return of every output transition, keyed by its (env, episode, t) state."
    table = {}
    for s in steps:
        for state, g in zip(s.state.tolist(), s.mc_return.tolist()):
            table[tuple(int(v) for v in state)] = g
    return table


def test_returns_to_go_of_finished_and_truncated_episodes():
    value = lambda s: 10.0 * s[:, 2]  # noqa: E731  V(s_T) = 10 T for a truncated episode's final state
    for bootstrap in (None, value):
        stage = EpisodeReturns(IterableWrapper(vector_steps(EPISODES)), gamma=GAMMA, bootstrap=bootstrap)
        outs = collect(stage)
        g = by_origin(outs)
        for env in range(2):
            for ep, (rewards, end) in enumerate(EPISODES[env][:2]):
                tail = 10.0 * len(rewards) if (end == "truncated" and bootstrap is not None) else 0.0
                expected = reference_returns(rewards, GAMMA, tail)
                got = [g[(env, ep, t)] for t in range(len(rewards))]
                assert got == pytest.approx(expected, rel=1e-6), (env, ep, bootstrap)
        # 14 vector steps: env 0's third episode never ended, its 6 transitions are held, not passed on
        assert (0, 2, 0) not in g and (1, 2, 5) in g and stage._n == 6 and len(g) == 2 * 14 - 6
        assert sum(o.env_steps for o in outs) == 2 * 14 and all(len(o) for o in outs)
        assert all(o.mc_return.dtype == torch.float32 for o in outs)
    # an output comes as soon as an episode ends: env 0's first one at the third vector step
    first = next(EpisodeReturns(IterableWrapper(vector_steps(EPISODES)), gamma=GAMMA))
    assert first.state[:, :2].tolist() == [[0, 0]] * 3 and first.env_steps == 6


def test_n_step_windows_get_the_return_of_their_first_step():
    one = by_origin(collect(EpisodeReturns(IterableWrapper(vector_steps(EPISODES)), gamma=GAMMA)))
    merged = collect(EpisodeReturns(NStepper(IterableWrapper(vector_steps(EPISODES)), n=3, gamma=GAMMA),
                                    gamma=GAMMA))
    three = by_origin(merged)
    assert three.keys() == one.keys() and len(three) == 22
    for key, g in three.items():
        assert g == pytest.approx(one[key], rel=1e-6), key
    assert any((s.nsteps == 3).any() for s in merged) and any((s.nsteps < 3).any() for s in merged)


def test_discounted_returns_by_pointer_jumping_match_a_loop():
    torch.manual_seed(0)
    rewards = torch.randn(1000, dtype=torch.float64)
    successors = torch.arange(1, 1001)
    successors[[99, 599, 999]] = 1000  # three episodes: 0-99, 100-599, 600-999
    discounts = torch.full((1000,), 0.99, dtype=torch.float64)
    discounts[[99, 599, 999]] = 0.0
    expected = torch.cat([torch.tensor(reference_returns(rewards[a:b].tolist(), 0.99), dtype=torch.float64)
                          for a, b in ((0, 100), (100, 600), (600, 1000))])
    assert torch.allclose(discounted_returns(rewards, discounts, successors), expected, rtol=1e-12, atol=1e-12)


def test_missing_transitions_are_refused():
    stage = EpisodeReturns(NSkipper(IterableWrapper(vector_steps(EPISODES)), n=2), gamma=GAMMA)
    with pytest.raises(ValueError, match="missing transitions inside an episode"):
        collect(stage)
    bare = SimpleStep(state=torch.zeros(1, 1), action=torch.zeros(1), reward=torch.zeros(1),
                      next_state=torch.zeros(1, 1), terminated=torch.ones(1, dtype=torch.bool),
                      truncated=torch.zeros(1, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs the stepper's 'env_id'"):
        next(EpisodeReturns(IterableWrapper([bare])))


class FixedQ(nn.Module):
    "Q(s, ·) read from a table indexed by the (integer) state."

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, state):
        return self.table[state[:, 0].long()]


def sail_batch():
    return TrainBatch(SimpleStep(
        state=torch.tensor([[0.0], [0.0], [1.0], [1.0]]), action=torch.tensor([0, 1, 1, 0]),
        reward=torch.tensor([1.0, 1.0, 0.0, 2.0]), next_state=torch.tensor([[1.0], [2.0], [2.0], [1.0]]),
        terminated=torch.tensor([False, True, False, False]), truncated=torch.tensor([False, False, False, True]),
        mc_return=torch.tensor([6.0, 2.5, 0.0, 5.0])))


def test_sail_target_on_a_hand_made_batch():
    target = FixedQ([[2.0, 5.0], [3.0, 4.0], [7.0, 1.0]])
    out = next(SAILTarget(IterableWrapper([sail_batch()]), target, gamma=0.5, alpha=0.9, clip=1.0))
    # bootstrap: 0.5 * max Q̄(s') = [0.5·4, terminated, 0.5·7, 0.5·4 (truncated still bootstraps)]
    # bonus 0.9 · clip(max(Q̄(s, a), G) − max_b Q̄(s, b), 0, 1):
    #   row 0: max(2, 6) − 5 = 1 → 0.9;   row 1: max(5, 2.5) − 5 = 0 → 0
    #   row 2: max(4, 0) − 4 = 0 → 0;     row 3: max(3, 5) − 4 = 1 → 0.9
    assert torch.allclose(out.targets, torch.tensor([1 + 2 + 0.9, 1.0, 0 + 3.5, 2 + 2 + 0.9]))
    # the clip: c = 0.5 halves rows 0 and 3's bonus; G far above the values is capped at α·c
    batch = sail_batch()
    batch.step.mc_return[0] = 100.0
    out = next(SAILTarget(IterableWrapper([batch]), target, gamma=0.5, alpha=0.9, clip=0.5))
    assert torch.allclose(out.targets, torch.tensor([3 + 0.45, 1.0, 3.5, 4 + 0.45]))
    # double Q: the online network picks b' (here the argmin of Q̄), Q̄ values it
    online = FixedQ([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = next(SAILTarget(IterableWrapper([sail_batch()]), target, gamma=0.5, model=online))
    assert torch.allclose(out.targets, torch.tensor([1 + 1.5 + 0.9, 1.0, 0 + 0.5, 2 + 1.5 + 0.9]))
    # alpha = 0 is the plain DQN target
    out = next(SAILTarget(IterableWrapper([sail_batch()]), target, gamma=0.5, alpha=0.0))
    assert torch.allclose(out.targets, torch.tensor([3.0, 1.0, 3.5, 4.0]))


def test_sail_bad_input():
    target = FixedQ([[0.0, 0.0]])
    for kwargs, message in ((dict(alpha=1.5), "alpha must lie in \\[0, 1\\]"), (dict(alpha=-0.1), "alpha"),
                            (dict(clip=0.0), "clip must be a finite number > 0"), (dict(clip=float("inf")), "clip")):
        with pytest.raises(ValueError, match=message):
            SAILTarget(IterableWrapper([]), target, **kwargs)
    no_returns = TrainBatch(sail_batch().step.replace(mc_return=None))
    with pytest.raises(RuntimeError, match="put EpisodeReturns in the env pipeline"):
        next(SAILTarget(IterableWrapper([no_returns]), target))
    set_seed(0)
    model = DQN(4, 2, hidden=(16, 16))
    before = copy.deepcopy(model.state_dict())
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)
    for kwargs, message in ((dict(sail_alpha=2.0), "alpha"), (dict(sail_clip=-1.0), "clip")):
        with pytest.raises(ValueError, match=message):
            DQNLearner(model, [dl], sail=True, device="cpu", **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_collector_keeps_its_cadence_when_whole_episodes_arrive():
    "With carry_over, `updates` rounds per `train_every` env steps however many steps each item holds."
    # env 0 ends an episode every 7 vector steps, env 1 every 5: 280 vector steps, 560 env steps,
    # 88 items (steps that end an episode of either env)
    episodes = [[([1.0] * 7, "terminated")] * 40, [([1.0] * 5, "terminated")] * 56]
    rounds = {}
    for carry_over in (True, False):
        stage = EpisodeReturns(IterableWrapper(vector_steps(episodes)), gamma=GAMMA)
        collector = Collector(stage, ReplayBuffer(1000), bs=8, warmup=16, train_every=4, updates=2,
                              carry_over=carry_over)
        rounds[carry_over] = len(collect(collector))
        assert collector.env_steps == 560 and len(collector.buffer) == 560
    # warm-up ends at vector step 10 (5 + 7 + 5 transitions stored, 20 env steps): 2 rounds then,
    # and 2 more for each 4 env steps of the 540 that follow
    assert rounds[True] == 2 * (540 // 4 + 1)
    # without carry-over the env steps pulled past each 4 are dropped: items come every 1 to 5 vector
    # steps (2 to 10 env steps), so a collection pulls one or more items and earns 2 rounds
    ends = sorted({t for t in range(1, 281) if t % 5 == 0 or t % 7 == 0})
    sizes = [2 * (b - a) for a, b in zip([0] + ends, ends)]
    pulled, collections, i = sum(sizes[:3]), 1, 3  # the warm-up pulls 3 items
    while i < len(sizes):
        due = pulled + 4
        while pulled < due and i < len(sizes):
            pulled, i = pulled + sizes[i], i + 1
        collections += pulled >= due
    assert rounds[False] == 2 * collections < rounds[True] * 0.6


def sail_learner(seed=0, nsteps=3, **kwargs):
    set_seed(seed)
    model = DQN(4, 2, hidden=(32, 32))
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model, min_epsilon=0.05, max_steps=2000), seed=seed,
                     nsteps=nsteps, firstlast=nsteps > 1, num_envs=2)
    settings = dict(warmup=64, train_every=8, updates=4, batches=60, target_sync=25, nsteps=nsteps, bs=32, max_sz=500,
                    sail=True)
    settings.update(kwargs)
    return DQNLearner(model, [dl], **settings)


def test_sail_dqn_resumes_exactly(tmp_path):
    learner = sail_learner(seed=3)
    learner.fit(2)
    returns_stage = learner.collector.source
    assert isinstance(returns_stage, EpisodeReturns) and returns_stage._n > 0  # episodes in progress are held
    learner.save(tmp_path / "c.pt")
    start = learner.batch
    learner.fit(2)
    straight = learner.records.values("q_loss")[start:].clone()
    stored = learner.collector.buffer.storage.tensors["mc_return"].clone()
    resumed = sail_learner(seed=9)
    resumed.load(tmp_path / "c.pt")
    resumed.fit(2)
    assert len(straight) == 120 and torch.equal(resumed.records.values("q_loss")[start:], straight)
    assert torch.equal(resumed.collector.buffer.storage.tensors["mc_return"], stored)
    assert learner.env_steps == resumed.env_steps


def test_sail_replay_stores_returns_of_real_cartpole_episodes():
    learner = sail_learner(seed=1, nsteps=1, max_sz=5000)
    learner.fit(1)
    buffer = learner.collector.buffer
    s = {k: v[:len(buffer)] for k, v in buffer.storage.tensors.items()}
    # CartPole pays 1 per step: a transition that ends its episode (terminated) has G = 1, the one before 1 + γ
    ends = s["terminated"].nonzero().flatten()
    assert len(ends) > 5 and torch.allclose(s["mc_return"][ends], torch.ones(len(ends)))
    assert (s["mc_return"] >= 1).all() and (s["mc_return"] <= 1 / (1 - 0.99)).all()


def test_sail_dqn_learns_cartpole_within_50k_steps():
    "rl-zoo's tuned CartPole DQN with SAIL's target (α = 0.9, c = 1)."
    set_seed(0)
    steps = 50_000
    model = DQN(4, 2, hidden=(256, 256))
    agent = DQNAgent(model, min_epsilon=0.04, max_epsilon=1.0, max_steps=int(0.16 * steps))
    dl = GymDataPipe(["CartPole-v1"], agent=agent, seed=0, n=steps)
    learner = DQNLearner(model, [dl], lr=2.3e-3, bs=64, max_sz=100_000, warmup=1000, train_every=256, updates=128,
                         gamma=0.99, target_sync=128, batches=1280, sail=True)
    learner.fit(-(-learner.collector.rounds_within(steps) // 1280))
    assert learner.env_steps <= steps
    result = learner.validate(10)
    assert result["mean"] >= 195, result


def test_cli_sail_switch(tmp_path, capsys):
    from fastrl_lite.cli import main as cli_main
    out = tmp_path / "run"
    cli_main(["train", "dqn", "--sail", "--steps", "1500", "--seed", "2", "--out", str(out), "--eval-episodes", "1"])
    config = json.loads((out / "config.json").read_text())
    assert config["hp"]["sail"] is True and config["hp"]["prioritized"] is False
    stages = torch.load(out / "checkpoint.pt", weights_only=False)["meta"]["stages"]
    assert "SAILTarget" in stages and "EpisodeReturns" in stages and "QTarget" not in stages
    with pytest.raises(SystemExit):
        cli_main(["train", "td3", "--sail", "--steps", "10", "--out", str(tmp_path / "td3")])
    assert "--sail is SAIL-DQN's switch" in capsys.readouterr().err and not (tmp_path / "td3").exists()
