"""The command line as a user runs it: `python -m fastrl_lite ...` in a subprocess, its exit code,
its message, and the run folder it leaves (or does not leave)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SMALL = ["--hp", "net_arch=[32]"]  # a small network keeps these runs to seconds


def cli(*args, cwd=None, check=True):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "MPLBACKEND": "Agg", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "fastrl_lite", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def rows(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    "A small finished DQN run, shared by the tests that only read it."
    out = tmp_path_factory.mktemp("runs") / "base"
    cli("train", "dqn", "--steps", 1500, "--seed", 3, "--out", out, "--eval-episodes", 2, *SMALL)
    return out


def refused(tmp_path, *args, message, algo="dqn"):
    "`train algo` exits with status 2 and `message` before it makes the run folder."
    out = tmp_path / "refused"
    done = cli("train", algo, "--out", out, *args, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    assert not out.exists(), f"a refused run left {sorted(p.name for p in out.iterdir())}"
    return done


# ------------------------------------------------------------------ refused before anything is made
@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be a whole number >= 1, got 0"),
    (["--steps", "-5"], "--steps must be a whole number >= 1, got -5"),
    (["--threads", "0"], "--threads must be a whole number >= 1, got 0"),
    (["--threads", "-1"], "--threads must be a whole number >= 1, got -1"),
    (["--eval-episodes", "0"], "--eval-episodes must be a whole number >= 1, got 0"),
    (["--eval-every", "0"], "--eval-every must be a whole number >= 1, got 0"),
    (["--eval-every", "60000"], "--eval-every 60000 is more than the run's 50000 env steps"),
    (["--env", "Pendulum-v1"], "discrete action space"),
    (["--env", "CartPol-v1"], "Did you mean 'CartPole-v1'"),
    (["--steps", "500"], "--steps 500 ends before the first gradient round"),
    (["--hp", "learning_rat=1e-3"], "Unknown hyper-parameter(s) ['learning_rat'] for dqn"),
    (["--hp", "learning_rate"], "--hp takes key=value"),
    (["--hp", "learning_rate=-1"], "learning_rate must be a finite number in (0, inf], got -1"),
    (["--hp", "gradient_steps=0"], "gradient_steps must be >= 1, or -1"),
    (["--hp", "net_arch=256"], "net_arch must be a list of layer sizes"),
    (["--preset", "tuned"], "dqn has no preset 'tuned' for CartPole-v1 (its presets: default, zoo)"),
    (["--num-envs", "0"], "n_envs must be a whole number >= 1, got 0"),
    (["--hp", "double_q=maybe"], "double_q must be true or false, got 'maybe'"),
    (["--seed", "-1"], "A seed must be a whole number in [0, 2**32 - 1], got -1"),
    (["--env", "ALE/Pong-v5"], "No env of the namespace 'ALE' is registered: install ale-py"),
    (["--hp", "buffer_size=10"], "raise the capacity (max_sz; buffer_size on the command line)"),
    (["--threads", "100000"], "--threads 100000 is more than 4 per core"),
    (["--hp", "sail=false", "--sail"], "--sail and --hp sail=False set the same setting to different values"),
    (["--hp", "n_envs=2", "--num-envs", "1"], "--num-envs 1 and --hp n_envs=2 set the same setting to different"),
    (["--hp", "n_envs=2", "--hp", "n_envs=3"], "--hp gives n_envs twice, n_envs=2 and n_envs=3; give it once"),
])
def test_bad_settings_are_refused_before_the_run_folder_is_made(tmp_path, args, message):
    refused(tmp_path, *args, message=message)


@pytest.mark.parametrize("args, message", [
    (["--hp", "activation_fn=gelu"], "activation_fn must be one of ['relu', 'tanh'], got 'gelu'"),
    (["--hp", "ortho_init=maybe"], "ortho_init must be true or false, got 'maybe'"),
    # CartPole's actions are discrete: no Gaussian policy, so no log σ to start from
    (["--hp", "log_std_init=-1"], "CartPole-v1 has Discrete(2) actions, so it would be ignored"),
    (["--hp", "clip_range=-1"], "clip_range must be a number > 0 or lin_<number> (rl-zoo's schedule"),
    (["--hp", "learning_rate=lin_0"], "learning_rate must be a number > 0 or lin_<number>"),
])
def test_bad_ppo_policy_settings_are_refused(tmp_path, args, message):
    refused(tmp_path, *args, message=message, algo="ppo")


def test_ppo_policy_settings_of_rl_zoo_and_a_run_folder_from_before_them(tmp_path):
    from torch import nn
    from fastrl_lite.cli import _load_run, evaluate
    out = tmp_path / "relu"
    cli("train", "ppo", "--steps", 512, "--out", out, "--eval-episodes", 1, "--hp", "activation_fn=nn.ReLU",
        "--hp", "ortho_init=false", "--hp", "net_arch=[16]")
    config, learner = _load_run(out)
    policy = learner.models["policy"]
    assert config["hp"]["activation_fn"] == "nn.ReLU" and config["hp"]["ortho_init"] is False
    assert [type(m) for m in policy.actor_body] == [nn.Linear, nn.ReLU]
    assert not torch.allclose(policy.actor_body[0].bias, torch.zeros(16))  # PyTorch's own initialisation, not zeros
    # a run folder written before these settings existed was trained with tanh and orthogonal initialisation
    config = json.loads((out / "config.json").read_text())
    del config["hp"]["activation_fn"], config["hp"]["ortho_init"]
    (out / "config.json").write_text(json.dumps(config))
    _, old = _load_run(out)
    assert [type(m) for m in old.models["policy"].actor_body] == [nn.Linear, nn.Tanh]
    assert evaluate(out, episodes=1, progress=False)["returns"]


def test_mujoco_and_box2d_envs_get_rl_zoos_presets():
    from fastrl_lite.presets import resolve
    for algo in ("ddpg", "td3", "sac"):
        for env in ("HalfCheetah-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5", "Humanoid-v5", "Swimmer-v5"):
            hp, said = resolve(algo, env)
            assert f"hyperparams/{algo}.yml, {env[:-1]}4, on -v5" in said
            assert hp["learning_starts"] == 10_000 and hp["n_timesteps"] == (2_000_000 if env == "Humanoid-v5"
                                                                               else 1_000_000)
            assert hp["gamma"] == (0.9999 if env == "Swimmer-v5" else 0.99)
    assert resolve("td3", "BipedalWalker-v3")[0]["gamma"] == 0.98
    assert resolve("sac", "BipedalWalker-v3")[0]["use_sde"] is True
    hp, _ = resolve("ppo", "HalfCheetah-v5")
    assert (hp["activation_fn"], hp["ortho_init"], hp["log_std_init"], hp["normalize"]) == ("relu", False, -2.0, True)
    assert resolve("ppo", "LunarLander-v3")[0]["n_envs"] == 16


def test_ppo_steps_short_of_one_rollout_are_refused(tmp_path):
    refused(tmp_path, "--env", "Pendulum-v1", "--steps", "2048", algo="ppo",
            message="--steps 2048 ends before the first rollout is complete (a rollout is n_steps x n_envs = 1024 x 4 "
                    "= 4096 env steps)")


def test_an_existing_run_is_not_overwritten(tmp_path, run_dir):
    before = (run_dir / "config.json").read_text()
    done = cli("train", "dqn", "--out", run_dir, "--steps", 1500, check=False)
    assert done.returncode == 2 and "already holds a run" in done.stderr and "--resume" in done.stderr
    assert (run_dir / "config.json").read_text() == before


def test_default_run_folders_are_numbered_instead_of_overwritten(tmp_path):
    for _ in range(2):
        cli("train", "dqn", "--steps", 1100, "--eval-episodes", 1, *SMALL, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["dqn-CartPole-v1-seed0", "dqn-CartPole-v1-seed0-2"]


# ------------------------------------------------------------------ resume
def test_resume_refuses_another_env_seed_or_settings(tmp_path, run_dir):
    config = (run_dir / "config.json").read_text()
    for args, message in [(["--env", "Acrobot-v1"], "was trained with --env CartPole-v1"),
                          (["--seed", "4"], "was trained with --seed 3"),
                          (["--hp", "learning_rate=1e-3"], "--hp and --preset only apply to a new run"),
                          (["--steps", "1000"], "would shorten it"),
                          (["--eval-episodes", "5"], "was trained with --eval-episodes 2")]:
        done = cli("train", "dqn", "--resume", run_dir, *args, check=False)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert (run_dir / "config.json").read_text() == config
    wrong = cli("train", "ddpg", "--resume", run_dir, check=False)
    assert wrong.returncode == 2 and "is a dqn run; resume it with `fastrl-lite train dqn" in wrong.stderr


def test_resume_with_more_steps_extends_a_finished_run(tmp_path):
    out = tmp_path / "run"
    cli("train", "dqn", "--steps", 1500, "--out", out, "--eval-episodes", 1, *SMALL)
    done = cli("train", "dqn", "--resume", out, "--steps", 2500)
    assert "Resuming" in done.stdout and "env step 1500" in done.stdout
    assert json.loads((out / "eval.json").read_text())["env_steps"] == 2500
    assert "Greedy evaluation over 1 episodes" in done.stdout  # the run's own --eval-episodes, not the default
    assert json.loads((out / "config.json").read_text())["steps"] == 2500
    table = rows(out)
    assert [int(r["env_steps"]) for r in table][-1] == 2500 and int(table[0]["env_steps"]) == 1500
    assert [int(r["epoch"]) for r in table] == list(range(1, len(table) + 1))
    assert len(table) >= 2


def _settings(out):
    # 7040 gradient rounds in 6 epochs, a few seconds on a small network
    return ["train", "dqn", "--steps", 4000, "--seed", 1, "--out", out, "--eval-episodes", 1, "--hp", "net_arch=[32]",
            "--hp", "train_freq=64", "--hp", "gradient_steps=128", "--hp", "learning_starts=500"]


def test_ctrl_c_then_resume_leaves_the_csv_of_an_uninterrupted_run(tmp_path):
    cli(*_settings(tmp_path / "whole"))
    out = tmp_path / "stopped"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "MPLBACKEND": "Agg", "PYTHONPATH": str(Path(__file__).parents[1])}
    job = subprocess.Popen([sys.executable, "-m", "fastrl_lite", *map(str, _settings(out)), "--tensorboard"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (out / "checkpoint.pt").exists() and job.poll() is None:
        time.sleep(0.005)
    job.send_signal(signal.SIGINT)
    stdout, _ = job.communicate(timeout=600)
    assert job.returncode == 0 and "Stopped early; continue with `fastrl-lite train dqn --resume" in stdout, stdout
    assert len(rows(out)) < 6, "the run finished before it could be interrupted"
    done = cli("train", "dqn", "--resume", out, "--eval-episodes", 1)
    assert "Resuming" in done.stdout
    columns = ["epoch", "batch", "env_steps", "episodes", "rolling_reward", "q_loss", "epsilon", "rounds"]
    whole = [[r[c] for c in columns] for r in rows(tmp_path / "whole")]
    assert [[r[c] for c in columns] for r in rows(out)] == whole
    assert len(whole) == 6
    board_matches_csv(out)  # no event twice, none missing


def test_the_last_epoch_is_not_a_stub_and_the_plan_is_printed(tmp_path):
    out = tmp_path / "run"
    done = cli(*_settings(out)[:-2], "--hp", "learning_starts=1000")  # 6016 rounds: 5 epochs of 1204, the last 1200
    assert "5 epochs of 1204 gradient rounds (the last one 1200) over 4000 env steps" in done.stdout
    batches = [int(r["batch"]) for r in rows(out)]
    assert batches == [1204, 2408, 3612, 4816, 6016]
    assert [int(r["rounds"]) for r in rows(out)] == [1204, 1204, 1204, 1204, 1200]
    assert json.loads((out / "eval.json").read_text())["env_steps"] == 4000


# ------------------------------------------------------------------ presets and units
def test_an_env_gets_its_own_preset_and_config_records_the_values_used(tmp_path):
    out = tmp_path / "acrobot"
    done = cli("train", "dqn", "--env", "Acrobot-v1", "--steps", 300, "--out", out, "--eval-episodes", 1,
               "--hp", "batch_size=32", "--hp", "net_arch=[32]")
    assert "preset 'default' for Acrobot-v1 (rl-baselines3-zoo hyperparams/dqn.yml, Acrobot-v1)" in done.stdout
    assert "overridden: batch_size=32, net_arch=[32]" in done.stdout
    config = json.loads((out / "config.json").read_text())
    hp = config["hp"]
    assert config["env"] == "Acrobot-v1" and config["preset"] == "default"
    assert hp["learning_rate"] == 6.3e-4 and hp["buffer_size"] == 50_000 and hp["exploration_final_eps"] == 0.1
    assert hp["batch_size"] == 32 and hp["net_arch"] == [32] and hp["n_timesteps"] == 300
    # gradient_steps=-1: as many rounds as env steps collected; target every 250 env steps = 248 rounds
    assert hp["gradient_steps"] == -1 and "every 248 gradient rounds = 248 env steps" in done.stdout
    assert "1 epoch of 272 gradient rounds over 300 env steps" in done.stdout  # from the 32nd transition on


def test_an_env_without_a_preset_says_it_runs_on_the_defaults(tmp_path):
    done = cli("train", "dqn", "--env", "CartPole-v0", "--steps", 1100, "--out", tmp_path / "r", "--eval-episodes", 1)
    assert "no dqn preset for CartPole-v0, so dqn's defaults" in done.stdout
    hp = json.loads((tmp_path / "r" / "config.json").read_text())["hp"]
    assert hp["learning_rate"] == 1e-4 and hp["train_freq"] == 4 and hp["net_arch"] == [64, 64]


def test_an_env_with_discrete_observations_trains_on_their_one_hot_vectors(tmp_path):
    # FrozenLake observes Discrete(16): every stage (training, greedy evaluation, the GIF, `eval`)
    # sees it one-hot, as a vector of 16
    out = tmp_path / "lake"
    cli("train", "dqn", "--env", "FrozenLake-v1", "--steps", 1100, "--out", out, "--eval-episodes", 2, *SMALL)
    assert (out / "episode.gif").read_bytes()[:3] == b"GIF"
    done = cli("eval", out, "--episodes", 2)
    assert "over 2 greedy episodes" in done.stdout
    # no bar drawn into a pipe: each episode's line starts with it
    assert done.stdout.splitlines()[0].startswith("episode 1/2: return") and "█" not in done.stdout


def test_an_env_without_a_time_limit_is_evaluated_on_capped_episodes(tmp_path):
    # CliffWalking never truncates: a greedy policy that misses the goal would walk forever; the
    # evaluation, the GIF and `eval` end each episode after 10 000 steps and say so
    out = tmp_path / "cliff"
    done = cli("train", "dqn", "--env", "CliffWalking-v1", "--steps", 1100, "--out", out, "--eval-episodes", 1, *SMALL)
    note = "CliffWalking-v1 has no time limit of its own: each episode ended after at most 10000 steps"
    assert note in done.stdout
    result = json.loads((out / "eval.json").read_text())
    assert len(result["eval_returns"]) == 1 and result["eval_returns"][0] <= -13  # -13: the shortest path
    assert (out / "episode.gif").read_bytes()[:3] == b"GIF"
    assert note in cli("eval", out, "--episodes", 1).stdout


def test_the_zoo_preset_and_target_updates_in_rounds(tmp_path):
    done = cli("train", "dqn", "--preset", "zoo", "--steps", 1100, "--out", tmp_path / "zoo", "--eval-episodes", 1,
               "--hp", "target_update_rounds=50", *SMALL)
    assert "preset 'zoo' for CartPole-v1 (rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1)" in done.stdout
    assert "hard update every 50 gradient rounds (target_update_rounds)" in done.stdout
    hp = json.loads((tmp_path / "zoo" / "config.json").read_text())["hp"]
    assert hp["double_q"] is False and hp["target_update_rounds"] == 50 and hp["target_update_interval"] is None
    default = json.loads((tmp_path / "zoo" / "config.json").read_text())
    assert default["preset"] == "zoo"


def test_num_envs_and_exploration_fraction(tmp_path):
    out = tmp_path / "two"
    done = cli("train", "dqn", "--num-envs", 2, "--steps", 2000, "--out", out, "--eval-episodes", 1,
               "--hp", "exploration_fraction=0.5", "--hp", "train_freq=128", *SMALL)
    hp = json.loads((out / "config.json").read_text())["hp"]
    assert hp["n_envs"] == 2 and hp["exploration_fraction"] == 0.5
    # train_freq counts per env, as in SB3: 128 x 2 envs = one burst every 256 env steps
    assert "every 128 gradient rounds = 256 env steps" in done.stdout
    table = rows(out)
    assert json.loads((out / "eval.json").read_text())["env_steps"] == 2000
    assert abs(float(table[-1]["epsilon"]) - 0.04) < 1e-9  # ε reached its floor at half the run


# ------------------------------------------------------------------ evaluation during training
def test_eval_every_adds_columns_and_keeps_the_best_model(tmp_path):
    out = tmp_path / "evaluated"
    cli(*_settings(out), "--eval-every", 1000)
    table = rows(out)
    assert "eval_mean" in table[0] and "eval_std" in table[0]
    assert all(float(r["eval_mean"]) > 0 for r in table[1:])
    assert (out / "best_model.pt").is_file() and (out / "model.pt").is_file()
    done = cli("eval", out, "--best", "--episodes", 2)
    assert "best_model.pt" in done.stdout and "±" in done.stdout


# ------------------------------------------------------------------ eval and plot
def test_eval_runs_greedy_episodes_and_writes_a_gif(tmp_path, run_dir):
    gif = tmp_path / "one.gif"
    done = cli("eval", run_dir, "--episodes", 3, "--seed", 7, "--gif", gif)
    assert "episode 3/3" in done.stdout and "over 3 greedy episodes" in done.stdout and "±" in done.stdout
    assert gif.is_file() and gif.read_bytes()[:3] == b"GIF"
    again = cli("eval", run_dir, "--episodes", 3, "--seed", 7)
    assert again.stdout.splitlines()[-1] == [l for l in done.stdout.splitlines() if "greedy episodes" in l][0]
    for args, message in [([tmp_path], "it has no config.json"), ([run_dir, "--best"], "has no best_model.pt"),
                          ([run_dir, "--episodes", 0], "--episodes must be a whole number >= 1")]:
        bad = cli("eval", *args, check=False)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    if sys.platform.startswith("linux"):
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        bad = subprocess.run([sys.executable, "-m", "fastrl_lite", "eval", str(run_dir), "--show"], env=env,
                             capture_output=True, text=True, timeout=600)
        assert bad.returncode == 2 and "--show needs a display" in bad.stderr and "--gif" in bad.stderr, bad.stderr
    # a display SDL draws nowhere: the episode is played through the env's human rendering
    shown = subprocess.run([sys.executable, "-m", "fastrl_lite", "eval", str(run_dir), "--episodes", "1", "--show"],
                           env={**os.environ, "DISPLAY": ":0", "SDL_VIDEODRIVER": "dummy"}, capture_output=True,
                           text=True, timeout=600)
    assert shown.returncode == 0 and "Showing one episode of CartPole-v1" in shown.stdout, shown.stderr
    assert float(shown.stdout.split("Return ")[-1]) >= 8


def test_plot_groups_runs_by_algorithm_and_env(tmp_path, run_dir):
    other = tmp_path / "seed4"
    cli("train", "dqn", "--steps", 1500, "--seed", 4, "--out", other, "--eval-episodes", 1, *SMALL)
    png = tmp_path / "curves.png"
    done = cli("plot", run_dir, other, "--out", png)
    assert "dqn CartPole-v1 (2 runs)" in done.stdout and png.read_bytes()[:4] == b"\x89PNG"
    by_column = cli("plot", run_dir, "--metric", "q_loss", "--out", tmp_path / "loss.png")
    assert (tmp_path / "loss.png").is_file() and "(1 run)" in by_column.stdout
    for args, message in [([run_dir, "--out", tmp_path / "c.jpg"], "must name a .png"),
                          ([tmp_path / "nothing", "--out", png], "has no config.json"),
                          ([run_dir, "--metric", "nope", "--out", png], "has no column 'nope'")]:
        bad = cli("plot", *args, check=False)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert not (tmp_path / "c.jpg").exists()


def test_python_m_fastrl_lite_is_the_command_line():
    done = cli("--help")
    assert "usage: fastrl-lite" in done.stdout and "{train,eval,plot}" in done.stdout


# ------------------------------------------------------------------ TensorBoard
def test_tensorboard_events_match_metrics_csv(tmp_path):
    out = tmp_path / "board"
    cli(*_settings(out), "--tensorboard", "--eval-every", 2000)
    columns = board_matches_csv(out)
    assert {"rolling_reward", "q_loss", "epsilon", "eval_mean", "steps_per_s"} <= set(columns)


def board_matches_csv(out):
    "The TensorBoard events in out/tb, read by tensorboard's own reader, hold what metrics.csv and returns.csv do."
    import math
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    table = rows(out)
    columns = [c for c in table[0] if c != "env_steps"]
    assert set(columns) | {"episode_return"} == set(events.Tags()["scalars"])
    for column in columns:
        logged = [(int(r["env_steps"]), float(r[column])) for r in table if not math.isnan(float(r[column]))]
        read = [(e.step, e.value) for e in events.Scalars(column)]
        assert [s for s, _ in read] == [s for s, _ in logged], column
        assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for (_, a), (_, b) in zip(read, logged)), column
    with open(out / "returns.csv", newline="") as f:
        returns = [(int(float(s)), float(r)) for s, r in list(csv.reader(f))[1:]]
    assert [(e.step, e.value) for e in events.Scalars("episode_return")] == returns and len(returns) > 50
    return columns


# ------------------------------------------------------------------ the Learner's side of --eval-every
def test_fit_evaluates_every_n_env_steps_keeps_the_best_and_resumes_the_schedule(tmp_path):
    import math
    import torch
    from fastrl_lite import GymDataPipe, set_seed
    from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner

    def build():
        set_seed(0)
        model = DQN(4, 2, hidden=(16,))
        dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model, max_steps=500), seed=0)
        return DQNLearner(model, [dl], warmup=64, train_every=16, updates=4, batches=50, bs=32, max_sz=2000)

    learner = build()
    with pytest.raises(ValueError, match="eval_every must be a whole number of env steps >= 1"):
        learner.fit(1, eval_every=0)
    with pytest.raises(ValueError, match="eval_episodes must be a whole number >= 1"):
        learner.fit(1, eval_every=100, eval_episodes=0)
    assert learner.batch == 0  # refused before any round
    rows = learner.fit(3, eval_every=150, eval_episodes=2, best_model_path=tmp_path / "best.pt",
                       checkpoint_every=1, checkpoint_path=tmp_path / "c.pt")
    assert all("eval_mean" in row and "eval_std" in row for row in rows)
    evaluated = [row["eval_mean"] for row in rows if not math.isnan(row["eval_mean"])]
    # a row shows the epoch's latest evaluation; the best may come from an earlier one
    assert evaluated and learner.evaluation["best"] >= max(evaluated) and learner.evaluation["mean"] == evaluated[-1]
    # the next evaluation is due at the first multiple of 150 env steps after the last one
    assert learner.evaluation["next"] > learner.env_steps - 16 and learner.evaluation["next"] % 150 == 0
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(best) == {"model"} and best["model"].keys() == learner.model.state_dict().keys()
    restored = build().load(tmp_path / "c.pt")
    assert restored.evaluation == learner.evaluation


# ------------------------------------------------------------------ run folders off the usual path

def test_resume_with_a_few_more_steps_runs_them_and_keeps_its_bursts_phase(tmp_path):
    "Extra env steps that hold no new burst still run; a longer extension gets the rounds it prints."
    out = tmp_path / "run"
    cli("train", "dqn", "--steps", 300, "--out", out, "--eval-episodes", 1, "--hp", "learning_starts=64", *SMALL)
    cli("train", "dqn", "--resume", out, "--steps", 500)
    assert json.loads((out / "eval.json").read_text())["env_steps"] == 500
    done = cli("train", "dqn", "--resume", out, "--steps", 1500)
    # train_freq 256 from env step 500 (where the previous stretch left the collector): 756, 1012, 1268
    assert json.loads((out / "eval.json").read_text())["env_steps"] == 1500
    assert int(rows(out)[-1]["batch"]) == 128 + 3 * 128
    assert "4 epochs of 128 gradient rounds over 1500 env steps" in done.stdout, done.stdout  # the plan said so


def test_eval_of_a_ppo_run_acts_on_observations_normalised_as_in_training(tmp_path):
    out = tmp_path / "ppo"
    cli("train", "ppo", "--env", "Pendulum-v1", "--steps", 1024, "--out", out, "--eval-episodes", 1, "--hp",
        "n_envs=2", "--hp", "n_steps=256", "--hp", "normalize=true")
    weights = torch.load(out / "model.pt", weights_only=True)
    assert weights["obs_normalizer"]["count"] > 1000
    first = json.loads((out / "eval.json").read_text())["eval_returns"][0]
    done = cli("eval", out, "--episodes", 1, "--seed", 10_000)
    assert f"{first:.1f} ± 0.0" in done.stdout, (first, done.stdout)


def test_bad_hyper_parameter_types_and_broken_files_get_messages_not_tracebacks(tmp_path, run_dir):
    for args, message in [(["--hp", "tau=abc"], "tau must be a number"),
                          (["--hp", "noise_std=[1]"], "noise_std must be a number"),
                          (["--hp", "learning_rate=lin_abc"], "learning_rate")]:
        done = cli("train", "td3", "--out", tmp_path / "bad", *args, check=False)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "metrics.csv", "returns.csv"):
        (broken / name).write_bytes((run_dir / name).read_bytes())
    (broken / "model.pt").write_bytes((run_dir / "model.pt").read_bytes()[:100])
    done = cli("eval", broken, check=False)
    assert done.returncode == 2 and "not readable weights" in done.stderr and "Traceback" not in done.stderr
    torch.save({"actor": {}}, broken / "model.pt")
    done = cli("eval", broken, check=False)
    assert done.returncode == 2 and "lack ['model']" in done.stderr, done.stderr
    config = json.loads((run_dir / "config.json").read_text())
    for edit, message in [(dict(steps="abc"), "records steps='abc'"), (dict(batches=0), "batches=0"),
                          (dict(algo="foo"), "needs an algo")]:
        (broken / "config.json").write_text(json.dumps({**config, **edit}))
        done = cli("eval", broken, check=False)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    (broken / "config.json").write_text("{not json")
    done = cli("train", "dqn", "--resume", broken, check=False)
    assert done.returncode == 2 and "not valid JSON" in done.stderr


def test_a_run_that_failed_before_its_first_checkpoint_can_be_started_again(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # all a run leaves when it fails in its first epoch
    done = cli("train", "dqn", "--resume", out, check=False)
    assert done.returncode == 2 and "not a run this fastrl-lite can rebuild" in done.stderr
    cli("train", "dqn", "--steps", 300, "--out", out, "--eval-episodes", 1, "--hp", "learning_starts=64", *SMALL)
    assert (out / "checkpoint.pt").is_file()
    again = cli("train", "dqn", "--out", out, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_out_must_be_a_folder_and_resume_stays_in_its_own(tmp_path, run_dir):
    (tmp_path / "afile").write_text("")
    done = cli("train", "dqn", "--out", tmp_path / "afile", check=False)
    assert done.returncode == 2 and "is a file" in done.stderr
    done = cli("train", "dqn", "--resume", run_dir, "--out", tmp_path / "elsewhere", check=False)
    assert done.returncode == 2 and "drop --out" in done.stderr and not (tmp_path / "elsewhere").exists()
    done = cli("plot", run_dir, "--out", "/proc/no/such/dir/p.png", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    done = cli("eval", run_dir, "--episodes", 1, "--gif", tmp_path / "episode.png", check=False)
    assert done.returncode == 2 and "--gif must name a .gif file" in done.stderr
    assert not (tmp_path / "episode.png").exists()


def test_plot_leaves_out_runs_without_episodes_and_counts_a_run_given_twice_once(tmp_path, run_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((run_dir / "config.json").read_text())
    (empty / "returns.csv").write_text("env_step,return\n")
    done = cli("plot", run_dir, run_dir, empty, "--out", tmp_path / "p.png")
    assert "Left out" in done.stdout and "(1 run)" in done.stdout, done.stdout
    done = cli("plot", empty, "--out", tmp_path / "q.png", check=False)
    assert done.returncode == 2 and "no return values to plot yet" in done.stderr


# ------------------------------------------------------------------ refusals that leave files as they were
def test_out_refuses_a_folder_of_other_files_and_the_default_skips_one(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.json").write_text('{"my": "settings"}')
    (proj / "metrics.csv").write_text("important\n")
    done = cli("train", "dqn", "--out", proj, "--steps", 1100, *SMALL, check=False)
    assert done.returncode == 2 and "already holds files that no fastrl-lite run wrote (config.json, metrics.csv)" \
        in done.stderr, done.stderr
    assert (proj / "config.json").read_text() == '{"my": "settings"}' and (proj / "metrics.csv").read_text() == \
        "important\n" and sorted(p.name for p in proj.iterdir()) == ["config.json", "metrics.csv"]
    here = tmp_path / "here"
    here.mkdir()
    done = cli("train", "dqn", "--out", "", "--steps", 1100, *SMALL, cwd=here, check=False)
    assert done.returncode == 2 and "--out is empty" in done.stderr and not any(here.iterdir()), done.stderr
    # the default folder of a new run is not one that holds someone's files
    taken = here / "runs" / "dqn-CartPole-v1-seed0"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine")
    cli("train", "dqn", "--steps", 1100, "--eval-episodes", 1, *SMALL, cwd=here)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and (here / "runs" / "dqn-CartPole-v1-seed0-2" /
                                                                   "model.pt").is_file()


def test_a_refused_resume_leaves_config_and_metrics_as_they_were(tmp_path, run_dir):
    out = tmp_path / "M1"
    out.mkdir()
    for path in run_dir.iterdir():
        if path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
    with open(out / "metrics.csv", "a") as f:
        f.write("junk,row\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    done = cli("train", "dqn", "--resume", out, "--steps", 2000, check=False)
    assert done.returncode == 2 and f"{out / 'metrics.csv'} has a row fastrl-lite did not write" in done.stderr \
        and "'junk,row'" in done.stderr, done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path):
    # three envs step together: a run of 400 env steps ends at 402
    sac = tmp_path / "S3"
    cli("train", "sac", "--num-envs", 3, "--steps", 400, "--out", sac, "--eval-episodes", 1, "--threads", 1,
        "--hp", "net_arch=[16,16]")
    before = {p.name: p.read_bytes() for p in sac.iterdir()}
    # a finished run is where it was asked to be: resuming it again (a resume loop) succeeds and changes nothing
    done = cli("train", "sac", "--resume", sac)
    assert "is finished: it has run 402 env steps (it was planned for 400); nothing was changed" in done.stdout
    assert "--steps 400" not in done.stdout, done.stdout
    done = cli("train", "sac", "--resume", sac, "--steps", 401)
    assert "has already run 402 env steps, so --steps 401 adds nothing" in done.stdout
    assert {p.name: p.read_bytes() for p in sac.iterdir()} == before
    # PPO keeps the rollout its budget cut short (2 envs x 64 steps here): of 600 env steps it runs all 600
    ppo = tmp_path / "P1"
    cli("train", "ppo", "--steps", 600, "--out", ppo, "--eval-episodes", 1, "--hp", "n_envs=2", "--hp", "n_steps=64",
        "--hp", "batch_size=32", "--hp", "net_arch=[16]")
    assert json.loads((ppo / "eval.json").read_text())["env_steps"] == 600
    before = {p.name: p.read_bytes() for p in ppo.iterdir()}
    for _ in range(2):
        done = cli("train", "ppo", "--resume", ppo)
        assert "is finished: it has run 600 env steps" in done.stdout, done.stdout
    assert {p.name: p.read_bytes() for p in ppo.iterdir()} == before
    # a run stopped after its training but before its evaluation was written gets it, and no epoch more
    (ppo / "eval.json").unlink()
    done = cli("train", "ppo", "--resume", ppo)
    assert "its training is done, so only its weights and evaluation are written" in done.stdout
    assert json.loads((ppo / "eval.json").read_text())["env_steps"] == 600
    assert (ppo / "metrics.csv").read_bytes() == before["metrics.csv"]
    # and a larger budget completes the rollout the first one cut short, then goes on
    done = cli("train", "ppo", "--resume", ppo, "--steps", 700)
    assert json.loads((ppo / "eval.json").read_text())["env_steps"] == 700


def test_resume_messages_name_the_real_flags(tmp_path, run_dir):
    done = cli("train", "dqn", "--resume", run_dir, "--eval-every", 500, check=False)
    assert done.returncode == 2 and "was trained without --eval-every;" in done.stderr and "None" not in \
        done.stderr, done.stderr
    # a run trained on two processes (--nproc 2) is resumed on two
    two = tmp_path / "N2"
    two.mkdir()
    for path in run_dir.iterdir():
        if path.is_file():
            (two / path.name).write_bytes(path.read_bytes())
    config = json.loads((two / "config.json").read_text())
    (two / "config.json").write_text(json.dumps({**config, "nproc": 2}))
    before = {p.name: p.read_bytes() for p in two.iterdir()}
    done = cli("train", "dqn", "--resume", two, check=False)
    assert done.returncode == 2 and f"`fastrl-lite train dqn --resume {two} --nproc 2`" in done.stderr, done.stderr
    assert "ALGO" not in done.stderr and "RUN_DIR" not in done.stderr
    assert {p.name: p.read_bytes() for p in two.iterdir()} == before


def test_sac_turns_its_presets_gsde_off_and_refuses_gsde_settings_without_it(tmp_path):
    out = tmp_path / "car"
    done = cli("train", "sac", "--env", "MountainCarContinuous-v0", "--hp", "use_sde=false", "--steps", 300,
               "--out", out, "--eval-episodes", 1, "--threads", 1, "--hp", "batch_size=64", "--hp", "net_arch=[16,16]")
    assert "use_sde=False drops the preset's gSDE-only log_std_init=-3.67" in done.stdout
    hp = json.loads((out / "config.json").read_text())["hp"]
    assert hp["use_sde"] is False and hp["log_std_init"] == -3.0 and hp["gamma"] == 0.9999  # the rest of the preset
    assert "log_std" not in torch.load(out / "model.pt", weights_only=True)["actor"]
    refused(tmp_path, "--env", "MountainCarContinuous-v0", "--hp", "use_sde=false", "--hp", "log_std_init=-2",
            algo="sac", message="log_std_init=-2 only apply with use_sde=true (gSDE)")


def test_a_schedule_is_suggested_only_where_one_is_taken(tmp_path):
    for algo in ("dqn", "sac"):
        done = refused(tmp_path, "--hp", "learning_rate=1e-3x", algo=algo, message="learning_rate must be a number")
        assert "lin_" not in done.stderr, done.stderr
        refused(tmp_path, "--hp", "learning_rate=lin_1e-3", algo=algo, message="learning_rate must be a number")
    for env in ("CartPole-v1", "Pendulum-v1"):  # a preset with a schedule, and one with a number
        done = refused(tmp_path, "--env", env, "--hp", "learning_rate=1e-3x", algo="ppo",
                       message="learning_rate must be a number > 0 or lin_<number> (rl-zoo's schedule")
        assert "e.g. lin_1e-3), got '1e-3x'" in done.stderr, done.stderr
    done = refused(tmp_path, "--hp", "clip_range=abc", algo="ppo", message="clip_range must be a number")
    assert "linear_schedule" not in done.stderr and "e.g. lin_0.2" in done.stderr


def test_eval_checks_its_seeds_and_gif_folder_first_and_prints_no_training_lines(tmp_path, run_dir):
    done = cli("eval", run_dir, "--episodes", 2, "--seed", 4294967295, check=False)
    assert done.returncode == 2 and "would seed the episodes up to 4294967296" in done.stderr and \
        "give --seed 4294967294 or less" in done.stderr and "episode 1/2" not in done.stdout, done.stdout + done.stderr
    (tmp_path / "afile").write_text("")
    done = cli("eval", run_dir, "--episodes", 1, "--gif", tmp_path / "afile" / "x.gif", check=False)
    assert done.returncode == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in done.stderr and \
        "episode 1/1" not in done.stdout, done.stdout + done.stderr
    done = cli("eval", run_dir, "--episodes", 1)
    assert "Target network" not in done.stdout and "over 1 greedy episodes" in done.stdout, done.stdout


def test_plot_names_a_file_it_cannot_read(tmp_path, run_dir):
    for name, metric in (("returns.csv", "return"), ("metrics.csv", "q_loss")):
        broken = tmp_path / name.split(".")[0]
        broken.mkdir()
        for path in run_dir.iterdir():
            if path.is_file():
                (broken / path.name).write_bytes(path.read_bytes())
        with open(broken / name, "a") as f:
            f.write("abc,def\n")
        done = cli("plot", broken, "--metric", metric, "--out", tmp_path / "p.png", check=False)
        assert done.returncode == 2 and f"{broken / name} holds something other than the numbers" in done.stderr \
            and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "p.png").exists()


def test_an_env_whose_module_is_missing_names_the_env_and_the_module(tmp_path, capsys):
    import gymnasium as gym
    from fastrl_lite.cli import main
    gym.register("NeedsAMissingModule-v0", entry_point="fastrl_lite_no_such_module:Env")
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "dqn", "--env", "NeedsAMissingModule-v0", "--out", str(tmp_path / "run")])
    finally:
        del gym.registry["NeedsAMissingModule-v0"]
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "NeedsAMissingModule-v0 needs the Python module 'fastrl_lite_no_such_module'" \
        in err and "pip install" in err, err
    assert not (tmp_path / "run").exists()


def test_train_flushes_subnormals_from_its_start_so_torchs_worker_threads_do_too(tmp_path):
    # torch's intra-op threads take the float mode of the thread that starts them, which happens at
    # the first parallel op: train must be flushing before it builds anything
    script = f"""
import torch
import fastrl_lite.cli as cli
from fastrl_lite.core import denormals_flushed
seen = []
build = cli._build
def probed(*args, **kwargs):
    learner = build(*args, **kwargs)
    subnormals = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)  # 1.4e-45, one chunk per thread
    seen.append((torch.get_num_threads(), int((subnormals * 1.0).count_nonzero())))
    return learner
cli._build = probed
cli.train("dqn", steps=1300, out={str(tmp_path / "run")!r}, threads=2, eval_episodes=1, hp={{"net_arch": [32]}})
print("SEEN", seen, denormals_flushed())
"""
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "MPLBACKEND": "Agg", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SEEN [(2, 0)] False" in done.stdout, done.stdout  # every thread flushed; the mode restored after
