"""Environment stepping: fastrl_lite's `GymStepper` against raw `gymnasium.vector` stepping.

    python benchmarks/env_stepping.py                        # CartPole-v1, 1 / 8 / 64 envs, 3 repeats
    python benchmarks/env_stepping.py --num-envs 1 64 --steps 50000 --profile

Both sides step the same `SyncVectorEnv` (SAME_STEP autoreset, as `make_vec_env` builds it) with
uniformly random actions from `env.action_space.sample()`:

- raw: `env.step(env.action_space.sample())` in a loop, nothing else;
- GymStepper: `GymStepper(env, agent=None)`, `next()` in a loop, which also turns every vector
  step into a `SimpleStep` of tensors (state, action, reward, next_state with the true final
  observation, terminated, truncated, env_id, episode_n, step_n), checks the observations are
  finite and keeps the per-env episode bookkeeping.

Each (side, num_envs, repeat) is its own subprocess with `torch.set_num_threads(--threads)`; sides
alternate. `--steps` transitions are timed per run (at least 200 vector steps). The table shows the
best run of each side (wall and process CPU time) and the overhead, GymStepper's time per step over
the raw loop's minus one (target <= 10 %). `--profile` then runs cProfile over GymStepper at the
smallest num_envs and prints where its own time goes.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from harness import emit, run_worker

TARGET_OVERHEAD = 0.10
SIDES = ("raw", "GymStepper")


def make_env(env_id: str, num_envs: int):
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode
    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)],
                                    autoreset_mode=AutoresetMode.SAME_STEP)


def run(side: str, env_id: str, num_envs: int, steps: int, seed: int) -> dict:
    env = make_env(env_id, num_envs)
    vector_steps = max(200, steps // num_envs)
    if side == "raw":
        env.reset(seed=seed)
        env.action_space.seed(seed)
        for _ in range(20):
            env.step(env.action_space.sample())
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(vector_steps):
            env.step(env.action_space.sample())
    else:
        from fastrl_lite.envs import GymStepper
        stepper = GymStepper(env, agent=None, seed=seed)
        stepper.reset()
        for _ in range(20):
            stepper.next()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(vector_steps):
            stepper.next()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    env.close()
    transitions = vector_steps * num_envs
    return {"side": side, "num_envs": num_envs, "transitions": transitions, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "steps_per_s": transitions / seconds, "steps_per_cpu_s": transitions / cpu_seconds}


def profile(env_id: str, num_envs: int, steps: int, seed: int):
    "Own time per GymStepper.next, by function, under cProfile (which inflates small calls)."
    import cProfile
    import pstats
    from fastrl_lite.envs import GymStepper
    env = make_env(env_id, num_envs)
    stepper = GymStepper(env, agent=None, seed=seed)
    stepper.reset()
    vector_steps = max(200, steps // num_envs)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(vector_steps):
        stepper.next()
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)
    total = sum(v[2] for _, v in rows)
    print(f"\ncProfile of GymStepper.next, {num_envs} env(s), {vector_steps} vector steps: own time per vector step "
          f"(total {total / vector_steps * 1e6:.1f} µs under the profiler)")
    for (file, line, name), (cc, nc, tt, ct, callers) in rows[:18]:
        where = f"{os.path.basename(file)}:{line}({name})" if file != "~" else name
        print(f"  {tt / vector_steps * 1e6:7.2f} µs  {nc / vector_steps:5.1f} calls  {where}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=30_000, help="transitions timed per run (default 30000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="profile GymStepper.next at the smallest num_envs")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "NUM_ENVS"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import torch
        torch.set_num_threads(args.threads)
        emit(run(args.worker[0], args.env, int(args.worker[1]), args.steps, args.seed))
        return
    import gymnasium
    import torch
    print(f"{args.env}, random actions, {args.steps} transitions per run, {args.repeats} repeats, "
          f"torch.set_num_threads({args.threads}); gymnasium {gymnasium.__version__}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for num_envs in args.num_envs:
        for repeat in range(args.repeats):
            for side in SIDES:
                r = run_worker(__file__, ["--worker", side, num_envs, "--env", args.env, "--steps", args.steps,
                                          "--seed", args.seed, "--threads", args.threads])
                results.append(r)
                print(f"{num_envs:3d} envs {side:10s} run {repeat}: {r['steps_per_s']:9.0f} steps/s wall, "
                      f"{r['steps_per_cpu_s']:9.0f} per CPU s", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    head = (f"{'envs':>4s} {'raw steps/s':>12s} {'GymStepper':>11s} {'overhead':>9s} {'raw /CPU s':>11s} "
            f"{'GymStepper':>11s} {'overhead':>9s} {'µs/vector step added':>21s}")
    print(head + "\n" + "-" * len(head))
    summary = {}
    for num_envs in args.num_envs:
        best = {side: max((r for r in results if r["num_envs"] == num_envs and r["side"] == side),
                          key=lambda r: r["steps_per_cpu_s"]) for side in SIDES}
        wall = {side: max(r["steps_per_s"] for r in results if r["num_envs"] == num_envs and r["side"] == side)
                for side in SIDES}
        over_wall = wall["raw"] / wall["GymStepper"] - 1
        over_cpu = best["raw"]["steps_per_cpu_s"] / best["GymStepper"]["steps_per_cpu_s"] - 1
        added = (num_envs / best["GymStepper"]["steps_per_cpu_s"] - num_envs / best["raw"]["steps_per_cpu_s"]) * 1e6
        summary[num_envs] = {"overhead_wall": over_wall, "overhead_cpu": over_cpu, "added_us": added}
        print(f"{num_envs:>4d} {wall['raw']:>12.0f} {wall['GymStepper']:>11.0f} {over_wall:>8.1%} "
              f"{best['raw']['steps_per_cpu_s']:>11.0f} {best['GymStepper']['steps_per_cpu_s']:>11.0f} "
              f"{over_cpu:>8.1%} {added:>21.1f}")
    print("target: overhead <= 10 %: " + ", ".join(
        f"{n} envs {'met' if s['overhead_cpu'] <= TARGET_OVERHEAD else 'missed'} ({s['overhead_cpu']:.1%})"
        for n, s in summary.items()) + " (per CPU second)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "summary": summary}, f, indent=2)
    if args.profile:
        profile(args.env, min(args.num_envs), args.steps, args.seed)


if __name__ == "__main__":
    main()
