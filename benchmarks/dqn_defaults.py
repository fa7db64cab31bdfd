"""Does `fastrl-lite train dqn` learn CartPole on every seed? Runs one setting over several seeds,
one run at a time, with one torch thread, exactly as the command line trains (presets, `--hp`
overrides), and prints each run's greedy evaluation (10 episodes on a fresh env).

    python benchmarks/dqn_defaults.py                          # the default preset, seeds 0-4, 50k env steps
    python benchmarks/dqn_defaults.py --preset zoo             # rl-zoo's CartPole settings, for comparison
    python benchmarks/dqn_defaults.py --hp double_q=false --steps 30000 --seeds 0 1

A seed counts as learned when its greedy mean return is at least `--threshold` (475, gymnasium's
reward threshold for CartPole-v1). The run folders go to a temporary folder unless `--keep DIR`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastrl_lite.cli import train  # noqa: E402
from fastrl_lite.presets import parse_overrides, resolve  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--preset", default=None, help="named preset (default: the env's default)")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="override, as on the CLI")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: the preset's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the run folders under DIR")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = parse_overrides(args.hp)
    hp, said = resolve("dqn", args.env, args.preset, overrides)
    print(said)
    print(f"{args.steps or hp['n_timesteps']} env steps per run, seeds {args.seeds}, one torch thread", flush=True)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dqn_defaults-"))
    learned = []
    for seed in args.seeds:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result = train("dqn", args.env, args.steps, seed, root / f"seed{seed}", eval_episodes=10,
                           progress=False, threads=1, hp=overrides, preset=args.preset)
        learned.append(result["eval_mean"] >= args.threshold)
        print(f"seed {seed}: greedy {result['eval_mean']:.1f} ± {result['eval_std']:.1f} after "
              f"{result['env_steps']} env steps ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{sum(learned)} of {len(learned)} seeds reach {args.threshold:g}")


if __name__ == "__main__":
    main()
