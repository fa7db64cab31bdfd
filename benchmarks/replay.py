"""Replay buffers: add and sample throughput and memory, fastrl_lite against SB3 and TorchRL.

    python benchmarks/replay.py                   # 1M Pendulum-shaped transitions, batch 256, 2 repeats
    python benchmarks/replay.py --libs fastrl_lite sb3 --capacity 200000
    python benchmarks/replay.py --prioritized     # PrioritizedSampler against TorchRL's, 10k/100k/1M rows
    python benchmarks/replay.py --dqn             # DQN CartPole wall time: uniform, prioritized, SAIL

A Pendulum-v1 transition: state 3 float32, action 1 float32, reward float32, next_state 3 float32,
terminated bool, truncated bool — 34 bytes of raw tensor data, so 34 MB for 1M transitions.

- fastrl_lite: `ExperienceReplay(None, bs=256, max_sz=capacity)`, `add(SimpleStep(...))`,
  `sample()` (a `TrainBatch`);
- SB3: `stable_baselines3.common.buffers.ReplayBuffer(capacity, Box(3), Box(1))` (float32 arrays;
  its `dones` and `timeouts` are float32 and it keeps `next_observations`), `add(obs, next_obs,
  action, reward, done, infos)`, `sample(256)` (torch tensors on the CPU);
- TorchRL (if installed): `ReplayBuffer(storage=LazyTensorStorage(capacity))` holding TensorDicts
  laid out as TorchRL's collectors write them (`observation`, `action`, `next/observation`,
  `next/reward`, `next/terminated`, `next/truncated`), `add` / `extend`, `sample(256)`.

`--prioritized` times prioritized replay instead, at each `--capacities` (default 10k, 100k, 1M),
batch 256: fastrl_lite's `ReplayBuffer(capacity, sampler=PrioritizedSampler(alpha=0.6, beta0=0.4))`
against TorchRL's `PrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(capacity))`
(when its compiled segment trees load), each filled to capacity, then `sample(256)` (rows, indices
and importance weights), `update_priority` of 256 drawn rows, and adds of 1 and of 64 transitions.

`--dqn` times whole DQN training runs on CartPole-v1 with rl-zoo's tuned settings (as `fastrl-lite
train dqn`), uniform replay against prioritized replay (and SAIL), alternating in subprocesses, and
reports each variant's wall time against the uniform run's (target for prioritized: <= 1.3x).

Per run (its own subprocess, libraries alternating): the buffer is filled to capacity with
`--chunk`-sized batch adds (SB3 has no batched add for a one-env buffer, so its arrays are written
directly), memory is read (the storage arrays' bytes, and process RSS growth from just before the
buffer is built to after it is full), then `sample(256)` is timed, then adding one transition at a
time (the one-env training loop), then adding batches of 64 (a 64-env loop; SB3 uses a 64-env
buffer for this one). Inputs are prebuilt in each library's own types, so only the buffer is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from harness import emit, run_worker

RAW_BYTES_PER_TRANSITION = 3 * 4 + 4 + 4 + 3 * 4 + 1 + 1
TARGET_MEMORY = 0.10


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(fn, n: int) -> tuple:
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def data(n: int, seed: int):
    import numpy as np
    rng = np.random.default_rng(seed)
    return {"state": rng.standard_normal((n, 3), dtype=np.float32), "action": rng.uniform(-2, 2, (n, 1)).astype(np.float32),
            "reward": rng.standard_normal(n, dtype=np.float32), "next_state": rng.standard_normal((n, 3), dtype=np.float32),
            "terminated": np.zeros(n, dtype=bool), "truncated": rng.random(n) < 0.005}


def run_fastrl_lite(capacity, chunk, n_single, n_batch, n_sample, seed):
    import torch
    from fastrl_lite.core import SimpleStep
    from fastrl_lite.memory import ExperienceReplay
    d = {k: torch.from_numpy(v) for k, v in data(chunk, seed).items()}
    full = SimpleStep(**d)
    singles = [SimpleStep(**{k: v[i:i + 1].clone() for k, v in d.items()}) for i in range(1000)]
    batches = [SimpleStep(**{k: v[i:i + 64].clone() for k, v in d.items()}) for i in range(0, 64 * 16, 64)]
    rss0 = rss_bytes()
    rb = ExperienceReplay(None, bs=256, max_sz=capacity)
    for _ in range(capacity // chunk):
        rb.add(full)
    rss = rss_bytes() - rss0
    nbytes = sum(t.nbytes for t in rb.storage.values())
    sample = timed(lambda i: rb.sample(), n_sample)
    single = timed(lambda i: rb.add(singles[i % 1000]), n_single)
    batch = timed(lambda i: rb.add(batches[i % 16]), n_batch)
    return nbytes, rss, sample, single, batch, len(rb)


def run_sb3(capacity, chunk, n_single, n_batch, n_sample, seed):
    import numpy as np
    from gymnasium.spaces import Box
    from stable_baselines3.common.buffers import ReplayBuffer
    obs_space, act_space = Box(-8, 8, (3,), np.float32), Box(-2, 2, (1,), np.float32)
    d = data(chunk, seed)
    rss0 = rss_bytes()
    rb = ReplayBuffer(capacity, obs_space, act_space, device="cpu", n_envs=1)
    for i in range(0, capacity, chunk):  # one-env SB3 buffers add one transition per call: write the arrays
        rb.observations[i:i + chunk, 0] = d["state"]
        rb.next_observations[i:i + chunk, 0] = d["next_state"]
        rb.actions[i:i + chunk, 0] = d["action"]
        rb.rewards[i:i + chunk, 0] = d["reward"]
        rb.dones[i:i + chunk, 0] = d["terminated"]
        rb.timeouts[i:i + chunk, 0] = d["truncated"]
    rb.full, rb.pos = True, 0
    rss = rss_bytes() - rss0
    nbytes = sum(a.nbytes for a in (rb.observations, rb.next_observations, rb.actions, rb.rewards, rb.dones,
                                    rb.timeouts))
    sample = timed(lambda i: rb.sample(256), n_sample)
    s = {k: [v[j:j + 1] for j in range(1000)] for k, v in d.items()}
    done = [s["terminated"][j] | s["truncated"][j] for j in range(1000)]
    infos = [[{"TimeLimit.truncated": bool(s["truncated"][j][0])}] for j in range(1000)]
    single = timed(lambda i: rb.add(s["state"][i % 1000], s["next_state"][i % 1000], s["action"][i % 1000],
                                    s["reward"][i % 1000], done[i % 1000], infos[i % 1000]), n_single)
    rb64 = ReplayBuffer(capacity, obs_space, act_space, device="cpu", n_envs=64)
    b = {k: [v[j:j + 64] for j in range(0, 64 * 16, 64)] for k, v in d.items()}
    bdone = [b["terminated"][j] | b["truncated"][j] for j in range(16)]
    binfos = [[{"TimeLimit.truncated": bool(t)} for t in b["truncated"][j]] for j in range(16)]
    batch = timed(lambda i: rb64.add(b["state"][i % 16], b["next_state"][i % 16], b["action"][i % 16],
                                     b["reward"][i % 16], bdone[i % 16], binfos[i % 16]), n_batch)
    return nbytes, rss, sample, single, batch, rb.size()


def run_torchrl(capacity, chunk, n_single, n_batch, n_sample, seed):
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    d = {k: torch.from_numpy(v) for k, v in data(chunk, seed).items()}

    def td(sl, n):
        return TensorDict({"observation": d["state"][sl], "action": d["action"][sl],
                           "next": TensorDict({"observation": d["next_state"][sl],
                                               "reward": d["reward"][sl].unsqueeze(-1),
                                               "terminated": d["terminated"][sl].unsqueeze(-1),
                                               "truncated": d["truncated"][sl].unsqueeze(-1)}, batch_size=n)},
                          batch_size=n)
    full = td(slice(0, chunk), [chunk])
    singles = [td(j, []) for j in range(1000)]
    batches = [td(slice(j, j + 64), [64]).clone() for j in range(0, 64 * 16, 64)]
    rss0 = rss_bytes()
    rb = ReplayBuffer(storage=LazyTensorStorage(capacity), batch_size=256)
    for _ in range(capacity // chunk):
        rb.extend(full)
    rss = rss_bytes() - rss0
    nbytes = sum(t.nbytes for t in rb.storage._storage.values(include_nested=True, leaves_only=True))
    sample = timed(lambda i: rb.sample(), n_sample)
    single = timed(lambda i: rb.add(singles[i % 1000]), n_single)
    batch = timed(lambda i: rb.extend(batches[i % 16]), n_batch)
    return nbytes, rss, sample, single, batch, len(rb)


RUNNERS = {"fastrl_lite": run_fastrl_lite, "sb3": run_sb3, "torchrl": run_torchrl}


def run_fastrl_lite_per(capacity, chunk, n_single, n_batch, n_sample, seed):
    import torch
    from fastrl_lite.core import SimpleStep
    from fastrl_lite.memory import PrioritizedSampler, ReplayBuffer
    d = {k: torch.from_numpy(v) for k, v in data(chunk, seed).items()}
    full = SimpleStep(**d)
    singles = [SimpleStep(**{k: v[i:i + 1].clone() for k, v in d.items()}) for i in range(1000)]
    batches = [SimpleStep(**{k: v[i:i + 64].clone() for k, v in d.items()}) for i in range(0, 64 * 16, 64)]
    rb = ReplayBuffer(capacity, sampler=PrioritizedSampler(alpha=0.6, beta0=0.4))
    for _ in range(capacity // chunk):
        rb.extend(full)
    torch.manual_seed(seed)
    drawn = [rb.sample(256).indices for _ in range(16)]
    priorities = [torch.rand(256) * 10 for _ in range(16)]
    update = timed(lambda i: rb.update_priority(drawn[i % 16], priorities[i % 16]), n_sample)
    sample = timed(lambda i: rb.sample(256), n_sample)
    single = timed(lambda i: rb.extend(singles[i % 1000]), n_single)
    batch = timed(lambda i: rb.extend(batches[i % 16]), n_batch)
    flush = timed(lambda i: rb.sample(256), 1)  # what the adds queued is entered into the tree here
    return sample, update, single, batch, flush, len(rb)


def run_torchrl_per(capacity, chunk, n_single, n_batch, n_sample, seed):
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, PrioritizedReplayBuffer
    d = {k: torch.from_numpy(v) for k, v in data(chunk, seed).items()}

    def td(sl, n):
        return TensorDict({"observation": d["state"][sl], "action": d["action"][sl],
                           "next": TensorDict({"observation": d["next_state"][sl],
                                               "reward": d["reward"][sl].unsqueeze(-1),
                                               "terminated": d["terminated"][sl].unsqueeze(-1),
                                               "truncated": d["truncated"][sl].unsqueeze(-1)}, batch_size=n)},
                          batch_size=n)
    full = td(slice(0, chunk), [chunk])
    singles = [td(j, []) for j in range(1000)]
    batches = [td(slice(j, j + 64), [64]).clone() for j in range(0, 64 * 16, 64)]
    rb = PrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(capacity), batch_size=256)
    for _ in range(capacity // chunk):
        rb.extend(full)
    torch.manual_seed(seed)
    drawn = [rb.sample(256, return_info=True)[1]["index"] for _ in range(16)]
    priorities = [torch.rand(256) * 10 for _ in range(16)]
    update = timed(lambda i: rb.update_priority(drawn[i % 16], priorities[i % 16]), n_sample)
    sample = timed(lambda i: rb.sample(256, return_info=True), n_sample)
    single = timed(lambda i: rb.add(singles[i % 1000]), n_single)
    batch = timed(lambda i: rb.extend(batches[i % 16]), n_batch)
    flush = timed(lambda i: rb.sample(256, return_info=True), 1)
    return sample, update, single, batch, flush, len(rb)


PER_RUNNERS = {"fastrl_lite": run_fastrl_lite_per, "torchrl": run_torchrl_per}


def per_worker(lib, args):
    import torch
    torch.set_num_threads(args.threads)
    try:
        sample, update, single, batch, flush, size = PER_RUNNERS[lib](args.capacity, args.chunk, args.single,
                                                                       args.batch, args.samples, args.seed)
    except (ImportError, RuntimeError) as error:  # TorchRL without its compiled segment trees
        return emit({"lib": lib, "capacity": args.capacity, "error": f"{type(error).__name__}: {error}"})
    emit({"lib": lib, "capacity": args.capacity, "size": size, "sample_us": sample[0] * 1e6,
          "sample_cpu_us": sample[1] * 1e6, "update_us": update[0] * 1e6, "update_cpu_us": update[1] * 1e6,
          "add1_us": single[0] * 1e6, "add1_cpu_us": single[1] * 1e6, "add64_us": batch[0] * 1e6,
          "add64_cpu_us": batch[1] * 1e6, "first_sample_after_adds_us": flush[0] * 1e6})


def per_main(args):
    print(f"prioritized replay, Pendulum-shaped transitions, batch 256, alpha 0.6, beta 0.4, "
          f"torch.set_num_threads({args.threads}); load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for capacity in args.capacities:
        chunk = min(args.chunk, capacity)
        passthrough = ["--capacity", str(capacity), "--chunk", str(chunk), "--single", str(args.single),
                       "--batch", str(args.batch), "--samples", str(args.samples), "--seed", str(args.seed),
                       "--threads", str(args.threads)]
        for repeat in range(args.repeats):
            for lib in args.libs:
                if lib not in PER_RUNNERS or not available(lib):
                    continue
                r = run_worker(__file__, ["--per-worker", lib, *passthrough])
                results.append(r)
                if "error" in r:
                    print(f"{lib:12s} capacity {capacity:>8d}: not measured ({r['error']})", flush=True)
                    continue
                print(f"{lib:12s} capacity {capacity:>8d} run {repeat}: sample(256) {r['sample_us']:7.1f} µs, "
                      f"update 256 {r['update_us']:7.1f} µs, add 1 {r['add1_us']:6.1f} µs, add 64 "
                      f"{r['add64_us']:6.1f} µs; load {os.getloadavg()[0]:.2f}", flush=True)
    print()
    head = (f"{'library':12s} {'capacity':>9s} {'sample µs':>10s} {'update µs':>10s} {'add 1 µs':>9s} "
            f"{'add 64 µs':>10s}   (best of {args.repeats}, CPU time)")
    print(head + "\n" + "-" * len(head))
    best = {}
    for capacity in args.capacities:
        for lib in args.libs:
            runs = [r for r in results if r["lib"] == lib and r["capacity"] == capacity and "error" not in r]
            if not runs:
                continue
            b = {k: min(r[k] for r in runs) for k in ("sample_cpu_us", "update_cpu_us", "add1_cpu_us", "add64_cpu_us")}
            best[(lib, capacity)] = b
            print(f"{lib:12s} {capacity:>9d} {b['sample_cpu_us']:>10.1f} {b['update_cpu_us']:>10.1f} "
                  f"{b['add1_cpu_us']:>9.2f} {b['add64_cpu_us']:>10.2f}")
        if ("fastrl_lite", capacity) in best and ("torchrl", capacity) in best:
            f, t = best[("fastrl_lite", capacity)], best[("torchrl", capacity)]
            ratios = {k: t[k] / f[k] for k in f}
            print(f"  TorchRL / fastrl_lite at {capacity}: "
                  + ", ".join(f"{k[:-7]} {v:.2f}x" for k, v in ratios.items())
                  + f" -> {'faster everywhere' if min(ratios.values()) > 1 else 'not faster everywhere'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": results}, fh, indent=2)


DQN_VARIANTS = {"uniform": {}, "prioritized": {"prioritized": True}, "sail": {"sail": True}}


def dqn_worker(variant, args):
    "rl-zoo's tuned CartPole DQN (as fastrl-lite train dqn builds it), with a replay variant; fit timed."
    import torch
    torch.set_num_threads(args.threads)
    from fastrl_lite import GymDataPipe, set_seed
    from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner
    steps = args.steps
    set_seed(args.seed)
    model = DQN(4, 2, hidden=(256, 256))
    agent = DQNAgent(model, min_epsilon=0.04, max_epsilon=1.0, max_steps=max(1, int(0.16 * steps)))
    dl = GymDataPipe(["CartPole-v1"], agent=agent, seed=args.seed, n=steps)
    learner = DQNLearner(model, [dl], lr=2.3e-3, bs=64, max_sz=100_000, warmup=1000, train_every=256, updates=128,
                         gamma=0.99, target_sync=128, batches=1280, **DQN_VARIANTS[variant])
    epochs = max(1, -(-learner.collector.rounds_within(steps) // learner.batches))
    start, cpu = time.perf_counter(), time.process_time()
    learner.fit(epochs)
    emit({"variant": variant, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
          "env_steps": learner.env_steps, "rounds": learner.batch, "eval_mean": learner.validate(10)["mean"]})


def dqn_main(args):
    print(f"DQN on CartPole-v1, {args.steps} env steps, rl-zoo settings, torch.set_num_threads({args.threads}); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for repeat in range(args.repeats):
        for variant in args.variants:
            r = run_worker(__file__, ["--dqn-worker", variant, "--steps", str(args.steps), "--seed", str(args.seed),
                                      "--threads", str(args.threads)])
            results.append(r)
            print(f"{variant:12s} run {repeat}: {r['seconds']:6.1f} s ({r['cpu_seconds']:6.1f} s CPU), "
                  f"{r['env_steps']} env steps, {r['rounds']} rounds, greedy {r['eval_mean']:.1f}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    best = {v: min(r["cpu_seconds"] for r in results if r["variant"] == v) for v in args.variants}
    if "uniform" in best:
        for variant in args.variants:
            if variant != "uniform":
                ratio = best[variant] / best["uniform"]
                target = f" (target <= 1.3x: {'met' if ratio <= 1.3 else 'missed'})" if variant == "prioritized" else ""
                print(f"{variant} / uniform CPU time (best of {args.repeats}): {ratio:.2f}x{target}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": results}, fh, indent=2)


def worker(lib, args):
    import torch
    torch.set_num_threads(args.threads)
    nbytes, rss, sample, single, batch, size = RUNNERS[lib](args.capacity, args.chunk, args.single, args.batch,
                                                            args.samples, args.seed)
    emit({"lib": lib, "size": size, "nbytes": nbytes, "rss": rss,
          "sample_us": sample[0] * 1e6, "sample_cpu_us": sample[1] * 1e6,
          "add1_per_s": 1 / single[0], "add1_per_cpu_s": 1 / single[1],
          "add64_per_s": 64 / batch[0], "add64_per_cpu_s": 64 / batch[1]})


def available(lib: str) -> bool:
    import importlib.util
    return importlib.util.find_spec({"fastrl_lite": "fastrl_lite", "sb3": "stable_baselines3",
                                     "torchrl": "torchrl"}[lib]) is not None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libs", nargs="+", choices=list(RUNNERS), default=list(RUNNERS))
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="batch size of the fill (default 10000)")
    parser.add_argument("--single", type=int, default=100_000, help="one-transition adds timed (default 100000)")
    parser.add_argument("--batch", type=int, default=5_000, help="64-transition adds timed (default 5000)")
    parser.add_argument("--samples", type=int, default=5_000, help="sample(256) calls timed (default 5000)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--prioritized", action="store_true", help="time prioritized replay against TorchRL's")
    parser.add_argument("--capacities", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="capacities for --prioritized (default 10k 100k 1M)")
    parser.add_argument("--dqn", action="store_true", help="time DQN CartPole runs: uniform, prioritized, SAIL")
    parser.add_argument("--variants", nargs="+", choices=list(DQN_VARIANTS), default=list(DQN_VARIANTS))
    parser.add_argument("--steps", type=int, default=50_000, help="env steps of each --dqn run (default 50000)")
    parser.add_argument("--worker", choices=list(RUNNERS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--per-worker", choices=list(PER_RUNNERS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dqn-worker", choices=list(DQN_VARIANTS), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.per_worker:
        return per_worker(args.per_worker, args)
    if args.dqn_worker:
        return dqn_worker(args.dqn_worker, args)
    if args.prioritized:
        return per_main(args)
    if args.dqn:
        return dqn_main(args)
    if args.capacity % args.chunk:
        parser.error("--capacity must be a multiple of --chunk")
    if args.worker:
        return worker(args.worker, args)
    libs = [lib for lib in args.libs if available(lib)]
    missing = sorted(set(args.libs) - set(libs))
    print(f"capacity {args.capacity}, Pendulum-shaped transitions ({RAW_BYTES_PER_TRANSITION} raw bytes each), "
          f"batch 256, torch.set_num_threads({args.threads}); load average {os.getloadavg()[0]:.2f}"
          + (f"; not installed: {', '.join(missing)}" if missing else ""), flush=True)
    results = []
    passthrough = ["--capacity", str(args.capacity), "--chunk", str(args.chunk), "--single", str(args.single),
                   "--batch", str(args.batch), "--samples", str(args.samples), "--seed", str(args.seed),
                   "--threads", str(args.threads)]
    for repeat in range(args.repeats):
        for lib in libs:
            r = run_worker(__file__, ["--worker", lib, *passthrough])
            results.append(r)
            print(f"{lib:12s} run {repeat}: sample(256) {r['sample_us']:7.1f} µs, add 1 {r['add1_per_s']:9.0f}/s, "
                  f"add 64 {r['add64_per_s']:10.0f} transitions/s, storage {r['nbytes'] / 1e6:6.1f} MB, "
                  f"RSS +{r['rss'] / 1e6:6.1f} MB; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    raw = RAW_BYTES_PER_TRANSITION * args.capacity
    head = (f"{'library':12s} {'sample µs':>10s} {'(CPU)':>7s} {'add 1 /s':>10s} {'(CPU)':>9s} {'add 64 /s':>11s} "
            f"{'(CPU)':>11s} {'storage MB':>11s} {'RSS + MB':>9s} {'x raw':>6s}")
    print(head + "\n" + "-" * len(head))
    best = {}
    for lib in libs:
        runs = [r for r in results if r["lib"] == lib]
        b = {"sample_us": min(r["sample_us"] for r in runs), "sample_cpu_us": min(r["sample_cpu_us"] for r in runs),
             "add1_per_s": max(r["add1_per_s"] for r in runs), "add1_per_cpu_s": max(r["add1_per_cpu_s"] for r in runs),
             "add64_per_s": max(r["add64_per_s"] for r in runs),
             "add64_per_cpu_s": max(r["add64_per_cpu_s"] for r in runs),
             "nbytes": runs[0]["nbytes"], "rss": min(r["rss"] for r in runs)}
        best[lib] = b
        print(f"{lib:12s} {b['sample_us']:>10.1f} {b['sample_cpu_us']:>7.1f} {b['add1_per_s']:>10.0f} "
              f"{b['add1_per_cpu_s']:>9.0f} {b['add64_per_s']:>11.0f} {b['add64_per_cpu_s']:>11.0f} "
              f"{b['nbytes'] / 1e6:>11.1f} {b['rss'] / 1e6:>9.1f} {b['nbytes'] / raw:>6.2f}")
    print(f"raw tensor bytes: {raw / 1e6:.1f} MB")
    if "fastrl_lite" in best:
        f = best["fastrl_lite"]
        for lib in libs:
            if lib != "fastrl_lite":
                o = best[lib]
                print(f"fastrl_lite / {lib} (CPU time): sample {o['sample_cpu_us'] / f['sample_cpu_us']:.2f}x, "
                      f"add 1 {f['add1_per_cpu_s'] / o['add1_per_cpu_s']:.2f}x, "
                      f"add 64 {f['add64_per_cpu_s'] / o['add64_per_cpu_s']:.2f}x")
        storage_over, rss_over = f["nbytes"] / raw - 1, f["rss"] / raw - 1
        print(f"target: fastrl_lite memory within {TARGET_MEMORY:.0%} of the raw bytes: storage {storage_over:+.1%}, "
              f"RSS growth {rss_over:+.1%}: "
              f"{'met' if abs(storage_over) <= TARGET_MEMORY and rss_over <= TARGET_MEMORY else 'missed'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": results, "best": best, "raw_bytes": raw}, fh, indent=2)


if __name__ == "__main__":
    main()
