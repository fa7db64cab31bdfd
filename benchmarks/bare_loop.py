"""Framework overhead: fastrl_lite against a bare PyTorch loop doing the same maths.

    python benchmarks/bare_loop.py                                  # DQN 20k + DDPG 10k env steps, 2 repeats
    python benchmarks/bare_loop.py --algos dqn --dqn-steps 50000 --repeats 3 --threads 1

The bare loop (`bare_dqn`, `bare_ddpg` below) imports nothing from fastrl_lite: a gymnasium
`SyncVectorEnv` in SAME_STEP autoreset mode (what fastrl_lite's `make_vec_env` builds), replay
held in preallocated tensors written in place and sampled with `index_select`, the same networks
and optimizers, and the same schedule of env steps and gradient rounds as `fastrl_lite.cli`'s
`build_dqn` / `build_ddpg`:

- DQN, CartPole-v1: MLP [256, 256] ReLU; Adam(lr 2.3e-3, fused); Huber loss; gradient norm
  clipped at 10; batch 64 from a 100k buffer; first burst once 1000 transitions are stored, then
  128 gradient rounds every 256 env steps; hard target copy every 128 rounds; γ 0.99;
  ε-greedy, ε 1 → 0.04 over the first 16 % of the env steps (the Q-network runs on every step,
  each env draws its own explore coin, as in fastrl_lite's agent).
- DDPG, Pendulum-v1: actor and critic [400, 300] ReLU (critic takes [s, a] at its input), tanh
  actor scaled onto [-2, 2]; uniform random actions for the first `warmup` = min(10k, max(256,
  steps // 2)) env steps, Gaussian noise σ 0.1 (of the half range) always added, actions clipped
  to [-1, 1] and stored so (the env receives them scaled); batch 256 from a 200k buffer; from
  `warmup` on, one round per env step: critic step on the MSE to
  y = r + 0.98 (1 - terminated) Q'(s', μ'(s')), actor step on -Q(s, μ(s)) with the critic's
  weights frozen, then a Polyak update of both targets (τ 0.005, `torch._foreach_lerp_`); both
  optimizers Adam(lr 1e-3, fused).
- TD3, Pendulum-v1: as DDPG, with two critics in PyTorch's default init (the target takes the
  minimum of the two target critics, the target action smoothed by N(0, 0.2) noise clipped at
  0.5), the critics' loss the sum
  of their mean squared errors; every 2nd round the actor step on -Q1(s, μ(s)) and the Polyak
  update of the critics' and the actor's targets.
- SAC, Pendulum-v1: a squashed-Gaussian actor [256, 256] (mean and log σ heads, log σ clamped to
  [-20, 2], PyTorch's default init) and two [256, 256] critics, PyTorch's default init; uniform random
  actions for the first 100 env steps, then a ~ π(·|s); batch 256 from a 1M buffer, from 256 stored
  transitions on one round per env step: critic step on ½ Σ_i MSE to the soft target
  y = r + 0.99 (1 - terminated) (min_i Q̄_i(s', ã') - α log π(ã'|s')), actor step on
  mean(α log π(ã|s) - min_i Q_i(s, ã)) with the critics' weights frozen, temperature step on
  -log α (log π(ã|s) - 1) with a fresh ã drawn without gradients, Polyak update of the critics'
  targets (τ 0.005); the three optimizers Adam(lr 1e-3, fused).

Each run is a fresh subprocess (this script re-invoked with --worker) calling
`torch.set_num_threads(--threads)`, with subnormal floats flushed to zero in both, as
`Learner.fit` flushes them; runs alternate fastrl_lite, bare, fastrl_lite, bare, ...
Timing covers training only (construction excluded): wall clock and process CPU time. The
printed ratio is fastrl_lite's env steps per second over the bare loop's (target >= 0.95).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from harness import cpu_model, emit_run, fastrl_lite_run, run_worker, set_threads

TARGET_RATIO = 0.95
ENVS = {"dqn": "CartPole-v1", "ddpg": "Pendulum-v1", "td3": "Pendulum-v1", "sac": "Pendulum-v1"}
LIBS = ("fastrl_lite", "bare")


# ---------------------------------------------------------------------------------------------- bare loops

def _vec_env(env_id: str):
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode
    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id)], autoreset_mode=AutoresetMode.SAME_STEP)


def _final_next_obs(obs, terminated, truncated, info):
    "SAME_STEP autoreset: `obs` already holds the reset observation where an episode ended."
    import numpy as np
    done = terminated | truncated
    if not done.any():
        return obs, done
    idx = np.flatnonzero(done)
    final = np.array(obs)
    final[idx] = np.stack(info["final_obs"][idx])
    return final, done


def bare_dqn(steps: int, seed: int) -> dict:
    import copy
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    lr, bs, capacity, learning_starts, gamma = 2.3e-3, 64, 100_000, 1000, 0.99
    train_every, updates, target_sync, clip = 256, 128, 128, 10.0
    eps_start, eps_end, eps_steps = 1.0, 0.04, max(1, int(0.16 * steps))

    torch.manual_seed(seed)
    np.random.seed(seed)
    env = _vec_env(ENVS["dqn"])
    n_envs, state_sz, n_actions = env.num_envs, env.single_observation_space.shape[0], int(env.single_action_space.n)
    q_net = nn.Sequential(nn.Linear(state_sz, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, n_actions))
    target_net = copy.deepcopy(q_net).requires_grad_(False)
    opt = torch.optim.Adam(q_net.parameters(), lr=lr, fused=True)
    params, target_params = list(q_net.parameters()), list(target_net.parameters())

    states = torch.empty(capacity, state_sz)
    next_states = torch.empty(capacity, state_sz)
    actions = torch.empty(capacity, dtype=torch.long)
    rewards = torch.empty(capacity)
    terminals = torch.empty(capacity, dtype=torch.bool)
    size = pointer = rounds = env_steps = 0
    returns, episode_return = [], np.zeros(n_envs)

    start, cpu_start = time.perf_counter(), time.process_time()
    obs, _ = env.reset(seed=seed)
    obs_t = torch.from_numpy(obs.astype(np.float32))
    next_train = learning_starts
    while env_steps < steps:
        epsilon = eps_end if env_steps >= eps_steps else eps_start - (eps_start - eps_end) * env_steps / eps_steps
        with torch.no_grad():
            greedy = q_net(obs_t).argmax(dim=-1)
        explore = torch.rand(n_envs) < epsilon
        action = torch.where(explore, torch.randint(n_actions, (n_envs,)), greedy)
        obs, reward, terminated, truncated, info = env.step(action.numpy())
        final, done = _final_next_obs(obs, terminated, truncated, info)
        # store the transition in place (n_envs == 1 here, so no wrap-around split is needed)
        states[pointer:pointer + n_envs] = obs_t
        next_states[pointer:pointer + n_envs] = torch.from_numpy(final.astype(np.float32))
        actions[pointer:pointer + n_envs] = action
        rewards[pointer:pointer + n_envs] = torch.from_numpy(reward.astype(np.float32))
        terminals[pointer:pointer + n_envs] = torch.from_numpy(terminated)
        pointer = (pointer + n_envs) % capacity
        size = min(size + n_envs, capacity)
        env_steps += n_envs
        episode_return += reward
        if done.any():
            returns += episode_return[done].tolist()
            episode_return[done] = 0
        obs_t = torch.from_numpy(obs.astype(np.float32))
        if size >= learning_starts and env_steps >= next_train:
            next_train = env_steps + train_every
            for _ in range(updates):
                idx = torch.randint(size, (bs,))
                s, a, r = states.index_select(0, idx), actions.index_select(0, idx), rewards.index_select(0, idx)
                s2, term = next_states.index_select(0, idx), terminals.index_select(0, idx)
                with torch.no_grad():
                    y = r + gamma * (~term).float() * target_net(s2).max(dim=-1).values
                q = q_net(s).gather(-1, a.unsqueeze(-1)).squeeze(-1)
                loss = F.smooth_l1_loss(q, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, clip, foreach=True)
                opt.step()
                rounds += 1
                if rounds % target_sync == 0:
                    with torch.no_grad():
                        torch._foreach_copy_(target_params, params)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    return {"env_steps": env_steps, "gradient_rounds": rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "last_returns": float(np.mean(returns[-10:])) if returns else float("nan")}


def bare_ddpg(steps: int, seed: int) -> dict:
    import copy
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    gamma, tau, bs, capacity, lr, sigma = 0.98, 0.005, 256, 200_000, 1e-3, 0.1
    warmup = min(10_000, max(256, steps // 2))

    def init(module: nn.Sequential):
        "Kaiming-normal layers with bias 0.01, then the head's weights U(-1e-4, 1e-4): fastrl_lite's Actor/Critic defaults."
        for layer in module:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                nn.init.constant_(layer.bias, 0.01)
        nn.init.uniform_(module[-1].weight, -1e-4, 1e-4)  # the head's bias keeps its 0.01, as in fastrl
        return module

    torch.manual_seed(seed)
    np.random.seed(seed)
    env = _vec_env(ENVS["ddpg"])
    n_envs, state_sz = env.num_envs, env.single_observation_space.shape[0]
    action_sz = env.single_action_space.shape[0]
    low = torch.as_tensor(env.single_action_space.low)
    high = torch.as_tensor(env.single_action_space.high)
    actor_body = init(nn.Sequential(nn.Linear(state_sz, 400), nn.ReLU(), nn.Linear(400, 300), nn.ReLU(),
                                    nn.Linear(300, action_sz)))
    critic = init(nn.Sequential(nn.Linear(state_sz + action_sz, 400), nn.ReLU(), nn.Linear(400, 300), nn.ReLU(),
                                nn.Linear(300, 1)))

    def actor_fn(net, s):
        return torch.tanh(net(s))

    def critic_fn(net, s, a):
        return net(torch.cat((s, a), -1)).squeeze(-1)

    actor_target = copy.deepcopy(actor_body).requires_grad_(False)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    actor_opt = torch.optim.Adam(actor_body.parameters(), lr=lr, fused=True)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=lr, fused=True)
    critic_params = list(critic.parameters())
    online = critic_params + list(actor_body.parameters())
    targets = list(critic_target.parameters()) + list(actor_target.parameters())

    states = torch.empty(capacity, state_sz)
    next_states = torch.empty(capacity, state_sz)
    actions = torch.empty(capacity, action_sz)
    rewards = torch.empty(capacity)
    terminals = torch.empty(capacity, dtype=torch.bool)
    size = pointer = rounds = env_steps = 0
    returns, episode_return = [], np.zeros(n_envs)

    start, cpu_start = time.perf_counter(), time.process_time()
    obs, _ = env.reset(seed=seed)
    obs_t = torch.from_numpy(obs.astype(np.float32))
    while env_steps < steps:
        if env_steps < warmup:
            mu = torch.rand(n_envs, action_sz) * 2 - 1
        else:
            with torch.no_grad():
                mu = actor_fn(actor_body, obs_t)
        unit_action = (mu + sigma * torch.randn_like(mu)).clamp(-1, 1)
        action = low + (unit_action + 1) * 0.5 * (high - low)
        obs, reward, terminated, truncated, info = env.step(action.numpy())
        final, done = _final_next_obs(obs, terminated, truncated, info)
        states[pointer:pointer + n_envs] = obs_t
        next_states[pointer:pointer + n_envs] = torch.from_numpy(final.astype(np.float32))
        actions[pointer:pointer + n_envs] = unit_action  # the networks' unit; the env got `action`
        rewards[pointer:pointer + n_envs] = torch.from_numpy(reward.astype(np.float32))
        terminals[pointer:pointer + n_envs] = torch.from_numpy(terminated)
        pointer = (pointer + n_envs) % capacity
        size = min(size + n_envs, capacity)
        env_steps += n_envs
        episode_return += reward
        if done.any():
            returns += episode_return[done].tolist()
            episode_return[done] = 0
        obs_t = torch.from_numpy(obs.astype(np.float32))
        if size < warmup:
            continue
        idx = torch.randint(size, (bs,))
        s, a, r = states.index_select(0, idx), actions.index_select(0, idx), rewards.index_select(0, idx)
        s2, term = next_states.index_select(0, idx), terminals.index_select(0, idx)
        with torch.no_grad():
            y = r + gamma * (~term).float() * critic_fn(critic_target, s2, actor_fn(actor_target, s2))
        critic_loss = F.mse_loss(critic_fn(critic, s, a), y)
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        for p in critic_params:
            p.requires_grad_(False)
        actor_loss = -critic_fn(critic, s, actor_fn(actor_body, s)).mean()
        for p in critic_params:
            p.requires_grad_(True)
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(targets, online, tau)
        rounds += 1
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    return {"env_steps": env_steps, "gradient_rounds": rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "last_returns": float(np.mean(returns[-10:])) if returns else float("nan")}


def _fastrl_init(module):
    "Kaiming-normal layers with bias 0.01, then the head's weights U(-1e-4, 1e-4): fastrl_lite's Actor/Critic defaults."
    from torch import nn
    for layer in module:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.constant_(layer.bias, 0.01)
    nn.init.uniform_(module[-1].weight, -1e-4, 1e-4)  # the head's bias keeps its 0.01, as in fastrl
    return module


def _mlp(sizes):
    from torch import nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class _Replay:
    "Preallocated tensors written in place and sampled with `index_select`."

    def __init__(self, capacity: int, state_sz: int, action_sz: int):
        import torch
        self.states = torch.empty(capacity, state_sz)
        self.next_states = torch.empty(capacity, state_sz)
        self.actions = torch.empty(capacity, action_sz)
        self.rewards = torch.empty(capacity)
        self.terminals = torch.empty(capacity, dtype=torch.bool)
        self.capacity, self.size, self.pointer = capacity, 0, 0

    def add(self, state, action, reward, next_state, terminated):
        n = len(state)  # n_envs == 1 here, so no wrap-around split is needed
        at = slice(self.pointer, self.pointer + n)
        self.states[at], self.actions[at], self.rewards[at] = state, action, reward
        self.next_states[at], self.terminals[at] = next_state, terminated
        self.pointer = (self.pointer + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, bs: int):
        import torch
        idx = torch.randint(self.size, (bs,))
        return (self.states.index_select(0, idx), self.actions.index_select(0, idx),
                self.rewards.index_select(0, idx), self.next_states.index_select(0, idx),
                self.terminals.index_select(0, idx))


def _pendulum_loop(steps: int, seed: int, act, train, start: int):
    """Step Pendulum-v1 with `act(obs_t, env_steps)` (actions in [-1, 1], scaled onto the bounds for
    the env), store the transitions, and call `train(replay)` once per env step once `start`
    transitions are stored; returns the timing figures."""
    import numpy as np
    import torch
    env = _vec_env("Pendulum-v1")
    n_envs, state_sz = env.num_envs, env.single_observation_space.shape[0]
    action_sz = env.single_action_space.shape[0]
    low = torch.as_tensor(env.single_action_space.low)
    half = (torch.as_tensor(env.single_action_space.high) - low) * 0.5
    replay = _Replay(train.capacity, state_sz, action_sz)
    rounds = env_steps = 0
    returns, episode_return = [], np.zeros(n_envs)
    start_time, cpu_start = time.perf_counter(), time.process_time()
    obs, _ = env.reset(seed=seed)
    obs_t = torch.from_numpy(obs.astype(np.float32))
    while env_steps < steps:
        unit_action = act(obs_t, env_steps)
        obs, reward, terminated, truncated, info = env.step((low + (unit_action + 1) * half).numpy())
        final, done = _final_next_obs(obs, terminated, truncated, info)
        replay.add(obs_t, unit_action, torch.from_numpy(reward.astype(np.float32)),
                   torch.from_numpy(final.astype(np.float32)), torch.from_numpy(terminated))
        env_steps += n_envs
        episode_return += reward
        if done.any():
            returns += episode_return[done].tolist()
            episode_return[done] = 0
        obs_t = torch.from_numpy(obs.astype(np.float32))
        if replay.size < start:
            continue
        train(replay)
        rounds += 1
    seconds, cpu_seconds = time.perf_counter() - start_time, time.process_time() - cpu_start
    env.close()
    return {"env_steps": env_steps, "gradient_rounds": rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "last_returns": float(np.mean(returns[-10:])) if returns else float("nan")}


def bare_td3(steps: int, seed: int) -> dict:
    import copy
    import numpy as np
    import torch
    import torch.nn.functional as F

    gamma, tau, bs, capacity, lr, sigma = 0.98, 0.005, 256, 200_000, 1e-3, 0.1
    policy_delay, target_noise, noise_clip = 2, 0.2, 0.5
    warmup = min(10_000, max(256, steps // 2))

    torch.manual_seed(seed)
    np.random.seed(seed)
    state_sz, action_sz = 3, 1
    actor = _fastrl_init(_mlp([state_sz, 400, 300, action_sz]))
    q1, q2 = _mlp([state_sz + action_sz, 400, 300, 1]), _mlp([state_sz + action_sz, 400, 300, 1])  # PyTorch's init
    actor_target, q1_target, q2_target = (copy.deepcopy(m).requires_grad_(False) for m in (actor, q1, q2))
    critic_params = list(q1.parameters()) + list(q2.parameters())
    actor_opt = torch.optim.Adam(actor.parameters(), lr=lr, fused=True)
    critic_opt = torch.optim.Adam(critic_params, lr=lr, fused=True)
    online = critic_params + list(actor.parameters())
    targets = list(q1_target.parameters()) + list(q2_target.parameters()) + list(actor_target.parameters())
    rounds = [0]

    def act(obs_t, env_steps):
        if env_steps < warmup:
            mu = torch.rand(len(obs_t), action_sz) * 2 - 1
        else:
            with torch.no_grad():
                mu = torch.tanh(actor(obs_t))
        return (mu + sigma * torch.randn_like(mu)).clamp(-1, 1)

    def train(replay):
        s, a, r, s2, term = replay.sample(bs)
        with torch.no_grad():
            a2 = torch.tanh(actor_target(s2))
            a2 = (a2 + (torch.randn_like(a2) * target_noise).clamp(-noise_clip, noise_clip)).clamp(-1, 1)
            sa2 = torch.cat((s2, a2), -1)
            y = r + gamma * (~term).float() * torch.min(q1_target(sa2), q2_target(sa2)).squeeze(-1)
        sa = torch.cat((s, a), -1)
        critic_loss = F.mse_loss(q1(sa).squeeze(-1), y) + F.mse_loss(q2(sa).squeeze(-1), y)
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        rounds[0] += 1
        if rounds[0] % policy_delay:
            return
        for p in critic_params:
            p.requires_grad_(False)
        actor_loss = -q1(torch.cat((s, torch.tanh(actor(s))), -1)).mean()
        for p in critic_params:
            p.requires_grad_(True)
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(targets, online, tau)

    train.capacity = capacity
    return _pendulum_loop(steps, seed, act, train, start=warmup)


def bare_sac(steps: int, seed: int) -> dict:
    import copy
    import math
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    gamma, tau, bs, capacity, lr, learning_starts = 0.99, 0.005, 256, 1_000_000, 1e-3, 100

    torch.manual_seed(seed)
    np.random.seed(seed)
    state_sz, action_sz = 3, 1
    target_entropy = -float(action_sz)
    body = _mlp([state_sz, 256, 256])
    body.append(nn.ReLU())
    mu_head, log_std_head = nn.Linear(256, action_sz), nn.Linear(256, action_sz)
    q1, q2 = _mlp([state_sz + action_sz, 256, 256, 1]), _mlp([state_sz + action_sz, 256, 256, 1])
    q1_target, q2_target = (copy.deepcopy(m).requires_grad_(False) for m in (q1, q2))
    log_alpha = torch.zeros((), requires_grad=True)
    actor_params = list(body.parameters()) + list(mu_head.parameters()) + list(log_std_head.parameters())
    critic_params = list(q1.parameters()) + list(q2.parameters())
    actor_opt = torch.optim.Adam(actor_params, lr=lr, fused=True)
    critic_opt = torch.optim.Adam(critic_params, lr=lr, fused=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=lr, fused=True)
    online, targets = critic_params, list(q1_target.parameters()) + list(q2_target.parameters())
    log_2, half_log_2pi = math.log(2.0), 0.5 * math.log(2 * math.pi)

    def sample(s):
        x = body(s)
        mean, log_std = mu_head(x), log_std_head(x).clamp(-20.0, 2.0)
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        log_prob = (-0.5 * eps.pow(2) - log_std - half_log_2pi - 2 * (log_2 - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def q_min(net1, net2, s, a):
        sa = torch.cat((s, a), -1)
        return torch.min(net1(sa), net2(sa)).squeeze(-1)

    def act(obs_t, env_steps):
        if env_steps < learning_starts:
            return torch.rand(len(obs_t), action_sz) * 2 - 1
        with torch.no_grad():
            return sample(obs_t)[0]

    def train(replay):
        s, a, r, s2, term = replay.sample(bs)
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            a2, log_prob2 = sample(s2)
            y = r + gamma * (~term).float() * (q_min(q1_target, q2_target, s2, a2) - alpha * log_prob2)
        sa = torch.cat((s, a), -1)
        critic_loss = 0.5 * (F.mse_loss(q1(sa).squeeze(-1), y) + F.mse_loss(q2(sa).squeeze(-1), y))
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        for p in critic_params:
            p.requires_grad_(False)
        pi, log_prob = sample(s)
        actor_loss = (alpha * log_prob - q_min(q1, q2, s, pi)).mean()
        for p in critic_params:
            p.requires_grad_(True)
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        with torch.no_grad():
            _, log_prob = sample(s)
        alpha_loss = -(log_alpha * (log_prob + target_entropy)).mean()
        alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(targets, online, tau)

    train.capacity = capacity
    return _pendulum_loop(steps, seed, act, train, start=max(learning_starts, bs))



# ---------------------------------------------------------------------------------------------- fastrl_lite


def worker(lib: str, algo: str, steps: int, seed: int, threads: int):
    set_threads(lib, threads)  # both flush subnormals: the bare loops do fastrl_lite's maths
    if lib == "fastrl_lite":
        result = fastrl_lite_run(algo, ENVS[algo], steps, seed)
    else:
        result = {"dqn": bare_dqn, "ddpg": bare_ddpg, "td3": bare_td3, "sac": bare_sac}[algo](steps, seed)
    emit_run(result, lib=lib, algo=algo, seed=seed)


# ---------------------------------------------------------------------------------------------- driver


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", choices=sorted(ENVS), default=["dqn", "ddpg"])
    parser.add_argument("--dqn-steps", type=int, default=20_000, help="DQN env steps per run (default 20000)")
    parser.add_argument("--ddpg-steps", type=int, default=10_000,
                        help="DDPG env steps per run (default 10000: warmup min(10k, steps//2) = 5000 random-action "
                             "steps, then 5001 gradient rounds)")
    parser.add_argument("--td3-steps", type=int, default=10_000, help="TD3 env steps per run (default 10000)")
    parser.add_argument("--sac-steps", type=int, default=10_000, help="SAC env steps per run (default 10000)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per library and algorithm (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in every run (default 1)")
    parser.add_argument("--json", default=None, help="also write every run's result to this JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "ALGO"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.steps, args.seed, args.threads)

    import torch
    import fastrl_lite
    import gymnasium
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}, torch "
          f"{torch.__version__}, gymnasium {gymnasium.__version__}, fastrl_lite {fastrl_lite.__version__}; "
          f"torch.set_num_threads({args.threads}); load average {os.getloadavg()[0]:.2f}", flush=True)
    results, summary = [], {}
    for algo in args.algos:
        steps = {"dqn": args.dqn_steps, "ddpg": args.ddpg_steps, "td3": args.td3_steps, "sac": args.sac_steps}[algo]
        for repeat in range(args.repeats):
            for lib in LIBS:
                r = run_worker(__file__, ["--worker", lib, algo, "--steps", str(steps), "--seed",
                                                      str(args.seed), "--threads", str(args.threads)])
                r["repeat"] = repeat
                results.append(r)
                print(f"{algo:4s} {lib:12s} run {repeat}: {r['seconds']:6.1f} s wall, {r['cpu_seconds']:6.1f} s CPU, "
                      f"{r['env_steps']} env steps, {r['gradient_rounds']} rounds, {r['steps_per_s']:7.0f} env "
                      f"steps/s, mean of last 10 training returns {r['last_returns']:.1f}; load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    head = f"{'algo':5s} {'library':12s} {'runs':>4s} {'env steps/s (wall)':>19s} {'env steps/CPU s':>16s}"
    print(head + "\n" + "-" * len(head))
    for algo in args.algos:
        best = {}
        for lib in LIBS:
            runs = [r for r in results if r["algo"] == algo and r["lib"] == lib]
            wall = max(r["steps_per_s"] for r in runs)
            cpu = max(r["steps_per_cpu_s"] for r in runs)
            best[lib] = (wall, cpu, [r["steps_per_s"] for r in runs], [r["steps_per_cpu_s"] for r in runs])
            print(f"{algo:5s} {lib:12s} {len(runs):>4d} {wall:>19.0f} {cpu:>16.0f}")
        pairs_wall = [f / b for f, b in zip(best["fastrl_lite"][2], best["bare"][2])]
        pairs_cpu = [f / b for f, b in zip(best["fastrl_lite"][3], best["bare"][3])]
        ratio_wall = best["fastrl_lite"][0] / best["bare"][0]
        ratio_cpu = best["fastrl_lite"][1] / best["bare"][1]
        summary[algo] = {"best_wall": ratio_wall, "best_cpu": ratio_cpu, "pairs_wall": pairs_wall,
                         "pairs_cpu": pairs_cpu}
        print(f"{algo}: fastrl_lite / bare env steps per second, best run of each: {ratio_wall:.3f}x wall, "
              f"{ratio_cpu:.3f}x per CPU second; run pairs (wall): "
              + ", ".join(f"{p:.3f}" for p in pairs_wall) + "; (CPU): " + ", ".join(f"{p:.3f}" for p in pairs_cpu)
              + f"; target >= {TARGET_RATIO}: {'met' if ratio_cpu >= TARGET_RATIO else 'missed'} (per CPU second)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "summary": summary, "threads": args.threads}, f, indent=2)


if __name__ == "__main__":
    main()
