"""DQN on CartPole-v1: fastrl_lite against Stable-Baselines3 with rl-zoo's tuned hyper-parameters.

    python benchmarks/dqn_cartpole.py                      # 50k env steps, seeds 0 1 2, 1 torch thread
    python benchmarks/dqn_cartpole.py --steps 20000 --seeds 0 --threads 2

Both libraries get the same settings: lr 2.3e-3, batch 64, replay 100k, learning starts 1000,
gamma 0.99, 128 gradient rounds every 256 env steps, a hard target-network copy once per burst
(SB3: target_update_interval=10 env steps; fastrl_lite: target_sync=128 gradient rounds), epsilon
1 -> 0.04 over the first 16% of the env steps, an MLP [256, 256], gradient-norm clipping at 10 and
the Huber loss. Each (library, seed) run is a fresh subprocess (this script re-invoked with
--worker) with `torch.set_num_threads(--threads)`; runs alternate between the libraries.

Per run it reports the greedy mean return over `--eval-episodes` episodes on a fresh eval env
(the same env seed for both libraries), the training wall time (model/pipeline construction and
evaluation excluded), its process CPU time, and env steps per wall-clock second; then the
fastrl_lite / SB3 speed ratio (env steps per second) per seed and on average, and the same ratio
per process CPU second, which other load on a shared machine disturbs less.

Needs Stable-Baselines3: `pip install -e ".[bench]"`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from harness import add_peers_flush, cpu_model, emit, peers_flush_note, run_worker, set_threads

ENV_ID = "CartPole-v1"
EVAL_SEED = 10_000
LIBS = ("fastrl_lite", "sb3")
TARGET_RETURN, TARGET_SEEDS, TARGET_SPEEDUP = 475.0, 2, 1.45

# rl-zoo hyper-parameters (hyperparams/dqn.yml, CartPole-v1)
HP = dict(lr=2.3e-3, bs=64, buffer=100_000, learning_starts=1000, gamma=0.99, train_every=256, updates=128,
          target_update_env_steps=10, eps_start=1.0, eps_end=0.04, eps_fraction=0.16, hidden=(256, 256),
          max_grad_norm=10.0)


# ---------------------------------------------------------------------------------------------- workers

def run_fastrl_lite(steps: int, seed: int, episodes: int) -> dict:
    from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner, check_discrete
    from fastrl_lite.core import set_seed
    from fastrl_lite.envs import GymDataPipe, make_vec_env
    import torch
    import torch.nn.functional as F

    set_seed(seed)
    probe = make_vec_env(ENV_ID)
    n_actions = check_discrete(probe)
    state_sz = int(torch.Size(probe.single_observation_space.shape).numel())
    probe.close()
    model = DQN(state_sz, n_actions, hidden=HP["hidden"])
    agent = DQNAgent(model, min_epsilon=HP["eps_end"], max_epsilon=HP["eps_start"],
                     max_steps=max(1, int(HP["eps_fraction"] * steps)))
    dl = GymDataPipe([ENV_ID], agent=agent, seed=seed, n=steps)
    # One hard target copy per burst of `updates` rounds == SB3's copy every 10 env steps, since SB3
    # only copies between bursts (all copies inside one 256-step collection phase are identical).
    learner = DQNLearner(model, [dl], lr=HP["lr"], bs=HP["bs"], max_sz=HP["buffer"], warmup=HP["learning_starts"],
                         train_every=HP["train_every"], updates=HP["updates"], gamma=HP["gamma"],
                         target_sync=HP["updates"], clip_grad_norm=HP["max_grad_norm"], loss_func=F.smooth_l1_loss,
                         batches=1280)
    rounds = (max(0, steps - HP["learning_starts"]) // HP["train_every"] + 1) * HP["updates"]
    epochs = -(-rounds // learner.batches)
    start, cpu_start = time.perf_counter(), time.process_time()
    learner.fit(epochs)  # the env pipe raises StopIteration after `steps` env steps, which ends fit
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    evaluation = learner.validate(episodes, seed=EVAL_SEED)
    return {"env_steps": learner.env_steps, "gradient_rounds": learner.batch, "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "eval_mean": evaluation["mean"], "eval_std": evaluation["std"], "eval_returns": evaluation["returns"]}


def run_sb3(steps: int, seed: int, episodes: int) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", ENV_ID, learning_rate=HP["lr"], batch_size=HP["bs"], buffer_size=HP["buffer"],
                learning_starts=HP["learning_starts"], gamma=HP["gamma"],
                target_update_interval=HP["target_update_env_steps"], train_freq=HP["train_every"],
                gradient_steps=HP["updates"], exploration_initial_eps=HP["eps_start"],
                exploration_final_eps=HP["eps_end"], exploration_fraction=HP["eps_fraction"],
                max_grad_norm=HP["max_grad_norm"], policy_kwargs=dict(net_arch=list(HP["hidden"])),
                seed=seed, device="cpu", verbose=0)  # SB3's DQN loss is F.smooth_l1_loss (Huber)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    env, returns = gym.make(ENV_ID), []
    obs, _ = env.reset(seed=EVAL_SEED)
    total = 0.0
    while len(returns) < episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(int(action))
        total += float(reward)
        if terminated or truncated:
            returns.append(total)
            total = 0.0
            obs, _ = env.reset()
    env.close()
    returns = np.array(returns)
    return {"env_steps": int(model.num_timesteps), "gradient_rounds": int(model._n_updates), "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "eval_mean": float(returns.mean()), "eval_std": float(returns.std()), "eval_returns": returns.tolist()}


def worker(lib: str, steps: int, seed: int, threads: int, episodes: int, peers_flush: bool = False):
    import torch
    set_threads(lib, threads, peers_flush)
    runner = {"fastrl_lite": run_fastrl_lite, "sb3": run_sb3}[lib]
    result = runner(steps, seed, episodes)
    result.update(lib=lib, seed=seed, threads=torch.get_num_threads(),
                  steps_per_s=result["env_steps"] / result["seconds"],
                  steps_per_cpu_s=result["env_steps"] / result["cpu_seconds"])
    emit(result)


# ---------------------------------------------------------------------------------------------- driver


def spawn(lib: str, steps: int, seed: int, threads: int, episodes: int, peers_flush: bool = False) -> dict:
    return run_worker(__file__, ["--worker", lib, "--steps", steps, "--seeds", seed, "--threads", threads,
                                 "--eval-episodes", episodes] + (["--peers-flush-denormal"] if peers_flush else []))


def summarize(results, seeds):
    by = {(r["lib"], r["seed"]): r for r in results}
    head = (f"{'library':<12} {'seed':>4} {'greedy return':>15} {'wall s':>8} {'CPU s':>7} {'env steps':>9} "
            f"{'rounds':>7} {'steps/s':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for lib in LIBS:
        for seed in seeds:
            r = by[(lib, seed)]
            ret = f"{r['eval_mean']:.1f} ± {r['eval_std']:.1f}"
            print(f"{lib:<12} {seed:>4} {ret:>15} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} {r['env_steps']:>9} "
                  f"{r['gradient_rounds']:>7} {r['steps_per_s']:>8.0f}")
    ratios = [by[("fastrl_lite", s)]["steps_per_s"] / by[("sb3", s)]["steps_per_s"] for s in seeds]
    print("\nspeed ratio fastrl_lite / SB3 (env steps per second):")
    for seed, ratio in zip(seeds, ratios):
        print(f"  seed {seed}: {ratio:.2f}x")
    mean_ratio = sum(ratios) / len(ratios)
    print(f"  mean:   {mean_ratio:.2f}x")
    cpu_ratios = [by[("fastrl_lite", s)]["steps_per_cpu_s"] / by[("sb3", s)]["steps_per_cpu_s"] for s in seeds]
    print("speed ratio per process CPU second (less sensitive to other load on the machine): "
          + ", ".join(f"seed {s} {r:.2f}x" for s, r in zip(seeds, cpu_ratios))
          + f", mean {sum(cpu_ratios) / len(cpu_ratios):.2f}x")
    solved = {lib: sum(by[(lib, s)]["eval_mean"] >= TARGET_RETURN for s in seeds) for lib in LIBS}
    print(f"\nseeds with greedy return >= {TARGET_RETURN:g}: " +
          ", ".join(f"{lib} {solved[lib]}/{len(seeds)}" for lib in LIBS))
    need = min(TARGET_SEEDS, len(seeds))
    print(f"target: fastrl_lite >= {TARGET_RETURN:g} on >= {need} of {len(seeds)} seeds: "
          f"{'met' if solved['fastrl_lite'] >= need else 'missed'}; "
          f"speed >= {TARGET_SPEEDUP}x SB3: {'met' if mean_ratio >= TARGET_SPEEDUP else 'missed'} ({mean_ratio:.2f}x)")
    return {"ratios": dict(zip(seeds, ratios)), "mean_ratio": mean_ratio, "solved": solved,
            "mean_cpu_ratio": sum(cpu_ratios) / len(cpu_ratios)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run (default 50000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every run (default 1)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="greedy evaluation episodes (default 10)")
    parser.add_argument("--json", default=None, help="also write every run's result to this JSON file")
    add_peers_flush(parser)
    parser.add_argument("--worker", choices=LIBS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.eval_episodes < 1:
        parser.error("--steps, --threads and --eval-episodes must be positive")
    if args.worker:
        return worker(args.worker, args.steps, args.seeds[0], args.threads, args.eval_episodes,
                      args.peers_flush_denormal)

    import gymnasium
    import stable_baselines3
    import torch
    import fastrl_lite
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; python {platform.python_version()}, "
          f"torch {torch.__version__}, gymnasium {gymnasium.__version__}, fastrl_lite {fastrl_lite.__version__}, "
          f"stable-baselines3 {stable_baselines3.__version__}")
    print(f"DQN on {ENV_ID}: {args.steps} env steps, seeds {args.seeds}, torch.set_num_threads({args.threads}), "
          f"{peers_flush_note(args)}, "
          f"greedy eval over {args.eval_episodes} episodes; load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for seed in args.seeds:
        for lib in LIBS:  # fastrl_lite, SB3, fastrl_lite, SB3, ...
            r = spawn(lib, args.steps, seed, args.threads, args.eval_episodes, args.peers_flush_denormal)
            print(f"{lib:<12} seed {seed}: greedy return {r['eval_mean']:6.1f} ± {r['eval_std']:5.1f}, "
                  f"{r['seconds']:6.1f} s ({r['cpu_seconds']:.1f} s CPU), {r['steps_per_s']:6.0f} env steps/s "
                  f"({r['env_steps']} steps, {r['gradient_rounds']} gradient rounds, {r['threads']} thread(s))",
                  flush=True)
            results.append(r)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    summary = summarize(results, args.seeds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "seeds": args.seeds, "threads": args.threads,
                       "peers_flush_denormal": args.peers_flush_denormal, "runs": results,
                       "mean_ratio": summary["mean_ratio"], "mean_cpu_ratio": summary["mean_cpu_ratio"]}, f, indent=2)


if __name__ == "__main__":
    main()
