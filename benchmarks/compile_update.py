"""Gradient rounds per second of the DQN and DDPG updates, eager against `compile=True`.

    python benchmarks/compile_update.py                       # CPU, both algorithms, 3 repeats
    python benchmarks/compile_update.py --device cuda --mode max-autotune-no-cudagraphs

- DQN: `DQNLearner` on CartPole-v1 with rl-zoo's settings (batch 64, MLP [256, 256], Adam 2.3e-3,
  Huber loss, gradient norm clipped at 10, target network synced every 128 rounds);
- DDPG: `DDPGLearner` on Pendulum-v1 with rl-zoo's network and batch (batch 256, actor and critic
  [400, 300]), one critic step and one actor step per round, soft target updates.

A gradient round is one item pulled from the learner's pipeline: replay sample, TD target, loss,
backward, optimizer step(s), target update, loss record. The replay is filled first with `--fill`
transitions from the untrained agent and built with `updates=10**9`, so the rounds timed collect no
env steps. The first round, which compiles, is timed on its own and reported as the compile time
(a cold compile: each run gets a fresh inductor cache unless `--warm-cache`); then `--warm` rounds
run untimed and `--rounds` are timed. On the CPU the rate is taken on process CPU time (other work
on a shared machine does not count against it), on CUDA on wall time after `torch.cuda.synchronize()`.

Every (algorithm, eager/compiled, repeat) run is its own subprocess with
`torch.set_num_threads(--threads)`; eager and compiled alternate, and the table shows the best
(minimum time) of the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from harness import cpu_model, emit, run_worker

ROUNDS = {"dqn": 3000, "ddpg": 1000}


def build(algo: str, compile, device: str, fill: int, seed: int):
    from fastrl_lite.core import set_seed
    from fastrl_lite.envs import GymDataPipe
    set_seed(seed)
    if algo == "dqn":
        from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner
        model = DQN(4, 2, hidden=(256, 256))
        dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model, device=device), seed=seed)
        learner = DQNLearner(model, [dl], bs=64, max_sz=100_000, warmup=fill, train_every=1, updates=10 ** 9,
                             lr=2.3e-3, target_sync=128, clip_grad_norm=10.0, device=device, compile=compile)
    else:
        from fastrl_lite.algos.ddpg import Actor, Critic, DDPGAgent, DDPGLearner
        actor, critic = Actor(3, 1, 400, 300), Critic(3, 1, 400, 300)
        dl = GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=seed)
        learner = DDPGLearner(actor, critic, [dl], bs=256, max_sz=200_000, warmup=fill, train_every=1,
                              updates=10 ** 9, actor_lr=1e-3, critic_lr=1e-3, tau=0.005, gamma=0.98, device=device,
                              compile=compile)
    return learner, dl


def worker(args):
    if not args.warm_cache:  # a cold compile: inductor's on-disk cache would otherwise hide most of it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile_update-")
    import torch
    torch.set_num_threads(args.threads)
    compiled = args.worker == "compiled"
    compile = ({"mode": args.mode} if args.mode != "default" else True) if compiled else False
    learner, dl = build(args.algo, compile, args.device, args.fill, args.seed)
    replay, pipe = learner.collector.buffer, learner.pipe
    while len(replay) < args.fill:
        replay.extend(next(dl))
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(n):
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            next(pipe)
        sync()
        return time.perf_counter() - start, time.process_time() - cpu

    first = timed(1)
    timed(args.warm)
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    seconds, cpu_seconds = timed(args.rounds)
    emit({"algo": args.algo, "variant": args.worker, "device": args.device, "mode": args.mode if compiled else None,
          "threads": torch.get_num_threads(), "rounds": args.rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
          "first_round_s": first[0], "first_round_cpu_s": first[1],
          "recompiles_while_timed": torch._dynamo.utils.counters["frames"]["ok"] - frames,
          "rate": args.rounds / (seconds if cuda else cpu_seconds), "wall_rate": args.rounds / seconds,
          "torch": torch.__version__, "warm_cache": args.warm_cache})
    if not args.warm_cache:
        shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", choices=list(ROUNDS), default=list(ROUNDS))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--mode", default="default", help="torch.compile mode for the compiled runs (default: none)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"gradient rounds timed per run (default {ROUNDS['dqn']} DQN, {ROUNDS['ddpg']} DDPG)")
    parser.add_argument("--warm", type=int, default=100, help="untimed rounds after the first (default 100)")
    parser.add_argument("--fill", type=int, default=2000, help="transitions in the replay before timing (default 2000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm-cache", action="store_true",
                        help="keep inductor's on-disk cache between runs (default: a fresh one per run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=["eager", "compiled"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--algo", choices=list(ROUNDS), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.rounds = args.rounds or ROUNDS[args.algo]
        return worker(args)
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            parser.error("--device cuda needs a GPU build of torch and a GPU")
    basis = "wall" if args.device.startswith("cuda") else "CPU"
    print(f"{cpu_model()}, {os.cpu_count()} logical cores; device {args.device}; "
          f"torch.set_num_threads({args.threads}); compile mode {args.mode}; rates per {basis} second; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for algo in args.algos:
        common = ["--algo", algo, "--device", args.device, "--mode", args.mode, "--warm", str(args.warm),
                  "--fill", str(args.fill), "--seed", str(args.seed), "--threads", str(args.threads),
                  "--rounds", str(args.rounds or ROUNDS[algo]), *(["--warm-cache"] if args.warm_cache else [])]
        for repeat in range(args.repeats):
            for variant in ("eager", "compiled"):
                r = run_worker(__file__, ["--worker", variant, *common])
                results.append(r)
                print(f"{algo:5s} {variant:9s} run {repeat}: {r['rate']:8.1f} rounds/{basis} s "
                      f"({r['wall_rate']:8.1f} per wall s), first round {r['first_round_s']:6.2f} s, "
                      f"recompiles while timed {r['recompiles_while_timed']}; load {os.getloadavg()[0]:.2f}",
                      flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    head = (f"{'update':6s} {'variant':9s} {'rounds/s':>9s} {'µs/round':>9s} {'wall rounds/s':>14s} "
            f"{'first round s':>14s} {'x eager':>8s}")
    print(f"best of {args.repeats} ({basis} time)\n{head}\n" + "-" * len(head))
    best = {}
    for algo in args.algos:
        for variant in ("eager", "compiled"):
            runs = [r for r in results if r["algo"] == algo and r["variant"] == variant]
            best[algo, variant] = b = {"rate": max(r["rate"] for r in runs),
                                       "wall_rate": max(r["wall_rate"] for r in runs),
                                       "first_round_s": min(r["first_round_s"] for r in runs)}
            ratio = b["rate"] / best[algo, "eager"]["rate"]
            print(f"{algo:6s} {variant:9s} {b['rate']:>9.1f} {1e6 / b['rate']:>9.1f} {b['wall_rate']:>14.1f} "
                  f"{b['first_round_s']:>14.2f} {ratio:>8.2f}")
    for algo in args.algos:
        e, c = best[algo, "eager"], best[algo, "compiled"]
        print(f"{algo}: compiled / eager {c['rate'] / e['rate']:.2f}x ({basis} time); compiling costs "
              f"{c['first_round_s'] - e['first_round_s']:.1f} s once, the time of "
              f"{(c['first_round_s'] - e['first_round_s']) * e['rate']:.0f} eager rounds")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "best": {f"{a}/{v}": b for (a, v), b in best.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
