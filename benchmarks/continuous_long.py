"""TD3 and SAC beyond Pendulum: LunarLanderContinuous-v3 and MountainCarContinuous-v0, fastrl_lite
against Stable-Baselines3 with rl-zoo's tuned settings and budgets, one process per run, the two
libraries alternating.

The settings (rl-zoo `hyperparams/td3.yml` and `sac.yml`):
- TD3, LunarLanderContinuous: 300k steps, γ 0.98, 200k buffer, learning starts 10k, Gaussian noise
  σ 0.1, 1 round per env step, lr 1e-3, [400, 300].
- TD3, MountainCarContinuous: 300k steps, Ornstein-Uhlenbeck noise σ 0.5 (θ 0.15, dt 0.01), SB3's
  defaults otherwise (γ 0.99, 1M buffer, learning starts 100, lr 1e-3, [400, 300]).
- SAC, LunarLanderContinuous: 500k steps, lr 7.3e-4 (rl-zoo lets it fall linearly to 0; here it
  stays constant in both libraries), 1M buffer, batch 256, τ 0.01, learning starts 10k, ent_coef
  'auto', [400, 300].
- SAC, MountainCarContinuous: 50k steps, lr 3e-4, 50k buffer, batch 512, ent_coef 0.1 fixed, 32 env
  steps → 32 rounds, γ 0.9999, τ 0.01, no learning starts, [64, 64]. rl-zoo also turns on gSDE
  (state-dependent exploration, log σ initialised at -3.67): `--sde` gives it to both libraries
  (fastrl_lite's `SquashedGSDEActor`), otherwise both run plain SAC.
Evaluation: 10 greedy episodes, episode i on a fresh env seeded 10_000 + i.

    pip install -c constraints.txt -e ".[bench]"   # SB3, and box2d for LunarLanderContinuous
    python benchmarks/continuous_long.py sac MountainCarContinuous-v0 [--steps N] [--seeds 0] [--sde]
    python benchmarks/continuous_long.py td3 LunarLanderContinuous-v3 [--steps N] [--seeds 0]
    python benchmarks/continuous_long.py td3 MountainCarContinuous-v0 --side-by-side --threads 1

By default the runs alternate, one at a time. With `--side-by-side` each seed's two runs start
together, one process per library, so on a 2-core machine with one torch thread each they share the
same machine conditions throughout and the pair takes half the wall time.

A run longer than one sitting takes `--state-dir DIR`: every `--save-every` env steps each library
saves its whole run there (fastrl_lite its learner checkpoint; SB3 its model, optimizers, replay
buffer and the RNGs), with the seconds spent so far. The same command started again continues each
run from its last save; a run that was cut off repeats at most one stretch, whose time is not
counted twice. Times cover training only, never saving or loading. fastrl_lite resumes exactly;
SB3 has no saved env state, so its env starts a new episode at each resume.

    python benchmarks/continuous_long.py sac LunarLanderContinuous-v3 --side-by-side --threads 1 --state-dir runs/sac_llc
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from harness import add_peers_flush, collect, emit, greedy_returns, peers_flush_args, set_threads, start_worker

SETTINGS = {
    ("td3", "LunarLanderContinuous-v3"): dict(
        steps=300_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise="normal", noise_std=0.1,
        learning_rate=1e-3, batch_size=256, tau=0.005, train_freq=1, gradient_steps=1, net_arch=[400, 300]),
    ("td3", "MountainCarContinuous-v0"): dict(
        steps=300_000, gamma=0.99, buffer_size=1_000_000, learning_starts=100, noise="ornstein-uhlenbeck",
        noise_std=0.5, learning_rate=1e-3, batch_size=256, tau=0.005, train_freq=1, gradient_steps=1,
        net_arch=[400, 300]),
    ("sac", "LunarLanderContinuous-v3"): dict(
        steps=500_000, gamma=0.99, buffer_size=1_000_000, learning_starts=10_000, learning_rate=7.3e-4,
        batch_size=256, tau=0.01, train_freq=1, gradient_steps=1, ent_coef="auto",
        net_arch=[400, 300]),
    ("sac", "MountainCarContinuous-v0"): dict(
        steps=50_000, gamma=0.9999, buffer_size=50_000, learning_starts=0, learning_rate=3e-4,
        batch_size=512, tau=0.01, train_freq=32, gradient_steps=32, ent_coef=0.1, net_arch=[64, 64],
        sde_log_std_init=-3.67),
}


class Clock:
    """Training seconds (wall and CPU) summed over the stretches of a run. For a resumable run
    (`state`, a folder) they are kept in `state/clock.json` next to the run's last save, with the
    env step that save reached."""

    def __init__(self, state: Path | None):
        self.path = state / "clock.json" if state is not None else None
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
        saved = json.loads(self.path.read_text()) if self.path is not None and self.path.exists() else {}
        self.seconds, self.cpu_seconds = saved.get("seconds", 0.0), saved.get("cpu_seconds", 0.0)
        self.env_steps = saved.get("env_steps", 0)

    def check(self, env_steps: int):
        "After loading: the save must be the one the clock was written with."
        if env_steps != self.env_steps:
            raise RuntimeError(f"{self.path} counts {self.env_steps} env steps but the saved run has {env_steps}; "
                               "the save and the clock were written apart. Start this run again in a new --state-dir.")
        log(self.path.parent, f"resumed at env step {env_steps} after {self.seconds:.0f} s of training")

    def __enter__(self):
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
        self.cpu_seconds += time.process_time() - self._cpu

    def saved(self, env_steps: int):
        "Record the seconds that the save just written at `env_steps` stands for."
        self.env_steps = env_steps
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "env_steps": env_steps}))
        os.replace(tmp, self.path)
        log(self.path.parent, f"saved at env step {env_steps}: {self.seconds:.0f} s wall, {self.cpu_seconds:.0f} s CPU")


def log(state: Path, line: str):
    with open(state / "progress.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def run_fastrl_lite(algo: str, env_id: str, s: dict, steps: int, seed: int, episodes: int, sde: bool = False,
                    state: Path | None = None, save_every: int = 25_000):
    import torch
    from fastrl_lite import GymDataPipe, SimpleStep, evaluating, set_seed
    from fastrl_lite.nets import Actor, SquashedGaussianActor, SquashedGSDEActor, TwinCritic
    import gymnasium as gym
    set_seed(seed)
    probe = gym.make(env_id)
    state_sz, action_sz = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    hidden = s["net_arch"]
    warmup = s["learning_starts"]
    if algo == "td3":
        from fastrl_lite.algos.td3 import TD3Agent, TD3Learner
        actor, critics = Actor(state_sz, action_sz, *hidden), TwinCritic.of(state_sz, action_sz, *hidden)
        agent = TD3Agent(actor, noise_std=s["noise_std"], random_steps=warmup, noise_type=s["noise"])
        dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps)
        learner = TD3Learner(actor, critics, [dl], learning_rate=s["learning_rate"], buffer_size=s["buffer_size"],
                             learning_starts=max(warmup, s["batch_size"]), batch_size=s["batch_size"], tau=s["tau"],
                             gamma=s["gamma"], train_freq=s["train_freq"], gradient_steps=s["gradient_steps"],
                             batches=1000)
    else:
        from fastrl_lite.algos.sac import SACAgent, SACLearner
        actor = (SquashedGSDEActor(state_sz, action_sz, hidden, log_std_init=s["sde_log_std_init"]) if sde
                 else SquashedGaussianActor(state_sz, action_sz, hidden))
        critics = TwinCritic.of(state_sz, action_sz, *hidden)
        dl = GymDataPipe([env_id], agent=SACAgent(actor, random_steps=warmup), seed=seed, n=steps)
        learner = SACLearner(actor, critics, [dl], learning_rate=s["learning_rate"], buffer_size=s["buffer_size"],
                             learning_starts=max(warmup, s["batch_size"]), batch_size=s["batch_size"], tau=s["tau"],
                             gamma=s["gamma"], train_freq=s["train_freq"], gradient_steps=s["gradient_steps"],
                             ent_coef=s["ent_coef"], batches=1000)
    epochs = max(1, math.ceil(learner.collector.rounds_within(steps) / learner.batches))
    clock = Clock(state)
    if clock.env_steps:
        learner.load(state / "learner.pt")
        clock.check(learner.env_steps)
    stretch = max(1, math.ceil(learner.collector.rounds_within(save_every) / learner.batches)) if state else epochs
    while learner.epoch < epochs and learner.env_steps < steps:
        with clock:
            learner.fit(min(stretch, epochs - learner.epoch))
        if state is not None:
            learner.save(state / "learner.pt")
            clock.saved(learner.env_steps)
    agent, to_env = learner.stepper.agent, learner.stepper.to_env

    def act(obs):
        out = agent(SimpleStep(state=torch.as_tensor(obs)[None]))
        return to_env(out["action"] if isinstance(out, dict) else out).numpy()[0]
    with evaluating(actor):
        returns = greedy_returns(env_id, act, episodes)
    return learner.env_steps, clock.seconds, clock.cpu_seconds, returns


def run_sb3(algo: str, env_id: str, s: dict, steps: int, seed: int, episodes: int, sde: bool,
            state: Path | None = None, save_every: int = 25_000):
    import random
    import numpy as np
    import torch
    import gymnasium as gym
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
    env = gym.make(env_id)
    n = env.action_space.shape[0]
    common = dict(gamma=s["gamma"], buffer_size=s["buffer_size"], learning_starts=s["learning_starts"],
                  batch_size=s["batch_size"], tau=s["tau"], train_freq=s["train_freq"],
                  gradient_steps=s["gradient_steps"], seed=seed, device="cpu", verbose=0)
    noise = None
    if algo == "td3":
        noise = (NormalActionNoise(np.zeros(n), s["noise_std"] * np.ones(n)) if s["noise"] == "normal" else
                 OrnsteinUhlenbeckActionNoise(np.zeros(n), s["noise_std"] * np.ones(n)))
        model = TD3("MlpPolicy", env, learning_rate=s["learning_rate"], action_noise=noise,
                    policy_kwargs=dict(net_arch=s["net_arch"]), **common)
    else:
        lr = s["learning_rate"]
        policy_kwargs = dict(net_arch=s["net_arch"])
        if sde and "sde_log_std_init" in s:
            policy_kwargs["log_std_init"] = s["sde_log_std_init"]
        model = SAC("MlpPolicy", env, learning_rate=lr, ent_coef=s["ent_coef"], use_sde=sde and "sde_log_std_init" in s,
                    policy_kwargs=policy_kwargs, **common)
    clock = Clock(state)
    if clock.env_steps:
        kind = TD3 if algo == "td3" else SAC
        model = kind.load(state / "model.zip", env=env, device="cpu",
                          **({"action_noise": noise} if algo == "td3" else {}))
        model.load_replay_buffer(state / "replay.pkl")
        rng = torch.load(state / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        model.action_space.np_random.bit_generator.state = rng["action_space"]
        clock.check(model.num_timesteps)
    while model.num_timesteps < steps:
        with clock:  # one call for the whole run, unless it saves as it goes
            model.learn(min(save_every if state else steps, steps - model.num_timesteps), reset_num_timesteps=False)
        if state is not None:
            model.save(state / "model.zip")
            model.save_replay_buffer(state / "replay.pkl")
            torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "action_space": model.action_space.np_random.bit_generator.state}, state / "rng.pt")
            clock.saved(model.num_timesteps)
    returns = greedy_returns(env_id, lambda obs: model.predict(obs, deterministic=True)[0], episodes)
    return model.num_timesteps, clock.seconds, clock.cpu_seconds, returns


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("algo", choices=["td3", "sac"])
    parser.add_argument("env", choices=sorted({env for _, env in SETTINGS}))
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: rl-zoo's budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--sde", action="store_true", help="give both libraries' SAC rl-zoo's gSDE where rl-zoo uses it")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run each seed's libraries at the same time, one process each (use --threads 1 on "
                             "2 cores); both then see the same machine, and a pair takes half the wall time")
    parser.add_argument("--libs", nargs="+", default=["fastrl_lite", "sb3"], choices=["fastrl_lite", "sb3"])
    parser.add_argument("--state-dir", default=None,
                        help="save each run here every --save-every env steps, and continue from there when the "
                             "same command is started again")
    parser.add_argument("--save-every", type=int, default=25_000)
    add_peers_flush(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = SETTINGS[args.algo, args.env]
    steps = args.steps or settings["steps"]
    if args.worker:
        set_threads(args.worker, args.threads, args.peers_flush_denormal)
        state = (Path(args.state_dir) / f"{args.worker}-seed{args.seeds[0]}") if args.state_dir else None
        if args.worker == "fastrl_lite":
            result = run_fastrl_lite(args.algo, args.env, settings, steps, args.seeds[0], args.episodes,
                                     args.sde and "sde_log_std_init" in settings, state, args.save_every)
        else:
            result = run_sb3(args.algo, args.env, settings, steps, args.seeds[0], args.episodes, args.sde,
                             state, args.save_every)
        env_steps, seconds, cpu_seconds, returns = result
        emit({"lib": args.worker, "seed": args.seeds[0], "env_steps": env_steps, "seconds": seconds,
              "cpu_seconds": cpu_seconds, "steps_per_s": env_steps / seconds, "greedy_mean": sum(returns) / len(returns),
              "returns": returns})
        return
    if args.state_dir:
        run = {"algo": args.algo, "env": args.env, "steps": steps, "seeds": args.seeds, "threads": args.threads,
               "sde": args.sde, "save_every": args.save_every, "peers_flush_denormal": args.peers_flush_denormal}
        record = Path(args.state_dir) / "run.json"
        if record.exists() and json.loads(record.read_text()) != run:
            raise SystemExit(f"{args.state_dir} holds another run ({record.read_text()}); "
                             "give this one a new --state-dir.")
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(run))
    results = []

    def report(r):
        results.append(r)
        print(f"{r['lib']:12s} seed {r['seed']}: greedy {r['greedy_mean']:8.1f}  {r['steps_per_s']:6.1f} env steps/s "
              f"({r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU)", flush=True)
    for seed in args.seeds:
        workers = []
        for lib in args.libs:
            extra = ((["--sde"] if args.sde else []) + peers_flush_args(args)
                     + (["--state-dir", args.state_dir, "--save-every", args.save_every] if args.state_dir else []))
            workers.append(start_worker(__file__, [args.algo, args.env, "--worker", lib, "--steps", steps,
                                                   "--seeds", seed, "--threads", args.threads,
                                                   "--episodes", args.episodes, *extra]))
            if not args.side_by_side:
                report(collect(workers.pop()))
        for worker in workers:
            report(collect(worker))
    print(f"\n{args.algo.upper()} on {args.env}: {steps} env steps, {args.threads} torch thread(s)"
          f"{', both with gSDE' if args.sde else ''}"
          f"{', the libraries side by side (one process each, at the same time)' if args.side_by_side else ''}")
    speed = {}
    for lib in args.libs:
        runs = [r for r in results if r["lib"] == lib]
        speed[lib] = sum(r["steps_per_s"] for r in runs) / len(runs)
        means = ", ".join(f"{r['greedy_mean']:.1f}" for r in runs)
        print(f"{lib:12s} greedy per seed {means}; {speed[lib]:.1f} env steps/s")
    if len(speed) == 2:
        print(f"speed ratio fastrl_lite / sb3: {speed['fastrl_lite'] / speed['sb3']:.2f}x")


if __name__ == "__main__":
    main()
