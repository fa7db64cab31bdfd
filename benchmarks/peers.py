"""fastrl_lite against TorchRL: DQN on CartPole-v1 and DDPG on Pendulum-v1, same settings.

    python benchmarks/peers.py                                       # DQN 20k, DDPG 10k env steps, 2 repeats
    python benchmarks/peers.py --algos dqn --dqn-steps 50000 --repeats 3

(Stable-Baselines3 is compared in benchmarks/dqn_cartpole.py and benchmarks/ddpg_pendulum.py.)

fastrl_lite runs `cli.build_dqn` / `cli.build_ddpg`. TorchRL runs the loop of its own reference
scripts (sota-implementations/dqn/dqn_cartpole.py, ddpg/ddpg.py): a `Collector` over `GymEnv`, a
`TensorDictReplayBuffer` on a `LazyTensorStorage`, `DQNLoss` + `HardUpdate` / `DDPGLoss` +
`SoftUpdate`, with fastrl_lite's hyper-parameters and networks:

- DQN: MLP [256, 256] ReLU in a `QValueActor`, `EGreedyModule` ε 1 → 0.04 over 16 % of the
  steps, 256 frames per collector batch, 128 gradient rounds per batch once 1000 frames are
  stored, batch 64, buffer 100k, γ 0.99, Huber loss (`loss_function="smooth_l1"`), gradient norm
  clipped at 10, hard target copy every 128 rounds, Adam(lr 2.3e-3, fused=True) — the same
  optimizer kernel fastrl_lite uses, so the comparison is of the frameworks, not of Adam.
- DDPG: actor [400, 300] ReLU + `TanhModule` onto the action bounds, critic [400, 300] on
  [observation, action], uniform random actions for the first `warmup` = min(10k, max(256,
  steps // 2)) frames (the collector's `init_random_frames`), then `AdditiveGaussianModule`
  std 0.2 (σ 0.1 of the half range [-2, 2]), clipped to the bounds; 1 frame per collector batch
  and 1 gradient round per frame from `warmup` on; batch 256, buffer 200k, γ 0.98 (TD(0)), MSE,
  τ 0.005, Adam(lr 1e-3, fused=True) for each network. TorchRL's reference script sums the actor
  and critic losses and steps both optimizers once (its actor loss runs the critic with detached
  weights, so the gradients are the same as two separate steps except that the actor sees the
  critic before, not after, its update); that script's loop is used as is.

Each run is a fresh subprocess with `torch.set_num_threads(--threads)`, libraries alternating.
Timing covers training only; wall and process CPU time, env steps per second, and the mean of
the last 10 training-episode returns as a sanity check that both learn. Ratios are fastrl_lite's
env steps per second over TorchRL's (targets: DQN >= 1.5x, DDPG >= 1.2x).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from harness import add_peers_flush, emit_run, fastrl_lite_run, peers_flush_args, run_worker, set_threads

ENVS = {"dqn": "CartPole-v1", "ddpg": "Pendulum-v1"}
TARGETS = {"dqn": 1.5, "ddpg": 1.2}
LIBS = ("fastrl_lite", "torchrl")


def episode_returns(td) -> list:
    "Returns of the episodes that ended in a collected batch (the `episode_reward` the env transform keeps)."
    done = td["next", "done"].reshape(-1)
    return td["next", "episode_reward"].reshape(-1)[done].tolist()


def torchrl_dqn(steps: int, seed: int) -> dict:
    import torch
    from tensordict.nn import TensorDictSequential
    from torch import nn
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
    from torchrl.envs import GymEnv, RewardSum, TransformedEnv
    from torchrl.modules import EGreedyModule, QValueActor
    from torchrl.objectives import DQNLoss, HardUpdate

    torch.manual_seed(seed)
    make_env = lambda: TransformedEnv(GymEnv(ENVS["dqn"]), RewardSum())  # noqa: E731
    probe = make_env()
    action_spec = probe.action_spec
    probe.close()
    net = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    model = QValueActor(net, in_keys=["observation"], spec=action_spec)
    greedy = EGreedyModule(action_spec, eps_init=1.0, eps_end=0.04, annealing_num_steps=max(1, int(0.16 * steps)))
    policy = TensorDictSequential(model, greedy)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100_000), batch_size=64)
    loss_module = DQNLoss(model, loss_function="smooth_l1", delay_value=True)
    loss_module.make_value_estimator(gamma=0.99)
    target_updater = HardUpdate(loss_module, value_network_update_interval=128)
    params = list(loss_module.parameters())
    optimizer = torch.optim.Adam(params, lr=2.3e-3, fused=True)
    collector = Collector(make_env, policy, frames_per_batch=256, total_frames=steps, device="cpu",
                          storing_device="cpu", max_frames_per_traj=-1)
    collector.set_seed(seed)
    frames = rounds = 0
    returns = []
    start, cpu = time.perf_counter(), time.process_time()
    for data in collector:
        data = data.reshape(-1)
        rb.extend(data)
        greedy.step(data.numel())
        frames += data.numel()
        returns += episode_returns(data)
        if frames < 1000:
            continue
        for _ in range(128):
            sample = rb.sample()
            loss = loss_module(sample)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 10.0, foreach=True)
            optimizer.step()
            target_updater.step()
            rounds += 1
        collector.update_policy_weights_()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    collector.shutdown()
    return {"env_steps": frames, "gradient_rounds": rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "last_returns": sum(returns[-10:]) / max(1, len(returns[-10:]))}


def torchrl_ddpg(steps: int, seed: int) -> dict:
    import torch
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torch import nn
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
    from torchrl.envs import GymEnv, RewardSum, TransformedEnv
    from torchrl.modules import MLP, AdditiveGaussianModule, TanhModule, ValueOperator
    from torchrl.objectives import DDPGLoss, SoftUpdate

    torch.manual_seed(seed)
    warmup = min(10_000, max(256, steps // 2))
    make_env = lambda: TransformedEnv(GymEnv(ENVS["ddpg"]), RewardSum())  # noqa: E731
    probe = make_env()
    action_spec = probe.action_spec_unbatched
    probe.close()

    def mlp(n_in, n_out):
        return nn.Sequential(nn.Linear(n_in, 400), nn.ReLU(), nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, n_out))

    actor = TensorDictSequential(TensorDictModule(mlp(3, 1), in_keys=["observation"], out_keys=["param"]),
                                 TanhModule(in_keys=["param"], out_keys=["action"], spec=action_spec))
    # TorchRL's MLP concatenates its inputs: Linear(4, 400), ReLU, Linear(400, 300), ReLU, Linear(300, 1)
    critic = ValueOperator(MLP(in_features=4, out_features=1, num_cells=[400, 300], activation_class=nn.ReLU),
                           in_keys=["observation", "action"])
    policy = TensorDictSequential(actor, AdditiveGaussianModule(spec=action_spec, sigma_init=1.0, sigma_end=1.0,
                                                                mean=0.0, std=0.2, safe=True))
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(200_000), batch_size=256)
    loss_module = DDPGLoss(actor_network=actor, value_network=critic, loss_function="l2", delay_actor=True,
                           delay_value=True)
    loss_module.make_value_estimator(gamma=0.98)
    target_updater = SoftUpdate(loss_module, tau=0.005)
    actor_opt = torch.optim.Adam(list(loss_module.actor_network_params.flatten_keys().values()), lr=1e-3, fused=True)
    critic_opt = torch.optim.Adam(list(loss_module.value_network_params.flatten_keys().values()), lr=1e-3, fused=True)
    collector = Collector(make_env, policy, frames_per_batch=1, total_frames=steps, init_random_frames=warmup,
                          device="cpu", storing_device="cpu", max_frames_per_traj=-1)
    collector.set_seed(seed)
    frames = rounds = 0
    returns = []
    start, cpu = time.perf_counter(), time.process_time()
    for data in collector:
        data = data.reshape(-1)
        rb.extend(data)
        frames += data.numel()
        returns += episode_returns(data)
        if frames < warmup:
            continue
        sample = rb.sample()
        actor_opt.zero_grad(set_to_none=True)
        critic_opt.zero_grad(set_to_none=True)
        losses = loss_module(sample)
        (losses["loss_actor"] + losses["loss_value"]).backward()
        actor_opt.step()
        critic_opt.step()
        target_updater.step()
        rounds += 1
        collector.update_policy_weights_()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    collector.shutdown()
    return {"env_steps": frames, "gradient_rounds": rounds, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "last_returns": sum(returns[-10:]) / max(1, len(returns[-10:]))}


def worker(lib: str, algo: str, steps: int, seed: int, threads: int, peers_flush: bool = False):
    set_threads(lib, threads, peers_flush)
    if lib == "fastrl_lite":
        result = fastrl_lite_run(algo, ENVS[algo], steps, seed)
    else:
        result = (torchrl_dqn if algo == "dqn" else torchrl_ddpg)(steps, seed)
    emit_run(result, lib=lib, algo=algo, seed=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", choices=sorted(ENVS), default=["dqn", "ddpg"])
    parser.add_argument("--dqn-steps", type=int, default=20_000)
    parser.add_argument("--ddpg-steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    add_peers_flush(parser)
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "ALGO"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.steps, args.seed, args.threads, args.peers_flush_denormal)
    import torch
    import torchrl
    import fastrl_lite
    print(f"python {platform.python_version()}, torch {torch.__version__}, torchrl {torchrl.__version__}, "
          f"fastrl_lite {fastrl_lite.__version__}; torch.set_num_threads({args.threads}); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for algo in args.algos:
        steps = args.dqn_steps if algo == "dqn" else args.ddpg_steps
        for repeat in range(args.repeats):
            for lib in LIBS:
                r = run_worker(__file__, ["--worker", lib, algo, "--steps", steps, "--seed", args.seed,
                                          "--threads", args.threads]
                               + peers_flush_args(args))
                results.append(r)
                print(f"{algo:4s} {lib:12s} run {repeat}: {r['seconds']:6.1f} s wall, {r['cpu_seconds']:6.1f} s CPU, "
                      f"{r['env_steps']} env steps, {r['gradient_rounds']} rounds, {r['steps_per_s']:7.0f} env "
                      f"steps/s, mean of last 10 training returns {r['last_returns']:.1f}; load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    summary = {}
    for algo in args.algos:
        best = {lib: (max(r["steps_per_s"] for r in results if r["algo"] == algo and r["lib"] == lib),
                      max(r["steps_per_cpu_s"] for r in results if r["algo"] == algo and r["lib"] == lib))
                for lib in LIBS}
        wall, cpu = best["fastrl_lite"][0] / best["torchrl"][0], best["fastrl_lite"][1] / best["torchrl"][1]
        summary[algo] = {"wall": wall, "cpu": cpu}
        print(f"{algo}: fastrl_lite {best['fastrl_lite'][0]:.0f} / TorchRL {best['torchrl'][0]:.0f} env steps/s "
              f"(best runs) = {wall:.2f}x wall, {cpu:.2f}x per CPU second; target >= {TARGETS[algo]}x: "
              f"{'met' if cpu >= TARGETS[algo] else 'missed'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
