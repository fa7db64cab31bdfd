"""PPO: GAE against hand-computed values, the clipped objective, minibatch epochs, the KL early stop,
the normalisers, the policies, bad input, exact resume and learning CartPole."""
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torchdata.nodes import IterableWrapper

from fastrl_lite import GymStepper, SimpleStep, TrainBatch, set_seed
from fastrl_lite.agents.policies import ActorCriticPolicy, PPOAgent, gaussian_entropy, gaussian_log_prob
from fastrl_lite.algos.ppo import PPODataPipe, PPOLearner, PPOLoss, linear_schedule
from fastrl_lite.envs import make_vec_env
from fastrl_lite.envs.normalize import (NormalizeObservation, NormalizeReward, ObservationNormalizer,
                                        RunningMeanStd)
from fastrl_lite.memory.rollout import GAE, Minibatches, MonteCarloReturns, RolloutCollector, gae_advantages


# GAE ------------------------------------------------------------------------------------------------

def hand_rollout():
    """Two envs, three steps. Env 0 terminates at t=1 (an episode ends mid-rollout, a new one starts at
    t=2); env 1 is truncated at t=0, whose true final observation is worth 10. V(next_state) is the
    next_state's first entry."""
    next_value = torch.tensor([[0.4, 10.0], [100.0, 3.0], [2.0, 4.0]])  # [T, N]; 100 follows a termination
    return SimpleStep(
        state=torch.zeros(3, 2, 1), action=torch.zeros(3, 2, dtype=torch.long),
        reward=torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, -1.0]]),
        value=torch.tensor([[0.5, 1.0], [0.4, 2.0], [0.3, 3.0]]),
        next_state=next_value.unsqueeze(-1),
        terminated=torch.tensor([[False, False], [True, False], [False, False]]),
        truncated=torch.tensor([[False, True], [False, False], [False, False]]),
        log_prob=torch.zeros(3, 2))


def test_gae_matches_hand_computed_values():
    # γ = 0.9, γλ = 0.72. Env 0: δ2 = 3 + 0.9·2 − 0.3 = 4.5 (the rollout's end bootstraps from V(s'));
    # δ1 = 2 − 0.4 = 1.6 (terminated: no bootstrap, no carry); δ0 = 1 + 0.9·0.4 − 0.5 = 0.86, A0 = 0.86 + 0.72·1.6.
    # Env 1: δ2 = −1 + 0.9·4 − 3 = −0.4; δ1 = 1 + 0.9·3 − 2 = 1.7, A1 = 1.7 + 0.72·(−0.4);
    # δ0 = 0 + 0.9·10 − 1 = 8 (truncated: bootstraps from the final observation's value, no carry).
    out = next(GAE(IterableWrapper([hand_rollout()]), lambda s: s[:, 0], gamma=0.9, gae_lambda=0.8))
    expected = torch.tensor([[0.86 + 0.72 * 1.6, 8.0], [1.6, 1.7 - 0.72 * 0.4], [4.5, -0.4]])
    assert torch.allclose(out.advantages, expected, atol=1e-6)
    assert torch.allclose(out.returns, expected + out.value, atol=1e-6)


def test_monte_carlo_returns_are_gae_with_lambda_one():
    out = next(MonteCarloReturns(IterableWrapper([hand_rollout()]), lambda s: s[:, 0], gamma=0.9))
    # env 0: G2 = 3 + 0.9·2, G1 = 2, G0 = 1 + 0.9·2; env 1: G2 = −1 + 0.9·4, G1 = 1 + 0.9·G2, G0 = 0.9·10
    g = torch.tensor([[1 + 0.9 * 2, 9.0], [2.0, 1 + 0.9 * 2.6], [4.8, 2.6]])
    assert torch.allclose(out.returns, g, atol=1e-6)
    assert torch.allclose(out.advantages, g - out.value, atol=1e-6)


def reference_gae(r, v, next_v, term, trunc, gamma, lam):
    "A step-by-step loop, as written in the papers, for comparison on real rollouts."
    T, N = r.shape
    adv = np.zeros((T, N))
    for n in range(N):
        last = 0.0
        for t in reversed(range(T)):
            done = term[t, n] or trunc[t, n]
            following = next_v[t, n] if done or t == T - 1 else v[t + 1, n]
            delta = r[t, n] + gamma * (0.0 if term[t, n] else following) - v[t, n]
            last = delta + gamma * lam * (0.0 if done else last)
            adv[t, n] = last
    return adv


def test_rollout_on_a_real_env_keeps_truncation_apart_and_bootstraps_from_the_final_observation():
    set_seed(0)
    env = make_vec_env("CartPole-v1", num_envs=3, max_episode_steps=7)  # truncations every 7 steps
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    rollouts = RolloutCollector(GymStepper(env, PPOAgent(policy), seed=1), n_steps=20)
    rollout = next(rollouts)
    assert rollout.state.shape == (20, 3, 4) and rollout.log_prob.shape == (20, 3)
    assert rollout.env_steps == 60 and rollouts.env_steps == 60
    assert rollout.truncated.any() and not (rollout.terminated & rollout.truncated).any()
    # after a truncation the next state is the true final observation, not the next episode's first
    t, n = rollout.truncated.nonzero()[0].tolist()
    assert not torch.equal(rollout.next_state[t, n], rollout.state[t + 1, n])
    # the stored extras are the policy's: log π(a|s) and V(s) of the stored action and state
    with torch.no_grad():
        log_prob, _, value = policy.evaluate(rollout.state.reshape(60, 4), rollout.action.reshape(60))
    assert torch.allclose(log_prob, rollout.log_prob.reshape(60), atol=1e-6)
    assert torch.allclose(value, rollout.value.reshape(60), atol=1e-6)
    with torch.no_grad():
        next_v = policy.value(rollout.next_state.reshape(60, 4)).reshape(20, 3)
    adv = gae_advantages(rollout.reward, rollout.value, next_v, rollout.terminated, rollout.truncated, 0.98, 0.8)
    expected = reference_gae(rollout.reward.numpy(), rollout.value.numpy(), next_v.numpy(),
                             rollout.terminated.numpy(), rollout.truncated.numpy(), 0.98, 0.8)
    assert np.allclose(adv.numpy(), expected, atol=1e-5)


def test_gae_rejects_discounts_outside_zero_one():
    for bad in (dict(gamma=1.5), dict(gae_lambda=-0.1), dict(gamma=True)):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            GAE(IterableWrapper([]), lambda s: s, **bad)


# the clipped objective --------------------------------------------------------------------------------

class Probe(nn.Module):
    "A 'policy' whose log-probs, values and entropies are parameters, one per transition."

    def __init__(self, log_prob, value, entropy):
        super().__init__()
        self.lp = nn.Parameter(torch.tensor(log_prob))
        self.v = nn.Parameter(torch.tensor(value))
        self.h = nn.Parameter(torch.tensor(entropy))

    def evaluate(self, state, action):
        return self.lp, self.h, self.v


def minibatch(n, log_prob=None, advantages=None, value=None, returns=None):
    return TrainBatch(SimpleStep(state=torch.zeros(n, 1), action=torch.zeros(n, dtype=torch.long),
                                 log_prob=torch.zeros(n) if log_prob is None else log_prob,
                                 advantages=torch.zeros(n) if advantages is None else advantages,
                                 value=torch.zeros(n) if value is None else value,
                                 returns=torch.zeros(n) if returns is None else returns))


def test_clipped_surrogate_value_and_gradient_at_chosen_ratios():
    ratios = torch.tensor([0.5, 1.5, 0.5, 1.5, 1.1])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])
    probe = Probe(ratios.log().tolist(), [0.0] * 5, [0.0] * 5)
    loss_stage = PPOLoss(IterableWrapper([minibatch(5, advantages=advantages)]), probe, clip_range=0.2,
                         vf_coef=0.0, normalize_advantage=False)
    loss, approx_kl, clip_fraction, policy_loss, _, _ = loss_stage.compute(
        minibatch(5, advantages=advantages).step, 0.2, None)
    # min(rA, clip(r)A): 0.5 (unclipped), 1.2 (clipped), −0.8 (clipped), −1.5 (unclipped), 1.1 (inside)
    assert math.isclose(float(policy_loss.detach()), -(0.5 + 1.2 - 0.8 - 1.5 + 1.1) / 5, abs_tol=1e-6)
    loss.backward()
    # d/d log π of −mean(min(...)): −rA/5 where the unclipped term is the minimum, 0 where clipping holds it
    assert torch.allclose(probe.lp.grad, torch.tensor([-0.1, 0.0, 0.0, 0.3, -0.22]), atol=1e-6)
    assert math.isclose(float(clip_fraction), 0.8, abs_tol=1e-6)
    assert math.isclose(float(approx_kl), float(((ratios - 1) - ratios.log()).mean()), abs_tol=1e-6)


def test_value_clipping_entropy_bonus_and_advantage_normalisation():
    probe = Probe([0.0, 0.0], [2.0, 0.8], [0.5, 1.5])
    batch = minibatch(2, advantages=torch.tensor([1.0, 3.0]), value=torch.tensor([1.0, 1.0]),
                      returns=torch.tensor([1.0, 0.0]))
    stage = PPOLoss(IterableWrapper([]), probe, clip_range=0.2, clip_range_vf=0.5, ent_coef=0.1, vf_coef=0.5)
    loss, _, _, policy_loss, value_loss, entropy_loss = stage.compute(batch.step, 0.2, 0.5)
    policy_loss, value_loss, entropy_loss = policy_loss.detach(), value_loss.detach(), entropy_loss.detach()
    # V clipped to V_old ± 0.5: 2.0 → 1.5 (held, no gradient), 0.8 stays; value loss mean((1 − 1.5)², (0 − 0.8)²)
    assert math.isclose(float(value_loss), (0.25 + 0.64) / 2, abs_tol=1e-6)
    assert math.isclose(float(entropy_loss), -1.0, abs_tol=1e-6)
    # ratio 1 everywhere: −mean(normalised advantages) = 0
    assert math.isclose(float(policy_loss), 0.0, abs_tol=1e-6)
    assert math.isclose(float(loss.detach()), 0.5 * 0.445 - 0.1, abs_tol=1e-6)
    loss.backward()
    assert torch.allclose(probe.v.grad, torch.tensor([0.0, 0.5 * 0.8]), atol=1e-6)
    assert torch.allclose(probe.h.grad, torch.tensor([-0.05, -0.05]), atol=1e-6)
    # normalised advantages (−1/√2, +1/√2 with the sample std): the gradient on log π is −Â/2
    assert torch.allclose(probe.lp.grad, torch.tensor([0.5, -0.5]) / math.sqrt(2), atol=1e-5)


def test_ppo_loss_rejects_bad_settings():
    probe = Probe([0.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="clip_range must be a number > 0"):
        PPOLoss(IterableWrapper([]), probe, clip_range=0)
    with pytest.raises(ValueError, match="ent_coef must be a finite number >= 0"):
        PPOLoss(IterableWrapper([]), probe, ent_coef=float("nan"))
    with pytest.raises(ValueError, match="target_kl needs the Minibatches stage"):
        PPOLoss(IterableWrapper([]), probe, target_kl=0.01)


# minibatches and the KL early stop --------------------------------------------------------------------

def numbered_rollout(T, N, offset=0):
    "A [T, N] rollout whose rewards number its transitions (offset + row of the flat rollout)."
    rewards = (torch.arange(T * N, dtype=torch.float32) + offset).reshape(T, N)
    return SimpleStep(state=rewards.unsqueeze(-1), action=torch.zeros(T, N, dtype=torch.long), reward=rewards,
                      log_prob=torch.zeros(T, N), value=torch.zeros(T, N), advantages=torch.ones(T, N),
                      returns=torch.zeros(T, N))


def test_minibatches_cover_each_rollout_exactly_once_per_epoch():
    torch.manual_seed(0)
    stage = Minibatches(IterableWrapper([numbered_rollout(4, 3), numbered_rollout(4, 3, offset=100)]),
                        n_epochs=2, batch_size=4)
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(3):
            batch = next(stage)
            assert len(batch.indices) == 4 and torch.equal(batch.step.reward, batch.indices.float())
            seen.append(batch.indices)
        epochs.append(torch.cat(seen))
        assert torch.equal(epochs[-1].sort().values, torch.arange(12))
    assert not torch.equal(epochs[0], epochs[1])  # each epoch shuffles anew
    assert next(stage).step.reward.min() >= 100  # then the next rollout
    with pytest.raises(ValueError, match="larger than a rollout of 12"):
        next(Minibatches(IterableWrapper([numbered_rollout(4, 3)]), n_epochs=1, batch_size=16))


def test_kl_early_stop_ends_the_passes_over_a_rollout_without_stepping_on_it():
    first, second = numbered_rollout(2, 2), numbered_rollout(2, 2, offset=100)
    second.log_prob = torch.full((2, 2), 0.5)  # collected by the policy as it is after the change below
    probe = Probe([0.0] * 2, [0.0] * 2, [0.0] * 2)
    minibatches = Minibatches(IterableWrapper([first, second]), n_epochs=4, batch_size=2)
    stage = PPOLoss(minibatches, probe, target_kl=0.01, minibatches=minibatches)
    assert float(next(stage).step.reward.max()) < 100  # ratio 1: KL 0, stepped on
    with torch.no_grad():
        probe.lp.fill_(0.5)  # ratio e^0.5 on the first rollout: KL = e^0.5 − 1.5 ≈ 0.149 > 1.5 · 0.01
    batch = next(stage)
    assert float(batch.step.reward.min()) >= 100  # the first rollout's passes ended; this round is the next's
    assert stage.kl_stops == 1 and minibatches.epochs_done == 0
    assert "ppo" in batch.losses


# normalisers --------------------------------------------------------------------------------------------

def test_running_mean_std_merges_batches_exactly():
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(3.0, 2.0, size=(300, 2)))
    one, split = RunningMeanStd((2,)), RunningMeanStd((2,))
    one.update(data)
    for chunk in data.split(7):
        split.update(chunk)
    assert torch.allclose(one.mean, split.mean, atol=1e-12) and torch.allclose(one.var, split.var, atol=1e-12)
    # the prior (mean 0, var 1, count 1e-4) weighs 1e-4 against 300 samples
    assert torch.allclose(one.mean, data.mean(0), rtol=1e-5)
    assert torch.allclose(one.var, data.var(0, unbiased=False), rtol=1e-5)
    assert math.isclose(one.count, 300 + 1e-4)


def test_running_mean_std_is_sb3s_arithmetic_and_round_trips():
    "Bit for bit SB3's RunningMeanStd (np.mean, np.var, the merge), read as float64 tensors."
    rng = np.random.default_rng(1)
    mean, var, count = np.zeros(3), np.ones(3), 1e-4
    rms = RunningMeanStd((3,))
    for _ in range(20):
        x = rng.normal(2.0, 3.0, size=(16, 3)).astype(np.float32)
        rms.update(torch.from_numpy(x))
        b_mean, b_var, b = np.mean(x.astype(np.float64), 0), np.var(x.astype(np.float64), 0), len(x)
        delta, total = b_mean - mean, count + b
        mean, var = mean + delta * b / total, (var * count + b_var * b + delta ** 2 * count * b / total) / total
        count = total
    assert rms.mean.dtype == torch.float64 and np.array_equal(rms.mean.numpy(), mean)
    assert np.array_equal(rms.var.numpy(), var) and rms.count == count
    copy = RunningMeanStd((3,))
    copy.load_state_dict(rms.state_dict())
    assert torch.equal(copy.mean, rms.mean) and torch.equal(copy.var, rms.var) and copy.count == rms.count
    with pytest.raises(ValueError, match="do not fit"):
        RunningMeanStd((4,)).load_state_dict(rms.state_dict())
    for bad in (torch.ones(3), torch.ones(16, 4), torch.ones(0, 3)):  # one observation unbatched, another shape, none
        with pytest.raises(ValueError, match=r"batch of shape \[B >= 1, \*\(3,\)\]"):
            rms.update(bad)
    assert np.array_equal(rms.mean.numpy(), mean) and rms.count == count  # unchanged
    scalar = RunningMeanStd(())  # the reward normaliser's: one number
    scalar.update(torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert scalar.mean.shape == () and math.isclose(float(scalar.mean), 2.0, rel_tol=1e-4)


def test_observations_are_stored_as_the_policy_saw_them():
    set_seed(0)
    env = make_vec_env("CartPole-v1", num_envs=2)
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    normalizer = ObservationNormalizer((4,))
    seen = []
    policy.actor_body[0].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    pipe = NormalizeObservation(GymStepper(env, PPOAgent(policy, obs_normalizer=normalizer), seed=0), normalizer)
    for _ in range(30):
        step = next(pipe)
        assert torch.equal(step.state, seen[-1])  # bit for bit what the policy acted on
    assert normalizer.rms.count > 59 and (step.state.abs() <= 10).all()
    assert not torch.allclose(normalizer.rms.mean, torch.zeros(4, dtype=torch.float64))


def test_reward_normaliser_divides_by_the_running_std_of_the_discounted_return():
    steps = [SimpleStep(reward=torch.tensor([1.0]), terminated=torch.tensor([False]),
                        truncated=torch.tensor([t == 1])) for t in range(3)]
    stage = NormalizeReward(IterableWrapper(steps), gamma=0.5)
    out = [float(next(stage).reward) for _ in range(3)]
    # discounted returns 1, 1.5, then (after the truncation) 1 again; each reward divided by the std so far
    rms = RunningMeanStd(())
    expected = []
    for ret in (1.0, 1.5, 1.0):
        rms.update(torch.tensor([ret], dtype=torch.float64))
        expected.append(1.0 / math.sqrt(float(rms.var) + 1e-8))
    assert np.allclose(out, np.clip(expected, -10, 10), rtol=1e-6)
    assert out[0] == 10.0  # var of one sample against the tiny prior is ~0: clipped


def test_reward_normaliser_keeps_the_reward_dtype_and_resumes_its_returns():
    steps = [SimpleStep(reward=torch.tensor([1.0, -2.0], dtype=torch.float64), terminated=torch.tensor([False, True]),
                        truncated=torch.tensor([False, False])) for _ in range(4)]
    stage = NormalizeReward(IterableWrapper(steps), gamma=0.9)
    first = next(stage)
    assert first.reward.dtype == torch.float64
    # env 1's episode ended: its running return restarts at 0, env 0's is 1
    assert torch.equal(stage.returns, torch.tensor([1.0, 0.0], dtype=torch.float64))
    state = stage.get_state()
    expected = [next(stage).reward for _ in range(2)]
    resumed = NormalizeReward(IterableWrapper(steps), gamma=0.9)
    resumed.reset(state)
    assert all(torch.equal(next(resumed).reward, r) for r in expected)
    other = SimpleStep(reward=torch.ones(3), terminated=torch.zeros(3, dtype=torch.bool),
                       truncated=torch.zeros(3, dtype=torch.bool))
    for bad in (other, SimpleStep(reward=torch.ones(2, 1), terminated=torch.zeros(2, 1, dtype=torch.bool),
                                  truncated=torch.zeros(2, 1, dtype=torch.bool))):
        stage = NormalizeReward(IterableWrapper([steps[0], bad]), gamma=0.9)
        next(stage)
        returns, count = stage.returns.clone(), stage.rms.count
        with pytest.raises(ValueError, match=r"one reward per env"):
            next(stage)
        assert torch.equal(stage.returns, returns) and stage.rms.count == count  # nothing changed


# policies --------------------------------------------------------------------------------------------

def test_gaussian_log_prob_and_entropy():
    mean, log_std = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, -0.7]])
    action = torch.tensor([[1.5, -1.2]])
    normal = torch.distributions.Normal(mean, log_std.exp())
    assert torch.allclose(gaussian_log_prob(action, mean, log_std), normal.log_prob(action).sum(-1), atol=1e-6)
    assert torch.allclose(gaussian_entropy(log_std), normal.entropy().sum(-1), atol=1e-6)
    # at the mean: −Σ (log σ_i + ½ log 2π)
    assert math.isclose(float(gaussian_log_prob(mean, mean, log_std)), -(-0.4 + math.log(2 * math.pi)), abs_tol=1e-6)
    # H = Σ ½ + ½ log 2π + log σ_i
    assert math.isclose(float(gaussian_entropy(log_std)), 1 + math.log(2 * math.pi) - 0.4, abs_tol=1e-6)


def test_loss_without_entropy_term_has_the_gradients_of_the_full_expression():
    "ent_coef=0 leaves the entropy out of the graph backward runs: the same loss and gradients, bit for bit."
    torch.manual_seed(0)
    env = make_vec_env("CartPole-v1")
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    step = minibatch(32, log_prob=torch.randn(32) - 1, advantages=torch.randn(32), value=torch.randn(32),
                     returns=torch.randn(32)).step
    step.state, step.action = torch.randn(32, 4), torch.randint(0, 2, (32,))
    stage = PPOLoss(IterableWrapper([]), policy, ent_coef=0.0)
    loss, _, _, policy_loss, value_loss, entropy_loss = stage.compute(step, 0.2, None)
    loss.backward()
    grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    _, entropy, _ = policy.evaluate(step.state, step.action)
    assert torch.equal(entropy_loss.detach(), -entropy.detach().mean())  # still reported
    _, _, _, policy_loss, value_loss, entropy_loss = stage.compute(step, 0.2, None)  # a fresh graph
    written_out = policy_loss + 0.0 * entropy_loss + 0.5 * value_loss
    assert torch.equal(loss.detach(), written_out.detach())
    written_out.backward()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, policy.parameters()))


def test_gaussian_policy_stores_the_unclipped_action_and_the_env_gets_it_clipped():
    set_seed(0)
    env = make_vec_env("Pendulum-v1", num_envs=2)
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space, log_std_init=2.0)
    stepper = GymStepper(env, PPOAgent(policy), seed=0)
    steps = SimpleStep.cat([next(stepper) for _ in range(20)])
    assert (steps.action.abs() > 2).any()  # σ ≈ 7.4 against bounds of ±2: stored as sampled
    assert (stepper.to_env(steps.action).abs() <= 2).all()
    with torch.no_grad():
        log_prob, entropy, _ = policy.evaluate(steps.state, steps.action)
    assert torch.allclose(log_prob, steps.log_prob, atol=1e-5)
    assert torch.allclose(entropy, torch.full((40,), 0.5 + 0.5 * math.log(2 * math.pi) + 2.0), atol=1e-6)
    policy.eval()  # greedy: the mean, no extras
    assert torch.equal(stepper.agent(SimpleStep(state=steps.state[:3])), policy(steps.state[:3]))


def test_categorical_policy_matches_torch_distributions_and_orthogonal_init():
    env = make_vec_env("CartPole-v1")
    for shared in (False, True):
        policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space, shared=shared)
        assert (policy.critic_body is policy.actor_body) == shared
        state, action = torch.randn(6, 4), torch.tensor([0, 1, 1, 0, 1, 0])
        log_prob, entropy, value = policy.evaluate(state, action)
        dist = torch.distributions.Categorical(logits=policy.action_head(policy.actor_body(state)))
        assert torch.allclose(log_prob, dist.log_prob(action), atol=1e-6)
        assert torch.allclose(entropy, dist.entropy(), atol=1e-6) and value.shape == (6,)
    w = policy.actor_body[0].weight  # orthogonal rows with gain √2
    assert torch.allclose(w @ w.T, 2 * torch.eye(64)[:w.shape[0], :w.shape[0]], atol=1e-4) or \
        torch.allclose(w.T @ w, 2 * torch.eye(4), atol=1e-4)
    assert torch.allclose(policy.action_head.weight.norm(dim=1), torch.full((2,), 0.01), atol=1e-6)


# the learner ------------------------------------------------------------------------------------------

CARTPOLE = dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, ent_coef=0.0,
                learning_rate=linear_schedule(1e-3), clip_range=linear_schedule(0.2), total_timesteps=100_000)


def cartpole_learner(seed=0, n_envs=8, env_id="CartPole-v1", **kwargs):
    set_seed(seed)
    env = make_vec_env(env_id)
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    dl = PPODataPipe(env_id, policy, n_envs=n_envs, seed=seed)
    return PPOLearner(policy, [dl], **{**CARTPOLE, **kwargs}), policy, dl


@pytest.mark.parametrize("bad, message", [
    (dict(batch_size=300), "must divide a rollout of n_steps x n_envs = 32 x 8 = 256"),
    (dict(batch_size=512), "must divide a rollout"),
    (dict(gamma=1.5), r"the discount must lie in \[0, 1\]"),
    (dict(gae_lambda=-0.5), r"λ must lie in \[0, 1\]"),
    (dict(n_epochs=0), "n_epochs must be a whole number >= 1"),
    (dict(total_timesteps=None), "A schedule .* total_timesteps"),
    (dict(learning_rate=-1.0), "learning_rate must be a number > 0"),
    (dict(max_grad_norm=0), "max_grad_norm must be > 0"),
])
def test_impossible_settings_are_refused_before_anything_changes(bad, message):
    set_seed(0)
    env = make_vec_env("CartPole-v1")
    policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    dl = PPODataPipe("CartPole-v1", policy, n_envs=8, seed=0)
    with pytest.raises(ValueError, match=message):
        PPOLearner(policy, [dl], **{**CARTPOLE, **bad})
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert dl.env_steps == 0


def test_wrong_env_or_policy_is_refused():
    with pytest.raises(ValueError, match="Unknown environment id 'CartPol-v1'. Did you mean 'CartPole-v1'"):
        PPODataPipe("CartPol-v1", ActorCriticPolicy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)))
    pendulum = make_vec_env("Pendulum-v1")
    policy = ActorCriticPolicy(pendulum.single_observation_space, pendulum.single_action_space)
    with pytest.raises(ValueError, match="policy takes 3 observation values, this env's observations have 4"):
        PPODataPipe("CartPole-v1", policy)
    with pytest.raises(ValueError, match="policy samples continuous .* this env's actions are Discrete"):
        GymStepper(make_vec_env("CartPole-v1"), PPOAgent(policy))
    other = ActorCriticPolicy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    cartpole_policy = ActorCriticPolicy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="different network than the policy"):
        PPOLearner(other, [PPODataPipe("CartPole-v1", cartpole_policy)], n_steps=64)
    with pytest.raises(ValueError, match=r"Discrete or a one-dimensional Box action space"):
        ActorCriticPolicy(gym.spaces.Box(-1, 1, (4,)), gym.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="log_std_init must be a finite number"):
        ActorCriticPolicy(pendulum.single_observation_space, pendulum.single_action_space, log_std_init=float("nan"))
    with pytest.raises(ValueError, match=r"A seed must be a whole number in \[0, 2\*\*32 - 1\], got -3"):
        PPODataPipe("CartPole-v1", cartpole_policy, seed=-3)


def test_nan_rewards_stop_training_with_a_clear_error():
    class NaNReward(gym.Wrapper):
        def step(self, action):
            obs, _, terminated, truncated, info = self.env.step(action)
            return obs, float("nan"), terminated, truncated, info
    set_seed(0)
    policy = ActorCriticPolicy(gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Discrete(2))
    env = make_vec_env("CartPole-v1", num_envs=2, wrappers=[NaNReward])
    learner = PPOLearner(policy, [GymStepper(env, PPOAgent(policy), seed=0)], n_steps=16, batch_size=32)
    with pytest.raises(FloatingPointError, match="NaN/inf reward"):
        learner.fit(1)


def test_a_nan_loss_stops_training_naming_the_stage():
    learner, policy, _ = cartpole_learner(n_envs=2, n_steps=16, batch_size=32, n_epochs=1, learning_rate=1e-3,
                                          clip_range=0.2, total_timesteps=None)
    with torch.no_grad():
        policy.value_head.bias.fill_(float("nan"))  # NaN values: NaN advantages, returns and loss
    with pytest.raises(FloatingPointError, match=r"policy_loss became NaN/inf at gradient round 1 \(epoch 1\), "
                                                 "computed by PPOLoss"):
        learner.fit(1)


def test_target_kl_runs_fewer_rounds_per_rollout():
    learner, _, _ = cartpole_learner(target_kl=1e-6, n_envs=2, n_steps=64, batch_size=32, n_epochs=10,
                                     learning_rate=1e-3, clip_range=0.2, total_timesteps=None)
    learner.fit(1)  # one rollout's worth of rounds (40) without early stops
    loss_stage = next(n for n in __import__("fastrl_lite").pipes.pipe_graph(learner.pipe) if isinstance(n, PPOLoss))
    assert loss_stage.kl_stops > 0
    assert learner.env_steps >= 2 * 128  # early stops moved on to more rollouts
    row = learner.history[-1]
    assert row["approx_kl"] > 0 and 0 <= row["clip_fraction"] <= 1


def test_exact_resume_mid_rollout_with_normalisers(tmp_path):
    def build():
        set_seed(3)
        env = make_vec_env("Pendulum-v1")
        policy = ActorCriticPolicy(env.single_observation_space, env.single_action_space)
        dl = PPODataPipe("Pendulum-v1", policy, n_envs=2, seed=3, normalize_obs=True, normalize_reward=True,
                         gamma=0.9)
        # 4 rounds per rollout, 3 per epoch: every checkpoint falls inside a rollout's passes
        return PPOLearner(policy, [dl], n_steps=32, batch_size=32, n_epochs=2, gamma=0.9,
                          learning_rate=linear_schedule(1e-3), total_timesteps=2000, batches=3), policy, dl
    learner, policy, dl = build()
    learner.fit(3)
    learner.save(tmp_path / "ckpt.pt")
    learner.fit(2)
    expected = {k: v.clone() for k, v in policy.state_dict().items()}
    stats = dl.source.normalizer.rms.state_dict()
    resumed, policy2, dl2 = build()
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.batch == 9 and resumed.env_steps == learner.env_steps - 64
    resumed.fit(2)
    assert all(torch.equal(expected[k], v) for k, v in policy2.state_dict().items())
    assert torch.equal(dl2.source.normalizer.rms.mean, stats["mean"])
    assert torch.equal(dl2.source.normalizer.rms.var, stats["var"])
    assert torch.equal(dl2.returns, dl.returns)
    assert resumed.env_steps == learner.env_steps


def test_ppo_learns_cartpole_within_100k_env_steps():
    "rl-zoo's tuned CartPole PPO: greedy mean >= 475 within 100k env steps."
    learner, _, _ = cartpole_learner(seed=0)
    epochs = 100_000 // (32 * 8)
    learner.fit(epochs)
    assert learner.env_steps <= 100_000
    assert learner.validate(10)["mean"] >= 475


def test_cli_trains_ppo_with_rl_zoo_settings_chosen_by_env_id(tmp_path, capsys):
    from fastrl_lite.cli import main as cli_main
    from fastrl_lite.presets import resolve
    assert resolve("ppo", "Pendulum-v1")[0]["gamma"] == 0.9 and resolve("ppo", "Acrobot-v1")[0]["normalize"] is True
    out = tmp_path / "run"
    cli_main(["train", "ppo", "--steps", "2100", "--out", str(out), "--eval-episodes", "2"])
    assert {"config.json", "metrics.csv", "returns.csv", "model.pt", "eval.json", "checkpoint.pt"} <= \
        {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["env"] == "CartPole-v1" and config["hp"]["n_steps"] == 32 and config["hp"]["learning_rate"] == "lin_1e-3"
    result = json.loads((out / "eval.json").read_text())
    # 8 whole rollouts of 8 envs x 32 steps, then the budget's last 52 steps, in whole vector steps of 8 envs:
    # they ran, so they count, and stay in the rollout a resume with a larger budget completes
    assert result["env_steps"] == 2104
    assert len(result["eval_returns"]) == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert "clip_fraction" in rows[0] and "approx_kl" in rows[0] and len(rows) > 2
    with pytest.raises(SystemExit):
        cli_main(["train", "ppo", "--out", str(tmp_path / "bad"), "--hp", "batch_size=300"])
    assert "must divide a rollout" in capsys.readouterr().err and not (tmp_path / "bad").exists()
