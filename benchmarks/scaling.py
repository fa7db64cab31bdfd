"""Data-parallel scaling: DQN and PPO on CartPole-v1 at 1 and 2 ranks, one torch thread each.

    python benchmarks/scaling.py                                # DQN and PPO, 1 and 2 ranks, rl-zoo's budgets
    python benchmarks/scaling.py --algos dqn --nproc 1 2 4 --steps 20000 --seeds 0 1 2
    python benchmarks/scaling.py --algos ppo --nproc 2 --hp n_envs=4 --hp batch_size=128

Each run trains with `fastrl-lite train`'s builder and rl-zoo's CartPole-v1 preset on `--steps`
env steps in all, split evenly over the ranks (each rank steps its own `n_envs` envs into its own
buffer; gradients are averaged across the ranks every round). The preset's settings are each
rank's, so N ranks average N batches per round and take 1/N as many rounds; `--hp KEY=VALUE`
(rl-zoo names, as `fastrl-lite train --hp`) changes them for every run of the invocation, one
rank's included. One rank is the plain
single-process run; N > 1 ranks run under torchrun (`torch.distributed.run --standalone`, gloo).
Per run it reports:
- env steps per second (all ranks together) and gradient rounds per second (per rank: every rank
  takes the same rounds), from the wall time of `fit` between two barriers;
- the final greedy return: rank 0's model, 10 episodes, after the same total env steps;
- the all-reduce cost per round: the median time of the round's gradient all-reduce (the same
  `GradientAllReduce`, over the same parameters), timed on its own after training, and its share of
  the training time (rounds × cost / seconds). The README's extrapolation to N machines starts
  from this figure;
- the all-reduces during training, each split into the wait for the last rank to arrive and the
  exchange from then on (medians per round, and sums as shares of the training time).

Every run is a fresh process (or set of processes); the driver collects the `RESULT {json}` line
rank 0 prints.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from harness import PREFIX, emit, set_threads

ENV_ID = "CartPole-v1"


def worker(algo: str, steps: int, seed: int, reduce_reps: int, overrides: dict) -> dict:
    import math
    import torch
    import torch.distributed as dist
    from fastrl_lite import distributed, find_pipes
    from fastrl_lite.cli import BUILDERS, plan_epochs
    from fastrl_lite.core import set_seed
    from fastrl_lite.learner import Update
    from fastrl_lite.presets import resolve
    set_threads("fastrl_lite", 1)
    distributed.init(backend="gloo")
    world, rank = distributed.world_size(), distributed.rank()
    set_seed(seed)
    hp, _ = resolve(algo, ENV_ID, None, overrides)
    rank_steps = math.ceil(steps / world)
    hp["n_timesteps"] = rank_steps
    learner = BUILDERS[algo](ENV_ID, hp, rank_steps, seed, [])
    epochs, learner.batches, _ = plan_epochs(learner, rank_steps)
    marks = _AllReduceMarks(dist)
    if world > 1:
        dist.barrier()
        dist.all_reduce = marks
    start, cpu = time.perf_counter(), time.process_time()
    learner.fit(epochs + 1)  # the data ends the run: rank_steps env steps per rank
    if world > 1:
        dist.all_reduce = marks.all_reduce  # (untimed from here on)
        dist.barrier()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    env_steps = learner.env_steps
    params = [p for update in find_pipes(learner.pipe, Update) for opt in update.optimizers.values()
              for group in opt.param_groups for p in group["params"]]
    reduce_us = split = None
    if world > 1:
        gathered = distributed.gather_to_main(env_steps)
        if rank == 0:
            env_steps = int(sum(gathered))
        split = marks.split(distributed.gather_to_main(marks.times()), seconds)
        for p in params:
            p.grad = torch.zeros_like(p)
        reducer = distributed.GradientAllReduce(params)
        times = []
        for i in range(reduce_reps + 20):
            dist.barrier()
            t = time.perf_counter()
            reducer()
            if i >= 20:
                times.append(time.perf_counter() - t)
        reduce_us = statistics.median(times) * 1e6
    result = None
    if rank == 0:
        evaluation = learner.validate(10)
        result = {"algo": algo, "ranks": world, "seed": seed, "env_steps": env_steps, "rounds_per_rank": learner.batch,
                  "seconds": seconds, "cpu_seconds_rank0": cpu_seconds, "env_steps_per_s": env_steps / seconds,
                  "rounds_per_s": learner.batch / seconds, "greedy_return": evaluation["mean"],
                  "gradient_floats": sum(p.numel() for p in params), "allreduce_us": reduce_us,
                  "allreduce_share": None if reduce_us is None else learner.batch * reduce_us * 1e-6 / seconds,
                  **(split or {})}
    distributed.shutdown()
    return result


class _AllReduceMarks:
    """Wraps `torch.distributed.all_reduce` during training to note, per call, when this rank
    entered it and when it returned (`time.perf_counter`: one clock for every process of the
    machine), so that each round's cost splits into waiting for the last rank to arrive and the
    exchange itself, from the last arrival to the return."""

    def __init__(self, dist, capacity: int = 1 << 20):
        import numpy as np
        self.all_reduce, self.n = dist.all_reduce, 0
        self.marks = np.zeros((capacity, 2))

    def __call__(self, *args, **kwargs):
        entered = time.perf_counter()
        out = self.all_reduce(*args, **kwargs)
        if self.n < len(self.marks):
            self.marks[self.n] = entered, time.perf_counter()
            self.n += 1
        return out

    def times(self):
        return self.marks[:self.n].copy()

    @staticmethod
    def split(per_rank, seconds: float):
        "Rank 0: the summed waits and exchanges across the rounds, in seconds and as shares of `seconds`."
        import numpy as np
        if per_rank is None:
            return None
        n = min(len(m) for m in per_rank)
        entered = np.stack([m[:n, 0] for m in per_rank])
        returned = np.stack([m[:n, 1] for m in per_rank])
        last = entered.max(axis=0)
        wait = (last - entered).mean(axis=0)  # a rank's wait for the others, averaged over the ranks
        exchange = (returned - last).mean(axis=0)
        return {"reduces_timed": n, "arrival_wait_s": float(wait.sum()), "exchange_s": float(exchange.sum()),
                "arrival_wait_share": float(wait.sum() / seconds), "exchange_share": float(exchange.sum() / seconds),
                "exchange_us_median": float(np.median(exchange) * 1e6),
                "arrival_wait_us_median": float(np.median(wait) * 1e6)}


def launch(algo: str, nproc: int, steps: int, seed: int, reduce_reps: int, hp: list) -> dict:
    "One run in fresh processes: plain Python for one rank, torchrun for more."
    args = [os.path.abspath(__file__), "--worker", algo, "--steps", str(steps), "--seeds", str(seed),
            "--reduce-reps", str(reduce_reps), *(f"--hp={pair}" for pair in hp)]
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"{algo} at {nproc} rank(s) failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len(PREFIX):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["dqn", "ppo"], choices=["dqn", "ppo"])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="numbers of ranks to compare")
    parser.add_argument("--steps", type=int, default=None,
                        help="total env steps per run (default: rl-zoo's n_timesteps for CartPole-v1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--reduce-reps", type=int, default=200, help="all-reduce calls timed per run")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset hyper-parameter of every run (per rank); repeatable")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        from fastrl_lite.presets import parse_overrides, resolve
        overrides = parse_overrides(args.hp)
        steps = args.steps or resolve(args.worker, ENV_ID, None, overrides)[0]["n_timesteps"]
        result = worker(args.worker, steps, args.seeds[0], args.reduce_reps, overrides)
        if result is not None:
            emit(result)
        return
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for algo in args.algos:
        for seed in args.seeds:
            for nproc in args.nproc:  # interleaved: every rank count sees the same load drift
                r = launch(algo, nproc, args.steps or 0, seed, args.reduce_reps, args.hp)
                results.append(r)
                reduce = "" if r["allreduce_us"] is None else \
                    f", all-reduce {r['allreduce_us']:.0f} us/round alone; in training per round: waiting for " \
                    f"the other rank {r['arrival_wait_us_median']:.0f} us, exchange {r['exchange_us_median']:.0f} us " \
                    f"(medians; summed {100 * r['arrival_wait_share']:.1f}% and {100 * r['exchange_share']:.1f}% " \
                    f"of the time)"
                print(f"{algo} seed {seed}, {nproc} rank(s): {r['env_steps']} env steps in {r['seconds']:.1f} s = "
                      f"{r['env_steps_per_s']:.0f} env steps/s, {r['rounds_per_s']:.0f} rounds/s per rank, greedy "
                      f"{r['greedy_return']:.1f}{reduce}; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n{'algo':>5s} {'ranks':>5s} {'env steps/s':>12s} {'x':>6s} {'rounds/s':>9s} {'greedy':>8s} "
          f"{'all-reduce us':>14s} {'floats':>8s}")
    for algo in args.algos:
        for nproc in args.nproc:
            runs = [r for r in results if r["algo"] == algo and r["ranks"] == nproc]
            base = [r for r in results if r["algo"] == algo and r["ranks"] == args.nproc[0]]
            speed = statistics.mean(r["env_steps_per_s"] for r in runs)
            ratio = speed / statistics.mean(r["env_steps_per_s"] for r in base)
            reduce = [r["allreduce_us"] for r in runs if r["allreduce_us"] is not None]
            print(f"{algo:>5s} {nproc:>5d} {speed:>12.0f} {ratio:>6.2f} "
                  f"{statistics.mean(r['rounds_per_s'] for r in runs):>9.0f} "
                  f"{statistics.mean(r['greedy_return'] for r in runs):>8.1f} "
                  f"{(statistics.median(reduce) if reduce else float('nan')):>14.0f} {runs[0]['gradient_floats']:>8d}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
