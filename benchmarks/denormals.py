"""What flushing subnormal floats to zero buys: fastrl_lite's own runs with the flush on (the
default of `Learner.fit` and `fastrl-lite train`) and off (`Learner(flush_denormal=False)`).

    python benchmarks/denormals.py                                   # DQN CartPole 20k, TD3 Pendulum 6k
    python benchmarks/denormals.py --algos dqn --steps 50000 --repeats 3

Each run is `fastrl-lite train ALGO --preset zoo`'s learner (rl-zoo's settings) in a fresh
subprocess with `torch.set_num_threads(--threads)`; "on" sets the mode before torch starts its
worker threads, as the command line does, and "off" trains with `flush_denormal=False`; on and off
alternate. It prints training seconds (wall and process CPU), the mean of the last 10 training
returns, and the speed-up of "on" per algorithm. Subnormals are slow only on CPUs that handle
them in microcode (most Intel cores); elsewhere the two modes run alike.
"""
from __future__ import annotations

import argparse
import json
import os

from harness import cpu_model, emit_run, fastrl_lite_run, run_worker, set_threads

ENVS = {"dqn": "CartPole-v1", "ddpg": "Pendulum-v1", "td3": "Pendulum-v1", "sac": "Pendulum-v1",
        "ppo": "CartPole-v1"}
STEPS = {"dqn": 20_000, "ddpg": 6_000, "td3": 6_000, "sac": 6_000, "ppo": 50_000}


def worker(mode: str, algo: str, steps: int, seed: int, threads: int):
    set_threads("fastrl_lite" if mode == "on" else "peer", threads)  # "off": torch as the peers run it
    result = fastrl_lite_run(algo, ENVS[algo], steps, seed, flush_denormal=mode == "on")
    emit_run(result, mode=mode, algo=algo, seed=seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", choices=sorted(ENVS), default=["dqn", "td3"])
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: per algorithm)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode and algorithm (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in every run (default 1)")
    parser.add_argument("--json", default=None, help="also write every run's result to this JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "ALGO"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.steps, args.seed, args.threads)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch.set_num_threads({args.threads}); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for algo in args.algos:
        steps = args.steps or STEPS[algo]
        for repeat in range(args.repeats):
            for mode in ("on", "off"):
                r = run_worker(__file__, ["--worker", mode, algo, "--steps", steps, "--seed", args.seed,
                                          "--threads", args.threads])
                results.append(r)
                print(f"{algo:4s} flush {mode:3s} run {repeat}: {r['seconds']:6.1f} s wall, {r['cpu_seconds']:6.1f} s "
                      f"CPU, {r['env_steps']} env steps, {r['gradient_rounds']} rounds, mean of last 10 training "
                      f"returns {r['last_returns']:.1f}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    for algo in args.algos:
        runs = {mode: [r for r in results if r["algo"] == algo and r["mode"] == mode] for mode in ("on", "off")}
        wall = {mode: [r["seconds"] for r in rs] for mode, rs in runs.items()}
        cpu = {mode: [r["cpu_seconds"] for r in rs] for mode, rs in runs.items()}
        print(f"{algo}: flushed {min(wall['on']):.1f} s, kept {min(wall['off']):.1f} s (best of {args.repeats}): "
              f"{min(wall['off']) / min(wall['on']):.2f}x wall, {min(cpu['off']) / min(cpu['on']):.2f}x CPU")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "runs": results}, f, indent=2)


if __name__ == "__main__":
    main()
