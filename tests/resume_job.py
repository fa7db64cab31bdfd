"""Small DQN and DDPG runs used by the checkpoint tests in fresh processes:
`python resume_job.py MODE CHECKPOINT OUT [SEED] [ALGO]` with MODE `straight` (fit 2, save, fit 2) or
`resumed` (load, fit 2). OUT receives the losses and returns of the last two epochs."""
import sys

import torch

from fastrl_lite import GymDataPipe, set_seed
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner


def build(seed=0, env_id="CartPole-v1", hidden=(32, 32), **kwargs):
    set_seed(seed)
    probe_obs = {"CartPole-v1": (4, 2), "Acrobot-v1": (6, 3)}[env_id]
    model = DQN(*probe_obs, hidden=hidden)
    agent = DQNAgent(model, min_epsilon=0.05, max_steps=3000)
    dl = GymDataPipe([env_id], agent=agent, seed=seed, nsteps=3, firstlast=True, num_envs=2)
    settings = dict(warmup=64, train_every=8, updates=4, batches=60, target_sync=25, nsteps=3, bs=32, max_sz=500)
    settings.update(kwargs)
    return DQNLearner(model, [dl], **settings)


def build_ddpg(seed=0):
    "DDPG on Pendulum with Ornstein-Uhlenbeck noise, soft targets and n-step returns: every kind of state."
    from fastrl_lite.algos.ddpg import Actor, Critic, DDPGAgent, DDPGLearner
    set_seed(seed)
    actor, critic = Actor(3, 1, hidden1=32, hidden2=32), Critic(3, 1, hidden1=32, hidden2=32)
    agent = DDPGAgent(actor, min_epsilon=0.1, max_steps=2000)
    dl = GymDataPipe(["Pendulum-v1"], agent=agent, seed=seed, nsteps=2, firstlast=True)
    return DDPGLearner(actor, critic, [dl], bs=32, max_sz=1000, warmup=64, batches=40, nsteps=2, tau=0.01)


def tail(learner, start):
    returns = [r for _, r in learner.records.values("episode_return")]
    losses = torch.cat([learner.records.values(name)[start:].clone() for name in sorted(learner.records.series)
                        if name.endswith("_loss")])
    return {"losses": losses, "returns": returns, "env_steps": learner.env_steps, "batch": learner.batch}


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, checkpoint, out = sys.argv[1:4]
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    learner = build_ddpg(seed) if sys.argv[5:] == ["ddpg"] else build(seed)
    if mode == "straight":
        learner.fit(2)
        learner.save(checkpoint)
    else:
        learner.load(checkpoint)
    start = learner.batch
    learner.fit(2)
    torch.save(tail(learner, start), out)
