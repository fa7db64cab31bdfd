"""The framework's seams, exactly: open step records and per-field rules, env steps counted from the
data, the replay's storage/writer/sampler split, the Update stage, the fused Adam fast path, bad
input refused before anything changes, and actions kept in the actor's unit."""
import copy
import math
import pickle
import sys
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torchdata.nodes import IterableWrapper

import fastrl_lite.core as core
from fastrl_lite import (AgentBase, AgentHead, ActionClip, Collector, ExperienceReplay, GymDataPipe, GymStepper,
                         LossCollector, MinibatchSampler, NStepper, Pipe, Records, ReplayBuffer, SimpleModelRunner,
                         SimpleStep, SoftTargetUpdater, StepFieldSelector, TargetModelUpdater, TrainBatch,
                         UniformSampler, Update, evaluating, find_pipe, find_pipes, make_vec_env, register_field,
                         set_seed)
from fastrl_lite.algos.ddpg import Actor, Critic, DDPGAgent, DDPGLearner, GaussianNoise
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner, QLoss, QTarget
from fastrl_lite.core import FieldSpec, env_steps_of, field_spec, replay_fields
from fastrl_lite.learner import CheckpointError, Learner, fused_adam

sys.path.insert(0, str(Path(__file__).parent))
from test_framework import numbered, steps_from  # noqa: E402


# ---------------------------------------------------------------- helpers
@pytest.fixture
def register(monkeypatch):
    """`register_field` for the length of one test: the name is taken out of FIELD_SPECS afterwards."""
    def reg(name, **rules):
        monkeypatch.setitem(core.FIELD_SPECS, name, FieldSpec())
        return register_field(name, **rules)
    return reg


def same(a, b) -> bool:
    "Deep equality of nested state: tensors and arrays element for element, NaN equal to NaN."
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bytes):  # pickled envs: unpickled and pickled again, equal states give equal bytes
        return isinstance(b, bytes) and pickle.dumps(pickle.loads(a)) == pickle.dumps(pickle.loads(b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def weights(*models):
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]


def same_weights(before, *models):
    return all(same(b, {k: v.detach() for k, v in m.state_dict().items()}) for b, m in zip(before, models))


def small_dqn(nsteps=3, max_sz=500, seed=0, batches=30, gamma=0.99, valid_n=None):
    "A small DQN on two CartPoles with `nsteps`-step transitions (the env pipeline and the learner agree)."
    set_seed(seed)
    model = DQN(4, 2, hidden=(32, 32))
    agent = DQNAgent(model, min_epsilon=0.05, max_steps=3000)
    dls = [GymDataPipe(["CartPole-v1"], agent=agent, seed=seed, nsteps=nsteps, firstlast=nsteps > 1, num_envs=2,
                       gamma=gamma)]
    if valid_n is not None:
        dls.append(GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), n=valid_n, seed=5))
    return DQNLearner(model, dls, warmup=64, train_every=8, updates=4, batches=batches, target_sync=25,
                      nsteps=nsteps, bs=32, max_sz=max_sz, gamma=gamma)


def cartpole_dqn_pipe(model, **kwargs):
    return GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0, **kwargs)


# ================================================================ 1. open records
def test_extra_field_survives_cat_index_to_and_replace():
    a = SimpleStep(state=torch.zeros(2, 3), reward=torch.tensor([1.0, 2.0]), log_prob=torch.tensor([-0.5, -1.5]))
    b = SimpleStep(state=torch.ones(1, 3), reward=torch.tensor([3.0]), log_prob=torch.tensor([-2.5]))
    a.env_steps, b.env_steps = 2, 1
    c = SimpleStep.cat([a, b])
    assert set(c.fields()) == {"state", "reward", "log_prob"}
    assert c.log_prob.tolist() == [-0.5, -1.5, -2.5] and c.env_steps == 3
    assert c[1:].log_prob.tolist() == [-1.5, -2.5]
    assert c[torch.tensor([True, False, True])].log_prob.tolist() == [-0.5, -2.5]
    moved = c.to("meta")
    assert moved.log_prob.device.type == "meta" and moved.log_prob.shape == (3,) and moved.env_steps == 3
    changed = c.replace(reward=torch.zeros(3))
    assert changed.log_prob is c.log_prob and changed.reward.tolist() == [0.0, 0.0, 0.0] and changed.env_steps == 3
    dropped = c.replace(log_prob=None)
    assert set(dropped.fields()) == {"state", "reward"} and set(c.fields()) == {"state", "reward", "log_prob"}
    later = SimpleStep(state=torch.zeros(2, 3))
    later.value = torch.tensor([0.25, 0.75])  # set after construction, like any other field
    assert later.fields()["value"].tolist() == [0.25, 0.75] and len(later) == 2
    with pytest.raises(ValueError, match="same fields"):
        SimpleStep.cat([a, SimpleStep(state=torch.ones(1, 3), reward=torch.tensor([3.0]))])
    a.env_steps, b.env_steps = 2, None
    assert SimpleStep.cat([a, b]).env_steps is None


@pytest.mark.parametrize("name", ["fields", "to", "replace", "cat", "done", "_secret"])
def test_reserved_names_are_refused_as_fields(name):
    with pytest.raises(TypeError, match=f"{name!r} cannot be a SimpleStep field"):
        SimpleStep(state=torch.zeros(1, 2), **{name: torch.zeros(1)})


def test_a_field_given_by_position_and_by_name_is_refused():
    with pytest.raises(TypeError, match="SimpleStep got field 'state' twice"):
        SimpleStep(torch.zeros(1), state=torch.zeros(1))


def test_register_field_validates_its_rule_and_changes_nothing_when_refused():
    before = dict(core.FIELD_SPECS)
    with pytest.raises(ValueError, match=r"nstep must be one of \('first', 'last', 'discounted_sum'\), got 'sum'"):
        register_field("seams_refused", nstep="sum")
    with pytest.raises(ValueError, match="'reward' is a core SimpleStep field; its rules are fixed"):
        register_field("reward", nstep="first")
    for name in ("cat", "_hidden", "not valid", "2nd"):
        with pytest.raises(ValueError, match="cannot be a SimpleStep field"):
            register_field(name)
    assert core.FIELD_SPECS == before
    assert field_spec("reward") == FieldSpec("discounted_sum", True)


def test_register_field_sets_the_rules_read_downstream(register):
    spec = register("seams_value", nstep="last", replay=False)
    assert spec == FieldSpec("last", False) and field_spec("seams_value") is spec
    assert field_spec("seams_never_registered") == FieldSpec("first", True)
    assert replay_fields(["state", "seams_value", "env_id", "log_prob", "reward"]) == ("state", "log_prob", "reward")


class LogProbHead(Pipe):
    "Greedy actions from logits, returned with their log-probabilities as a dict."

    def next(self):
        logits = next(self.source)
        action = logits.argmax(-1)
        return {"action": action, "log_prob": torch.log_softmax(logits, -1).gather(-1, action[:, None]).squeeze(-1)}


def log_prob_agent(model):
    return AgentHead(LogProbHead(SimpleModelRunner(StepFieldSelector(AgentBase(model)), model)), model=model)


def expected_log_prob(model, state, action):
    with torch.no_grad():
        return torch.log_softmax(model(state), -1).gather(-1, action[:, None].long()).squeeze(-1)


def test_agent_extras_become_fields_of_the_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    stepper = GymStepper(make_vec_env("CartPole-v1", num_envs=2), log_prob_agent(model), seed=0)
    for _ in range(3):
        step = next(stepper)
        assert set(step.fields()) == {"state", "action", "reward", "next_state", "terminated", "truncated", "env_id",
                                      "episode_n", "step_n", "log_prob"}
        with torch.no_grad():
            assert torch.equal(step.action, model(step.state).argmax(-1))
        assert torch.equal(step.log_prob, expected_log_prob(model, step.state, step.action))
    # through n-step merging the log-prob stays the one of the action taken in the window's first state
    pipe = GymDataPipe(["CartPole-v1"], agent=log_prob_agent(model), seed=0, nsteps=3, firstlast=True, num_envs=2)
    out = SimpleStep.cat([next(pipe) for _ in range(5)])
    assert out.nsteps.max() == 3 and torch.equal(out.log_prob, expected_log_prob(model, out.state, out.action))


def test_an_agent_dict_without_actions_is_refused():
    model = nn.Linear(4, 2)

    class NoAction(Pipe):
        def next(self):
            return {"act": next(self.source).argmax(-1)}
    agent = AgentHead(NoAction(SimpleModelRunner(StepFieldSelector(AgentBase(model)), model)), model=model)
    stepper = GymStepper(make_vec_env("CartPole-v1"), agent, seed=0)
    with pytest.raises(ValueError, match=r"must put its actions under 'action'; got \['act'\]"):
        next(stepper)
    assert stepper.env_steps == 0


def test_nstepper_merges_each_field_by_its_rule(register):
    register("seams_bonus", nstep="discounted_sum")
    register("seams_mark", nstep="last")
    rows = [[(1, False, False), (1, False, False)]] * 4  # two envs, four steps, no episode ends
    steps = [s.replace(tag=torch.tensor([100 * t, 100 * t + 1]),  # never registered: "first"
                       seams_bonus=torch.tensor([2.0 ** t, 3 * 2.0 ** t]),
                       seams_mark=torch.tensor([t, t]))
             for t, s in enumerate(steps_from(rows))]
    nstepper = NStepper(IterableWrapper(steps), n=3, gamma=0.5)
    outs = list(nstepper)
    out = SimpleStep.cat(outs)
    # windows (t=0..2) then (t=1..3), env 0 before env 1
    assert out.tag.tolist() == [0, 1, 100, 101] and out.tag.dtype == torch.long
    assert out.seams_bonus.tolist() == [1 + 0.5 * 2 + 0.25 * 4, 3 * (1 + 0.5 * 2 + 0.25 * 4),
                                        2 + 0.5 * 4 + 0.25 * 8, 3 * (2 + 0.5 * 4 + 0.25 * 8)]
    assert out.seams_mark.tolist() == [2, 2, 3, 3]
    assert out.reward.tolist() == [1.75] * 4 and out.nsteps.tolist() == [3] * 4
    assert out.state[:, 0].tolist() == [0.0, 1.0, 10.0, 11.0]
    assert out.next_state[:, 0].tolist() == [30.0, 31.0, 40.0, 41.0]
    assert [o.env_steps for o in outs] == [6, 2]  # the steps pulled to make each output


def test_replay_stores_extras_by_default_but_not_fields_registered_without_replay(register):
    register("seams_scratch", replay=False)
    step = numbered(4).replace(log_prob=torch.tensor([-1.0, -2.0, -3.0, -4.0]), seams_scratch=torch.ones(4, 7))
    buffer = ReplayBuffer(8)
    buffer.extend(step)
    assert set(buffer.storage.tensors) == {"state", "reward", "log_prob"}
    torch.manual_seed(0)
    batch = buffer.sample(16)
    assert torch.equal(batch.step.log_prob, -(batch.indices.float() + 1))
    assert "seams_scratch" not in batch.step.fields()


def test_a_replay_told_which_fields_to_keep_keeps_them(register):
    register("seams_scratch", replay=False)
    step = numbered(4).replace(log_prob=torch.tensor([-1.0, -2.0, -3.0, -4.0]), seams_scratch=torch.ones(4, 7))
    chosen = ReplayBuffer(8, fields=("state", "seams_scratch"))  # named fields are kept, replay=False or not
    chosen.extend(step)
    assert set(chosen.storage.tensors) == {"state", "seams_scratch"}
    assert torch.equal(chosen.storage.tensors["seams_scratch"][:4], torch.ones(4, 7))
    chosen.extend(step)
    assert len(chosen) == 8 and chosen.writer.pointer == 0
    counters = ReplayBuffer(8, fields=("reward", "env_id"))  # a core field left out by default, asked for
    counters.extend(step.replace(env_id=torch.arange(4)))
    counters.extend(step.replace(env_id=torch.arange(4, 8)))
    assert counters.storage.tensors["env_id"].tolist() == list(range(8))


# ================================================================ 2. env steps counted from the data
def test_stepper_steps_carry_num_envs_env_steps():
    stepper = GymStepper(make_vec_env("CartPole-v1", num_envs=3), seed=0)
    steps = [next(stepper) for _ in range(4)]
    assert [s.env_steps for s in steps] == [3, 3, 3, 3] and stepper.env_steps == 12
    assert env_steps_of(steps) == 12 and SimpleStep.cat(steps).env_steps == 12
    assert env_steps_of(SimpleStep(reward=torch.zeros(5))) == 5  # no stepper count: one per transition


def test_nstepper_outputs_carry_the_env_steps_they_consumed():
    stepper = GymStepper(make_vec_env("CartPole-v1", num_envs=2), seed=0)
    nstepper = NStepper(stepper, n=3, gamma=0.99)
    outs = [next(nstepper) for _ in range(60)]
    assert outs[0].env_steps == 6 and len(outs[0]) == 2  # the first windows close after 3 vector steps
    assert sum(o.env_steps for o in outs) == stepper.env_steps - nstepper._pending and nstepper._pending == 0
    assert any(o.done.any() for o in outs)  # episodes ended on the way
    # every env step opened one window; each closed window is one transition out
    assert sum(len(o) for o in outs) == stepper.env_steps - int(nstepper._open.sum())


def test_collector_counts_the_env_steps_the_stepper_ran():
    pipe = GymDataPipe(["CartPole-v1"], num_envs=2, nsteps=3, firstlast=True, seed=0)
    stepper = find_pipe(pipe, GymStepper)
    collector = Collector(pipe, ReplayBuffer(1000), bs=8, warmup=20, train_every=5, updates=2)
    counts = []
    for _ in range(40):
        next(collector)
        counts.append(collector.env_steps)
        assert collector.env_steps == stepper.env_steps - pipe._pending
    assert pipe._pending == 0 and collector.env_steps == stepper.env_steps
    # the first windows close after 3 vector steps (6 env steps), then each pull is one vector step (2)
    # (with this seed no two episodes end on the same step); the warm-up stops at 20 transitions, then
    # every burst of 2 rounds collects >= 5 env steps: 6
    assert 6 <= counts[0] <= 6 + 2 * 9 and counts[0] % 2 == 0
    assert [b - a for a, b in zip(counts, counts[1:])] == [0, 6] * 19 + [0]
    assert collector.buffer.added == stepper.env_steps - int(pipe._open.sum())
    assert collector.env_steps > collector.buffer.added  # the open windows are counted, not stored


# ================================================================ 3. buffer seams
def test_extend_returns_the_rows_written_also_when_the_ring_wraps():
    buffer = ReplayBuffer(5)
    assert buffer.extend(numbered(3)).tolist() == [0, 1, 2]
    second = buffer.extend(numbered(4, start=3))
    assert second.tolist() == [3, 4, 0, 1]
    assert buffer.storage.tensors["reward"][second].tolist() == [3.0, 4.0, 5.0, 6.0]
    assert buffer.writer.pointer == 2 and len(buffer) == 5 and buffer.added == 7
    third = buffer.extend(numbered(12, start=7))  # more than the buffer holds: the newest 5 are kept
    assert third.tolist() == [2, 3, 4, 0, 1]
    assert buffer.storage.tensors["reward"][third].tolist() == [14.0, 15.0, 16.0, 17.0, 18.0]
    assert buffer.writer.pointer == 2 and buffer.added == 19


def test_sample_indices_name_the_stored_rows():
    torch.manual_seed(1)
    buffer = ReplayBuffer(6)
    buffer.extend(numbered(4))
    buffer.extend(numbered(5, start=10))  # wraps: rows hold 12, 13, 14, 3, 10, 11
    for _ in range(5):
        batch = buffer.sample(32)
        assert torch.equal(batch.step.reward, buffer.storage.tensors["reward"][batch.indices])
        assert torch.equal(batch.step.state, buffer.storage.tensors["state"][batch.indices])
    assert set(buffer.storage.tensors["reward"].tolist()) == {12.0, 13.0, 14.0, 3.0, 10.0, 11.0}


def test_uniform_sampler_refuses_priorities():
    buffer = ReplayBuffer(4, sampler=UniformSampler())
    buffer.extend(numbered(4))
    with pytest.raises(TypeError, match="UniformSampler keeps no priorities; use a prioritized sampler"):
        buffer.update_priority(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))


def test_minibatch_sampler_draws_every_row_once_per_epoch():
    torch.manual_seed(0)
    sampler = MinibatchSampler()
    buffer = ReplayBuffer(10, sampler=sampler)
    buffer.extend(numbered(10))
    epochs = []
    for epoch in range(2):
        batches = [buffer.sample(4) for _ in range(3)]
        assert [len(b.step) for b in batches] == [4, 4, 2] and sampler.epoch == epoch + 1
        order = torch.cat([b.indices for b in batches])
        assert sorted(order.tolist()) == list(range(10))
        assert sorted(torch.cat([b.step.reward for b in batches]).tolist()) == [float(i) for i in range(10)]
        epochs.append(order.tolist())
    assert epochs[0] != epochs[1]  # each epoch is a new permutation


def test_minibatch_sampler_state_continues_the_epoch_exactly():
    torch.manual_seed(2)
    buffer = ReplayBuffer(10, sampler=MinibatchSampler())
    buffer.extend(numbered(10))
    first = buffer.sample(4).indices
    state = copy.deepcopy(buffer.state_dict())
    rest = [buffer.sample(4).indices.tolist() for _ in range(2)]
    restored = ReplayBuffer(10, sampler=MinibatchSampler())
    restored.load_state_dict(state)
    torch.manual_seed(99)  # no draw is needed to finish the epoch: the permutation came with the state
    assert [restored.sample(4).indices.tolist() for _ in range(2)] == rest
    assert sorted(first.tolist() + sum(rest, [])) == list(range(10)) and restored.sampler.epoch == 1


def test_a_refused_step_leaves_the_buffer_unchanged():
    buffer = ReplayBuffer(5)
    buffer.extend(numbered(3))
    stored = {k: v.clone() for k, v in buffer.storage.tensors.items()}
    with pytest.raises(ValueError, match=r"Field 'state' has shape \(2, 2\), the buffer stores rows of \(1,\)"):
        buffer.extend(SimpleStep(state=torch.full((2, 2), 9.0), reward=torch.full((2,), 9.0)))
    with pytest.raises(ValueError, match=r"Steps changed fields: the buffer holds \['reward', 'state'\], "
                                         r"got \['state'\]"):
        buffer.extend(SimpleStep(state=torch.full((3, 1), 9.0)))
    with pytest.raises(ValueError, match="Field 'reward' has shape"):  # rows disagree on the batch size
        buffer.extend(SimpleStep(state=torch.full((3, 1), 9.0), reward=torch.full((2,), 9.0)))
    assert len(buffer) == 3 and buffer.writer.pointer == 3 and buffer.added == 3
    assert all(torch.equal(stored[k], v) for k, v in buffer.storage.tensors.items())
    assert buffer.extend(numbered(2, start=3)).tolist() == [3, 4]  # and it goes on where it was


# ================================================================ 4. the Update stage
class Losses:
    "TrainBatches whose losses regress separate networks on fixed data: one loss key per network."

    def __init__(self, **models):
        g = torch.Generator().manual_seed(0)
        self.models = models
        self.x = torch.randn(16, 3, generator=g)
        self.y = torch.randn(16, 2, generator=g)
        self.scale = 1.0

    def reset(self, initial_state=None):
        pass

    def __next__(self):
        batch = TrainBatch(SimpleStep(state=self.x))
        for key, model in self.models.items():
            batch.losses[key] = ((model(self.x) - self.y) ** 2).mean() * self.scale
        return batch


def two_nets(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 2), nn.Linear(3, 2)


def sgd(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr)


def test_every_steps_a_loss_only_on_its_rounds():
    critic, actor = two_nets()
    stage = Update(Losses(critic=critic, actor=actor), {"critic": sgd(critic), "actor": sgd(actor)},
                   every={"actor": 2})
    assert stage.every == {"critic": 1, "actor": 2}
    changed = []
    for _ in range(6):
        before = weights(critic, actor)
        next(stage)
        changed.append((not same_weights(before[:1], critic), not same_weights(before[1:], actor)))
    assert changed == [(True, False), (True, True), (True, False), (True, True), (True, False), (True, True)]
    assert stage.rounds == 6
    single = Update(Losses(q=critic), sgd(critic), every=3)  # one optimizer: the same cadence
    steps = []
    for _ in range(6):
        before = weights(critic)
        next(single)
        steps.append(not same_weights(before, critic))
    assert steps == [False, False, True, False, False, True]


def test_two_losses_in_one_update_each_step_their_own_optimizer():
    critic, actor = two_nets()
    ref_critic, ref_actor = copy.deepcopy(critic), copy.deepcopy(actor)
    stage = Update(Losses(critic=critic, actor=actor), {"critic": sgd(critic, 0.1), "actor": sgd(actor, 0.01)})
    ref_source = Losses(critic=ref_critic, actor=ref_actor)
    ref_opts = {"critic": sgd(ref_critic, 0.1), "actor": sgd(ref_actor, 0.01)}
    for _ in range(4):
        next(stage)
        batch = next(ref_source)
        for key, opt in ref_opts.items():
            opt.zero_grad()
            batch.losses[key].backward()
            opt.step()
    assert same_weights(weights(ref_critic, ref_actor), critic, actor)


def test_a_missing_loss_key_names_the_key_and_steps_nothing():
    critic, _ = two_nets()
    stage = Update(Losses(q=critic), {"critic": sgd(critic)})
    before = weights(critic)
    with pytest.raises(KeyError, match=r"Update wants loss 'critic', the batch has \['q'\]"):
        next(stage)
    assert same_weights(before, critic)
    single = Update(Losses(q=critic, pi=critic), sgd(critic))  # one optimizer, two losses: which is it for?
    with pytest.raises(ValueError, match=r"carries losses \['q', 'pi'\]"):
        next(single)
    assert same_weights(before, critic)


def test_a_scheduler_is_stepped_and_its_lr_gauged():
    critic, _ = two_nets()
    opt = sgd(critic, 0.1)
    stage = Update(Losses(q=critic), {"q": opt}, schedulers={"q": torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)})
    stage.records = Records()
    seen = []
    for _ in range(5):
        next(stage)
        seen.append(stage.records.gauges["q_lr"])
    assert seen == [0.1, 0.05, 0.05, 0.025, 0.025] and opt.param_groups[0]["lr"] == 0.025
    with pytest.raises(ValueError, match=r"schedulers names losses \['pi'\] this Update does not step"):
        Update(Losses(q=critic), {"q": opt}, schedulers={"pi": torch.optim.lr_scheduler.StepLR(opt, 2)})


@pytest.mark.parametrize("clip", [None, 0.05])
def test_a_grad_scaler_steps_like_the_unscaled_update(clip):
    model, _ = two_nets()
    reference = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu")
    stage = Update(Losses(q=model), sgd(model), clip_grad_norm=clip, scaler=scaler)
    ref_source, ref_opt = Losses(q=reference), sgd(reference)
    start = weights(model)
    for _ in range(3):
        next(stage)
        ref_opt.zero_grad()
        next(ref_source).losses["q"].backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(reference.parameters(), clip)
        ref_opt.step()
    assert not same_weights(start, model) and scaler.get_scale() == 65536.0
    # the scale is a power of two, so scaling and unscaling the gradients is exact
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    stage.source.scale = float("inf")  # overflowing gradients: the step is skipped and the scale halves
    before = weights(model)
    next(stage)
    assert same_weights(before, model) and scaler.get_scale() == 32768.0


def test_update_refuses_bad_settings():
    model, _ = two_nets()
    with pytest.raises(ValueError, match=r"every must be a whole number of rounds >= 1, got 0 for None"):
        Update(Losses(q=model), sgd(model), every=0)
    with pytest.raises(ValueError, match=r"every must be a whole number of rounds >= 1, got 1.5 for 'q'"):
        Update(Losses(q=model), {"q": sgd(model)}, every={"q": 1.5})
    with pytest.raises(ValueError, match=r"clip_grad_norm must be > 0 \(or None to not clip\), got -1 for 'q'"):
        Update(Losses(q=model), {"q": sgd(model)}, clip_grad_norm=-1)
    with pytest.raises(ValueError, match=r"every names losses \['actor'\] this Update does not step; it steps \['q'\]"):
        Update(Losses(q=model), {"q": sgd(model)}, every={"actor": 2})
    with pytest.raises(TypeError, match="optimizer for 'q' is a Linear, not a torch optimizer"):
        Update(Losses(q=model), {"q": model})


# ================================================================ 5. the fused Adam fast path
@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.AdamW])
def test_fused_adam_private_api_still_applies(opt_cls):
    advice = (f"torch {torch.__version__} changed the private API that fastrl_lite/learner/fused_adam.py calls "
              "directly, so the fused Adam fast path no longer applies to this torch: update "
              "fastrl_lite/learner/fused_adam.py (kernels, their arguments, the optimizer state it reads).")
    for name in ("_fused_adam_", "_fused_adamw_", "_foreach_norm", "_foreach_mul_"):
        assert hasattr(torch, name), f"torch.{name} is gone. {advice}"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    reference = copy.deepcopy(model)
    opt = opt_cls(model.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    ref_opt = opt_cls(reference.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    x, y = torch.randn(64, 4), torch.randn(64, 2)
    fast = []
    for _ in range(6):
        for net, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
        try:
            fast.append(fused_adam.step(opt, list(model.parameters()), 0.05))
        except (TypeError, RuntimeError) as error:  # a kernel whose arguments changed
            pytest.fail(f"fused_adam.step failed with {type(error).__name__}: {error}. {advice}")
        nn.utils.clip_grad_norm_(reference.parameters(), 0.05, foreach=True)
        ref_opt.step()
    assert fast == [False] + [True] * 5 and fused_adam.uses_fast_path(opt), \
        f"fused_adam.step took opt.step() instead of its direct kernel call. {advice}"
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), f"parameter {name} differs from clip_grad_norm_ + opt.step(). {advice}"
    assert all(int(opt.state[p]["step"]) == 6 for p in model.parameters()), advice
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg_sq"], ref_opt.state_dict()["state"][0]["exp_avg_sq"])


# ================================================================ 6. bad input: refused, nothing changed
def test_checkpoint_with_other_nsteps_is_refused_and_nothing_changes(tmp_path):
    writer = small_dqn(nsteps=2)
    writer.fit(1)
    path = writer.save(tmp_path / "two_step.pt")
    learner = small_dqn(nsteps=3, seed=1)
    learner.fit(1)
    before = copy.deepcopy(learner.state_dict())
    stored = len(learner.collector.buffer)
    with pytest.raises(CheckpointError, match=r"does not fit this learner: the checkpoint merges 2-step transitions, "
                                              r"this NStepper 3-step ones; build the pipeline with nsteps=2\. "
                                              r"Nothing was changed\."):
        learner.load(path)
    assert same(before, learner.state_dict())  # models, replay, windows, optimizer, RNGs, counters
    assert learner.batch == 30 and len(learner.collector.buffer) == stored > 0
    learner.fit(1)
    assert learner.batch == 60


def test_checkpoint_with_a_larger_replay_than_max_sz_is_refused_and_nothing_changes(tmp_path):
    writer = small_dqn(max_sz=500)
    writer.fit(1)
    held = len(writer.collector.buffer)
    assert held > 100
    path = writer.save(tmp_path / "big.pt")
    learner = small_dqn(max_sz=100, seed=1)
    learner.fit(1)
    before = copy.deepcopy(learner.state_dict())
    model, replay = weights(learner.model), {k: v.clone() for k, v in learner.collector.buffer.storage.tensors.items()}
    with pytest.raises(CheckpointError, match=rf"the checkpoint's buffer holds {held} transitions, more than this "
                                              rf"buffer's max_sz=100; build it with max_sz >= {held}\. "
                                              r"Nothing was changed"):
        learner.load(path)
    assert same(before, learner.state_dict())
    assert same_weights(model, learner.model) and learner.batch == 30 and learner.epoch == 1
    assert all(torch.equal(replay[k], v) for k, v in learner.collector.buffer.storage.tensors.items())
    assert small_dqn(max_sz=held).load(path).batch == 30  # with room enough it loads


def test_nan_reward_stops_stepping_with_a_clear_message():
    def poison(env):
        return gym.wrappers.TransformReward(env, lambda r: float("nan"))
    stepper = GymStepper(make_vec_env("CartPole-v1", num_envs=2, wrappers=[poison]), seed=0)
    with pytest.raises(FloatingPointError, match=r"NaN/inf reward at env step 0 \(envs \[0, 1\]\)"):
        next(stepper)
    assert stepper.env_steps == 0 and stepper.episodes == 0


def test_nan_reward_in_training_changes_nothing():
    def poison(env):
        return gym.wrappers.TransformReward(env, lambda r: float("nan"))
    set_seed(0)
    model = DQN(4, 2, hidden=(16,))
    stepper = GymStepper(make_vec_env("CartPole-v1", wrappers=[poison]), DQNAgent(model), seed=0)
    learner = DQNLearner(model, [stepper], warmup=8, bs=4, train_every=1, updates=1, batches=5)
    before = weights(model)
    with pytest.raises(FloatingPointError, match="reward"):
        learner.fit(1)
    assert same_weights(before, model) and learner.batch == 0 and learner.env_steps == 0
    assert len(learner.collector.buffer) == 0


@pytest.mark.parametrize("sizes", [(5, 2), (4, 3)])
def test_dqn_of_the_wrong_size_is_refused(sizes):
    model = DQN(*sizes, hidden=(8,))
    before = weights(model)
    with pytest.raises(ValueError, match=rf"DQN\(state_sz={sizes[0]}, action_sz={sizes[1]}\) does not fit this env: "
                                         r"its observations have 4 values and it has 2 actions; "
                                         r"build it as DQN\(4, 2\)"):
        DQNLearner(model, [cartpole_dqn_pipe(model)])
    assert same_weights(before, model) and model.training


def test_a_hand_built_q_network_of_the_wrong_size_is_refused_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    before = weights(model)
    with pytest.raises(ValueError, match=r"The Q-network returns \(3,\) values per observation; this env has 2 "
                                         r"actions, so it must return 2"):
        DQNLearner(model, [cartpole_dqn_pipe(model)])
    assert same_weights(before, model) and model.training  # the probe ran in eval mode: batch-norm stats untouched
    wrong_input = nn.Sequential(nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"does not take this env's observations \(shape \(4,\)\)"):
        DQNLearner(wrong_input, [cartpole_dqn_pipe(wrong_input)])
    fits = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert DQNLearner(fits, [cartpole_dqn_pipe(fits)], batches=1).model is fits


def test_an_agent_running_another_network_is_refused():
    model, other = DQN(4, 2, hidden=(8,)), DQN(4, 2, hidden=(8,))
    before = weights(model, other)
    with pytest.raises(ValueError, match=r"dls\[0\]'s agent runs a different network than the model given to "
                                         r"DQNLearner.*DQNAgent\(model\)"):
        DQNLearner(model, [cartpole_dqn_pipe(other)])
    assert same_weights(before, model, other)


def test_an_agent_without_a_model_is_refused():
    def constant(step):
        return torch.zeros(len(step), dtype=torch.long)
    model = DQN(4, 2, hidden=(8,))
    for given in (model, None):
        with pytest.raises(ValueError, match=r"DQNLearner: dls\[0\]'s agent \(function\) has no `model`, the network "
                                             r"it runs.*build it with DQNAgent\(model\)"):
            DQNLearner(given, [GymDataPipe(["CartPole-v1"], agent=constant, seed=0)])
    actor, critic = Actor(3, 1, 16, 16), Critic(3, 1, 16, 16)
    with pytest.raises(ValueError, match=r"DDPGLearner: dls\[0\]'s agent \(function\) has no `model`"
                                         r".*DDPGAgent\(actor\)"):
        DDPGLearner(actor, critic, [GymDataPipe(["Pendulum-v1"], agent=lambda step: torch.zeros(len(step), 1))])


def test_a_discount_outside_zero_one_is_refused():
    model = DQN(4, 2, hidden=(8,))
    with pytest.raises(ValueError, match=r"DQNLearner\(gamma=1.5\): the discount must lie in \[0, 1\]"):
        DQNLearner(model, [cartpole_dqn_pipe(model)], gamma=1.5)
    actor, critic = Actor(3, 1, 16, 16), Critic(3, 1, 16, 16)
    before = weights(actor, critic)
    with pytest.raises(ValueError, match=r"DDPGLearner\(gamma=-0.1\): the discount must lie in \[0, 1\]"):
        DDPGLearner(actor, critic, [GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=0)], gamma=-0.1)
    assert same_weights(before, actor, critic)


def test_fit_takes_whole_numbers_of_epochs_only():
    set_seed(0)
    model = DQN(4, 2, hidden=(16,))
    learner = DQNLearner(model, [cartpole_dqn_pipe(model)], warmup=16, bs=8, train_every=4, updates=2, batches=5)
    before = copy.deepcopy(learner.state_dict())
    for bad in (True, 0, 1.0, -1):
        with pytest.raises(ValueError, match=rf"fit needs a positive whole number of epochs, got {bad!r}"):
            learner.fit(bad)
    assert same(before, learner.state_dict()) and learner.history == []
    rows = learner.fit(np.int64(1))
    assert learner.batch == 5 and learner.epoch == 1 and len(rows) == 1 and rows[0]["batch"] == 5
    learner.fit(np.int32(2))
    assert learner.batch == 15 and learner.epoch == 3


def test_gamma_given_twice_must_agree():
    model = DQN(4, 2, hidden=(8,))
    pipe = cartpole_dqn_pipe(model, nsteps=3, firstlast=True, gamma=0.99)
    before = weights(model)
    with pytest.raises(ValueError, match=r"DQNLearner\(gamma=0.9\) but the env pipeline discounts its 3-step rewards "
                                         r"with gamma=0.99; pass the same gamma to both"):
        DQNLearner(model, [pipe], nsteps=3, gamma=0.9)
    assert same_weights(before, model) and find_pipe(pipe, NStepper).gamma == 0.99
    assert DQNLearner(model, [pipe], nsteps=3, gamma=0.99, batches=1).batches == 1


@pytest.mark.parametrize("cap", [400, 25])
def test_validate_on_a_capped_pipeline_runs_again_and_again(cap):
    learner = small_dqn(valid_n=cap)
    valid = find_pipe(learner.dls[1], GymStepper)
    runs, ran = [], [0]
    for _ in range(3):
        runs.append(learner.validate(episodes=2))
        ran.append(valid.env_steps)
    assert [len(r["returns"]) for r in runs] == [2, 2, 2]
    assert all(r["mean"] == float(np.mean(r["returns"])) for r in runs)
    assert [b - a for a, b in zip(ran, ran[1:])] == [sum(r["returns"]) for r in runs]  # CartPole: 1 per step
    assert max(b - a for a, b in zip(ran, ran[1:])) <= cap  # the cap holds per call...
    if cap == 25:
        assert valid.env_steps > cap  # ...not over the pipeline's life, or the 2nd call would have stopped
    assert valid.episodes == 6 and valid.records is None and learner.model.training
    assert learner.records.values("episode_return") == []  # validation returns stay out of training's records


def test_validate_past_the_cap_says_so_and_changes_nothing():
    learner = small_dqn(valid_n=10)
    learner.fit(1)
    before, records = weights(learner.model), copy.deepcopy(learner.records.lists)
    with pytest.raises(ValueError, match=r"The validation pipeline is capped at n=10 env steps, in which [01] of 2 "
                                         r"episodes finished; build it with a larger n \(or none\)"):
        learner.validate(episodes=2)
    assert same_weights(before, learner.model) and learner.model.training and learner.batch == 30
    assert learner.records.lists == records and find_pipe(learner.dls[1], GymStepper).records is None


def test_ddpg_refuses_an_agent_that_does_not_scale_actions_onto_the_bounds():
    actor, critic = Actor(3, 1, 16, 16), Critic(3, 1, 16, 16)
    pipe = ActionClip(SimpleModelRunner(StepFieldSelector(AgentBase(actor)), actor), -1, 1)
    agent = AgentHead(pipe, model=actor)  # no to_env: the env would get [-1, 1] where it takes [-2, 2]
    before = weights(actor, critic)
    with pytest.raises(ValueError, match=r"bounds are low=\[-2.\], high=\[2.\], and dls\[0\]'s agent does not scale "
                                         r"them: build it with DDPGAgent\(actor\), or give your AgentHead "
                                         r"to_env=ActionScaler\(\)"):
        DDPGLearner(actor, critic, [GymDataPipe(["Pendulum-v1"], agent=agent, seed=0)])
    assert same_weights(before, actor, critic)


# ================================================================ 7. actions in one unit
class Bandit(gym.Env):
    """One step per episode: the observation is always [0], the reward -(a - 3)² for the action a the
    env receives, so the best action is 3, inside bounds [0, 5] that are not symmetric about 0."""
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(0, 5, (1,), np.float32)

    def __init__(self):
        self.received = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(np.asarray(action).reshape(-1)[0])
        self.received.append(a)
        return np.zeros(1, np.float32), -(a - 3.0) ** 2, True, False, {}


def bandit_ddpg(rounds, max_sz=4096, seed=0):
    set_seed(seed)
    env = gym.vector.SyncVectorEnv([lambda: Bandit()], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    actor, critic = Actor(1, 1, 64, 64), Critic(1, 1, 64, 64)
    agent = DDPGAgent(actor, exploration=partial(GaussianNoise, sigma=0.3))
    stepper = GymStepper(env, agent, seed=0)
    learner = DDPGLearner(actor, critic, [stepper], gamma=0.99, bs=64, warmup=256, batches=rounds, actor_lr=1e-3,
                          critic_lr=1e-3, tau=0.01, max_sz=max_sz)
    return learner, stepper, agent, actor, env.envs[0]


def greedy_env_action(agent, actor, stepper) -> float:
    with evaluating(actor):
        return float(stepper.to_env(agent(SimpleStep(state=torch.zeros(1, 1)))))


def test_ddpg_learns_the_best_action_of_a_bandit_with_asymmetric_bounds():
    learner, stepper, agent, actor, bandit = bandit_ddpg(rounds=2000)
    untrained = greedy_env_action(agent, actor, stepper)
    assert abs(untrained - 2.5) < 0.05  # u = tanh(≈ 0.01): the middle of [0, 5], 0.5 from the best action
    learner.fit(1)
    assert abs(greedy_env_action(agent, actor, stepper) - 3.0) < 0.3
    with evaluating(actor):  # and the env itself receives it
        stepper.step()
    assert abs(bandit.received[-1] - 3.0) < 0.3


def test_replay_keeps_actor_units_while_the_env_gets_its_bounds():
    learner, stepper, agent, actor, bandit = bandit_ddpg(rounds=300, max_sz=1024)
    learner.fit(1)
    buffer = learner.collector.buffer
    n = len(buffer)
    assert n == buffer.added == len(bandit.received) == learner.env_steps  # no wrap: row i is env step i
    stored = buffer.storage.tensors["action"][:n, 0]
    received = torch.tensor(bandit.received, dtype=torch.float32)
    assert stored.min() >= -1 and stored.max() <= 1 and (stored < 0).any()
    assert received.min() >= 0 and received.max() <= 5 and (received > 1).any()
    assert torch.equal(received, 0.0 + (stored + 1) * 2.5)  # a = low + (u + 1)(high - low)/2, u as stored
    rewards = buffer.storage.tensors["reward"][:n]
    # rewarded for the action the env got
    assert torch.allclose(rewards.double(), -(received.double() - 3) ** 2, rtol=0, atol=1e-5)


# stages composed by hand: what the update stage and the learner refuse or keep -------------------------

def test_one_optimizer_under_two_loss_keys_or_overlapping_ones_are_refused():
    critic, actor = two_nets()
    opt = sgd(critic)
    with pytest.raises(ValueError, match="losses 'q' and 'pi' step the same parameters"):
        Update(Losses(q=critic, pi=critic), {"q": opt, "pi": opt})
    both = torch.optim.SGD(list(critic.parameters()) + list(actor.parameters()), lr=0.1)
    with pytest.raises(ValueError, match="losses 'q' and 'pi' step the same parameters"):
        Update(Losses(q=critic, pi=actor), {"q": both, "pi": sgd(actor)})


def test_parameters_added_to_an_optimizer_after_the_stage_is_built_are_stepped():
    critic, extra = two_nets()
    opt = sgd(critic, lr=0.0)  # nothing moves, so every round's gradient is the same
    stage = Update(Losses(q=lambda x: critic(x) + extra(x)), {"q": opt})
    next(stage)
    opt.add_param_group({"params": list(extra.parameters())})
    grads = []
    for _ in range(3):
        next(stage)
        grads.append(extra.weight.grad.clone())
    # the added parameters' gradients are cleared every round with the others, not summed round after round
    assert torch.equal(grads[0], grads[2])


def test_update_settings_that_cannot_work_are_refused_with_the_fix():
    critic, _ = two_nets()
    opt = sgd(critic)
    with pytest.raises(ValueError, match="ReduceLROnPlateau.*StepLR"):
        Update(Losses(q=critic), {"q": opt}, schedulers={"q": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)})
    with pytest.raises(ValueError, match=r"Update\(pipe, opt\) steps one optimizer.*Update\(pipe, \{'q': opt\}\)"):
        Update(Losses(q=critic), opt, schedulers={"q": torch.optim.lr_scheduler.StepLR(opt, 2)})
    stage = Update(Losses(q=critic), opt, schedulers=torch.optim.lr_scheduler.StepLR(opt, 2))
    stage.records = Records()
    next(stage)
    assert stage.records.gauges == {"lr": 0.1}  # not "None_lr"

    class Vector:
        def reset(self, initial_state=None):
            pass

        def __next__(self):
            batch = TrainBatch(SimpleStep(state=torch.zeros(1)))
            batch.losses["q"] = critic(torch.ones(4, 3)).pow(2).sum(-1)
            return batch
    with pytest.raises(ValueError, match=r"losses\['q'\] has shape \[4\].*\.mean\(\)"):
        next(LossCollector(Vector()))


def test_a_learner_refuses_a_pipeline_whose_update_trains_a_module_it_does_not_hold():
    actor, critic, dls = ddpg_learner_parts()
    learner = DDPGLearner(actor, critic, dls, warmup=16, bs=8, batches=5)
    with pytest.raises(ValueError, match=r"optimizer of loss 'critic' steps parameters that none of the learner's "
                                         r"models \(model\) holds"):
        Learner(actor, learner.pipe)
    Learner({"actor": actor, "critic": critic}, learner.pipe)


def ddpg_learner_parts():
    set_seed(0)
    actor, critic = Actor(3, 1, 8, 8), Critic(3, 1, 8, 8)
    return actor, critic, [GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=0)]


def test_two_learners_on_one_pipeline_each_record_while_they_fit():
    model = DQN(4, 2, hidden=(16,))
    dls = [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)]
    first = DQNLearner(model, dls, batches=10, warmup=16, bs=8, train_every=4, updates=1)
    Learner(model, first.pipe, collector=first.collector, stepper=first.stepper)
    row = first.fit(1)[0]
    assert "q_loss" in row and "epsilon" in row and len(first.episode_returns())


def test_target_networks_run_in_eval_mode():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    learner = DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)], warmup=16, bs=8,
                         train_every=4, updates=1, batches=5)
    target = find_pipe(learner.pipe, TargetModelUpdater).target_model
    learner.fit(1)
    assert model.training and not target.training
    actor, critic, dls = ddpg_learner_parts()
    learner = DDPGLearner(actor, critic, dls, warmup=16, bs=8, batches=5)
    assert all(not u.target_model.training for u in find_pipes(learner.pipe, SoftTargetUpdater))


def test_gauges_are_kept_in_a_checkpoint(tmp_path):
    model = DQN(4, 2, hidden=(16,))
    learner = DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)], warmup=16, bs=8,
                         train_every=4, updates=1, batches=5)
    learner.fit(1)
    learner.records.set("custom", 3.0)
    learner.save(tmp_path / "ckpt.pt")
    other = DQN(4, 2, hidden=(16,))
    resumed = DQNLearner(other, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(other), seed=0)], warmup=16, bs=8,
                         train_every=4, updates=1, batches=5).load(tmp_path / "ckpt.pt")
    assert resumed.records.gauges == learner.records.gauges and resumed.records.gauges["custom"] == 3.0


def test_cycling_a_source_that_stays_exhausted_is_an_error_not_a_hang():
    cycled = GymDataPipe(["CartPole-v1"], n=3, seed=0).cycle()
    with pytest.raises(ValueError, match="yields nothing after a restart"):
        for _ in range(5):
            next(cycled)


def test_a_nan_in_a_stages_own_figure_is_reported_not_refused():
    class MeanOfNone(Pipe):
        def next(self):
            batch = next(self.source)
            self.record("terminal_target", batch.targets[batch.step.terminated & False].mean())
            return batch
    model = DQN(4, 2, hidden=(16,))
    learner = DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)], warmup=16, bs=8,
                         train_every=4, updates=1, batches=5)
    target_stage = find_pipe(learner.pipe, QTarget)
    loss_stage = find_pipe(learner.pipe, QLoss)
    loss_stage.source = MeanOfNone(target_stage)
    loss_stage.source.records = learner.records
    row = learner.fit(1)[0]
    assert math.isnan(row["terminal_target"]) and math.isfinite(row["q_loss"])


def test_prioritized_replay_needs_a_loss_of_each_sample():
    model = DQN(4, 2, hidden=(16,))
    with pytest.raises(ValueError, match="reduction='none'"):
        DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)], prioritized=True,
                   loss_func=lambda q, y: ((q - y) ** 2).mean())


def test_a_validation_pipeline_of_the_training_envs_is_refused_and_best_models_go_into_new_folders(tmp_path):
    from fastrl_lite.loggers import plot_returns
    model = DQN(4, 2, hidden=(16,))
    train = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)
    learner = DQNLearner(model, [train, train], warmup=16, bs=8, train_every=4, updates=1, batches=5)
    with pytest.raises(ValueError, match="dls\\[1\\], the validation pipeline, steps the training envs"):
        learner.validate(1)
    learner = DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=1)], warmup=16, bs=8,
                         train_every=4, updates=1, batches=5)
    learner.fit(2, eval_every=20, eval_episodes=1, best_model_path=tmp_path / "new" / "best.pt")
    assert (tmp_path / "new" / "best.pt").exists()
    plot_returns(learner.episode_returns(), tmp_path / "pictures" / "returns.png")
    assert (tmp_path / "pictures" / "returns.png").exists()


def test_a_replay_that_would_drop_the_nsteps_of_n_step_transitions_is_refused():
    replay = ExperienceReplay(GymDataPipe(["CartPole-v1"], nsteps=3, firstlast=True, seed=0), bs=4,
                              fields=["state", "action", "reward", "next_state", "terminated"])
    with pytest.raises(ValueError, match="without 'nsteps'.*Add 'nsteps' to fields"):
        for _ in range(10):
            next(replay)


def test_validating_on_a_validation_pipeline_plays_whole_episodes_from_the_same_starts():
    model = DQN(4, 2, hidden=(16,))
    valid = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=5, num_envs=4)
    learner = DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0), valid], warmup=16,
                         bs=8, train_every=4, updates=1, batches=5)
    first, again = learner.validate(2), learner.validate(2)
    assert first == again  # no episode is carried over from one call into the next


def test_a_td_target_stage_with_another_gamma_than_the_n_step_merging_upstream_is_refused():
    from fastrl_lite.algos.ddpg import CriticLossProcessor
    model = DQN(4, 2, hidden=(16,))
    merged = ExperienceReplay(GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), nsteps=3, firstlast=True,
                                          gamma=0.5, seed=0), bs=4)
    with pytest.raises(ValueError, match=r"QTarget\(gamma=0.99\) but the n-step merging upstream of it discounts "
                                         r"its rewards with gamma=0.5"):
        QTarget(merged, model)
    QTarget(merged, model, gamma=0.5)
    actor, critic, _ = ddpg_learner_parts()
    with pytest.raises(ValueError, match=r"CriticLossProcessor\(gamma=0.99\).*gamma=0.5"):
        CriticLossProcessor(ExperienceReplay(GymDataPipe(["Pendulum-v1"], nsteps=2, firstlast=True, gamma=0.5),
                                             bs=4), critic, actor)


class Lasting(gym.Env):
    "Episodes of `length` steps, reward 1 a step."
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length):
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 1.0, self.t >= self.length, False, {}


def test_a_validation_over_several_envs_takes_each_envs_share_of_the_episodes():
    model = DQN(1, 2, hidden=(8,))
    same_step = gym.vector.AutoresetMode.SAME_STEP
    train = GymStepper(gym.vector.SyncVectorEnv([lambda: Lasting(3)], autoreset_mode=same_step), DQNAgent(model),
                       seed=0)
    valid = GymStepper(gym.vector.SyncVectorEnv([lambda: Lasting(1), lambda: Lasting(5)], autoreset_mode=same_step),
                       DQNAgent(model), seed=1)
    learner = DQNLearner(model, [train, valid], warmup=16, bs=8, train_every=4, updates=1, batches=5)
    result = learner.validate(4)
    # two episodes of each env, not the first four to finish (all of the one-step env's)
    assert sorted(result["returns"]) == [1.0, 1.0, 5.0, 5.0] and result["mean"] == 3.0
