"""Exact behaviour of each generic stage: data, env stepping, n-step, replay, agents, targets; the
learner's fit and validate, and its loggers."""
import copy
import csv
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torchdata.nodes import IterableWrapper

from fastrl_lite import (SimpleStep, TrainBatch, GymStepper, GymDataPipe, NStepper, NSkipper, ExperienceReplay,
                         StepBatcher, AgentBase, AgentHead, StepFieldSelector, SimpleModelRunner,
                         DiscreteEpsilonRandomSelect, TargetModelUpdater, SoftTargetUpdater, LossCollector,
                         find_pipes, find_pipe, pipe_to_device, make_vec_env, evaluating, Records, Pipe)
from fastrl_lite.envs import cap_episode_length, check_env_id


def steps_from(rows):
    """A source of vector steps for two envs from rows of (reward, terminated, truncated) pairs;
    state = 10*t + env so every transition is identifiable."""
    out = []
    for t, row in enumerate(rows):
        reward = torch.tensor([r for r, _, _ in row], dtype=torch.float32)
        out.append(SimpleStep(
            state=torch.tensor([[10.0 * t + e] for e in range(len(row))]),
            action=torch.tensor([t, t]),
            reward=reward,
            next_state=torch.tensor([[10.0 * (t + 1) + e] for e in range(len(row))]),
            terminated=torch.tensor([term for _, term, _ in row]),
            truncated=torch.tensor([trunc for _, _, trunc in row]),
            env_id=torch.arange(len(row)), episode_n=torch.zeros(len(row), dtype=torch.long),
            step_n=torch.full((len(row),), t + 1)))
    return IterableWrapper(out)


def drain(pipe):
    return SimpleStep.cat(list(pipe))


# ---------------------------------------------------------------- SimpleStep
def test_simple_step_cat_index_and_done():
    a = SimpleStep(state=torch.zeros(2, 3), reward=torch.ones(2), terminated=torch.tensor([True, False]),
                   truncated=torch.tensor([False, True]))
    b = SimpleStep(state=torch.ones(1, 3), reward=torch.zeros(1), terminated=torch.tensor([False]),
                   truncated=torch.tensor([False]))
    c = SimpleStep.cat([a, b])
    assert len(c) == 3 and c.state.shape == (3, 3)
    assert c.done.tolist() == [True, True, False]
    assert c[1:].reward.tolist() == [1.0, 0.0]
    assert set(c.fields()) == {"state", "reward", "terminated", "truncated"}


# ---------------------------------------------------------------- env stepping
def test_gym_stepper_counts_truncation_and_final_observation():
    env = make_vec_env("CartPole-v1", num_envs=2, max_episode_steps=5)
    stepper = GymStepper(env, agent=None, seed=3)
    steps = [next(stepper) for _ in range(12)]
    step_n = torch.stack([s.step_n for s in steps])
    assert step_n[:, 0].tolist() == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    fifth = steps[4]
    assert fifth.truncated.all() and not fifth.terminated.any()
    # SAME_STEP autoreset: next_state is the episode's true last observation, the next state the reset one
    assert not torch.equal(fifth.next_state, steps[5].state)
    assert torch.equal(steps[3].next_state, steps[4].state)
    assert steps[5].episode_n.tolist() == [1, 1] and steps[4].episode_n.tolist() == [0, 0]
    assert stepper.env_steps == 24 and stepper.episodes == 4
    assert steps[0].reward.dtype == torch.float32 and steps[0].env_id.tolist() == [0, 1]


def test_gym_stepper_terminated_kept_apart_from_truncated():
    stepper = GymStepper(make_vec_env("CartPole-v1"), agent=None, seed=0)
    ended = [s for s in (next(stepper) for _ in range(400)) if s.done.any()]
    assert ended and all(s.terminated.all() and not s.truncated.any() for s in ended)


def test_seeding_once_makes_episodes_differ_and_runs_repeat():
    def first_states(seed):
        stepper = GymStepper(make_vec_env("CartPole-v1", max_episode_steps=3), agent=None, seed=seed)
        steps = [next(stepper) for _ in range(9)]
        return torch.stack([steps[i].state[0] for i in (0, 3, 6)])
    a, b = first_states(7), first_states(7)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert not torch.equal(a, first_states(8))


def test_gym_stepper_n_caps_env_steps_and_async_flag():
    pipe = GymDataPipe(["CartPole-v1"], num_envs=2, n=10, seed=0, async_envs=True)
    steps = list(pipe)
    assert sum(len(s) for s in steps) == 10
    assert isinstance(find_pipe(pipe, GymStepper).env, gym.vector.AsyncVectorEnv)


def test_include_images_adds_frames():
    step = next(GymDataPipe(["CartPole-v1"], num_envs=2, seed=0, include_images=True))
    assert step.image.shape == (2, 400, 600, 3) and step.image.dtype == torch.uint8


def test_episode_returns_recorded():
    stepper = GymStepper(make_vec_env("CartPole-v1", max_episode_steps=4), agent=None, seed=0)
    stepper.records = Records()
    for _ in range(8):
        next(stepper)
    assert stepper.records.values("episode_return") == [(4, 4.0), (8, 4.0)]


# ---------------------------------------------------------------- n-step and skipping
def test_nstep_discounted_rewards_and_counts():
    # env 0 runs 5 steps and terminates; env 1 is truncated at its 2nd step then runs on
    rows = [[(1, False, False), (1, False, False)],
            [(2, False, False), (2, False, True)],
            [(3, False, False), (3, False, False)],
            [(4, False, False), (4, False, False)],
            [(5, True, False), (5, False, False)]]
    out = drain(NStepper(steps_from(rows), n=3, gamma=0.5))
    by_start = {(int(s) % 10, int(s) // 10): i for i, s in enumerate(out.state[:, 0])}
    def row(env, t):
        return out[by_start[(env, t)]]
    # full windows: r0 + γ r1 + γ² r2
    w = row(0, 0)
    assert math.isclose(float(w.reward), 1 + 0.5 * 2 + 0.25 * 3) and int(w.nsteps) == 3
    assert float(w.next_state) == 30.0 and not bool(w.terminated)
    # env 0 terminates at t=4: windows starting at 2, 3, 4 close early, without bootstrapping
    assert math.isclose(float(row(0, 2).reward), 3 + 0.5 * 4 + 0.25 * 5) and int(row(0, 2).nsteps) == 3
    assert math.isclose(float(row(0, 3).reward), 4 + 0.5 * 5) and int(row(0, 3).nsteps) == 2
    assert math.isclose(float(row(0, 4).reward), 5.0) and int(row(0, 4).nsteps) == 1
    assert all(bool(row(0, t).terminated) for t in (2, 3, 4))
    # env 1 truncated at t=1: windows from 0 and 1 close there, truncated (so they still bootstrap)
    assert math.isclose(float(row(1, 0).reward), 1 + 0.5 * 2) and int(row(1, 0).nsteps) == 2
    assert bool(row(1, 0).truncated) and not bool(row(1, 0).terminated) and float(row(1, 0).next_state) == 21.0
    assert int(row(1, 1).nsteps) == 1
    # env 1 from t=2 on: one full window (2,3,4) closes at t=4; windows from 3 and 4 stay open and are dropped
    assert math.isclose(float(row(1, 2).reward), 3 + 0.5 * 4 + 0.25 * 5)
    assert (1, 3) not in by_start and (1, 4) not in by_start
    assert len(out) == 5 + 3


def test_nstep_one_is_identity():
    rows = [[(1, False, False), (2, True, False)], [(3, False, True), (4, False, False)]]
    out = drain(NStepper(steps_from(rows), n=1, gamma=0.9))
    src = drain(steps_from(rows))
    assert torch.equal(out.reward, src.reward) and torch.equal(out.next_state, src.next_state)
    assert out.nsteps.tolist() == [1, 1, 1, 1]


def test_nskipper_keeps_every_nth_and_episode_ends():
    rows = [[(t, t == 4, False), (t, False, False)] for t in range(6)]
    out = drain(NSkipper(steps_from(rows), n=2))
    kept = sorted((int(s) % 10, int(s) // 10) for s in out.state[:, 0])
    # env 0: t=0, 2, 4 (end) then 5 starts a new episode; env 1: t=0, 2, 4
    assert kept == [(0, 0), (0, 2), (0, 4), (0, 5), (1, 0), (1, 2), (1, 4)]


def test_bad_nstep_settings():
    with pytest.raises(ValueError, match="nsteps must be >= 1"):
        GymDataPipe(["CartPole-v1"], nsteps=0)
    with pytest.raises(ValueError, match="firstlast=True"):
        GymDataPipe(["CartPole-v1"], nsteps=3)
    with pytest.raises(ValueError, match="nsteps must be >= 1"):
        NStepper(steps_from([]), n=0)


class ImageObservations(gym.Env):
    "Observes a 4x4x3 uint8 picture, as pixel envs do."
    observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((4, 4, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((4, 4, 3), np.uint8), 1.0, False, False, {}


def test_observations_that_are_not_arrays_arrive_as_one_vector():
    # Discrete(16) -> one-hot of 16, as SB3 encodes it; FrozenLake starts in cell 0
    env = make_vec_env("FrozenLake-v1", num_envs=2)
    assert env.single_observation_space.shape == (16,)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [[1] + [0] * 15] * 2
    # Tuple(Discrete(32), Discrete(11), Discrete(2)) -> 45 values, three of them 1
    step = next(iter(GymDataPipe(["Blackjack-v1"], seed=0, n=4)))
    assert step.state.shape == (1, 45) and step.state.dtype == torch.float32 and step.state.sum().item() == 3
    assert make_vec_env("FrozenLake-v1", flatten_observations=False).single_observation_space == gym.spaces.Discrete(16)
    from fastrl_lite.envs import make_env
    assert make_env("FrozenLake-v1").observation_space.shape == (16,)
    with pytest.raises(ValueError, match=r"observes Discrete\(16\).*make_vec_env"):
        GymStepper(make_vec_env("FrozenLake-v1", flatten_observations=False))


def test_an_mlp_refuses_observations_that_are_not_one_vector():
    from fastrl_lite.algos.dqn import DQN, DQNLearner, DQNAgent
    from fastrl_lite.nets import Actor, Critic
    gym.register("ImageObservations-v0", entry_point=ImageObservations, max_episode_steps=5)
    try:
        model = DQN(48, 2)
        dl = GymDataPipe(["ImageObservations-v0"], agent=DQNAgent(model), seed=0, n=8)
        with pytest.raises(ValueError, match=r"MLP over flat observations.*shape \(4, 4, 3\).*FlattenObservation"):
            DQNLearner(model, [dl])
        # flattened, the same network trains
        env = make_vec_env("ImageObservations-v0", wrappers=[gym.wrappers.FlattenObservation])
        learner = DQNLearner(model, [GymStepper(env, DQNAgent(model), seed=0, n=64)], bs=8, warmup=8)
        learner.fit(1)
        assert learner.env_steps == 64
        with pytest.raises(ValueError, match="MLP over flat observations"):
            from fastrl_lite.learner.wiring import check_actor_critic_sizes
            stepper = GymStepper(make_vec_env("ImageObservations-v0"), seed=0)
            check_actor_critic_sizes(stepper, gym.spaces.Box(-1, 1, (1,)), Actor(48, 1), [Critic(48, 1)])
        from fastrl_lite import cli
        with pytest.raises(ValueError, match=r"observes arrays of shape \(4, 4, 3\).*MLPs over flat"):
            cli._probe("ImageObservations-v0")
    finally:
        gym.registry.pop("ImageObservations-v0")


def _needs_a_missing_package(**kwargs):
    raise gym.error.DependencyNotInstalled("Box2D is not installed")


def test_an_env_whose_package_is_missing_says_what_to_install():
    gym.register("NeedsBox2D-v0", entry_point=_needs_a_missing_package)
    try:
        from fastrl_lite.envs import make_env
        for make in (make_vec_env, make_env):
            with pytest.raises(ValueError, match=r"NeedsBox2D-v0 needs a package that is not installed.*pip install "
                                                 r"box2d"):
                make("NeedsBox2D-v0")
    finally:
        gym.registry.pop("NeedsBox2D-v0")


def test_a_buffer_larger_than_the_free_memory_is_refused_before_it_is_allocated():
    from fastrl_lite.memory.buffer import TensorStorage
    storage = TensorStorage(10 ** 9)
    with pytest.raises(MemoryError, match=r"needs 3725\.3 GiB on cpu for its rows \(state \(1000,\) float32\).*"
                                          r"smaller buffer_size"):
        storage.write(SimpleStep(state=torch.zeros(1, 1000)), 0, 1)
    assert storage.tensors == {}
    storage.max_sz = 4  # nothing was kept from the refused write: a fitting one goes through
    storage.write(SimpleStep(state=torch.ones(1, 1000)), 0, 1)
    assert storage.tensors["state"].shape == (4, 1000)


def test_evaluation_ends_the_episodes_of_an_env_without_a_time_limit():
    "CliffWalking has no time limit: a greedy policy that never reaches the goal would play forever."
    env = cap_episode_length(gym.make("CliffWalking-v1"), cap=7)
    env.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(0)  # up, into the wall: never the goal
        steps += 1
    assert (steps, terminated, truncated) == (7, False, True)
    assert cap_episode_length(gym.make("CartPole-v1"), cap=7).spec.max_episode_steps == 500  # its own limit stays
    from fastrl_lite.algos.dqn import DQNAgent, DQNLearner
    model = nn.Sequential(nn.Linear(48, 4))
    with torch.no_grad():  # always "up": the greedy policy never ends an episode
        model[0].weight.zero_(), model[0].bias.copy_(torch.tensor([1.0, 0, 0, 0]))
    learner = DQNLearner(model, [GymDataPipe(["CliffWalking-v1"], agent=DQNAgent(model), n=100)], warmup=0, bs=8,
                         max_sz=100)
    assert learner.validate(2)["returns"] == [-10_000.0, -10_000.0]  # -1 for each of the 10 000 capped steps


def test_unknown_env_id_suggests_close_ids():
    with pytest.raises(ValueError, match="CartPole-v1"):
        check_env_id("CartPol-v1")
    with pytest.raises(ValueError, match="Unknown environment id"):
        GymDataPipe(["NoSuchEnv-v9"])


# ---------------------------------------------------------------- replay
def numbered(n, start=0):
    return SimpleStep(state=torch.arange(start, start + n, dtype=torch.float32)[:, None],
                      reward=torch.arange(start, start + n, dtype=torch.float32))


def test_ring_buffer_wraps_in_place():
    replay = ExperienceReplay(None, bs=2, max_sz=5)
    replay.add(numbered(3))
    replay.add(numbered(4, start=3))
    assert len(replay) == 5 and replay.pointer == 2 and replay.added == 7
    assert replay.storage["reward"].tolist() == [5, 6, 2, 3, 4]
    replay.add(numbered(12, start=7))  # larger than the buffer: only the newest max_sz survive
    assert sorted(replay.storage["reward"].tolist()) == [14, 15, 16, 17, 18]


def test_sampling_is_uniform_and_covers_the_buffer(seeded):
    replay = ExperienceReplay(None, bs=64, max_sz=100)
    replay.add(numbered(50))
    counts = torch.zeros(100)
    for _ in range(500):
        batch = replay.sample()
        assert batch.step.state.shape == (64, 1) and torch.equal(batch.step.state[:, 0], batch.step.reward)
        counts += torch.bincount(batch.step.reward.long(), minlength=100)
    assert (counts[:50] > 0).all() and counts[50:].sum() == 0  # only stored slots, every one of them
    expected = 500 * 64 / 50
    chi2 = float(((counts[:50] - expected) ** 2 / expected).sum())
    assert chi2 < 100  # 49 degrees of freedom: p < 1e-4 to exceed by chance


def test_update_to_data_ratio_and_warmup():
    source = IterableWrapper(numbered(1, start=i) for i in range(1000))
    replay = ExperienceReplay(source, bs=4, max_sz=100, warmup=10, train_every=3, updates=2)
    batches = [next(replay) for _ in range(6)]
    assert all(isinstance(b, TrainBatch) and len(b.step) == 4 for b in batches)
    # first pull: 3 env steps, then on to the warmup of 10; each later pull is exactly 3 steps
    assert replay.added == 16
    next(replay)
    assert replay.added == 19


def test_a_collector_whose_source_ran_out_stays_where_it_was_at_every_later_pull():
    from fastrl_lite import Collector, ReplayBuffer
    collector = Collector(IterableWrapper([numbered(1, start=i) for i in range(14)]), ReplayBuffer(max_sz=100), bs=1,
                          train_every=4, carry_over=True)
    assert len([batch for batch in collector]) == 3  # bursts due at env steps 4, 8 and 12; the last 2 hold none
    state = copy.deepcopy(collector.state_dict())
    for _ in range(2):
        with pytest.raises(StopIteration):
            next(collector)
        assert collector.state_dict()["due"] == state["due"] == 12


def _burst_replay():
    return ExperienceReplay(IterableWrapper(numbered(1, start=i) for i in range(1000)), bs=4, max_sz=100,
                            warmup=10, train_every=8, updates=6)


def test_collector_batches_are_the_buffers_round_by_round_samples():
    "A burst of rounds draws exactly what sampling the buffer once per round draws, in order."
    torch.manual_seed(3)
    replay = _burst_replay()
    batches = [next(replay) for _ in range(6)]  # the first burst: the buffer holds the first 10
    torch.manual_seed(3)
    reference = ExperienceReplay(None, bs=4, max_sz=100)
    reference.add(SimpleStep.cat([numbered(1, start=i) for i in range(10)]))
    for batch in batches:
        expected = reference.sample()
        assert torch.equal(batch.step.reward, expected.step.reward) and torch.equal(batch.indices, expected.indices)
    assert torch.equal(batches[0].step.reward, batches[0].indices.float())  # indices name the rows drawn
    assert len({tuple(b.indices.tolist()) for b in batches}) > 3  # real draws, not one batch repeated


def test_replay_checkpoint_mid_burst_continues_the_burst():
    torch.manual_seed(4)
    replay = _burst_replay()
    for _ in range(3):  # half of a 6-round burst
        next(replay)
    state, rng = replay.state_dict(), torch.get_rng_state()
    rest = [next(replay).step.reward for _ in range(5)]  # the burst's last 3, then a new collection
    restored = _burst_replay()
    restored.reset(state)
    torch.set_rng_state(rng)  # a Learner checkpoint restores the RNGs with the pipeline
    assert all(torch.equal(next(restored).step.reward, r) for r in rest)
    assert restored.added == replay.added and restored.owed == replay.owed


def test_replay_stores_values_that_need_grad_or_other_dtypes_through_torch_copies():
    replay = ExperienceReplay(None, bs=2, max_sz=3)  # float32 storage: NumPy writes, which refuse grad
    weights = torch.ones(2, 2, requires_grad=True)
    replay.add(SimpleStep(state=weights * 2))
    replay.add(SimpleStep(state=weights * 3))  # wraps round
    assert not replay.storage["state"].requires_grad
    assert replay.storage["state"][:, 0].tolist() == [3.0, 2.0, 3.0]
    replay = ExperienceReplay(None, bs=2, max_sz=3)  # bfloat16 has no NumPy dtype: torch copies
    replay.add(SimpleStep(reward=torch.tensor([1.0, 2.0], dtype=torch.bfloat16)))
    replay.add(SimpleStep(reward=torch.tensor([3.0, 4.0], dtype=torch.bfloat16)))
    assert replay.storage["reward"].dtype == torch.bfloat16 and replay.storage["reward"].tolist() == [4.0, 2.0, 3.0]


def test_replay_rejects_impossible_settings():
    with pytest.raises(ValueError, match="larger than the replay capacity"):
        ExperienceReplay(None, bs=128, max_sz=64)
    with pytest.raises(ValueError, match="warmup"):
        ExperienceReplay(None, bs=4, max_sz=64, warmup=100)
    replay = ExperienceReplay(None, bs=2, max_sz=8)
    replay.add(SimpleStep(state=torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="shape"):
        replay.add(SimpleStep(state=torch.zeros(2, 4)))


def test_step_batcher_concatenates_lists():
    pipe = StepBatcher(GymDataPipe(["CartPole-v1"], bs=8, n=16, seed=0))
    batches = list(pipe)
    assert [len(b.step) for b in batches] == [8, 8]


# ---------------------------------------------------------------- agents and exploration
def epsilon_agent(model, **kwargs):
    pipe = SimpleModelRunner(StepFieldSelector(AgentBase(model)), model)
    return AgentHead(DiscreteEpsilonRandomSelect(pipe, **kwargs))


def test_epsilon_schedule_counts_env_steps():
    agent = epsilon_agent(nn.Linear(3, 4), min_epsilon=0.1, max_epsilon=1.0, max_steps=100)
    explorer = find_pipe(agent, DiscreteEpsilonRandomSelect)
    assert explorer.epsilon == 1.0
    agent(SimpleStep(state=torch.zeros(10, 3)))  # ten envs: ten env steps
    assert explorer.steps == 10 and math.isclose(explorer.epsilon, 1.0 - 0.9 * 0.1)
    for _ in range(4):
        agent(SimpleStep(state=torch.zeros(10, 3)))
    assert math.isclose(explorer.epsilon, 0.55)
    explorer.records = Records()
    for _ in range(10):
        agent(SimpleStep(state=torch.zeros(10, 3)))
    assert explorer.epsilon == 0.1
    # ε is a gauge: the bus keeps its latest value, not one entry per env step
    assert explorer.records.gauges == {"epsilon": 0.1} and not explorer.records.lists


def test_exploration_off_in_eval_mode(seeded):
    model = nn.Linear(3, 4)
    agent = epsilon_agent(model, min_epsilon=1.0, max_epsilon=1.0, max_steps=1)
    states = torch.randn(256, 3)
    greedy = model(states).argmax(-1)
    assert not torch.equal(agent(SimpleStep(state=states)), greedy)  # ε = 1: random actions
    with evaluating(model):
        assert torch.equal(agent(SimpleStep(state=states)), greedy)
    assert model.training


def test_agent_accepts_a_list_of_unbatched_steps():
    agent = epsilon_agent(nn.Linear(4, 2), min_epsilon=0.0, max_epsilon=0.0)
    actions = agent([SimpleStep(state=torch.ones(4)), SimpleStep(state=torch.zeros(4))])
    assert actions.shape == (2,)


def test_bad_epsilon_settings():
    with pytest.raises(ValueError, match="min_epsilon"):
        DiscreteEpsilonRandomSelect(None, min_epsilon=0.5, max_epsilon=0.2)


# ---------------------------------------------------------------- target updates and losses
def batches_of(n):
    return IterableWrapper(TrainBatch(SimpleStep(reward=torch.zeros(1))) for _ in range(n))


def test_hard_target_copies_every_n_rounds():
    model = nn.Linear(2, 2)
    pipe = TargetModelUpdater(batches_of(7), model, target_sync=3)
    start = pipe.target_model.weight.clone()
    seen = []
    for _ in pipe:
        with torch.no_grad():
            model.weight.add_(1.0)
        seen.append(pipe.target_model.weight[0, 0].item())
    base = start[0, 0].item()
    # copied on rounds 3 and 6, when the model had moved by 2 and by 5
    assert [round(v - base, 5) for v in seen] == [0, 0, 2, 2, 2, 5, 5]
    assert not pipe.target_model.weight.requires_grad


def test_soft_target_is_polyak_average():
    model = nn.Linear(2, 2)
    pipe = SoftTargetUpdater(batches_of(1), model, tau=0.1)
    target = pipe.target_model
    with torch.no_grad():
        target.weight.fill_(1.0)
        model.weight.fill_(3.0)
    next(pipe)
    assert torch.allclose(target.weight, torch.full((2, 2), 0.9 * 1.0 + 0.1 * 3.0))
    with pytest.raises(ValueError, match="tau"):
        SoftTargetUpdater(batches_of(1), model, tau=0.0)


def test_loss_collector_records_detached_losses():
    losses = iter([torch.tensor(1.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)])
    source = IterableWrapper(TrainBatch(SimpleStep(), losses={"q": next(losses)}) for _ in range(2))
    pipe = LossCollector(source)
    pipe.records = Records()
    list(pipe)
    assert pipe.records.values("q_loss").tolist() == [1.0, 3.0]
    assert not pipe.records.values("q_loss").requires_grad


# ---------------------------------------------------------------- graph helpers
def test_find_pipes_and_pipe_to_device():
    model = nn.Linear(3, 2)
    agent = epsilon_agent(model)
    pipe = GymDataPipe(["CartPole-v1"], agent=agent, seed=0)
    pipe = ExperienceReplay(pipe, bs=2, max_sz=10)
    assert find_pipe(pipe, GymStepper).agent is agent
    assert find_pipe(pipe, DiscreteEpsilonRandomSelect) is find_pipe(agent, DiscreteEpsilonRandomSelect)
    assert len(find_pipes(pipe, SimpleModelRunner)) == 1
    with pytest.raises(LookupError, match="TargetModelUpdater"):
        find_pipe(pipe, TargetModelUpdater)
    pipe_to_device(pipe, "cpu")
    assert next(model.parameters()).device.type == "cpu" and pipe.device.type == "cpu"


# ---------------------------------------------------------------- BasicOptStepper
class _RegressionLosses:
    "A source of TrainBatches whose 'q' loss is a regression of `model` on fixed random data."

    def __init__(self, model, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.model = model
        self.data = [(torch.randn(32, 4, generator=g), torch.randn(32, 2, generator=g)) for _ in range(8)]
        self.i = 0

    def __next__(self):
        x, y = self.data[self.i % len(self.data)]
        self.i += 1
        batch = TrainBatch(SimpleStep(state=x))
        batch.losses["q"] = nn.functional.mse_loss(self.model(x), y)
        return batch


@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_opt_stepper_fused_path_matches_clip_and_opt_step_bit_for_bit(opt_cls, clip):
    from fastrl_lite.compat import BasicOptStepper
    from fastrl_lite.learner.fused_adam import uses_fast_path
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    reference = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    reference.load_state_dict(model.state_dict())
    stepper = BasicOptStepper(_RegressionLosses(model), model, lr=1e-2, opt=opt_cls, clip_grad_norm=clip,
                              fused=True, weight_decay=0.01)
    ref_source, ref_opt = _RegressionLosses(reference), opt_cls(reference.parameters(), lr=1e-2, fused=True,
                                                                weight_decay=0.01)
    for _ in range(60):
        stepper.next()
        ref_opt.zero_grad()
        next(ref_source).losses["q"].backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(reference.parameters(), clip, foreach=True)
        ref_opt.step()
        if _ == 30:  # the optimizer state replaced from outside the stage, on both sides
            saved = ref_opt.state_dict()
            stepper.opt.load_state_dict(copy.deepcopy(saved))
            ref_opt.load_state_dict(copy.deepcopy(saved))
    assert uses_fast_path(stepper.opt)  # the direct kernel call was used after the first round
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    # the optimizer's own state advanced, so checkpoints of it stay right
    assert all(int(stepper.opt.state[p]["step"]) == 60 for p in model.parameters())
    assert torch.equal(stepper.opt.state_dict()["state"][0]["exp_avg"], ref_opt.state_dict()["state"][0]["exp_avg"])


def test_opt_stepper_takes_opt_step_for_other_optimizers_and_hooks():
    from fastrl_lite.compat import BasicOptStepper
    from fastrl_lite.learner.fused_adam import uses_fast_path
    model = nn.Linear(4, 2)
    sgd = BasicOptStepper(_RegressionLosses(model), model, lr=0.1, opt=torch.optim.SGD)
    before = model.weight.detach().clone()
    sgd.next(), sgd.next()
    assert not uses_fast_path(sgd.opt) and not torch.equal(model.weight, before)
    model = nn.Linear(4, 2)
    adam = BasicOptStepper(_RegressionLosses(model), model, lr=0.1, fused=True)
    for _ in range(3):
        adam.next()
    assert uses_fast_path(adam.opt)
    calls = []
    adam.opt.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    for _ in range(2):
        adam.next()
    assert len(calls) == 2  # a registered hook means every step goes through opt.step()
    # the fast path's shared step counter still counts each parameter's steps once under opt.step()
    assert [int(adam.opt.state[p]["step"]) for p in model.parameters()] == [5, 5]


# ---------------------------------------------------------------- learner and loggers
def _small_cartpole_dqn(n=None, batches=20, seed=0):
    from fastrl_lite import set_seed
    from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner
    set_seed(seed)
    model = DQN(4, 2, hidden=(16,))
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=seed, n=n)
    return DQNLearner(model, [dl], batches=batches, warmup=16, bs=16, train_every=4, updates=1)


def test_a_fit_refused_for_a_nan_loss_keeps_the_epoch_and_fits_again_once_the_cause_is_fixed():
    from fastrl_lite import Update
    learner = _small_cartpole_dqn()
    learner.fit(1)
    model = learner.model
    target = find_pipe(learner.pipe, TargetModelUpdater).target_model
    optimizer = find_pipe(learner.pipe, Update).optimizers["q"]
    saved = [copy.deepcopy(m.state_dict()) for m in (model, target, optimizer)]
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    for _ in range(2):  # a refusal, and the same refusal again: neither counts an epoch
        with pytest.raises(FloatingPointError, match=r"q_loss became NaN/inf at gradient round \d+ \(epoch 2\)"):
            learner.fit(1)
        assert learner.epoch == 1 and len(learner.history) == 1
    for m, state in zip((model, target, optimizer), saved):  # the cause fixed
        m.load_state_dict(state)
    rows = learner.fit(1)
    assert [row["epoch"] for row in learner.history] == [1, 2] and rows == learner.history[1:]
    assert learner.epoch == 2 and math.isfinite(rows[0]["q_loss"])


class _LateGauge(Pipe):
    "Passes rounds through and, from gradient round `start` on, gauges `late` (the rounds so far)."

    def __init__(self, source, start):
        super().__init__(source)
        self.start, self.rounds = start, 0

    def next(self):
        out = next(self.source)
        self.rounds += 1
        if self.rounds >= self.start:
            self.gauge("late", float(self.rounds))
        return out


def test_csv_and_progress_table_keep_a_column_that_first_appears_after_the_first_row(tmp_path, capsys):
    from fastrl_lite import CSVLogger, Learner, ProgressBarLogger
    dqn = _small_cartpole_dqn(batches=10)
    path = tmp_path / "metrics.csv"
    learner = Learner(dqn.model, _LateGauge(dqn.pipe, start=21), batches=10, collector=dqn.collector,
                      stepper=dqn.stepper, logger_bases=[CSVLogger(path), ProgressBarLogger(show_bars=False)])
    learner.fit(1)
    capsys.readouterr()
    learner.fit(3)  # `late` first comes with the second fit's second row
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert [row["late"] for row in rows] == ["", "", "30.0", "40.0"]
    assert list(rows[0])[:-1] == list(learner.history[0])  # the earlier columns keep their place
    assert all(row["q_loss"] for row in rows)
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [cells[0] for cells in lines] == ["epoch", "2", "epoch", "3", "4"]  # a wider header from epoch 3 on
    assert "late" not in lines[0] and lines[2][-1] == "late" and lines[2][:-1] == lines[0]
    assert [lines[3][-1], lines[4][-1]] == ["30", "40"] and len(lines[1]) == len(lines[0])


def test_validate_on_an_env_of_other_spaces_is_refused_before_it_steps():
    learner = _small_cartpole_dqn()
    agent_state = copy.deepcopy(learner.stepper.agent.state_dict())
    for env_id, obs, act in (("Acrobot-v1", r"\(6,\)", r"Discrete\(3\)"),
                             ("MountainCar-v0", r"\(2,\)", r"Discrete\(3\)")):
        with pytest.raises(ValueError, match=rf"{env_id}.*observes Box\(.*{obs}.*acts in {act}.*CartPole-v1.*"
                                             r"observes Box\(.*\(4,\).*acts in Discrete\(2\)"):
            learner.validate(1, env_ids=[env_id])
    assert learner.stepper.agent.state_dict() == agent_state
    assert len(learner.validate(1, env_ids=["CartPole-v1"])["returns"]) == 1  # the same spaces are validated on


def test_a_finite_pipeline_that_runs_out_ends_fit_says_so_and_adds_no_empty_epochs(tmp_path, capsys):
    learner = _small_cartpole_dqn(n=100)  # 22 gradient rounds: an epoch of 20, then 2
    rows = learner.fit(5)
    assert [row["batch"] for row in rows] == [20, 22] and learner.epoch == 2
    assert rows[-1]["env_steps"] == learner.env_steps == 100
    out = capsys.readouterr().out  # the short last epoch is called so
    assert "ran out of data at env step 100, in epoch 2, after 2 of its 20 gradient rounds" in out
    state = (learner.epoch, learner.batch, learner.env_steps, learner.episodes, list(learner.history))
    for _ in range(2):  # a fit on the exhausted pipeline is refused, and changes nothing
        with pytest.raises(ValueError, match=r"pipeline is exhausted.*larger n.*learner\.load"):
            learner.fit(1)
        assert (learner.epoch, learner.batch, learner.env_steps, learner.episodes, learner.history) == state
    assert learner.exhausted
    # what the refusal says to do: a checkpoint of this learner, loaded into one built on a larger n, trains on
    learner.save(tmp_path / "checkpoint.pt")
    longer = _small_cartpole_dqn(n=140).load(tmp_path / "checkpoint.pt")
    rows = longer.fit(1)
    assert [row["epoch"] for row in rows] == [3] and rows[0]["batch"] == 32 and longer.env_steps == 140
    # a pipeline that runs out right at an epoch's end: fit stops there, without an empty epoch
    exact = _small_cartpole_dqn(n=92)  # exactly 20 rounds
    rows = exact.fit(3)
    assert [row["batch"] for row in rows] == [20] and exact.epoch == 1
    assert "ran out of data at env step 92, at the end of epoch 1" in capsys.readouterr().out and exact.exhausted


def test_an_evaluation_due_at_the_last_env_steps_runs_when_the_pipeline_runs_out(tmp_path):
    learner = _small_cartpole_dqn(n=98)  # the last round at env step 96; the pull after it runs 97, 98 and ends
    learner.fit(10, eval_every=49, eval_episodes=1, best_model_path=tmp_path / "best.pt")
    assert learner.exhausted and learner.env_steps == 98
    assert learner.evaluation["next"] == 147  # the evaluation due at env step 98 ran
    assert learner.history[-1]["eval_mean"] == learner.evaluation["mean"] and (tmp_path / "best.pt").exists()


# ---------------------------------------------------------------- subnormal floats
class _FloatMode(Pipe):
    "Passes rounds through and notes, at each, whether subnormal floats are flushed to zero."

    def __init__(self, source):
        super().__init__(source)
        self.modes = []

    def next(self):
        from fastrl_lite.core import denormals_flushed
        self.modes.append(denormals_flushed())
        return next(self.source)


def test_flushed_denormals_flushes_in_the_block_and_restores_the_mode_after():
    import platform
    from fastrl_lite.core import denormals_flushed, flushed_denormals
    assert platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")  # CPUs that can flush them
    subnormal = torch.tensor([3], dtype=torch.int32).view(torch.float32)  # 4.2e-45, made from its bits
    assert not denormals_flushed() and bool((subnormal * 1.0)[0] != 0)
    with flushed_denormals() as flushed:
        assert flushed and denormals_flushed()
        assert bool((subnormal * 1.0)[0] == 0) and bool((torch.tensor([1e-20]) * 1e-20)[0] == 0)
        assert float(torch.tensor([1e-18]) * 1e-18) == pytest.approx(1e-36, rel=1e-6)  # normal numbers stay
        with flushed_denormals() as inner:  # nested: the outer block's mode outlives the inner one
            assert inner
        assert denormals_flushed()
    assert not denormals_flushed() and bool((subnormal * 1.0)[0] != 0)
    with flushed_denormals(False) as flushed:
        assert not flushed and not denormals_flushed()
    with pytest.raises(ValueError, match=r"flushed_denormals\(on=...\) must be True or False, got 'yes'"):
        with flushed_denormals("yes"):
            pass
    assert not denormals_flushed()
    with pytest.raises(RuntimeError, match="inside"):  # an error in the block still restores the mode
        with flushed_denormals():
            raise RuntimeError("inside")
    assert not denormals_flushed()


def test_fit_trains_with_subnormals_flushed_unless_told_not_to_and_restores_the_mode():
    from fastrl_lite import Learner
    from fastrl_lite.core import denormals_flushed
    dqn = _small_cartpole_dqn(batches=5)
    probe = _FloatMode(dqn.pipe)
    learner = Learner(dqn.model, probe, batches=5, collector=dqn.collector, stepper=dqn.stepper)
    assert learner.flush_denormal is True
    learner.fit(1)
    assert probe.modes == [True] * 5 and not denormals_flushed()
    learner.flush_denormal = False
    learner.fit(1)
    assert probe.modes[5:] == [False] * 5
    torch.set_flush_denormal(True)  # a mode the user chose is the user's: fit leaves it on
    try:
        learner.flush_denormal = True
        learner.fit(1)
        assert probe.modes[10:] == [True] * 5 and denormals_flushed()
    finally:
        torch.set_flush_denormal(False)
    with pytest.raises(ValueError, match="flush_denormal must be True or False, got 'no'"):
        Learner(dqn.model, probe, batches=5, collector=dqn.collector, stepper=dqn.stepper, flush_denormal="no")
    learner.flush_denormal, rounds = "no", learner.batch  # set on the learner: refused before a round runs
    with pytest.raises(ValueError, match="flush_denormal must be True or False, got 'no'"):
        learner.fit(1)
    assert learner.batch == rounds and learner.epoch == 3 and len(probe.modes) == 15
