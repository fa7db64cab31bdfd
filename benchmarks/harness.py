"""What the benchmark scripts share. Every measured run is a fresh subprocess (the script re-invoked
with `--worker ...`) so libraries never share warm caches or thread pools; the worker prints one
`RESULT {json}` line and the driver collects it."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile

PREFIX = "RESULT "
# The float mode each side trains in. fastrl_lite flushes subnormal floats to zero (`Learner.fit` and
# `fastrl-lite train` do: fastrl_lite.core.flushed_denormals), and the bare loops, which do the same
# maths, flush them too; SB3 and TorchRL train as they ship, unless `--peers-flush-denormal` gives
# them the same mode, which shows how much of a speed ratio the mode accounts for.
FLUSHING = ("fastrl_lite", "bare")


def add_peers_flush(parser):
    "The `--peers-flush-denormal` option of a driver."
    parser.add_argument("--peers-flush-denormal", action="store_true",
                        help="flush subnormal floats in the peers' runs too, as fastrl_lite does "
                             "(default: as they ship)")


def peers_flush_args(args) -> list:
    "The option as the driver passes it on to its workers."
    return ["--peers-flush-denormal"] if args.peers_flush_denormal else []


def peers_flush_note(args) -> str:
    "The option's words in a driver's header line."
    return f"SB3 {'with' if args.peers_flush_denormal else 'without'} subnormals flushed"


def set_threads(lib: str, threads: int, peers_flush: bool = False):
    """A worker's torch threads and float mode (`lib`'s, see FLUSHING): the mode first, so that torch's
    worker threads, which start later and take the mode of the thread that starts them, run in it too."""
    import torch
    if lib in FLUSHING or peers_flush:
        torch.set_flush_denormal(True)
    torch.set_num_threads(threads)


def cpu_model() -> str:
    "The CPU's model name as /proc/cpuinfo reports it."
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(result: dict):
    "Called in the worker: hand the run's figures to the driver."
    print(PREFIX + json.dumps(result), flush=True)


def emit_run(result: dict, **tags):
    "Called in the worker: add the tags, thread count and env-step rates to a timed run and emit it."
    import torch
    result.update(tags, threads=torch.get_num_threads(), steps_per_s=result["env_steps"] / result["seconds"],
                  steps_per_cpu_s=result["env_steps"] / result["cpu_seconds"])
    emit(result)


def build_learner(algo: str, env_id: str, steps: int, seed: int):
    """The learner `fastrl-lite train ALGO --env ENV --preset zoo --steps STEPS --seed SEED` trains
    (rl-zoo's settings, which the peers run too), and the epochs that cover its `steps` env steps:
    as on the command line, the last epoch ends with one more pull that runs the env steps left
    after the last burst of gradient rounds, so `fit(epochs)` runs all `steps`."""
    from fastrl_lite.cli import BUILDERS, EpochPlan, plan_epochs
    from fastrl_lite.core import set_seed
    from fastrl_lite.presets import resolve
    hp, _ = resolve(algo, env_id, "zoo")
    hp["n_timesteps"] = steps
    set_seed(seed)
    learner = BUILDERS[algo](env_id, hp, steps, seed, [])
    epochs, learner.batches, last = plan_epochs(learner, steps)
    learner.loggers.insert(0, EpochPlan(epochs, learner.batches, last))
    return learner, epochs


def fastrl_lite_run(algo: str, env_id: str, steps: int, seed: int, flush_denormal: bool = True) -> dict:
    "Train with the CLI's tuned builder for `algo`; times cover `fit` only."
    import time
    learner, epochs = build_learner(algo, env_id, steps, seed)
    learner.flush_denormal = flush_denormal
    start, cpu_start = time.perf_counter(), time.process_time()
    learner.fit(epochs)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    last = learner.episode_returns()[-10:, 1]
    return {"env_steps": learner.env_steps, "gradient_rounds": learner.batch, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "last_returns": float(last.mean()) if len(last) else float("nan")}


def start_worker(script: str, args) -> subprocess.Popen:
    "Start `script` with `args` in a new Python process; `collect` waits for it and returns its result."
    # output goes to files, not pipes: a worker that fills a pipe nobody reads yet would stall
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, os.path.abspath(script), *map(str, args)], stdout=out, stderr=err,
                            text=True)
    proc.label, proc.files = f"{os.path.basename(script)} {' '.join(map(str, args))}", (out, err)
    return proc


def collect(proc: subprocess.Popen) -> dict:
    "Wait for a worker started by `start_worker` and return the result it emitted."
    proc.wait()
    out, err = (f.seek(0) or f.read() for f in proc.files)
    for f in proc.files:
        f.close()
    lines = [line for line in out.splitlines() if line.startswith(PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(out + err)
        raise RuntimeError(f"{proc.label} failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len(PREFIX):])


def run_worker(script: str, args) -> dict:
    "Run `script` with `args` in a new Python process and return the result it emitted."
    return collect(start_worker(script, args))


def greedy_returns(env_id: str, act, episodes: int):
    "Returns of `episodes` greedy episodes of `act` (obs -> env action), episode i on a fresh env seeded 10_000 + i."
    import gymnasium as gym
    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns
