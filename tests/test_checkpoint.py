"""Checkpoint and resume: exact continuation across processes, atomic saves, interrupts, guards."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from fastrl_lite import Pipe, set_seed
from fastrl_lite.learner import CheckpointError
from fastrl_lite.envs import GymStepper, NStepper, make_vec_env

sys.path.insert(0, str(Path(__file__).parent))
from resume_job import build  # noqa: E402

JOB = Path(__file__).parent / "resume_job.py"


def run_job(*args):
    subprocess.run([sys.executable, str(JOB), *map(str, args)], check=True, timeout=600)


def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    run_job("straight", checkpoint, tmp_path / "straight.pt")
    run_job("resumed", checkpoint, tmp_path / "resumed.pt")
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    assert len(straight["losses"]) == 120
    assert torch.equal(straight["losses"], resumed["losses"])
    assert straight["returns"] == resumed["returns"] and len(straight["returns"]) > 10
    assert straight["env_steps"] == resumed["env_steps"] and straight["batch"] == resumed["batch"] == 240


def test_ddpg_resume_in_a_new_process_is_bit_exact(tmp_path):
    "Ornstein-Uhlenbeck noise, two soft targets, two optimizers and n-step windows all carry over."
    checkpoint = tmp_path / "ckpt.pt"
    run_job("straight", checkpoint, tmp_path / "straight.pt", 0, "ddpg")
    run_job("resumed", checkpoint, tmp_path / "resumed.pt", 0, "ddpg")
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    assert len(straight["losses"]) == 2 * 80
    assert torch.equal(straight["losses"], resumed["losses"])
    assert straight["returns"] == resumed["returns"] and straight["env_steps"] == resumed["env_steps"]


def test_same_seed_same_results_across_processes_and_seeds_differ(tmp_path):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        run_job("straight", tmp_path / f"{name}.ckpt", tmp_path / f"{name}.pt", seed)
    a, b, c = (torch.load(tmp_path / f"{n}.pt") for n in "abc")
    assert torch.equal(a["losses"], b["losses"]) and a["returns"] == b["returns"]
    assert not torch.equal(a["losses"], c["losses"])


def test_in_process_save_restores_every_stage(tmp_path):
    learner = build()
    learner.fit(1)
    learner.save(tmp_path / "c.pt")
    state = learner.state_dict()
    learner.fit(1)
    other = build(seed=9).load(tmp_path / "c.pt")
    # replay contents, ε schedule, n-step windows, target network and the optimizer all came back
    restored = other.state_dict()
    replay_a, replay_b = state["pipe"], restored["pipe"]
    while "buffer" not in replay_a:
        replay_a, replay_b = replay_a["source"], replay_b["source"]
    replay_a, replay_b = replay_a["buffer"], replay_b["buffer"]
    assert replay_a["writer"]["size"] == replay_b["writer"]["size"] > 0
    assert all(torch.equal(replay_a["storage"][k], replay_b["storage"][k]) for k in replay_a["storage"])
    assert other.stepper.agent.state_dict() == state_agent(state)
    assert other.batch == 60 and other.epoch == 1


def state_agent(state):
    node = state["pipe"]
    while "agent" not in node:
        node = node["source"]
    return node["agent"]


def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch):
    learner = build()
    learner.fit(1)
    path = learner.save(tmp_path / "c.pt")
    good = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crashing_save)
    learner.fit(1)
    with pytest.raises(OSError, match="disk full"):
        learner.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_corrupt_checkpoint_is_reported_and_nothing_is_loaded(tmp_path):
    learner = build()
    learner.fit(1)
    path = learner.save(tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fresh = build(seed=3)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        fresh.load(path)
    assert all(torch.equal(before[k], v) for k, v in fresh.model.state_dict().items())
    with pytest.raises(CheckpointError, match="No checkpoint"):
        fresh.load(tmp_path / "missing.pt")


def test_checkpoint_for_another_env_network_or_algorithm_is_refused(tmp_path):
    learner = build()
    learner.fit(1)
    path = learner.save(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="envs \\['CartPole-v1', 'CartPole-v1'\\]"):
        build(env_id="Acrobot-v1").load(path)
    with pytest.raises(CheckpointError, match="another shape"):
        build(hidden=(16, 16)).load(path)
    other = build()
    other.name = "DDPG"
    with pytest.raises(CheckpointError, match="written by a DQN learner"):
        other.load(path)


class InterruptAt(Pipe):
    "Sends this process a SIGINT (Ctrl-C) during gradient round `at`."

    def __init__(self, source, at):
        super().__init__(source)
        self.at, self.rounds = at, 0

    def next(self):
        item = next(self.source)
        self.rounds += 1
        if self.rounds == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return item


def test_ctrl_c_stops_at_the_current_round_saves_and_stays_usable(tmp_path, capsys):
    learner = build()
    learner.pipe = InterruptAt(learner.pipe, at=75)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a job started in the background
    learner.fit(3, checkpoint_every=2, checkpoint_path=tmp_path / "c.pt")
    assert learner.interrupted and learner.batch == 75 and learner.epoch == 1
    assert (tmp_path / "c.pt").exists() and "Interrupted after gradient round 75" in capsys.readouterr().out
    learner.fit(1)
    assert learner.batch == 135 and not learner.interrupted
    assert signal.getsignal(signal.SIGINT) is before


class Ticking(InterruptAt):
    "A clock that advances one second per gradient round, so an epoch's seconds are its rounds."

    def __init__(self, source, at, clock):
        super().__init__(source, at)
        self.clock = clock

    def next(self):
        self.clock[0] += 1.0
        return super().next()


def test_an_interrupted_epoch_gives_one_row_for_the_whole_epoch(tmp_path, monkeypatch):
    "Its rate counts the env steps and seconds before the Ctrl-C too, in this process and after a load."
    import time
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    learner = build()
    learner.pipe = Ticking(learner.pipe, at=75, clock=clock)  # 15 rounds into the second epoch of 60
    learner.fit(3, checkpoint_every=1, checkpoint_path=tmp_path / "c.pt")
    assert learner.interrupted and learner.epoch == 1
    restored = build(seed=2)
    restored.pipe = Ticking(restored.pipe, at=0, clock=clock)
    restored.load(tmp_path / "c.pt")
    for run in (learner, restored):
        run.fit(1)
        first, second = run.history
        assert second["epoch"] == 2 and second["batch"] - first["batch"] == 75  # 15 rounds, then a whole epoch's
        assert second["steps_per_s"] == (second["env_steps"] - first["env_steps"]) / 75


def test_checkpoint_every_writes_during_fit(tmp_path):
    learner = build()
    learner.fit(2, checkpoint_every=1, checkpoint_path=tmp_path / "c.pt")
    restored = build(seed=2).load(tmp_path / "c.pt")
    assert restored.epoch == 2 and restored.batch == 120
    with pytest.raises(ValueError, match="checkpoint_path"):
        learner.fit(1, checkpoint_every=1)


def test_an_env_that_cannot_be_saved_is_reset_with_one_warning(tmp_path):
    set_seed(0)
    stepper = GymStepper(make_vec_env("CartPole-v1", num_envs=2, async_envs=True), seed=0)
    for _ in range(5):
        next(stepper)
    state = stepper.state_dict()
    assert state["envs"] is None
    again = GymStepper(make_vec_env("CartPole-v1", num_envs=2, async_envs=True), seed=0)
    with pytest.warns(RuntimeWarning, match="could not be saved"):
        again.reset(state)
    assert again.env_steps == 10 and len(next(again)) == 2


class Drift(gym.Env, gym.utils.EzPickle):
    "Pickles its constructor arguments only, as gymnasium's Box2D and MuJoCo envs do."
    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        gym.utils.EzPickle.__init__(self)
        self.x = None

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        assert self.x is not None, "stepped before reset"
        self.x = self.x + action
        return self.x.copy(), float(-abs(self.x[0])), False, False, {}


def drift_stepper():
    return GymStepper(gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(Drift(), 7)] * 2,
                                               autoreset_mode=gym.vector.AutoresetMode.SAME_STEP), seed=0)


def test_an_ezpickle_env_is_not_saved_and_restarts_from_a_reset(tmp_path):
    import pickle
    stepper = drift_stepper()
    for _ in range(5):
        next(stepper)
    state = stepper.state_dict()
    assert state["envs"] is None  # its pickle would be a new env that was never reset
    again = drift_stepper()
    with pytest.warns(RuntimeWarning, match="could not be saved"):
        again.reset(state)
    assert again.env_steps == 10 and len(next(again)) == 2
    # a checkpoint that holds such envs (written before they were left out) loads the same way
    state["envs"] = pickle.dumps((stepper.env.envs, stepper.env.action_space))
    old = drift_stepper()
    with pytest.warns(RuntimeWarning, match="could not be saved"):
        old.reset(state)
    assert len(next(old)) == 2


def test_nan_observation_stops_stepping_with_a_clear_message():
    def poison(env):
        return gym.wrappers.TransformObservation(env, lambda obs: obs * np.nan, env.observation_space)
    stepper = GymStepper(make_vec_env("CartPole-v1", wrappers=[poison]), seed=0)
    with pytest.raises(FloatingPointError, match="NaN/inf observation at env step 0"):
        next(stepper)
    quiet = GymStepper(make_vec_env("CartPole-v1", wrappers=[poison]), seed=0, check_finite=False)
    assert torch.isnan(next(quiet).next_state).all()


def test_nstepper_state_round_trip():
    from test_framework import steps_from
    rows = [[(t, False, False), (t, t == 2, False)] for t in range(4)]
    pipe = NStepper(steps_from(rows[:2]), n=3, gamma=0.9)
    list(pipe)
    state = pipe.state_dict()
    resumed = NStepper(steps_from(rows[2:]), n=3, gamma=0.9)
    resumed.reset({**state, "source": None})
    whole = NStepper(steps_from(rows), n=3, gamma=0.9)
    a, b = list(resumed), list(whole)
    got = torch.cat([s.reward for s in a])
    expected = torch.cat([s.reward for s in b])
    assert torch.equal(got, expected)


def cli(*args):
    return [sys.executable, "-m", "fastrl_lite.cli", "train", "dqn", *map(str, args)]


def test_cli_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    import json
    import time
    settings = ["--steps", "9000", "--seed", "1", "--eval-episodes", "3"]
    subprocess.run(cli(*settings, "--out", tmp_path / "whole"), check=True, timeout=600, capture_output=True)
    crashed = tmp_path / "crashed"
    job = subprocess.Popen(cli(*settings, "--out", crashed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (crashed / "checkpoint.pt").exists() and job.poll() is None:
        time.sleep(0.01)
    job.kill()  # a hard crash: no chance to save anything more
    job.wait()
    assert not (crashed / "eval.json").exists(), "the run finished before it could be crashed"
    resumed = subprocess.run(cli("--resume", crashed, "--eval-episodes", "3"), check=True, timeout=600, capture_output=True, text=True)
    assert "Resuming" in resumed.stdout and "at epoch 1," in resumed.stdout
    whole, again = (json.loads((d / "eval.json").read_text()) for d in (tmp_path / "whole", crashed))
    assert again["eval_returns"] == whole["eval_returns"] and again["env_steps"] == whole["env_steps"]
    rows = lambda d: (d / "metrics.csv").read_text().splitlines()
    assert rows(crashed)[-1].split(",")[:6] == rows(tmp_path / "whole")[-1].split(",")[:6]
    wrong = subprocess.run(cli("--resume", tmp_path), capture_output=True, text=True)
    assert wrong.returncode == 2 and "no config.json" in wrong.stderr
