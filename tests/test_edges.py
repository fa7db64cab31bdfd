"""Envs and settings off the beaten track: action bounds that float32 cannot hold exactly, Discrete
spaces that do not start at 0, NaN where the env or the agent puts it, uint8 vectors, action shapes
that are not vectors, evaluation on the env as it was wrapped, checkpoints of another env, and
hyper-parameters of the wrong kind, each refused with a message that names the setting."""
import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from fastrl_lite import GymDataPipe, GymStepper, set_seed
from fastrl_lite.agents import ActionScaler
from fastrl_lite.agents.policies import ActorCriticPolicy, ClipToBounds, PPOAgent
from fastrl_lite.algos.ddpg import DDPGAgent, DDPGLearner
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner
from fastrl_lite.algos.ppo import PPODataPipe, PPOLearner
from fastrl_lite.algos.sac import SACAgent, SACLearner
from fastrl_lite.algos.td3 import TD3Agent, TD3Learner
from fastrl_lite.envs import make_vec_env
from fastrl_lite.learner import CheckpointError
from fastrl_lite.nets import Actor, Critic, SquashedGaussianActor, SquashedGSDEActor, TwinCritic
from bandit import Bandit, bandit_env


def vector(env_fn):
    return gym.vector.SyncVectorEnv([env_fn], autoreset_mode=AutoresetMode.SAME_STEP)


class Checked(gym.Wrapper):
    "Fails the test on any action outside the env's action space, and keeps the actions it received."

    def __init__(self, env):
        super().__init__(env)
        self.received = []

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)) \
            if isinstance(self.action_space, gym.spaces.Box) else self.action_space.contains(action), action
        self.received.append(np.array(action))
        return self.env.step(action)


# action bounds ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("low, high, dtype", [
    ([-10.0], [0.1], np.float32),  # 0.1 sits where the scaled float32 sum rounds one bit past it
    ([0.1, -0.7], [0.7, 0.3], np.float64),  # float64 bounds that float32 rounds outwards (0.3 -> 0.30000001)
    ([0.0, -100.0, 1e5], [5.0, -99.9, 1e5 + 1], np.float64),
])
def test_scaled_and_clipped_actions_lie_within_the_bounds_at_both_ends(low, high, dtype):
    space = gym.spaces.Box(np.array(low, dtype), np.array(high, dtype), dtype=dtype)
    u = torch.tensor([[-1.0] * len(low), [1.0] * len(low), [0.999999] * len(low)])
    for action in ActionScaler.of(space)(u).numpy():
        assert space.contains(action.astype(dtype)), action
    for action in ClipToBounds(space.low, space.high)(torch.full((2, len(low)), 1e9) * torch.tensor([[-1.0], [1.0]])):
        assert space.contains(action.numpy().astype(dtype)), action


def test_bounds_float32_cannot_tell_apart_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="too close to tell apart in float32.*RescaleAction"):
        ActionScaler.of(gym.spaces.Box(1e6, 1e6 + 0.01, (1,), np.float64))


class Float64Bandit(Bandit):
    action_space = gym.spaces.Box(np.array([0.1, -0.7]), np.array([0.7, 0.3]), dtype=np.float64)

    def step(self, action):
        return np.zeros(1, np.float32), -float(np.sum(action)), True, False, {}


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_training_actions_stay_in_float64_bounds(algo):
    set_seed(0)
    env = vector(lambda: Checked(Float64Bandit()))
    if algo == "sac":
        actor, critics = SquashedGaussianActor(1, 2, (16, 16)), TwinCritic.of(1, 2, 16, 16)
        learner = SACLearner(actor, critics, [GymStepper(env, SACAgent(actor), seed=0)], learning_starts=32,
                             batch_size=16, buffer_size=500, batches=100)
    elif algo == "td3":
        actor, critics = Actor(1, 2, 16, 16), TwinCritic.of(1, 2, 16, 16)
        learner = TD3Learner(actor, critics, [GymStepper(env, TD3Agent(actor, noise_std=0.5), seed=0)],
                             learning_starts=32, batch_size=16, buffer_size=500, batches=100)
    else:
        actor, critic = Actor(1, 2, 16, 16), Critic(1, 2, 16, 16)
        learner = DDPGLearner(actor, critic, [GymStepper(env, DDPGAgent(actor), seed=0)], warmup=32, bs=16,
                              max_sz=500, batches=100)
    learner.fit(1)
    received = np.stack(env.envs[0].received)
    assert len(received) >= 100
    # the actor is pushed to the lower bounds: actions at the bounds themselves must still be inside
    assert (received >= Float64Bandit.action_space.low).all() and (received <= Float64Bandit.action_space.high).all()


def test_ppo_gaussian_actions_are_clipped_within_float64_bounds():
    set_seed(0)
    env = gym.vector.SyncVectorEnv([lambda: Checked(Float64Bandit())] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space, log_std_init=2.0)
    stepper = GymStepper(env, PPOAgent(policy), seed=0)
    learner = PPOLearner(policy, [stepper], n_steps=32, batch_size=32, n_epochs=1)
    learner.fit(2)
    assert sum(len(e.received) for e in env.envs) == 128


def test_actions_of_another_shape_than_a_vector_are_refused():
    class Grid(Bandit):
        action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)
    actor = Actor(1, 4)
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*TransformAction"):
        TD3Learner(actor, TwinCritic.of(1, 4), [GymStepper(vector(Grid), TD3Agent(actor), seed=0)])


# Discrete spaces that start elsewhere than 0 -----------------------------------------------------------

class Shifted(gym.Env):
    "Actions -1, 0, 1 (Discrete(3, start=-1)); the reward is the action, the episode 5 steps."
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3, start=-1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), float(action), False, self.t == 5, {}


def test_discrete_actions_starting_at_minus_one_reach_the_env_shifted_and_are_stored_as_indices():
    set_seed(0)
    env = vector(lambda: Checked(Shifted()))
    model = DQN(2, 3)
    learner = DQNLearner(model, [GymStepper(env, DQNAgent(model, max_steps=50), seed=0)], warmup=16, bs=8,
                         train_every=1, updates=1, batches=300, lr=1e-2, target_sync=10, gamma=0.0)
    learner.fit(1)
    received = np.array(env.envs[0].received)
    stored = learner.collector.buffer.storage.tensors["action"][:len(learner.collector.buffer)]
    assert set(received.tolist()) == {-1, 0, 1}  # ε-greedy tried every action, each one valid
    assert stored.min() == 0 and stored.max() == 2
    assert learner.validate(2)["mean"] == 5.0  # greedy: always the best action, +1


# NaN where the env or the agent puts it -----------------------------------------------------------------

class NaNAt(gym.Env):
    "An env whose observation turns NaN: on reset, or on the step that ends the first episode."
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, where):
        self.where, self.t = where, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.full(1, np.nan if self.where == "reset" else 0.0, np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t == 3
        obs = np.full(1, np.nan if end and self.where == "final" else 0.0, np.float32)
        return obs, 1.0, end, False, {}


@pytest.mark.parametrize("where, match", [("reset", "observation at env step 0 .*from a reset"),
                                          ("final", "observation at env step 2 .*an episode's final one")])
def test_a_nan_reset_or_final_observation_stops_stepping(where, match):
    stepper = GymStepper(vector(lambda: NaNAt(where)), seed=0)
    with pytest.raises(FloatingPointError, match=match):
        for _ in range(5):
            next(stepper)


def test_a_nan_action_blames_the_agent_not_the_env():
    actor = Actor(1, 1, 8, 8)
    with torch.no_grad():
        actor.head.bias.fill_(float("nan"))
    stepper = GymStepper(bandit_env(), TD3Agent(actor), seed=0)
    with pytest.raises(FloatingPointError, match="agent chose a NaN/inf action.*diverged"):
        next(stepper)


# observations ---------------------------------------------------------------------------------------

class Bytes(Shifted):
    observation_space = gym.spaces.Box(0, 255, (3,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([1, 2, 250], np.uint8), {}

    def step(self, action):
        _, reward, terminated, truncated, info = super().step(action)
        return np.array([self.t, 2, 250], np.uint8), reward, terminated, truncated, info


def test_a_uint8_vector_observation_trains_as_floats():
    set_seed(0)
    model = DQN(3, 2)
    learner = DQNLearner(model, [GymStepper(vector(Bytes), DQNAgent(model), seed=0)], warmup=16, bs=8,
                         train_every=1, updates=1, batches=20)
    learner.fit(1)
    assert learner.collector.buffer.storage.tensors["state"].dtype == torch.float32


# evaluation runs on the env as training made it ---------------------------------------------------------

def test_validate_keeps_the_training_envs_wrappers_and_the_agents_state():
    set_seed(0)
    model = DQN(4, 2)
    env = make_vec_env("CartPole-v1", wrappers=[lambda e: gym.wrappers.TimeLimit(e, 5)])
    agent = DQNAgent(model)
    learner = DQNLearner(model, [GymStepper(env, agent, seed=0)], warmup=16, bs=8, train_every=1, updates=1,
                         batches=10)
    learner.fit(1)
    before = copy.deepcopy(agent.state_dict())
    result = learner.validate(3)
    assert result["returns"] == [5.0, 5.0, 5.0]  # a fresh CartPole-v1 would run 8 steps or more
    assert repr(agent.state_dict()) == repr(before)


def test_validate_on_an_env_without_a_registered_id():
    set_seed(0)
    model = DQN(2, 3)
    learner = DQNLearner(model, [GymStepper(vector(Shifted), DQNAgent(model), seed=0)], warmup=16, bs=8,
                         train_every=1, updates=1, batches=10)
    assert len(learner.validate(2)["returns"]) == 2


def test_ornstein_uhlenbeck_noise_is_the_same_after_an_evaluation():
    set_seed(0)
    actor, critics = Actor(3, 1, 16, 16), TwinCritic.of(3, 1, 16, 16)
    agent = TD3Agent(actor, noise_type="ornstein-uhlenbeck", noise_std=0.5)
    learner = TD3Learner(actor, critics, [GymDataPipe(["Pendulum-v1"], agent=agent, seed=0)], learning_starts=32,
                         batch_size=16, buffer_size=500, batches=40)
    learner.fit(1)
    before = copy.deepcopy(agent.state_dict())
    learner.validate(1)
    assert repr(agent.state_dict()) == repr(before)


# checkpoints of another env -------------------------------------------------------------------------

class LowBandit(Bandit):
    action_space = gym.spaces.Box(-10.0, -2.0, (1,), np.float32)


def test_a_checkpoint_of_an_env_with_other_bounds_is_refused(tmp_path):
    def td3(env_cls):
        set_seed(0)
        actor, critics = Actor(1, 1, 8, 8), TwinCritic.of(1, 1, 8, 8)
        return TD3Learner(actor, critics, [GymStepper(vector(env_cls), TD3Agent(actor), seed=0)], learning_starts=16,
                          batch_size=8, buffer_size=100, batches=5)
    td3(Bandit).save(tmp_path / "c.pt")
    other = td3(LowBandit)
    before = {k: v.clone() for k, v in other.models["actor"].state_dict().items()}
    with pytest.raises(CheckpointError, match=r"acts in Box\(0.0, 5.0.*acts in Box\(-10.0, -2.0"):
        other.load(tmp_path / "c.pt")
    assert all(torch.equal(before[k], v) for k, v in other.models["actor"].state_dict().items())
    td3(Bandit).load(tmp_path / "c.pt")  # the same env loads


# settings of the wrong kind -------------------------------------------------------------------------

def dqn_parts():
    model = DQN(4, 2)
    return model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)]


def ddpg_parts():
    actor = Actor(3, 1, 8, 8)
    return actor, Critic(3, 1, 8, 8), [GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=0)]


def td3_parts(actor=None):
    actor = actor or Actor(3, 1, 8, 8)
    return actor, TwinCritic.of(3, 1, 8, 8), [GymDataPipe(["Pendulum-v1"], agent=TD3Agent(actor), seed=0)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(updates=2.5), "updates must be a whole number >= 1, got 2.5"),
    (dict(bs=16.5), "bs must be a whole number"),
    (dict(max_sz="1000"), "max_sz must be a whole number"),
    (dict(train_every=0), "train_every must be a whole number >= 1"),
    (dict(warmup=-1), "warmup must be a whole number >= 0"),
    (dict(target_sync=1.5), "target_sync must be a whole number"),
    (dict(batches=0), "batches must be a whole number >= 1"),
    (dict(clip_grad_norm=0), r"clip_grad_norm must be a finite number in \(0, inf\]"),
    (dict(opt="adam"), "torch optimizer class such as torch.optim.Adam"),
    (dict(device="cuda:99"), "device='cuda:99' but this machine has"),
    (dict(device="gpu"), "not a device torch knows"),
    (dict(logger_bases="csv"), "logger_bases must be a list of loggers"),
    (dict(logger_bases=[print]), "is not a logger"),
])
def test_dqn_settings_of_the_wrong_kind_are_refused(kwargs, match):
    model, dls = dqn_parts()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        DQNLearner(model, dls, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_whole_numbers_written_as_floats_are_taken():
    model, dls = dqn_parts()
    learner = DQNLearner(model, dls, bs=16.0, max_sz=1e3, warmup=32, train_every=1, updates=1, batches=5)
    learner.fit(1)
    assert learner.collector.bs == 16 and learner.collector.buffer.max_sz == 1000


@pytest.mark.parametrize("kwargs, match", [
    (dict(batches=0), "batches must be a whole number >= 1"),
    (dict(critic_target_copy_freq=1.5), "critic_target_copy_freq must be a whole number"),
    (dict(tau="0.1"), r"tau must be a finite number in \(0, 1\]"),
    (dict(updates=1.5), "updates must be a whole number"),
])
def test_ddpg_settings_of_the_wrong_kind_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPGLearner(*ddpg_parts(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gradient_steps=1.5), "gradient_steps must be a whole number"),
    (dict(buffer_size=0), "buffer_size must be a whole number >= 1"),
    (dict(target_policy_noise=float("inf")), "target_policy_noise.*finite"),
    (dict(target_noise_clip=-0.1), "target_noise_clip"),
    (dict(tau=float("nan")), "tau must be a finite number"),
])
def test_td3_settings_of_the_wrong_kind_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TD3Learner(*td3_parts(), **kwargs)


def test_gradient_steps_minus_one_is_sb3s_one_round_per_env_step_collected():
    learner = TD3Learner(*td3_parts(), train_freq=4, gradient_steps=-1)
    assert (learner.collector.train_every, learner.collector.updates) == (4, 4)
    actor = SquashedGaussianActor(3, 1, (8, 8))
    dl = GymDataPipe(["Pendulum-v1"], agent=SACAgent(actor), seed=0)
    learner = SACLearner(actor, TwinCritic.of(3, 1, 8, 8), [dl], train_freq=8, gradient_steps=-1)
    assert learner.collector.updates == 8
    with pytest.raises(ValueError, match="gradient_steps must be a whole number >= 1, got -2"):
        TD3Learner(*td3_parts(), gradient_steps=-2)


def test_actors_of_the_other_kind_are_refused():
    with pytest.raises(ValueError, match="TD3Learner trains a deterministic actor.*SACLearner"):
        TD3Learner(*td3_parts(SquashedGaussianActor(3, 1, (8, 8))))
    with pytest.raises(TypeError, match="SACAgent needs a stochastic actor"):
        SACAgent(Actor(3, 1, 8, 8))
    dl = GymDataPipe(["Pendulum-v1"], agent=SACAgent(SquashedGaussianActor(3, 1, (8, 8))), seed=0)
    with pytest.raises(ValueError, match="SACLearner trains a stochastic actor.*SquashedGaussianActor"):
        SACLearner(Actor(3, 1, 8, 8), TwinCritic.of(3, 1, 8, 8), [dl])


def test_a_refused_sac_build_leaves_the_gsde_agent_as_it_was():
    from fastrl_lite.algos.sac import SquashedGaussianRunner
    from fastrl_lite.pipes import find_pipe
    actor = SquashedGSDEActor(3, 1, (8, 8))
    dl = GymDataPipe(["Pendulum-v1"], agent=SACAgent(actor), seed=0)
    runner = find_pipe(find_pipe(dl, GymStepper).agent, SquashedGaussianRunner)
    with pytest.raises(ValueError, match="learning_rate"):
        SACLearner(actor, TwinCritic.of(3, 1, 8, 8), [dl], train_freq=4, learning_rate=0)
    assert runner.sde_sample_freq == -1
    SACLearner(actor, TwinCritic.of(3, 1, 8, 8), [dl], train_freq=8)
    assert runner.sde_sample_freq == 8


def test_dls_must_be_a_list():
    model, dls = dqn_parts()
    with pytest.raises(ValueError, match=r"dls=\[train_pipe\], a list"):
        DQNLearner(model, dls[0])


def test_ppo_settings_of_the_wrong_kind_are_refused():
    env = make_vec_env("CartPole-v1")
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    dl = PPODataPipe("CartPole-v1", policy, n_envs=2, seed=0)
    for kwargs, match in [(dict(normalize_advantage="no"), "normalize_advantage must be True or False"),
                          (dict(n_steps=32.5), "n_steps must be a whole number"),
                          (dict(max_grad_norm=float("nan")), "max_grad_norm must be > 0 and finite"),
                          (dict(target_kl=True), "target_kl must be a number > 0")]:
        with pytest.raises(ValueError, match=match):
            PPOLearner(policy, [dl], **{"n_steps": 32, "batch_size": 16, **kwargs})


# stages and agents built by hand ----------------------------------------------------------------------

def test_hand_built_stages_refuse_impossible_settings():
    from fastrl_lite.algos.dqn import DoubleQTarget, QTarget, SAILTarget
    from fastrl_lite.learner import TargetModelUpdater
    model = DQN(4, 2)
    for gamma in (1.5, float("nan"), -1, "0.9"):
        for make in (lambda: QTarget(None, model, gamma=gamma), lambda: DoubleQTarget(None, model, model, gamma=gamma),
                     lambda: SAILTarget(None, model, gamma=gamma)):
            with pytest.raises(ValueError, match="the discount must lie in"):
                make()
    for sync in (float("nan"), 2.5, 0, "10"):
        with pytest.raises(ValueError, match="target_sync must be a whole number >= 1"):
            TargetModelUpdater(None, model, target_sync=sync)
    for max_steps in (float("nan"), 0, 2.5):
        with pytest.raises(ValueError, match="max_steps must be a whole number >= 1"):
            DQNAgent(model, max_steps=max_steps)
    with pytest.raises(ValueError, match="min_epsilon must be a finite number"):
        DQNAgent(model, min_epsilon=float("nan"))


def test_a_vector_env_that_autoresets_on_the_next_step_is_refused_up_front():
    model = DQN(4, 2)
    for env in (gym.make_vec("CartPole-v1", num_envs=2),
                gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")], autoreset_mode=AutoresetMode.DISABLED)):
        with pytest.raises(ValueError, match="SAME_STEP mode.*make_vec_env"):
            GymStepper(env, DQNAgent(model), seed=0)
    with pytest.raises(ValueError, match="GymStepper steps a vector env, got TimeLimit"):
        GymStepper(gym.make("CartPole-v1"), DQNAgent(model))


@pytest.mark.parametrize("make", [lambda env: GymDataPipe([env]), lambda env: GymDataPipe(env),
                                  lambda env: make_vec_env(env), lambda env: GymDataPipe(env.spec)])
def test_an_env_object_where_an_id_belongs_says_what_to_pass(make):
    with pytest.raises(ValueError, match="An environment id is a string such as 'CartPole-v1'.*GymStepper"):
        make(gym.make("CartPole-v1"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_envs=1.5), "num_envs must be a whole number >= 1, got 1.5"),
    (dict(nskips=0), "nskips must be a whole number >= 1, got 0"),
    (dict(nsteps=2.5, firstlast=True), "nsteps must be >= 1, a whole number"),
    (dict(bs=0), "bs must be a whole number >= 1"),
    (dict(n=10.5), "n .the env steps to run"),
])
def test_env_pipeline_settings_of_the_wrong_kind_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GymDataPipe(["CartPole-v1"], **kwargs)


def test_dqn_parts_of_the_wrong_kind_are_refused():
    model, dls = dqn_parts()
    with pytest.raises(ValueError, match="loss_func must be a function"):
        DQNLearner(model, dls, loss_func="huber")
    for flag in ("double", "dueling", "target", "prioritized", "sail"):
        with pytest.raises(ValueError, match=f"{flag} must be True or False, got 'no'"):
            DQNLearner(model, dls, **{flag: "no"})
    with pytest.raises(ValueError, match="DQN's state_sz must be a whole number >= 1, got 2.5"):
        DQN(2.5, 2)
    with pytest.raises(ValueError, match=r"hidden layer's width \(hidden=\[0\]\) must be a whole number >= 1"):
        DQN(4, 2, hidden=(0,))


def test_a_multi_discrete_action_space_is_not_sent_to_the_continuous_algorithms():
    from fastrl_lite.algos.dqn import check_discrete
    for space in (gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3)):
        with pytest.raises(ValueError, match="several discrete choices per step.*TransformAction") as error:
            check_discrete(space)
        assert "TD3" not in str(error.value)


def test_critics_of_the_wrong_shape_are_refused_before_training():
    actor = Actor(3, 1, 8, 8)
    dls = [GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=0)]
    with pytest.raises(ValueError, match=r"one value per \(state, action\), \[B, 1\].*returns shape \[2, 2\]"):
        DDPGLearner(actor, TwinCritic.of(3, 1, 8, 8), dls)
    actor, twin, dls = td3_parts()
    with pytest.raises(ValueError, match="TD3 needs two critics.*got Critic"):
        TD3Learner(actor, Critic(3, 1, 8, 8), dls)
    with pytest.raises(ValueError, match=r"different sizes \(state_sz, action_sz\): \[\(3, 1\), \(None, None\)\]"):
        TD3Learner(actor, [Critic(3, 1, 8, 8), torch.nn.Linear(4, 1)], dls)
    # modules of one input, not (state, action)
    with pytest.raises(ValueError, match="does not take a batch of this env's observations"):
        TD3Learner(actor, [torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)], dls)


def test_ppo_refuses_an_agent_that_does_not_sample_from_the_policy():
    env = make_vec_env("CartPole-v1")
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    with pytest.raises(ValueError, match="does not sample from the policy.*PPODataPipe"):
        PPOLearner(policy, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(policy), seed=0)], n_steps=32, batch_size=16)


def test_networks_with_batch_norm_act_on_one_env():
    set_seed(0)
    actor, critic = Actor(3, 1, 8, 8, batch_norm=True), Critic(3, 1, 8, 8, batch_norm=True)
    learner = DDPGLearner(actor, critic, [GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=0)],
                          batches=5, warmup=16, bs=16)
    norm = next(m for m in actor.modules() if isinstance(m, torch.nn.BatchNorm1d))
    stats = norm.running_mean.clone()
    learner.fit(1)
    assert learner.batch == 5 and actor.training and norm.training
    assert not torch.equal(norm.running_mean, stats)  # training batches move the statistics
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    learner = DQNLearner(model, [GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)], batches=5, warmup=16,
                         bs=16, train_every=4, updates=1)
    learner.fit(1)
    assert learner.batch == 5 and model.training


class Frames(gym.Env):
    "uint8 frames (3, 8, 8); two actions, reward 1 for action 1; 10-step episodes."
    observation_space = gym.spaces.Box(0, 255, (3, 8, 8), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (3, 8, 8), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return (self.np_random.integers(0, 256, (3, 8, 8), dtype=np.uint8), float(action), False, self.t >= 10, {})


def test_uint8_frames_are_stored_as_bytes_and_trained_on_as_floats():
    set_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2))
    learner = DQNLearner(model, [GymStepper(vector(Frames), DQNAgent(model), seed=0)], warmup=16, bs=8,
                         train_every=1, updates=1, batches=10)
    learner.fit(1)
    assert learner.collector.buffer.storage.tensors["state"].dtype == torch.uint8
    assert learner.collector.buffer.sample(4).step.state.dtype == torch.float32
    env = vector(Frames)
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space, net_arch=(8,))
    learner = PPOLearner(policy, [GymStepper(env, PPOAgent(policy), seed=0)], n_steps=16, batch_size=8, n_epochs=1)
    learner.fit(2)
    assert learner.env_steps == 32 and learner.batch == 4


class Endless(Bandit):
    "Never ends an episode, and has no time limit."

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_sail_on_episodes_that_never_end_stops_with_the_fix_instead_of_hanging():
    model = DQN(1, 2)

    class EndlessDiscrete(Endless):
        action_space = gym.spaces.Discrete(2)
    learner = DQNLearner(model, [GymStepper(vector(EndlessDiscrete), DQNAgent(model), seed=0)], sail=True,
                         max_sz=300, warmup=16, bs=8)
    with pytest.raises(ValueError, match="more than max_held=300.*TimeLimit"):
        learner.fit(1)


def test_ppo_counts_the_env_steps_of_a_rollout_the_cap_cut_short_and_completes_it_on_resume(tmp_path):
    def build(n):
        set_seed(1)
        env = make_vec_env("CartPole-v1")
        policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space, net_arch=(16,))
        dl = PPODataPipe("CartPole-v1", policy, n_envs=2, seed=1, n=n)
        return PPOLearner(policy, [dl], n_steps=16, batch_size=16, n_epochs=2), policy
    straight, policy = build(200)
    straight.fit(20)
    assert straight.env_steps == 200  # 6 rollouts of 32 and 8 steps of the 7th
    cut, _ = build(150)  # 4 rollouts of 32 and 22 steps of the 5th
    cut.fit(20)
    assert cut.env_steps == 150
    cut.save(tmp_path / "ckpt.pt")
    resumed, policy2 = build(200)
    resumed.load(tmp_path / "ckpt.pt")
    resumed.fit(20)
    assert resumed.env_steps == 200 and resumed.batch == straight.batch
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in policy2.state_dict().items())


def test_normalised_observations_the_agent_does_not_act_on_are_refused():
    from fastrl_lite.envs.normalize import NormalizeObservation, ObservationNormalizer
    model = DQN(4, 2)
    stepper = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model), seed=0)
    with pytest.raises(ValueError, match="DQNLearner: dls\\[0\\] normalises observations.*PPODataPipe"):
        DQNLearner(model, [NormalizeObservation(stepper, ObservationNormalizer((4,)))])
    env = make_vec_env("CartPole-v1")
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    raw = GymDataPipe(["CartPole-v1"], agent=PPOAgent(policy), seed=0)  # its agent reads no normaliser
    with pytest.raises(ValueError, match="does not act on them with the same normaliser"):
        PPOLearner(policy, [NormalizeObservation(raw, ObservationNormalizer((4,)))], n_steps=32, batch_size=16)
    PPOLearner(policy, [PPODataPipe("CartPole-v1", policy, normalize_obs=True)], n_steps=32, batch_size=16)
