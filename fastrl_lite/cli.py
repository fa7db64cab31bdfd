"""`fastrl-lite train ALGO`: train on a gymnasium env with tuned defaults and write the run folder
(metrics.csv, returns.png, model.pt, eval.json, episode.gif)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Dict

import torch
from gymnasium.error import DependencyNotInstalled

from .core import set_seed
from .envs import GymDataPipe, check_env_id, make_vec_env
from .loggers import CSVLogger, ProgressBarLogger, plot_returns, record_episode_gif


def build_dqn(env_id: str, steps: int, seed: int, loggers):
    "rl-zoo's tuned CartPole DQN: lr 2.3e-3, batch 64, 100k buffer, 256 env steps → 128 rounds, ε 1→0.04 over 16%."
    from .algos.dqn import DQN, DQNAgent, DQNLearner, check_discrete
    probe = make_vec_env(env_id)
    n_actions = check_discrete(probe)
    state_sz = int(torch.Size(probe.single_observation_space.shape).numel())
    probe.close()
    model = DQN(state_sz, n_actions, hidden=(256, 256))
    agent = DQNAgent(model, min_epsilon=0.04, max_epsilon=1.0, max_steps=max(1, int(0.16 * steps)))
    dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps)
    learner = DQNLearner(model, [dl], logger_bases=loggers, lr=2.3e-3, bs=64, max_sz=100_000, warmup=1000,
                         train_every=256, updates=128, gamma=0.99, target_sync=128, batches=1280)
    return learner, epochs_for(learner, steps)


def build_ddpg(env_id: str, steps: int, seed: int, loggers):
    """rl-zoo's tuned Pendulum DDPG: γ 0.98, 200k buffer, learning starts 10k (at most half the run;
    uniform random actions until then, as in SB3), Gaussian noise σ 0.1 (of the half action range),
    1 gradient round per env step, lr 1e-3 for both networks, [400, 300] layers, batch 256, τ 0.005."""
    from functools import partial
    from .algos.ddpg import Actor, Critic, DDPGAgent, DDPGLearner, GaussianNoise, check_continuous
    probe = make_vec_env(env_id)
    space = check_continuous(probe)
    state_sz = int(torch.Size(probe.single_observation_space.shape).numel())
    action_sz = int(torch.Size(space.shape).numel())
    probe.close()
    actor, critic = Actor(state_sz, action_sz, 400, 300), Critic(state_sz, action_sz, 400, 300)
    warmup = min(10_000, max(256, steps // 2))
    agent = DDPGAgent(actor, exploration=partial(GaussianNoise, sigma=0.1), random_steps=warmup)
    dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps)
    learner = DDPGLearner(actor, critic, [dl], logger_bases=loggers, actor_lr=1e-3, critic_lr=1e-3, tau=0.005,
                          bs=256, max_sz=200_000, warmup=warmup, train_every=1, updates=1, gamma=0.98, batches=1000)
    return learner, epochs_for(learner, steps)


def build_td3(env_id: str, steps: int, seed: int, loggers):
    """rl-zoo's tuned Pendulum TD3: γ 0.98, 200k buffer, learning starts 10k (at most half the run;
    uniform random actions until then, as in SB3), Gaussian noise σ 0.1 (of the half action range),
    1 gradient round per env step, lr 1e-3, [400, 300] layers, and SB3's batch 256, τ 0.005, policy
    delay 2, target noise 0.2 clipped at 0.5."""
    from .agents import check_continuous
    from .algos.td3 import TD3Agent, TD3Learner, TwinCritic
    from .nets import Actor
    probe = make_vec_env(env_id)
    space = check_continuous(probe, "TD3")
    state_sz = int(torch.Size(probe.single_observation_space.shape).numel())
    action_sz = int(torch.Size(space.shape).numel())
    probe.close()
    actor, critics = Actor(state_sz, action_sz, 400, 300), TwinCritic.of(state_sz, action_sz, 400, 300)
    warmup = min(10_000, max(256, steps // 2))
    dl = GymDataPipe([env_id], agent=TD3Agent(actor, noise_std=0.1, random_steps=warmup), seed=seed, n=steps)
    learner = TD3Learner(actor, critics, [dl], logger_bases=loggers, learning_rate=1e-3, buffer_size=200_000,
                         learning_starts=warmup, batch_size=256, tau=0.005, gamma=0.98, train_freq=1,
                         gradient_steps=1, policy_delay=2, batches=1000)
    return learner, epochs_for(learner, steps)


def epochs_for(learner, steps: int) -> int:
    "Epochs that cover the gradient rounds `steps` env steps yield, as the learner's collector counts them."
    return max(1, math.ceil(learner.collector.rounds_within(steps) / learner.batches))


BUILDERS: Dict[str, Callable] = {"dqn": build_dqn, "ddpg": build_ddpg, "td3": build_td3}
DEFAULT_ENVS = {"dqn": "CartPole-v1", "ddpg": "Pendulum-v1", "td3": "Pendulum-v1"}
DEFAULT_STEPS = {"dqn": 50_000, "ddpg": 20_000, "td3": 20_000}
# torch threads per algorithm, measured on 2 cores: DQN's small MLP updates run fastest on one thread,
# DDPG's and TD3's 400x300 networks with batch 256 gain from two.
DEFAULT_THREADS = {"dqn": 1, "ddpg": 2, "td3": 2}


def train(algo: str, env_id: str = None, steps: int = None, seed: int = 0, out=None, eval_episodes: int = 10,
          progress=None, threads: int = None, resume=None) -> dict:
    """Train `algo` on `env_id` for `steps` env steps and write the run folder; returns the evaluation.
    A checkpoint is written after every epoch; `resume=RUN_DIR` continues that run where it stopped."""
    if algo not in BUILDERS:
        raise ValueError(f"Unknown algorithm {algo!r}; choose one of {sorted(BUILDERS)}.")
    if resume is not None:
        config_path = Path(resume) / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{resume} is not a run folder to resume: it has no config.json.")
        config = json.loads(config_path.read_text())
        if config["algo"] != algo:
            raise ValueError(f"{resume} is a {config['algo']} run; resume it with `fastrl-lite train {config['algo']} "
                             f"--resume {resume}`.")
        env_id, steps, seed, threads, out = config["env"], config["steps"], config["seed"], config["threads"], resume
    env_id = env_id or DEFAULT_ENVS[algo]
    steps = steps or DEFAULT_STEPS[algo]
    check_env_id(env_id)
    if steps < 1:
        raise ValueError(f"--steps must be a positive number of env steps, got {steps}.")
    out = Path(out or f"runs/{algo}-{env_id}-seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or DEFAULT_THREADS.get(algo, 1)
    torch.set_num_threads(threads)
    (out / "config.json").write_text(json.dumps({"algo": algo, "env": env_id, "steps": steps, "seed": seed,
                                                 "threads": threads}, indent=2))
    set_seed(seed)
    loggers = [ProgressBarLogger(show_bars=progress), CSVLogger(out / "metrics.csv", append=resume is not None)]
    learner, epochs = BUILDERS[algo](env_id, steps, seed, loggers)
    checkpoint = out / "checkpoint.pt"
    if resume is not None:
        learner.load(checkpoint)
        print(f"Resuming {out} at epoch {learner.epoch}, env step {learner.env_steps}")
    if learner.epoch < epochs:
        learner.fit(epochs - learner.epoch, checkpoint_every=1, checkpoint_path=checkpoint)
    if learner.interrupted:
        print(f"Stopped early; continue with `fastrl-lite train {algo} --resume {out}`")
    torch.save({name: m.state_dict() for name, m in learner.models.items()}, out / "model.pt")
    plot_returns(learner.episode_returns(), out / "returns.png", title=f"{algo.upper()} on {env_id}")
    evaluation = learner.validate(eval_episodes)
    result = {"algo": algo, "env": env_id, "seed": seed, "env_steps": learner.env_steps,
              "episodes": learner.episodes, "eval_mean": evaluation["mean"], "eval_std": evaluation["std"],
              "eval_returns": evaluation["returns"]}
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    print(f"Greedy evaluation over {eval_episodes} episodes: {evaluation['mean']:.1f} ± {evaluation['std']:.1f}")
    try:  # the picture needs Pillow and the env's renderer (pygame for classic control: the dev extra)
        record_episode_gif(learner, env_id, out / "episode.gif", seed=seed)
    except (ImportError, DependencyNotInstalled, ValueError) as error:
        print(f"No episode.gif: {error}")
    print(f"Run written to {out}/ (metrics.csv, returns.png, model.pt, eval.json, episode.gif, checkpoint.pt)")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastrl-lite", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train an agent and write a run folder")
    train_parser.add_argument("algo", choices=sorted(BUILDERS))
    train_parser.add_argument("--env", default=None, help="gymnasium env id (default: the algorithm's classic env)")
    train_parser.add_argument("--steps", type=int, default=None, help="env steps to train for")
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--out", default=None, help="run folder (default runs/ALGO-ENV-seedSEED)")
    train_parser.add_argument("--eval-episodes", type=int, default=10)
    train_parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the fastest measured)")
    train_parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                              help="continue the run in RUN_DIR from its last checkpoint (its settings are reused)")
    args = parser.parse_args(argv)
    try:
        train(args.algo, args.env, args.steps, args.seed, args.out, args.eval_episodes, progress=None,
              threads=args.threads, resume=args.resume)
    except ValueError as error:
        parser.exit(2, f"fastrl-lite: error: {error}\n")


if __name__ == "__main__":
    main()
