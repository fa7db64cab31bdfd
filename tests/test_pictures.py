"""The picture helpers: learning curves across seeds and greedy-episode GIFs."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gymnasium as gym
from fastrl_lite.algos.dqn import DQN, DQNAgent
from fastrl_lite.loggers import learning_curve_stats, plot_learning_curves, record_episode_gif, show_gif


def test_learning_curve_stats_interpolates_and_reduces_across_seeds():
    # two seeds whose episodes end at different env steps: both are linear, so interpolation is exact
    run_a = np.array([[0, 0.0], [10, 10.0]])
    run_b = np.array([[0, 10.0], [4, 18.0], [10, 30.0]])
    stats = learning_curve_stats([run_a, run_b], grid=[0, 5, 10], window=1)
    np.testing.assert_allclose(stats["curves"], [[0, 5, 10], [10, 20, 30]])
    np.testing.assert_allclose(stats["mean"], [5, 12.5, 20])
    np.testing.assert_allclose(stats["lower"], [0, 5, 10])  # mean - population std (5, 7.5, 10)
    np.testing.assert_allclose(stats["upper"], [10, 20, 30])
    minmax = learning_curve_stats([run_a, run_b], grid=[0, 5, 10], spread="minmax")
    np.testing.assert_allclose(minmax["lower"], [0, 5, 10])
    np.testing.assert_allclose(minmax["upper"], [10, 20, 30])
    sem = learning_curve_stats([run_a, run_b], grid=[0, 5, 10], spread="sem")
    np.testing.assert_allclose(sem["upper"] - sem["mean"], np.std([[0, 5, 10], [10, 20, 30]], axis=0, ddof=1) / np.sqrt(2))


def test_learning_curve_stats_default_grid_covers_only_common_steps_and_smooths():
    early = np.array([[0, 1.0], [5, 3.0], [10, 5.0]])
    late = np.array([[2, 0.0], [8, 6.0]])
    stats = learning_curve_stats([early, late], points=4)
    np.testing.assert_allclose(stats["grid"], [2, 4, 6, 8])
    # a 2-episode trailing mean of (1, 3, 5) is (1, 2, 4); of (0, 6) it is (0, 3)
    smoothed = learning_curve_stats([early, late], grid=[0, 5, 10], window=2)
    np.testing.assert_allclose(smoothed["curves"][0], [1, 2, 4])
    with pytest.raises(ValueError, match="no common env steps"):
        learning_curve_stats([np.array([[0, 1.0], [1, 1.0]]), np.array([[5, 1.0], [6, 1.0]])])
    with pytest.raises(ValueError, match="No runs were given"):
        learning_curve_stats([])
    with pytest.raises(ValueError, match="at least one finished episode"):
        learning_curve_stats([early, np.empty((0, 2))])
    with pytest.raises(ValueError, match="spread"):
        learning_curve_stats([early], spread="iqr")


def test_plot_learning_curves_draws_mean_and_spread_and_writes_png(tmp_path):
    runs = {"small buffer": [np.array([[0, 0.0], [10, 10.0]]), np.array([[0, 10.0], [10, 30.0]])],
            "large buffer": [np.array([[0, 5.0], [10, 5.0]])]}
    path = tmp_path / "curves.png"
    ax = plot_learning_curves(runs, path, points=3, window=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0, 5, 10])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [5, 12.5, 20])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [5, 5, 5])
    assert len(ax.collections) == 2  # one shaded spread per label
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0) and band[:, 1].max() == pytest.approx(30)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["small buffer (2 seeds)", "large buffer (1 seed)"]


def _replay_return(policy, env_id, seed):
    "The return of the same deterministic policy on the same seeded env, without rendering."
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total += float(reward)
        done = terminated or truncated
    env.close()
    return total


def test_record_episode_gif_from_a_bare_q_network(tmp_path):
    torch.manual_seed(0)
    model = DQN(4, 2, hidden=(16,))
    path, episode_return = record_episode_gif(model, "CartPole-v1", tmp_path / "sub" / "cartpole.gif", seed=3,
                                              scale=0.25, every=1, max_frames=None)
    with torch.no_grad():
        greedy = lambda obs: int(model(torch.as_tensor(obs).unsqueeze(0)).argmax())
        assert episode_return == _replay_return(greedy, "CartPole-v1", seed=3)
    image = Image.open(path)
    assert image.format == "GIF" and image.is_animated
    assert image.size == (150, 100)  # CartPole renders 600 × 400
    # a frame after the reset and one per step; Pillow may merge identical consecutive frames
    assert 1 < image.n_frames <= int(episode_return) + 1


def test_record_episode_gif_with_an_agent_is_greedy_and_restores_training_mode(tmp_path):
    torch.manual_seed(0)
    model = DQN(4, 2, hidden=(16,))
    agent = DQNAgent(model, min_epsilon=1.0, max_epsilon=1.0)  # pure exploration while training
    _, first = record_episode_gif(agent, "CartPole-v1", tmp_path / "a.gif", seed=1)
    _, second = record_episode_gif(agent, "CartPole-v1", tmp_path / "b.gif", seed=1)
    assert first == second  # eval mode switched exploration off, so the episode is deterministic
    assert model.training
    with torch.no_grad():
        assert first == _replay_return(lambda obs: int(model(torch.as_tensor(obs).unsqueeze(0)).argmax()),
                                       "CartPole-v1", seed=1)


def test_record_episode_gif_continuous_actions_and_frame_cap(tmp_path):
    torch.manual_seed(0)
    actor = nn.Sequential(nn.Linear(3, 1), nn.Tanh())
    path, episode_return = record_episode_gif(actor, "Pendulum-v1", tmp_path / "pendulum.gif", scale=0.2,
                                              every=2, max_frames=30, fps=10)
    image = Image.open(path)
    assert image.size == (100, 100)  # Pendulum renders 500 × 500
    assert 1 < image.n_frames <= 30
    assert image.info["duration"] >= 100  # 10 frames a second
    assert -200 * 16.3 <= episode_return < 0  # 200 steps, each costing at most π² + 0.1·8² + 0.001·2²
    with pytest.raises(TypeError, match="agent"):
        record_episode_gif("not a policy", "CartPole-v1", tmp_path / "x.gif")
    with pytest.raises(ValueError, match="2 action values"):
        record_episode_gif(nn.Linear(3, 2), "Pendulum-v1", tmp_path / "x.gif")
    with pytest.raises(ValueError, match="scale"):
        record_episode_gif(actor, "Pendulum-v1", tmp_path / "x.gif", scale=2)


def test_show_gif_embeds_the_file(tmp_path):
    path, _ = record_episode_gif(DQN(4, 2, hidden=(8,)), "CartPole-v1", tmp_path / "c.gif", max_frames=5)
    shown = show_gif(path, width=120)
    assert shown.format == "gif" and shown.width == 120
    assert shown.data == path.read_bytes()


def test_cli_train_writes_the_episode_gif(tmp_path):
    from fastrl_lite.cli import train
    result = train("dqn", steps=1500, out=tmp_path, eval_episodes=1, progress=False)
    image = Image.open(tmp_path / "episode.gif")
    assert image.format == "GIF" and image.is_animated and image.size == (150, 100)
    assert result["env_steps"] == 1500


class _NoRenderBandit(gym.Env):
    "A one-step env whose constructor, as many users' envs, takes no render_mode."
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), float(action), True, False, {}


def test_an_env_that_takes_no_render_mode_is_trained_and_evaluated_without_a_gif(tmp_path, capsys):
    from fastrl_lite.cli import train
    gym.register("NoRenderBandit-v0", entry_point=_NoRenderBandit)
    try:
        with pytest.raises(ValueError, match="NoRenderBandit-v0 takes no render_mode='rgb_array'"):
            record_episode_gif(DQN(2, 2, hidden=(8,)), "NoRenderBandit-v0", tmp_path / "x.gif")
        result = train("dqn", "NoRenderBandit-v0", steps=1500, out=tmp_path / "run", eval_episodes=2, progress=False)
    finally:
        del gym.registry["NoRenderBandit-v0"]
    assert "No episode.gif: NoRenderBandit-v0 takes no render_mode" in capsys.readouterr().out
    assert not (tmp_path / "run" / "episode.gif").exists() and (tmp_path / "run" / "eval.json").exists()
    assert result["eval_returns"] == [1.0, 1.0]  # the better arm, learned in 1500 one-step episodes


class _BrokenRendererBandit(_NoRenderBandit):
    "A one-step env that takes a render_mode but whose renderer fails, as MuJoCo's does without OpenGL."
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def render(self):
        raise RuntimeError("no OpenGL context")


def test_an_env_whose_renderer_fails_is_trained_and_evaluated_without_a_gif(tmp_path, capsys):
    from fastrl_lite.cli import evaluate, train
    gym.register("BrokenRendererBandit-v0", entry_point=_BrokenRendererBandit)
    try:
        with pytest.raises(ValueError, match=r"BrokenRendererBandit-v0 could not draw a frame \(RuntimeError: no "
                                             r"OpenGL context\)"):
            record_episode_gif(DQN(2, 2, hidden=(8,)), "BrokenRendererBandit-v0", tmp_path / "x.gif")
        result = train("dqn", "BrokenRendererBandit-v0", steps=1500, out=tmp_path / "run", eval_episodes=2,
                       progress=False)
        with pytest.raises(ValueError, match="could not draw a frame"):
            evaluate(tmp_path / "run", episodes=1, gif=tmp_path / "eval.gif", progress=False)
    finally:
        del gym.registry["BrokenRendererBandit-v0"]
    assert "No episode.gif: BrokenRendererBandit-v0 could not draw a frame" in capsys.readouterr().out
    assert not (tmp_path / "run" / "episode.gif").exists() and (tmp_path / "run" / "model.pt").exists()
    assert result["eval_returns"] == [1.0, 1.0] and not (tmp_path / "eval.gif").exists()


def test_without_a_display_mujoco_is_told_to_draw_through_egl(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "")
    monkeypatch.delenv("MUJOCO_GL")  # (recorded, so the test leaves the variable as it found it)
    record_episode_gif(DQN(4, 2, hidden=(8,)), "CartPole-v1", tmp_path / "x.gif", max_steps=3)
    assert os.environ["MUJOCO_GL"] == "egl"  # gymnasium's own search would take GLFW, which needs a display
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    record_episode_gif(DQN(4, 2, hidden=(8,)), "CartPole-v1", tmp_path / "y.gif", max_steps=3)
    assert os.environ["MUJOCO_GL"] == "osmesa"  # a renderer the user chose is kept
