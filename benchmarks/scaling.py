"""Scaling: env steps per second against num_envs, and gradient-round time against batch size and width.

    python benchmarks/scaling.py                                  # both tables
    python benchmarks/scaling.py --part envs --num-envs 1 4 16 64 --steps 20000

Env scaling (CartPole-v1, `GymDataPipe(num_envs=k)` + `DQNAgent` + `DQNLearner` with
`cli.build_dqn`'s settings, one thread): for each num_envs, (a) collection only — the agent's
forward pass, ε-greedy, `GymStepper` and `ExperienceReplay.add` for every vector step, no gradient
rounds — and (b) the whole DQN pipeline at its fixed update-to-data ratio (128 rounds per 256 env
steps, so gradient rounds per env step stay constant as num_envs grows).

Update scaling: one DQN gradient round (replay sample, target, loss, backward, clip, fused Adam
step) from a full replay, for batch sizes 32 … 1024 at width 256, and for MLP widths 64 … 1024
at batch 64; median µs per round over `--rounds` rounds. The replay here is
`ExperienceReplay(updates=10**9)` after its warmup, so it yields batches without collecting more.

Each configuration runs in its own subprocess with `torch.set_num_threads(--threads)`.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from harness import emit, run_worker

ENV_ID = "CartPole-v1"


def env_run(num_envs: int, steps: int, seed: int, collect_only: bool) -> dict:
    import math
    from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner
    from fastrl_lite.core import set_seed
    from fastrl_lite.envs import GymDataPipe
    from fastrl_lite.memory import ExperienceReplay
    set_seed(seed)
    model = DQN(4, 2, hidden=(256, 256))
    agent = DQNAgent(model, min_epsilon=0.04, max_epsilon=1.0, max_steps=max(1, int(0.16 * steps)))
    dl = GymDataPipe([ENV_ID], agent=agent, seed=seed, n=steps, num_envs=num_envs)
    if collect_only:
        replay = ExperienceReplay(dl, bs=64, max_sz=100_000)
        dl.reset()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            while True:
                replay.add(next(dl))
        except StopIteration:
            pass
        env_steps, rounds = replay.added, 0
    else:
        learner = DQNLearner(model, [dl], lr=2.3e-3, bs=64, max_sz=100_000, warmup=1000, train_every=256,
                             updates=128, gamma=0.99, target_sync=128, batches=1280)
        start, cpu = time.perf_counter(), time.process_time()
        learner.fit(max(1, math.ceil(learner.collector.rounds_within(steps) / learner.batches)))
        env_steps, rounds = learner.env_steps, learner.batch
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {"num_envs": num_envs, "collect_only": collect_only, "env_steps": env_steps, "rounds": rounds,
            "seconds": seconds, "cpu_seconds": cpu_seconds, "steps_per_s": env_steps / seconds,
            "steps_per_cpu_s": env_steps / cpu_seconds}


def update_run(bs: int, width: int, rounds: int, seed: int) -> dict:
    import statistics
    from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner
    from fastrl_lite.core import set_seed
    from fastrl_lite.envs import GymDataPipe
    set_seed(seed)
    model = DQN(4, 2, hidden=(width, width))
    dl = GymDataPipe([ENV_ID], agent=DQNAgent(model), seed=seed)
    warmup = max(2000, bs)
    learner = DQNLearner(model, [dl], bs=bs, max_sz=10_000, warmup=warmup, train_every=1, updates=10 ** 9,
                         target_sync=128)
    pipe = learner.pipe
    for _ in range(20):  # the first call collects the warmup transitions
        next(pipe)
    times = []
    cpu = time.process_time()
    for _ in range(rounds):
        start = time.perf_counter()
        next(pipe)
        times.append(time.perf_counter() - start)
    cpu_seconds = time.process_time() - cpu
    return {"bs": bs, "width": width, "rounds": rounds, "median_us": statistics.median(times) * 1e6,
            "cpu_us": cpu_seconds / rounds * 1e6}


def spawn(args: list) -> dict:
    return run_worker(__file__, args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["envs", "updates", "both"], default="both")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per env-scaling run (default 10000)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--rounds", type=int, default=300, help="gradient rounds timed per update config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--value", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import torch
        torch.set_num_threads(args.threads)
        if args.worker in ("collect", "dqn"):
            result = env_run(args.value[0], args.steps, args.seed, args.worker == "collect")
        else:
            result = update_run(args.value[0], args.value[1], args.rounds, args.seed)
        emit(result)
        return
    common = ["--steps", str(args.steps), "--rounds", str(args.rounds), "--seed", str(args.seed),
              "--threads", str(args.threads)]
    print(f"torch.set_num_threads({args.threads}); load average {os.getloadavg()[0]:.2f}", flush=True)
    out = {}
    if args.part in ("envs", "both"):
        rows = []
        for k in args.num_envs:
            collect = spawn(["--worker", "collect", "--value", str(k), *common])
            dqn = spawn(["--worker", "dqn", "--value", str(k), *common])
            rows.append((k, collect, dqn))
            print(f"{k:3d} envs: collection {collect['steps_per_s']:8.0f} env steps/s ({collect['steps_per_cpu_s']:.0f} "
                  f"per CPU s), DQN {dqn['steps_per_s']:6.0f} env steps/s ({dqn['steps_per_cpu_s']:.0f} per CPU s, "
                  f"{dqn['rounds']} rounds); load {os.getloadavg()[0]:.2f}", flush=True)
        base_c, base_d = rows[0][1]["steps_per_cpu_s"], rows[0][2]["steps_per_cpu_s"]
        head = (f"\n{'num_envs':>8s} {'collect steps/s':>16s} {'per CPU s':>10s} {'x':>6s} {'DQN steps/s':>12s} "
                f"{'per CPU s':>10s} {'x':>6s}")
        print(head + "\n" + "-" * (len(head) - 1))
        for k, c, d in rows:
            print(f"{k:>8d} {c['steps_per_s']:>16.0f} {c['steps_per_cpu_s']:>10.0f} {c['steps_per_cpu_s'] / base_c:>6.1f} "
                  f"{d['steps_per_s']:>12.0f} {d['steps_per_cpu_s']:>10.0f} {d['steps_per_cpu_s'] / base_d:>6.2f}")
        out["envs"] = [{"num_envs": k, "collect": c, "dqn": d} for k, c, d in rows]
    if args.part in ("updates", "both"):
        configs = [(bs, 256) for bs in args.batch_sizes] + [(64, w) for w in args.widths if w != 256 or 64 not in
                                                            args.batch_sizes]
        results = []
        for bs, width in configs:
            r = spawn(["--worker", "update", "--value", str(bs), str(width), *common])
            results.append(r)
            print(f"batch {bs:5d}, width {width:5d}: {r['median_us']:8.1f} µs per round (median), "
                  f"{r['cpu_us']:8.1f} µs CPU; load {os.getloadavg()[0]:.2f}", flush=True)
        print(f"\n{'batch':>6s} {'width':>6s} {'µs/round':>9s} {'CPU µs':>8s} {'rounds/s':>9s}")
        for r in results:
            print(f"{r['bs']:>6d} {r['width']:>6d} {r['median_us']:>9.1f} {r['cpu_us']:>8.1f} {1e6 / r['median_us']:>9.0f}")
        out["updates"] = results
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
