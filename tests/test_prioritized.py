"""Prioritized replay: the sum tree against NumPy, sampling frequencies, importance weights and β,
priorities landing on the drawn rows after the ring wraps, weighted losses, bad input, exact resume,
TD3 with a prioritized buffer, and PER-DQN learning CartPole."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torchdata.nodes import IterableWrapper

from fastrl_lite import GymDataPipe, GymStepper, SimpleStep, TrainBatch, evaluating, set_seed
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner, QLoss, QTarget
from fastrl_lite.algos.td3 import TD3Agent, TwinCritic, TwinCriticLoss
from fastrl_lite.learner import CheckpointError, Learner, LossCollector, SoftTargetUpdater, Update
from fastrl_lite.learner.actor_critic import ActorLossProcessor
from fastrl_lite.memory import (Collector, PrioritizedSampler, PriorityUpdater, ReplayBuffer, SumTree,
                                UniformSampler)
from fastrl_lite.nets import Actor
from bandit import bandit_env


def steps(rewards):
    "One-env transitions whose reward tells which one a stored row holds."
    r = torch.as_tensor(rewards, dtype=torch.float32)
    n = len(r)
    return SimpleStep(state=r.unsqueeze(-1), action=torch.zeros(n, dtype=torch.long), reward=r,
                      next_state=r.unsqueeze(-1), terminated=torch.zeros(n, dtype=torch.bool),
                      truncated=torch.zeros(n, dtype=torch.bool))


def per_buffer(max_sz, **kwargs):
    return ReplayBuffer(max_sz, sampler=PrioritizedSampler(**kwargs))


# -- the sum tree ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 70),
       updates=st.lists(st.lists(st.tuples(st.integers(0, 69), st.floats(0, 1e3, allow_nan=False)), min_size=1,
                                 max_size=40), min_size=1, max_size=8))
def test_sum_tree_sums_match_numpy_after_random_updates(capacity, updates):
    tree, reference = SumTree(capacity), np.zeros(capacity)
    for batch in updates:
        idx = np.array([i % capacity for i, _ in batch], dtype=np.int64)
        values = np.array([v for _, v in batch])
        tree.set(idx.copy(), values)
        for i, v in zip(idx, values):  # the reference, one leaf at a time: a repeated leaf keeps its last value
            reference[i] = v
        assert np.array_equal(tree.leaves, reference)
        assert tree.total == pytest.approx(reference.sum(), rel=1e-12, abs=1e-12)
        nodes, first = tree.nodes, tree.first_leaf
        assert np.array_equal(nodes[1:first], nodes[2:2 * first:2] + nodes[3:2 * first:2])
        # every subtree sums its leaves: the nodes at depth 1 split the leaves in two halves
        if first >= 2:
            padded = np.zeros(first)
            padded[:capacity] = reference
            assert nodes[2] == pytest.approx(padded[:first // 2].sum()) and \
                nodes[3] == pytest.approx(padded[first // 2:].sum())
    rebuilt = SumTree(capacity)
    rebuilt.leaves[:] = tree.leaves
    rebuilt.rebuild()
    assert np.array_equal(rebuilt.nodes, tree.nodes)  # bit for bit, whatever the order of the updates


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(0, 9), min_size=1, max_size=50), data=st.data())
def test_sum_tree_find_matches_the_cumulative_sum(values, data):
    if sum(values) == 0:
        values[0] = 1
    tree = SumTree(len(values))
    tree.set(np.arange(len(values)), np.array(values, dtype=np.float64))
    us = data.draw(st.lists(st.integers(0, 2 * sum(values) - 1), min_size=1, max_size=20))
    prefix = np.array(us, dtype=np.float64) / 2  # whole and half values: exact in float64
    found = tree.find(prefix)
    expected = np.searchsorted(np.cumsum(values), prefix, side="right")
    assert np.array_equal(found, expected)
    assert all(values[i] > 0 for i in found)  # a zero leaf is never drawn


def test_a_large_sum_tree_matches_numpy_below_and_within_its_top_levels():
    "20,000 leaves: 15 levels, the top 12 handled whole, the 3 below one indexed step at a time."
    rng = np.random.default_rng(0)
    tree, reference = SumTree(20_000), np.zeros(20_000)
    assert tree.depth == 15 and tree.top_depth == 12
    for _ in range(20):
        idx = rng.integers(0, 20_000, 256)
        values = rng.integers(0, 10, 256).astype(np.float64)
        tree.set(idx.copy(), values)
        for i, v in zip(idx, values):
            reference[i] = v
    assert np.array_equal(tree.leaves, reference) and tree.total == reference.sum()
    first = tree.first_leaf
    assert np.array_equal(tree.nodes[1:first], tree.nodes[2:2 * first:2] + tree.nodes[3:2 * first:2])
    prefix = rng.integers(0, 2 * int(reference.sum()), 1000) / 2
    assert np.array_equal(tree.find(prefix), np.searchsorted(np.cumsum(reference), prefix, side="right"))


# -- sampling ------------------------------------------------------------------------------------

def test_sampling_frequencies_are_proportional_to_priority():
    torch.manual_seed(0)
    buffer = per_buffer(8, alpha=0.5, beta0=0.4, eps=1e-6)
    buffer.extend(steps(range(5)))
    td = torch.tensor([0.0, 1.0, 4.0, 9.0, 16.0])
    buffer.update_priority(torch.arange(5), td)
    expected_p = (td.double() + 1e-6) ** 0.5
    expected_p = expected_p / expected_p.sum()
    counts = torch.zeros(5)
    for _ in range(400):
        batch = buffer.sample(64)
        counts += torch.bincount(batch.indices, minlength=8)[:5].float()
    assert counts.sum() == 400 * 64
    expected = expected_p * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.47, (counts, expected)  # chi-square with 4 degrees of freedom at p = 0.001
    # row 0 has priority eps^0.5 = 0.001: drawn about 0.0036 % of the time
    assert counts[0] <= 5


def test_importance_weights_and_beta_annealing():
    torch.manual_seed(0)
    sampler = PrioritizedSampler(alpha=1.0, beta0=0.2, eps=1e-6, beta_rounds=4)
    buffer = ReplayBuffer(4, sampler=sampler)
    buffer.extend(steps([0, 1, 2, 3]))
    td = torch.tensor([1.0, 2.0, 3.0, 4.0]) - 1e-6
    buffer.update_priority(torch.arange(4), td)
    priorities = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    probs = priorities / priorities.sum()
    betas = []
    for expected_beta in (0.2, 0.4, 0.6, 0.8, 1.0, 1.0):
        assert sampler.beta == pytest.approx(expected_beta)
        betas.append(sampler.beta)
        # stratified: one uniform draw u in each eighth of the total priority 10, the row whose
        # cumulative interval [0, 1), [1, 3), [3, 6), [6, 10) holds it
        rng = torch.get_rng_state()
        u = (torch.arange(8) + torch.rand(8, dtype=torch.float64)) * 10 / 8
        torch.set_rng_state(rng)
        batch = buffer.sample(8)
        assert torch.equal(batch.indices, torch.searchsorted(torch.tensor([1.0, 3.0, 6.0, 10.0]).double(), u,
                                                             right=True))
        w = (4 * probs[batch.indices]) ** -expected_beta
        assert torch.allclose(batch.weights.double(), w / w.max(), rtol=1e-6)
        assert batch.weights.dtype == torch.float32 and float(batch.weights.max()) == 1.0
    assert sampler.rounds == 6


def test_new_rows_enter_at_the_largest_priority_given_so_far():
    sampler = PrioritizedSampler(alpha=1.0, eps=0.5)
    buffer = ReplayBuffer(10, sampler=sampler)
    buffer.extend(steps([0, 1, 2]))
    assert np.array_equal(sampler.priorities(), [1.0, 1.0, 1.0] + [0.0] * 7)
    buffer.update_priority(torch.tensor([0, 1]), torch.tensor([5.5, 0.5]))
    assert sampler.max_priority == 6.0
    buffer.update_priority(torch.tensor([0]), torch.tensor([0.0]))
    assert sampler.max_priority == 6.0  # the largest ever given, not the largest still held
    for i in range(3, 6):  # one env step at a time: queued, entered before the next draw
        buffer.extend(steps([i]))
    assert np.array_equal(sampler.tree.leaves[3:6], [0.0, 0.0, 0.0])  # queued until needed
    buffer.sample(4)
    assert np.array_equal(sampler.tree.leaves[:6], [0.5, 1.0, 1.0, 6.0, 6.0, 6.0])
    assert sampler.tree.total == pytest.approx(20.5)


def test_priorities_land_on_the_drawn_rows_after_the_ring_wraps():
    torch.manual_seed(1)
    sampler = PrioritizedSampler(alpha=1.0, eps=1e-3)
    buffer = ReplayBuffer(5, sampler=sampler)
    assert buffer.extend(steps([0, 1, 2, 3, 4])).tolist() == [0, 1, 2, 3, 4]
    assert buffer.extend(steps([5, 6, 7])).tolist() == [0, 1, 2]  # the ring wrapped
    buffer.update_priority(torch.arange(5), torch.zeros(5))  # every row at 0.001
    buffer.update_priority(torch.tensor([1]), torch.tensor([100.0]))
    batch = buffer.sample(16)
    assert (batch.indices == 1).sum() >= 15 and float(batch.step.reward[batch.indices == 1][0]) == 6.0
    # a loss stage's TD errors flow back by index through the batch
    table = nn.Parameter(torch.zeros(10, 2))
    model = lambda s: table[s[:, 0].long()]  # noqa: E731  Q(s, ·) = 0, so δ = y = r
    pipe = QLoss(QTarget(IterableWrapper([batch]), target_model=model, gamma=0.0), model,
                 loss_func=nn.functional.mse_loss)
    out = next(PriorityUpdater(pipe, buffer))
    assert torch.equal(out.td_error, out.step.reward)
    rows = batch.indices.unique()
    reward_of_row = {int(i): float(buffer.storage.tensors["reward"][i]) for i in rows}
    for i in rows.tolist():
        assert sampler.tree.leaves[i] == pytest.approx(reward_of_row[i] + 1e-3)
    assert reward_of_row.get(1) == 6.0  # row 1 holds transition 6 (the second of the wrapped write)


def test_weighted_q_loss_and_td_errors_by_hand():
    table = nn.Parameter(torch.tensor([[1.0, 5.0], [0.0, 0.0]]))
    model = lambda s: table[s[:, 0].long()]  # noqa: E731
    step = SimpleStep(state=torch.zeros(3, 1), action=torch.tensor([0, 1, 0]), reward=torch.zeros(3),
                      next_state=torch.zeros(3, 1), terminated=torch.ones(3, dtype=torch.bool),
                      truncated=torch.zeros(3, dtype=torch.bool))
    batch = TrainBatch(step, targets=torch.tensor([3.0, 5.5, 1.0]), weights=torch.tensor([0.5, 1.0, 0.25]))
    out = next(QLoss(IterableWrapper([batch]), model, loss_func=nn.functional.mse_loss))
    # q = [1, 5, 1]; δ = [2, 0.5, 0]; loss = mean(w δ²) = (0.5·4 + 0.25 + 0) / 3
    assert torch.equal(out.td_error, torch.tensor([2.0, 0.5, 0.0]))
    assert float(out.losses["q"].detach()) == pytest.approx(2.25 / 3)
    unweighted = next(QLoss(IterableWrapper([TrainBatch(step, targets=batch.targets)]), model,
                            loss_func=nn.functional.mse_loss))
    assert unweighted.td_error is None and float(unweighted.losses["q"].detach()) == pytest.approx(4.25 / 3)


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=-0.1), "alpha must be a finite number >= 0"), (dict(alpha=float("nan")), "alpha must be"),
    (dict(beta0=1.5), "beta0 must lie in \\[0, 1\\]"), (dict(beta0=-0.1), "beta0 must lie in"),
    (dict(eps=0.0), "eps must be a small number > 0"), (dict(eps=-1e-6), "eps must be"),
    (dict(beta_rounds=0), "beta_rounds"), (dict(beta_rounds=2.5), "beta_rounds")])
def test_bad_hyper_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrioritizedSampler(**kwargs)


def test_dqn_learner_refuses_bad_per_settings_before_changing_anything():
    set_seed(0)
    model = DQN(4, 2, hidden=(16, 16))
    before = copy.deepcopy(model.state_dict())
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)
    for kwargs, message in ((dict(per_alpha=-1), "alpha"), (dict(per_beta0=2), "beta0"), (dict(per_eps=0), "eps")):
        with pytest.raises(ValueError, match=message):
            DQNLearner(model, [dl], prioritized=True, device="cpu", **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_priorities_are_refused_and_nothing_changes():
    sampler = PrioritizedSampler(alpha=0.6)
    buffer = ReplayBuffer(6, sampler=sampler)
    buffer.extend(steps([0, 1, 2, 3]))
    buffer.update_priority(torch.tensor([0, 1]), torch.tensor([2.0, 3.0]))
    nodes, max_priority = sampler.tree.nodes.copy(), sampler.max_priority
    buffer.extend(steps([4]))  # queued: a refused update must not enter it either
    cases = [
        (torch.tensor([0, 1]), torch.tensor([1.0]), "one priority per index"),
        (torch.tensor([0, 1]), torch.tensor([[1.0, 2.0]]), "one priority per index"),
        (torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]), "finite priorities >= 0"),
        (torch.tensor([0, 1]), torch.tensor([1.0, float("inf")]), "finite priorities >= 0"),
        (torch.tensor([0, 1]), torch.tensor([1.0, -0.5]), "finite priorities >= 0"),
        (torch.tensor([0, 6]), torch.tensor([1.0, 1.0]), "indices must lie in \\[0, 6\\)"),
        (torch.tensor([-1, 0]), torch.tensor([1.0, 1.0]), "indices must lie in"),
        (torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), "integer row indices"),
        (torch.tensor([0, 5]), torch.tensor([1.0, 1.0]), "rows \\[5\\] hold no transition"),
    ]
    for indices, priorities, message in cases:
        with pytest.raises(ValueError, match=message):
            buffer.update_priority(indices, priorities)
        if "hold no transition" not in message:  # checked before the queued write is entered
            assert np.array_equal(sampler.tree.nodes, nodes) and sampler.max_priority == max_priority
    assert sampler.tree.leaves[5] == 0 and sampler.max_priority == max_priority
    with pytest.raises(TypeError, match="sampler keeps priorities"):
        PriorityUpdater(IterableWrapper([]), ReplayBuffer(4))
    with pytest.raises(TypeError, match="keeps no priorities"):
        ReplayBuffer(4).update_priority(torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(RuntimeError, match="belongs to no buffer"):
        PrioritizedSampler().update_priority(torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sampler of its own"):
        ReplayBuffer(7, sampler=sampler)


def test_sampler_states_of_another_kind_are_refused_before_loading():
    per = per_buffer(6)
    per.extend(steps([0, 1, 2]))
    uniform = ReplayBuffer(6, sampler=UniformSampler())
    uniform.extend(steps([7, 8]))
    with pytest.raises(ValueError, match="sampled by priority"):
        uniform.load_state_dict(per.state_dict())
    assert len(uniform) == 2 and float(uniform.storage.tensors["reward"][0]) == 7.0
    nodes = per.sampler.tree.nodes.copy()
    with pytest.raises(ValueError, match="sampled uniformly"):
        per.load_state_dict(uniform.state_dict())
    with pytest.raises(ValueError, match="alpha=0.6"):
        per_buffer(6, alpha=0.7).load_state_dict(per.state_dict())
    assert len(per) == 3 and np.array_equal(per.sampler.tree.nodes, nodes)


# -- learners ------------------------------------------------------------------------------------

def per_learner(seed=0, **kwargs):
    set_seed(seed)
    model = DQN(4, 2, hidden=(32, 32))
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model, min_epsilon=0.05, max_steps=2000), seed=seed, nsteps=3,
                     firstlast=True, num_envs=2)
    settings = dict(warmup=64, train_every=8, updates=4, batches=60, target_sync=25, nsteps=3, bs=32, max_sz=200,
                    prioritized=True, per_beta_rounds=500)
    settings.update(kwargs)
    return DQNLearner(model, [dl], **settings)


def test_per_dqn_resumes_exactly(tmp_path):
    learner = per_learner(seed=3)
    learner.fit(2)  # 120 rounds with 2 x 3-step windows: the 200-row ring has wrapped
    assert learner.collector.buffer.added > 200
    learner.save(tmp_path / "c.pt")
    start = learner.batch
    learner.fit(2)
    straight = learner.records.values("q_loss")[start:].clone()
    sampler = learner.collector.buffer.sampler
    resumed = per_learner(seed=9)
    resumed.load(tmp_path / "c.pt")
    assert resumed.collector.buffer.sampler.rounds == start
    resumed.fit(2)
    assert len(straight) == 120 and torch.equal(resumed.records.values("q_loss")[start:], straight)
    other = resumed.collector.buffer.sampler
    assert np.array_equal(other.tree.nodes, sampler.tree.nodes) and other.max_priority == sampler.max_priority
    assert other.rounds == sampler.rounds == 240 and other.beta == sampler.beta == pytest.approx(0.4 + 0.6 * 0.48)
    uniform = per_learner(seed=3, prioritized=False)
    with pytest.raises(CheckpointError, match="another pipeline"):
        uniform.load(tmp_path / "c.pt")


def test_uniform_and_prioritized_runs_differ_and_the_loss_is_weighted():
    a, b = per_learner(prioritized=False), per_learner()
    a.fit(1)
    b.fit(1)
    assert not torch.equal(a.records.values("q_loss"), b.records.values("q_loss"))
    leaves = b.collector.buffer.sampler.tree.leaves[:len(b.collector.buffer)]
    assert len(np.unique(leaves)) > 50  # priorities were fed back, not left at the max


def test_td3_with_a_prioritized_buffer_learns_the_bandit():
    "TD3's stages with the prioritized sampler swapped in and a PriorityUpdater after the critic loss."
    set_seed(0)
    actor, critics = Actor(1, 1, 64, 64), TwinCritic.of(1, 1, 64, 64)
    env = bandit_env()
    stepper = GymStepper(env, TD3Agent(actor, noise_std=0.3), seed=0)
    buffer = ReplayBuffer(5000, sampler=PrioritizedSampler(alpha=0.6, beta0=0.4, beta_rounds=1500))
    t_critics, t_actor = copy.deepcopy(critics).requires_grad_(False), copy.deepcopy(actor).requires_grad_(False)
    collector = Collector(stepper, buffer, bs=64, warmup=256)
    pipe = TwinCriticLoss(collector, critics, t_critics, t_actor, gamma=0.99)
    pipe = PriorityUpdater(pipe, buffer)
    pipe = Update(pipe, {"critic": torch.optim.Adam(critics.parameters(), 1e-3)})
    pipe = ActorLossProcessor(pipe, critics.q1, actor, every=2)
    pipe = Update(pipe, {"actor": torch.optim.Adam(actor.parameters(), 1e-3)}, every=2)
    pipe = SoftTargetUpdater(pipe, critics, tau=0.01, target_sync=2, target_model=t_critics)
    pipe = SoftTargetUpdater(pipe, actor, tau=0.01, target_sync=2, target_model=t_actor)
    pipe = LossCollector(pipe)
    learner = Learner({"actor": actor, "critics": critics}, pipe, dls=[stepper], batches=1500, name="TD3",
                      collector=collector, stepper=stepper)
    learner.fit(1)
    with evaluating(actor):
        action = stepper.to_env(stepper.agent(SimpleStep(state=torch.zeros(1, 1))))
    assert abs(float(action) - 3.0) < 0.3, float(action)
    leaves = buffer.sampler.tree.leaves[:len(buffer)]
    assert buffer.sampler.rounds == 1500 and buffer.sampler.beta == 1.0
    assert leaves.min() > 0 and leaves.max() / leaves.min() > 10  # the priorities spread out


def test_td3_weighted_critic_loss_by_hand():
    class LinearQ(nn.Module):
        def __init__(self, ws, wa):
            super().__init__()
            self.ws, self.wa = nn.Parameter(torch.tensor(float(ws))), nn.Parameter(torch.tensor(float(wa)))

        def forward(self, state, action):
            return self.ws * state.sum(-1, keepdim=True) + self.wa * action.sum(-1, keepdim=True)

    critics = TwinCritic(LinearQ(1, 1), LinearQ(2, 0))
    step = SimpleStep(state=torch.tensor([[1.0], [2.0]]), action=torch.tensor([[1.0], [0.0]]),
                      reward=torch.zeros(2), next_state=torch.zeros(2, 1), terminated=torch.ones(2, dtype=torch.bool),
                      truncated=torch.zeros(2, dtype=torch.bool))
    batch = TrainBatch(step, weights=torch.tensor([1.0, 0.5]))
    stage = TwinCriticLoss(IterableWrapper([batch]), critics, critics, lambda s: torch.zeros(len(s), 1), gamma=0.9,
                           policy_noise=0.0)
    out = next(stage)
    # y = r = 0 (terminated); Q1 = [2, 2], Q2 = [2, 4]; loss = mean(w Q1²) + mean(w Q2²) = (4 + 2)/2 + (4 + 8)/2
    assert float(out.losses["critic"].detach()) == pytest.approx(3.0 + 6.0)
    assert torch.equal(out.td_error, torch.tensor([2.0, 3.0]))


def test_per_dqn_learns_cartpole_within_50k_steps():
    """rl-zoo's tuned CartPole DQN with prioritized replay (the paper's α = 0.6, β0 = 0.4, and its step
    size divided by 4: prioritized draws repeat the high-error transitions, so each step counts more)."""
    set_seed(0)
    steps_ = 50_000
    model = DQN(4, 2, hidden=(256, 256))
    agent = DQNAgent(model, min_epsilon=0.04, max_epsilon=1.0, max_steps=int(0.16 * steps_))
    dl = GymDataPipe(["CartPole-v1"], agent=agent, seed=0, n=steps_)
    learner = DQNLearner(model, [dl], lr=2.3e-3 / 4, bs=64, max_sz=100_000, warmup=1000, train_every=256,
                         updates=128, gamma=0.99, target_sync=128, batches=1280, prioritized=True,
                         per_beta_rounds=24_576)
    rounds = learner.collector.rounds_within(steps_)
    learner.fit(-(-rounds // 1280))
    assert learner.env_steps <= steps_
    result = learner.validate(10)
    assert result["mean"] >= 195, result
