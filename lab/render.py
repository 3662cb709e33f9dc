"""Episodes -> frames (the env's pygame ``rgb_array`` rendering) -> GIF/MP4 or a live window."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".gif", ".mp4")


class NoDisplayError(RuntimeError):
    pass


def record_episode(agent, env_spec, max_frames: int = 500, seed: int = 0,
                   episodes: int = 1) -> tuple[list[np.ndarray], int]:
    """Frames (H, W, 3) uint8 of ``episodes`` deterministic episodes, capped at ``max_frames``,
    and the env's ``render_fps``."""
    from agents.common import make_env

    env = make_env(env_spec, render_mode="rgb_array")
    fps = int(env.metadata.get("render_fps", 30))
    frames: list[np.ndarray] = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            frames.append(np.asarray(env.render()))
            state, start, done = None, np.ones(1, dtype=bool), False
            while not done and len(frames) < max_frames:
                action, state = agent.predict(obs[None], state=state, episode_start=start,
                                              deterministic=True)
                obs, _, terminated, truncated, _ = env.step(action[0])
                start = np.zeros(1, dtype=bool)
                done = terminated or truncated
                frames.append(np.asarray(env.render()))
            if len(frames) >= max_frames:
                break
    finally:
        env.close()
    return frames, fps


def write_video(frames: list[np.ndarray], path: str | Path, fps: int) -> Path:
    """Write frames to a GIF (Pillow) or an MP4 (ffmpeg), chosen by the file suffix."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out {path.name!r}: the file must end in .gif or .mp4")
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() == ".gif":
        imageio.mimwrite(tmp, frames, format="GIF", duration=1000.0 / fps, loop=0)
    else:
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
    os.replace(tmp, path)
    return path


def has_display() -> bool:
    if os.environ.get("SDL_VIDEODRIVER", "") in ("dummy", "offscreen"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def play_window(agent, env_spec, episodes: int = 1, seed: int = 0) -> int:
    """Play episodes in a live pygame window at the env's ``render_fps``; returns frames shown."""
    if not has_display():
        raise NoDisplayError("no display to open a window on (DISPLAY is not set); "
                             "write a file instead with --out FILE.gif or --out FILE.mp4")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    frames, fps = record_episode(agent, env_spec, max_frames=10**9, seed=seed,
                                 episodes=episodes)
    pygame.init()
    try:
        h, w = frames[0].shape[:2]
        screen = pygame.display.set_mode((w, h))
        pygame.display.set_caption(f"lab: {env_spec.id}")
        clock = pygame.time.Clock()
        for shown, frame in enumerate(frames, 1):
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    return shown
            pygame.surfarray.blit_array(screen, np.transpose(frame, (1, 0, 2)))
            pygame.display.flip()
            clock.tick(fps)
        return len(frames)
    finally:
        pygame.quit()
