"""fastrl_lite against Stable-Baselines3 on Pendulum-v1 with rl-zoo's tuned hyper-parameters, for
DDPG (`ddpg_pendulum.py`), TD3 (`td3_pendulum.py`) and SAC (`sac_pendulum.py`), which run `main` of
this module.

Both libraries get the same settings (DDPG and TD3: γ 0.98, 200k buffer, learning starts 10k,
Gaussian noise σ 0.1 in the [-1, 1] action scale, 1 gradient round per env step, lr 1e-3,
[400, 300] networks, batch 256, τ 0.005; for TD3 also SB3's policy delay 2 and target noise 0.2
clipped at 0.5. SAC: rl-zoo's lr 1e-3 and SB3's defaults, γ 0.99, 1M buffer, learning starts 100,
batch 256, τ 0.005, 1 gradient round per env step, ent_coef 'auto' with target entropy -|A|,
[256, 256] networks), the same torch thread count and the same evaluation: 10 greedy episodes on
one env seeded 10_000 + i.
Each run is its own process, fastrl_lite and SB3 alternating, so both see the same load. Speed is
env steps per second of training (evaluation excluded), by wall clock and per second of process
CPU time (steadier when other jobs share the machine).

    python benchmarks/ddpg_pendulum.py [--steps 20000] [--seeds 0 1 2] [--threads 2] [--json out.json]
    python benchmarks/td3_pendulum.py  [--steps 20000] [--seeds 0 1 2] [--threads 2] [--json out.json]
    python benchmarks/sac_pendulum.py  [--steps 20000] [--seeds 0 1 2] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from harness import (add_peers_flush, build_learner, emit, greedy_returns, peers_flush_args, peers_flush_note,
                     run_worker, set_threads)

ENV_ID = "Pendulum-v1"


def run_fastrl_lite(algo: str, steps: int, seed: int, episodes: int):
    import torch
    from fastrl_lite import evaluating
    learner, epochs = build_learner(algo, ENV_ID, steps, seed)
    start, cpu = time.perf_counter(), time.process_time()
    learner.fit(epochs)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    actor, agent, to_env = learner.models["actor"], learner.stepper.agent, learner.stepper.to_env
    from fastrl_lite import SimpleStep

    def act(obs):  # the agent acts in the actor's [-1, 1]; to_env scales onto Pendulum's bounds
        out = agent(SimpleStep(state=torch.as_tensor(obs)[None]))
        return to_env(out["action"] if isinstance(out, dict) else out).numpy()[0]  # SAC's agent adds its log-prob
    with evaluating(actor):
        returns = greedy_returns(ENV_ID, act, episodes)
    return learner.env_steps, seconds, cpu_seconds, returns


def run_sb3(algo: str, steps: int, seed: int, episodes: int):
    import numpy as np
    from stable_baselines3 import DDPG, SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise
    import gymnasium as gym
    env = gym.make(ENV_ID)
    if algo == "sac":  # rl-zoo's Pendulum-v1 entry: lr 1e-3, everything else SB3's defaults
        model = SAC("MlpPolicy", env, learning_rate=1e-3, seed=seed, device="cpu", verbose=0)
    else:
        model = {"ddpg": DDPG, "td3": TD3}[algo](
            "MlpPolicy", env, gamma=0.98, buffer_size=200_000, learning_starts=10_000,
            action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)), train_freq=1, gradient_steps=1,
            learning_rate=1e-3, policy_kwargs=dict(net_arch=[400, 300]), batch_size=256, tau=0.005,
            seed=seed, device="cpu", verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    returns = greedy_returns(ENV_ID, lambda obs: model.predict(obs, deterministic=True)[0], episodes)
    return model.num_timesteps, seconds, cpu_seconds, returns


def worker(algo: str, lib: str, steps: int, seed: int, threads: int, episodes: int, peers_flush: bool = False):
    set_threads(lib, threads, peers_flush)
    env_steps, seconds, cpu_seconds, returns = (run_fastrl_lite if lib == "fastrl_lite" else run_sb3)(
        algo, steps, seed, episodes)
    emit({"lib": lib, "seed": seed, "threads": threads, "env_steps": env_steps, "seconds": seconds,
                      "cpu_seconds": cpu_seconds, "steps_per_s": env_steps / seconds, "greedy_mean": sum(returns) / len(returns),
                      "returns": returns})


def main(algo: str, script: str):
    "Run the benchmark for `algo` ('ddpg', 'td3' or 'sac'); `script` is the entry point that re-invokes itself."
    parser = argparse.ArgumentParser(description=f"{algo.upper()}: " + __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--libs", nargs="+", default=["fastrl_lite", "sb3"], choices=["fastrl_lite", "sb3"])
    parser.add_argument("--json", default=None, help="also write every run's result to this file")
    add_peers_flush(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(algo, args.worker, args.steps, args.seeds[0], args.threads, args.episodes, args.peers_flush_denormal)
        return
    results = []
    for seed in args.seeds:
        for lib in args.libs:
            result = run_worker(script, ["--worker", lib, "--steps", args.steps, "--seeds", seed,
                                           "--threads", args.threads, "--episodes", args.episodes]
                                + peers_flush_args(args))
            results.append(result)
            print(f"{lib:12s} seed {seed}: greedy {result['greedy_mean']:8.1f}  "
                  f"{result['steps_per_s']:6.1f} env steps/s  ({result['seconds']:.1f} s wall, "
                  f"{result['cpu_seconds']:.1f} s CPU)", flush=True)
    print(f"\n{algo.upper()}: {args.steps} env steps, {args.threads} torch thread(s), {peers_flush_note(args)}, "
          f"greedy return over {args.episodes} episodes")
    speed, cpu = {}, {}
    for lib in args.libs:
        runs = [r for r in results if r["lib"] == lib]
        means = [r["greedy_mean"] for r in runs]
        speed[lib] = sum(r["steps_per_s"] for r in runs) / len(runs)
        cpu[lib] = sum(r["env_steps"] / r["cpu_seconds"] for r in runs) / len(runs)
        print(f"{lib:12s} greedy per seed {', '.join(f'{m:.1f}' for m in means)}; "
              f"mean {sum(means) / len(means):.1f}; {speed[lib]:.1f} env steps/s wall, {cpu[lib]:.1f} per CPU s")
    if len(speed) == 2:
        print(f"speed ratio fastrl_lite / sb3: {speed['fastrl_lite'] / speed['sb3']:.2f}x wall, "
              f"{cpu['fastrl_lite'] / cpu['sb3']:.2f}x CPU")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
