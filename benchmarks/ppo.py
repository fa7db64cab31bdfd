"""PPO: fastrl_lite against Stable-Baselines3 and a bare PyTorch loop, with rl-zoo's settings.

    python benchmarks/ppo.py                                   # CartPole-v1, 100k env steps, seeds 0 1 2
    python benchmarks/ppo.py --envs Pendulum-v1 Acrobot-v1 --seeds 0
    python benchmarks/ppo.py --envs CartPole-v1 --steps 5000 --seeds 0 --eval-episodes 2   # a quick check

The settings are `fastrl-lite train ppo`'s presets (`fastrl_lite/presets.py`), rl-zoo's
hyperparams/ppo.yml for each env, given to all three peers:
- CartPole-v1: 8 envs, n_steps 32, batch 256, 20 epochs, γ 0.98, λ 0.8, learning rate and clip
  range falling linearly from 1e-3 and 0.2 to 0 over the run, 100k env steps;
- Pendulum-v1: 4 envs, n_steps 1024, batch 64, 10 epochs, γ 0.9, λ 0.95, lr 1e-3, 100k env steps.
  rl-zoo adds gSDE (use_sde, sde_sample_freq 4), which fastrl_lite does not have: all three run the
  plain state-independent Gaussian (SB3 with use_sde=False);
- Acrobot-v1: 16 envs, n_steps 256, batch 64, 4 epochs, γ 0.99, λ 0.94, observations and rewards
  normalised by running statistics (rl-zoo's `normalize: true`, SB3's VecNormalize), 1M env steps;
and SB3's defaults otherwise: separate actor and critic MLPs [64, 64] with tanh, orthogonal
initialisation (gains √2, 0.01 for the action head, 1 for the value head), log σ initialised to 0,
Adam(ε 1e-5), value loss coefficient 0.5, gradient norm clipped at 0.5, advantages normalised per
minibatch, no entropy bonus, no value clipping, no KL stop.

fastrl_lite runs `cli.build_ppo`. SB3 runs `PPO("MlpPolicy", ...)` on its `make_vec_env` (a
DummyVecEnv; VecNormalize for Acrobot). The bare loop (`bare_ppo` below) imports nothing from
fastrl_lite: a gymnasium `SyncVectorEnv` in SAME_STEP autoreset mode, the rollout in preallocated
[n_steps, n_envs] tensors, the same networks, GAE with the truncation bootstrap from the true final
observation, the same minibatch epochs, loss, optimizer and schedules.

Each run is a fresh subprocess (this script re-invoked with --worker) with
`torch.set_num_threads(--threads)`, the libraries alternating per seed. Timing covers training only
(construction and evaluation excluded): wall clock and process CPU time, env steps per second. Each
run is then evaluated greedily (the policy's mode) over `--eval-episodes` episodes of a fresh env
seeded 10000. Ratios are fastrl_lite's env steps per second over each peer's (targets: >= 1.5x SB3,
>= 0.95x the bare loop); CartPole's target return is a greedy mean >= 475 on every seed; rl-zoo
publishes PPO at -172 ± 104 on Pendulum-v1 (with gSDE) and -73.5 on Acrobot-v1.

Needs Stable-Baselines3: `pip install -e ".[bench]"`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from harness import add_peers_flush, cpu_model, emit, peers_flush_args, peers_flush_note, run_worker, set_threads

EVAL_SEED = 10_000
LIBS = ("fastrl_lite", "sb3", "bare")
TARGET_RETURN = {"CartPole-v1": 475.0}
PUBLISHED = {"Pendulum-v1": "-172 ± 104 (rl-zoo, with gSDE)", "Acrobot-v1": "-73.5 (rl-zoo)"}
TARGET_SB3, TARGET_BARE = 1.5, 0.95


def settings(env_id: str) -> dict:
    "The preset `fastrl-lite train ppo --env ENV` uses (rl-zoo's settings)."
    from fastrl_lite.presets import resolve
    return resolve("ppo", env_id)[0]


def schedule(value):
    "(initial value, linear?) of a preset's number or rl-zoo's 'lin_<x>'."
    if isinstance(value, str) and value.startswith("lin_"):
        return float(value[4:]), True
    return float(value), False


# ---------------------------------------------------------------------------------------------- greedy evaluation

def greedy_returns(act, env_id: str, episodes: int, normalize=None) -> list:
    "Returns of `episodes` episodes of one fresh env seeded EVAL_SEED, acting with `act(obs [1, n]) -> action`."
    import gymnasium as gym
    import numpy as np
    env, returns, total = gym.make(env_id), [], 0.0
    obs, _ = env.reset(seed=EVAL_SEED)
    while len(returns) < episodes:
        x = np.asarray(obs, dtype=np.float32)[None]
        action = act(normalize(x) if normalize is not None else x)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            returns.append(total)
            total = 0.0
            obs, _ = env.reset()
    env.close()
    return returns


# ---------------------------------------------------------------------------------------------- peers

def run_fastrl_lite(env_id: str, steps: int, seed: int, episodes: int) -> dict:
    from fastrl_lite.cli import build_ppo
    from fastrl_lite.core import set_seed
    hp = settings(env_id)
    hp["n_timesteps"] = steps
    set_seed(seed)
    learner = build_ppo(env_id, hp, steps, seed, [])
    epochs = learner.collector.rounds_within(steps) // learner.batches + 2  # the env pipe's cap ends fit
    start, cpu_start = time.perf_counter(), time.process_time()
    learner.fit(epochs)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    returns = learner.validate(episodes, seed=EVAL_SEED)["returns"]
    return {"env_steps": learner.stepper.env_steps, "gradient_rounds": learner.batch, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "returns": returns}


def run_sb3(env_id: str, steps: int, seed: int, episodes: int) -> dict:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    hp = settings(env_id)
    lr, lr_linear = schedule(hp["learning_rate"])
    clip, clip_linear = schedule(hp["clip_range"])
    env = make_vec_env(env_id, n_envs=hp["n_envs"], seed=seed)
    if hp["normalize"]:
        env = VecNormalize(env, norm_obs=True, norm_reward=True, gamma=hp["gamma"])
    model = PPO("MlpPolicy", env, learning_rate=(lambda p: p * lr) if lr_linear else lr, n_steps=hp["n_steps"],
                batch_size=hp["batch_size"], n_epochs=hp["n_epochs"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"],
                clip_range=(lambda p: p * clip) if clip_linear else clip, ent_coef=hp["ent_coef"],
                vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"], use_sde=False,
                policy_kwargs=dict(net_arch=dict(pi=list(hp["net_arch"]), vf=list(hp["net_arch"])),
                                   activation_fn=torch.nn.Tanh, log_std_init=hp["log_std_init"]),
                seed=seed, device="cpu", verbose=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    normalize = env.normalize_obs if hp["normalize"] else None
    returns = greedy_returns(lambda x: model.predict(x, deterministic=True)[0][0], env_id, episodes, normalize)
    return {"env_steps": int(model.num_timesteps), "gradient_rounds": int(model._n_updates) * (
        hp["n_steps"] * hp["n_envs"] // hp["batch_size"]), "seconds": seconds, "cpu_seconds": cpu_seconds,
        "returns": returns}


def bare_ppo(env_id: str, steps: int, seed: int, episodes: int) -> dict:
    "PPO in plain PyTorch and gymnasium, the maths of fastrl_lite's stages written out in one loop."
    import gymnasium as gym
    import numpy as np
    import torch
    from gymnasium.vector import AutoresetMode
    from torch import nn
    hp = settings(env_id)
    lr0, lr_linear = schedule(hp["learning_rate"])
    clip0, clip_linear = schedule(hp["clip_range"])
    T, N, bs, gamma, lam = hp["n_steps"], hp["n_envs"], hp["batch_size"], hp["gamma"], hp["gae_lambda"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    env = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(N)], autoreset_mode=AutoresetMode.SAME_STEP)
    obs_sz = int(np.prod(env.single_observation_space.shape))
    space = env.single_action_space
    continuous = isinstance(space, gym.spaces.Box)
    n_out = int(space.shape[0]) if continuous else int(space.n)

    def mlp():
        layers, width = [], obs_sz
        for h in hp["net_arch"]:
            linear = nn.Linear(width, h)
            nn.init.orthogonal_(linear.weight, math.sqrt(2))
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.Tanh()]
            width = h
        return nn.Sequential(*layers), width

    actor, width = mlp()
    critic, _ = mlp()
    action_head, value_head = nn.Linear(width, n_out), nn.Linear(width, 1)
    for head, gain in ((action_head, 0.01), (value_head, 1.0)):
        nn.init.orthogonal_(head.weight, gain)
        nn.init.zeros_(head.bias)
    log_std = nn.Parameter(torch.full((n_out,), float(hp["log_std_init"])))
    params = [*actor.parameters(), *critic.parameters(), *action_head.parameters(), *value_head.parameters()]
    if continuous:
        params.append(log_std)
    optimizer = torch.optim.Adam(params, lr=lr0, eps=1e-5, fused=True)
    low, high = (torch.as_tensor(space.low), torch.as_tensor(space.high)) if continuous else (None, None)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def log_prob_entropy(out, action):
        if continuous:
            ls = log_std.expand_as(out)
            logp = (-0.5 * ((action - out) * torch.exp(-ls)).pow(2) - ls - half_log_2pi).sum(-1)
            return logp, (0.5 + half_log_2pi + ls).sum(-1)
        logits = out.log_softmax(-1)
        return logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1), -(logits.exp() * logits).sum(-1)

    # running mean / std of observations and of the discounted return in float64 NumPy, as SB3's
    # VecNormalize and fastrl_lite's normalisers keep them
    normalize = bool(hp["normalize"])
    obs_mean, obs_var, obs_count = np.zeros(obs_sz), np.ones(obs_sz), 1e-4
    ret_mean, ret_var, ret_count = np.zeros(()), np.ones(()), 1e-4
    running_return = np.zeros(N)
    obs_shift, obs_scale = torch.zeros(obs_sz), torch.ones(obs_sz)

    def merge(mean, var, count, x):
        b = x.shape[0]
        b_mean = x.sum(0) / b
        b_var = ((x - b_mean) ** 2).sum(0) / b
        delta, total = b_mean - mean, count + b
        m2 = var * count + b_var * b + delta * delta * (count * b / total)
        return mean + delta * (b / total), m2 / total, total

    def norm_obs(x):
        return ((x - obs_shift) * obs_scale).clamp(-10, 10)

    state = torch.empty(T, N, obs_sz)
    next_state = torch.empty(T, N, obs_sz)
    actions = torch.empty(T, N, n_out) if continuous else torch.empty(T, N, dtype=torch.int64)
    rewards, log_probs, values = torch.empty(T, N), torch.empty(T, N), torch.empty(T, N)
    terminated, truncated = torch.empty(T, N, dtype=torch.bool), torch.empty(T, N, dtype=torch.bool)
    obs_np, _ = env.reset(seed=seed)
    obs = torch.from_numpy(np.asarray(obs_np, dtype=np.float32))
    env_steps, rounds = 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while env_steps + T * N <= steps:
        for t in range(T):
            x = norm_obs(obs) if normalize else obs
            with torch.no_grad():
                out, value = action_head(actor(x)), value_head(critic(x)).squeeze(-1)
                if continuous:
                    action = out + torch.randn_like(out) * log_std.exp()
                else:
                    action = torch.multinomial(out.softmax(-1), 1).squeeze(-1)
                logp, _ = log_prob_entropy(out, action)
            env_action = torch.clamp(action, low, high) if continuous else action
            obs_np, reward, term, trunc, info = env.step(env_action.numpy())
            nxt = torch.from_numpy(np.asarray(obs_np, dtype=np.float32))
            final = nxt
            done = term | trunc
            if done.any():
                final = nxt.clone()
                idx = np.flatnonzero(done)
                final[idx] = torch.from_numpy(np.stack(info["final_obs"][idx]).astype(np.float32))
            r = torch.from_numpy(reward.astype(np.float32))
            state[t], next_state[t] = x, (norm_obs(final) if normalize else final)
            if normalize:
                obs_mean, obs_var, obs_count = merge(obs_mean, obs_var, obs_count, final.numpy().astype(np.float64))
                obs_shift = torch.from_numpy(obs_mean.astype(np.float32))
                obs_scale = torch.from_numpy((1.0 / np.sqrt(obs_var + 1e-8)).astype(np.float32))
                running_return = running_return * gamma + reward.astype(np.float32)
                ret_mean, ret_var, ret_count = merge(ret_mean, ret_var, ret_count, running_return)
                r = torch.from_numpy(np.clip(reward.astype(np.float32) / np.sqrt(ret_var + 1e-8), -10, 10)
                                     .astype(np.float32))
                running_return = np.where(done, 0.0, running_return)
            actions[t], rewards[t], log_probs[t], values[t] = action, r, logp, value
            terminated[t], truncated[t] = torch.from_numpy(term), torch.from_numpy(trunc)
            obs = nxt
        env_steps += T * N
        progress = 1.0 - env_steps / steps
        # GAE, bootstrapping from V of the true final observation after a truncation and at the end
        with torch.no_grad():
            next_value = value_head(critic(next_state.reshape(T * N, obs_sz))).reshape(T, N)
        done = terminated | truncated
        following = torch.where(done, next_value, torch.cat((values[1:], next_value[-1:])))
        delta = rewards + gamma * (~terminated).float() * following - values
        decay = gamma * lam * (~done).float()
        advantages = torch.empty_like(delta)
        last = torch.zeros(N)
        for t in range(T - 1, -1, -1):
            last = torch.addcmul(delta[t], decay[t], last, out=advantages[t])
        returns = advantages + values
        flat = [v.reshape(T * N, *v.shape[2:]) for v in (state, actions, log_probs, advantages, returns)]
        clip = clip0 * progress if clip_linear else clip0
        for _ in range(hp["n_epochs"]):
            order = torch.randperm(T * N)
            for i in range(0, T * N, bs):
                idx = order[i:i + bs]
                s, a, old_logp, adv, ret = (v.index_select(0, idx) for v in flat)
                out = action_head(actor(s))
                value = value_head(critic(s)).squeeze(-1)
                logp, entropy = log_prob_entropy(out, a)
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = (logp - old_logp).exp()
                policy_loss = -torch.min(adv * ratio, adv * ratio.clamp(1 - clip, 1 + clip)).mean()
                loss = policy_loss + hp["ent_coef"] * -entropy.mean() + hp["vf_coef"] * (ret - value).pow(2).mean()
                for p in params:
                    p.grad = None
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"], foreach=True)
                optimizer.step()
                rounds += 1
                if lr_linear:
                    for group in optimizer.param_groups:
                        group["lr"] = lr0 * progress
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    def act(x):
        x = torch.from_numpy(x)
        with torch.no_grad():
            out = action_head(actor(x))
        return (torch.clamp(out, low, high)[0].numpy() if continuous else int(out.argmax(-1)[0]))
    returns = greedy_returns(act, env_id, episodes, (lambda x: norm_obs(torch.from_numpy(x)).numpy()) if normalize
                             else None)
    return {"env_steps": env_steps, "gradient_rounds": rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "returns": returns}


def worker(lib: str, env_id: str, steps: int, seed: int, threads: int, episodes: int, peers_flush: bool = False):
    import numpy as np
    import torch
    set_threads(lib, threads, peers_flush)
    runner = {"fastrl_lite": run_fastrl_lite, "sb3": run_sb3, "bare": bare_ppo}[lib]
    result = runner(env_id, steps, seed, episodes)
    returns = np.array(result["returns"])
    result.update(lib=lib, env=env_id, seed=seed, threads=torch.get_num_threads(), eval_mean=float(returns.mean()),
                  eval_std=float(returns.std()), steps_per_s=result["env_steps"] / result["seconds"],
                  steps_per_cpu_s=result["env_steps"] / result["cpu_seconds"])
    emit(result)


# ---------------------------------------------------------------------------------------------- driver

def summarize(results, env_id: str, seeds, libs):
    by = {(r["lib"], r["seed"]): r for r in results}
    head = f"{'library':<12} {'seed':>4} {'greedy return':>17} {'wall s':>8} {'CPU s':>7} {'env steps':>9} {'steps/s':>8}"
    print(f"\n{env_id}\n" + head + "\n" + "-" * len(head))
    for lib in libs:
        for seed in seeds:
            r = by[(lib, seed)]
            ret = f"{r['eval_mean']:.1f} ± {r['eval_std']:.1f}"
            print(f"{lib:<12} {seed:>4} {ret:>17} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} {r['env_steps']:>9} "
                  f"{r['steps_per_s']:>8.0f}")
    summary = {}
    for peer, target in (("sb3", TARGET_SB3), ("bare", TARGET_BARE)):
        if peer not in libs or "fastrl_lite" not in libs:
            continue
        ratios = [by[("fastrl_lite", s)]["steps_per_s"] / by[(peer, s)]["steps_per_s"] for s in seeds]
        cpu = [by[("fastrl_lite", s)]["steps_per_cpu_s"] / by[(peer, s)]["steps_per_cpu_s"] for s in seeds]
        mean = sum(ratios) / len(ratios)
        summary[peer] = mean
        print(f"speed fastrl_lite / {peer}: " + ", ".join(f"seed {s} {r:.2f}x" for s, r in zip(seeds, ratios))
              + f"; mean {mean:.2f}x (target >= {target}x: {'met' if mean >= target else 'missed'}); "
              f"per process CPU second {sum(cpu) / len(cpu):.2f}x")
    if env_id in TARGET_RETURN and "fastrl_lite" in libs:
        solved = sum(by[("fastrl_lite", s)]["eval_mean"] >= TARGET_RETURN[env_id] for s in seeds)
        print(f"fastrl_lite greedy >= {TARGET_RETURN[env_id]:g} on {solved}/{len(seeds)} seeds "
              f"(target: every seed: {'met' if solved == len(seeds) else 'missed'})")
    if env_id in PUBLISHED:
        print(f"published: {PUBLISHED[env_id]}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"], choices=["CartPole-v1", "Pendulum-v1", "Acrobot-v1"])
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: rl-zoo's n_timesteps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds (default 0 1 2 on CartPole-v1, 0 elsewhere)")
    parser.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every run (default 1)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write every run's result to this JSON file")
    add_peers_flush(parser)
    parser.add_argument("--worker", choices=LIBS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or args.threads < 1 or args.eval_episodes < 1:
        parser.error("--steps, --threads and --eval-episodes must be positive")
    if args.worker:
        return worker(args.worker, args.envs[0], args.steps, args.seeds[0], args.threads, args.eval_episodes,
                      args.peers_flush_denormal)

    import gymnasium
    import stable_baselines3
    import torch
    import fastrl_lite
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}, "
          f"torch {torch.__version__}, gymnasium {gymnasium.__version__}, fastrl_lite {fastrl_lite.__version__}, "
          f"stable-baselines3 {stable_baselines3.__version__}; torch.set_num_threads({args.threads}); "
          f"{peers_flush_note(args)}; load average {os.getloadavg()[0]:.2f}", flush=True)
    results, summaries = [], {}
    for env_id in args.envs:
        steps = args.steps or int(settings(env_id)["n_timesteps"])
        seeds = args.seeds or ([0, 1, 2] if env_id == "CartPole-v1" else [0])
        print(f"\nPPO on {env_id}: {steps} env steps, seeds {seeds}, greedy eval over {args.eval_episodes} episodes",
              flush=True)
        runs = []
        for seed in seeds:
            for lib in args.libs:  # fastrl_lite, SB3, bare, fastrl_lite, ...
                r = run_worker(__file__, ["--worker", lib, "--envs", env_id, "--steps", steps, "--seeds", seed,
                                          "--threads", args.threads, "--eval-episodes", args.eval_episodes]
                               + peers_flush_args(args))
                print(f"{lib:<12} seed {seed}: greedy {r['eval_mean']:8.1f} ± {r['eval_std']:6.1f}, {r['seconds']:7.1f} s "
                      f"({r['cpu_seconds']:.1f} s CPU), {r['steps_per_s']:6.0f} env steps/s ({r['env_steps']} steps, "
                      f"{r['gradient_rounds']} gradient rounds)", flush=True)
                runs.append(r)
        summaries[env_id] = summarize(runs, env_id, seeds, args.libs)
        results += runs
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "ratios": summaries, "threads": args.threads,
                       "peers_flush_denormal": args.peers_flush_denormal}, f, indent=2)


if __name__ == "__main__":
    main()
