import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from lab.render import NoDisplayError, play_window, record_episode, write_video
from lab.spec import EnvSpec


class AlwaysLeft:
    """Pushes the cart left every step: CartPole falls in about ten steps."""

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.zeros(len(obs), dtype=np.int64), state


def test_record_episode_gives_the_env_frames():
    frames, fps = record_episode(AlwaysLeft(), EnvSpec(id="CartPole-v1"), max_frames=500)
    assert fps == 50
    assert 5 < len(frames) < 40  # reset frame + one per step until the pole falls
    assert all(f.shape == (400, 600, 3) and f.dtype == np.uint8 for f in frames)


def test_max_frames_caps_the_recording():
    frames, _ = record_episode(AlwaysLeft(), EnvSpec(id="CartPole-v1"), max_frames=7,
                               episodes=5)
    assert len(frames) == 7


def test_gif_has_the_right_frame_size_and_count(tmp_path):
    frames, fps = record_episode(AlwaysLeft(), EnvSpec(id="CartPole-v1"), episodes=2)
    path = write_video(frames, tmp_path / "ep.gif", fps)
    back = imageio.mimread(path)
    # Pillow stores a run of identical frames once, with the durations summed: count the
    # distinct runs and check the total duration covers every frame at the env's fps.
    runs = 1 + sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:], strict=False))
    assert len(back) == runs
    assert back[0].shape[:2] == (400, 600)
    with Image.open(path) as gif:
        total_ms = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total_ms += gif.info["duration"]
    assert total_ms == pytest.approx(len(frames) * 1000 / fps, abs=len(frames))
    assert [p.name for p in tmp_path.iterdir()] == ["ep.gif"]


def test_mp4_is_written(tmp_path):
    frames, fps = record_episode(AlwaysLeft(), EnvSpec(id="CartPole-v1"))
    path = write_video(frames, tmp_path / "ep.mp4", fps)
    assert path.stat().st_size > 1000
    assert imageio.get_reader(path).count_frames() == len(frames)


def test_bad_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_video([np.zeros((4, 4, 3), np.uint8)], tmp_path / "ep.avi", 10)


def test_window_without_display_says_so(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    with pytest.raises(NoDisplayError, match="no display"):
        play_window(AlwaysLeft(), EnvSpec(id="CartPole-v1"))
