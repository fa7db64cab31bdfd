"""Watching a policy: one greedy episode rendered to an animated GIF, and showing it in a notebook."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Tuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ..core import SimpleStep, evaluating
from ..pipes import Pipe

__all__ = ["record_episode_gif", "show_gif", "FrameRecorder"]


def _greedy_policy(agent_or_model, action_space) -> Tuple[Callable, nn.Module]:
    """A function from a batch-of-one state tensor to an action tensor, and the module to put in
    eval mode. An agent (anything callable with a `.model`, e.g. `DQNAgent(...)`) keeps its own
    pipeline (exploration that switches off in eval mode, its `to_env` action scaling); a `Learner` lends its
    training agent; a bare module acts greedily: argmax of its outputs for a discrete action space,
    its output clipped to the bounds for a continuous one."""
    stepper = getattr(agent_or_model, "stepper", None)
    if stepper is not None and getattr(stepper, "agent", None) is not None:
        agent_or_model = stepper.agent
    if not isinstance(agent_or_model, nn.Module) and callable(agent_or_model) and hasattr(agent_or_model, "model"):
        agent = agent_or_model
        to_env = getattr(agent, "to_env", None)
        to_env = to_env.bind(action_space) if hasattr(to_env, "bind") else to_env

        def act(state):
            out = agent(SimpleStep(state=state))
            action = out["action"] if isinstance(out, dict) else out
            return to_env(action) if to_env is not None else action
        return act, agent.model
    if isinstance(agent_or_model, nn.Module):
        model = agent_or_model
        device = next(model.parameters()).device
        if isinstance(action_space, gym.spaces.Discrete):
            return (lambda state: model(state.to(device, torch.float32)).argmax(dim=-1)), model
        if isinstance(action_space, gym.spaces.Box):
            low = torch.as_tensor(action_space.low, device=device)
            high = torch.as_tensor(action_space.high, device=device)
            return (lambda state: torch.clip(model(state.to(device, torch.float32)), low, high)), model
        raise ValueError(f"A bare model can only act on Discrete or Box action spaces, not {action_space}; "
                         "pass an agent that maps states to actions instead.")
    raise TypeError(f"record_episode_gif needs an agent (e.g. DQNAgent(model)), a Learner or an nn.Module, "
                    f"got {type(agent_or_model).__name__}.")


def _to_env_action(action: torch.Tensor, action_space):
    "One env's action as the env takes it; a Discrete(n, start=k) env receives k + the agent's index."
    action = action.detach().cpu().numpy()
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action.reshape(-1)[0]) + int(action_space.start)
    if action.size != int(np.prod(action_space.shape)):
        raise ValueError(f"The policy returned {action.size} action values; the env's action space is {action_space}.")
    return action.reshape(action_space.shape).astype(action_space.dtype)


def rendering_env(env_id: str, render_mode: str, **env_kwargs) -> gym.Env:
    """The single env that a GIF or `enjoy` plays: `make_env(env_id, render_mode=...)`, its episodes
    capped by `cap_episode_length`. An env whose constructor takes no `render_mode` gets a
    `ValueError` that says so, instead of gymnasium's TypeError."""
    from ..envs.core import cap_episode_length, make_env
    try:
        return make_env(env_id, render_mode=render_mode, wrappers=[cap_episode_length], **env_kwargs)
    except TypeError as error:
        if "render_mode" not in str(error):
            raise
        raise ValueError(f"{env_id} takes no render_mode={render_mode!r}, so its episodes cannot be drawn: give its "
                         f"constructor a render_mode argument, as gymnasium's envs have ({error}).") from error


def _first_frame(env: gym.Env, env_id: str):
    """`env.render()`, with a failure of the env's renderer (no OpenGL, no display) turned into a
    `ValueError` that says how to choose one, so a run without a GIF still ends cleanly."""
    try:
        return env.render()
    except Exception as error:
        hint = (" MuJoCo envs choose their renderer with the MUJOCO_GL environment variable: egl (needs "
                "libEGL) or osmesa (needs libOSMesa) on a machine without a display, glfw with one."
                if "mujoco" in type(error).__module__ + str(env.spec and env.spec.entry_point) else "")
        raise ValueError(f"{env_id} could not draw a frame ({type(error).__name__}: {error}).{hint}") from error


def record_episode_gif(agent_or_model, env_id: str, path, seed: int = 0, max_steps: Optional[int] = None,
                       scale: float = 0.25, fps: int = 15, every: int = 2, max_frames: Optional[int] = 120,
                       **env_kwargs) -> Tuple[Path, float]:
    """Run one greedy episode of `env_id` (model in eval mode, so exploration is off) and write its
    `render_mode="rgb_array"` frames to an animated GIF at `path`. Returns `(path, episode_return)`.

    The episode always runs to its end (or `max_steps` env steps), so the return is the real one;
    only the picture is thinned to keep the file small: every `every`-th frame, at most
    `max_frames` of them (`None` for all), downscaled by `scale`, played at `fps` frames a second.
    Rendering needs Pillow and the env's renderer (pygame for the classic-control envs).
    """
    from PIL import Image
    if not 0 < scale <= 1 or every < 1 or fps < 1 or (max_frames is not None and max_frames < 2):
        raise ValueError(f"Need 0 < scale <= 1, every >= 1, fps >= 1 and max_frames >= 2 (or None); got "
                         f"scale={scale}, every={every}, fps={fps}, max_frames={max_frames}.")
    path = Path(path)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # rgb_array frames are drawn off-screen; without a display SDL's search for one only prints
        # errors into the output (a driver the user chose is kept)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        # and MuJoCo draws through EGL: gymnasium's own search takes GLFW, which needs a display
        os.environ.setdefault("MUJOCO_GL", "egl")
    env = rendering_env(env_id, "rgb_array", **env_kwargs)
    policy, model = _greedy_policy(agent_or_model, env.action_space)
    frames, episode_return, steps = [], 0.0, 0

    def keep(frame: Optional[np.ndarray]):
        if frame is None:
            raise ValueError(f"{env_id} rendered no rgb_array frame; it cannot be recorded to a GIF.")
        if max_frames is None or len(frames) < max_frames:
            image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            frames.append(image.resize(size, Image.Resampling.BILINEAR))

    try:
        obs, _ = env.reset(seed=seed)
        keep(_first_frame(env, env_id))
        done = False
        with evaluating(model), torch.no_grad():
            while not done and (max_steps is None or steps < max_steps):
                action = policy(torch.as_tensor(np.asarray(obs)).unsqueeze(0))
                obs, reward, terminated, truncated, _ = env.step(_to_env_action(action, env.action_space))
                episode_return += float(reward)
                steps += 1
                done = terminated or truncated
                if (steps % every == 0 or done) and (max_frames is None or len(frames) < max_frames):
                    keep(env.render())  # once the GIF is full, the episode runs on for its return alone
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps),
                   loop=0, optimize=True)
    return path, episode_return


def show_gif(path, width: Optional[int] = None):
    "Display a GIF inline in a notebook (embedded in the output, so it survives saving the notebook)."
    from IPython.display import Image
    return Image(filename=str(path), width=width)


class FrameRecorder(Pipe):
    """Keeps the rendered frames (`step.image`, from a pipe built with `include_images=True`) of the
    last `max_frames` steps of env 0, and shows them as an animation or writes them to a GIF."""

    def __init__(self, source, max_frames: int = 1000):
        super().__init__(source)
        self.max_frames = max_frames
        self.frames: Optional[torch.Tensor] = None
        self.count = 0

    def next(self):
        step = next(self.source)
        batch = step if not isinstance(step, list) else step[-1]
        image = getattr(batch, "image", None)
        if image is None:
            raise ValueError("FrameRecorder needs rendered frames: build the pipe with include_images=True.")
        frame = image[0]
        if self.frames is None:
            self.frames = torch.empty((self.max_frames, *frame.shape), dtype=frame.dtype)
        self.frames[self.count % self.max_frames] = frame
        self.count += 1
        return step

    def recorded(self) -> torch.Tensor:
        "The kept frames, oldest first: [n, height, width, 3] uint8."
        if self.frames is None:
            return torch.empty(0, dtype=torch.uint8)
        n = min(self.count, self.max_frames)
        start = self.count % self.max_frames if self.count > self.max_frames else 0
        return torch.roll(self.frames, -start, dims=0)[:n]

    def save_gif(self, path, fps: int = 30):
        "Write the kept frames to an animated GIF at `path`."
        from PIL import Image
        frames = [Image.fromarray(f) for f in self.recorded().numpy()]
        if not frames:
            raise ValueError("No frames recorded yet: iterate the pipe first.")
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
        return path

    def show(self, fps: int = 30):
        "An HTML animation of the kept frames for a notebook (VS Code's or Jupyter's)."
        from IPython.display import HTML
        from matplotlib import animation
        from matplotlib.figure import Figure
        frames = self.recorded().numpy()
        if not len(frames):
            raise ValueError("No frames recorded yet: iterate the pipe first.")
        fig = Figure(figsize=(4, 4))
        ax = fig.subplots()
        ax.axis("off")
        shown = ax.imshow(frames[0])
        anim = animation.FuncAnimation(fig, lambda i: shown.set_data(frames[i]), frames=len(frames),
                                       interval=1000 / fps)
        return HTML(anim.to_jshtml())
