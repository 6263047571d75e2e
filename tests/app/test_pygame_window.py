"""The pygame window driven by real pygame events (SDL dummy driver), and once under Xvfb + xdotool."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pygame
import pytest

from app.engine import ModelBundle, PlaySession
from app.pygame_window import BG, GAP_PX, HEADER_LINES, LABEL_PX, LINE_PX, PlayWindow, StoredEpisodes

from helpers import REPO


@pytest.fixture
def window(bundle, tmp_path):
    w = PlayWindow(PlaySession(bundle, shadow=True, seed=0), mode="dream", scale=2, fps=10,
                   out_dir=tmp_path / "gifs", seed=1)
    yield w
    w.close()


def press(window: PlayWindow, *keys: int) -> None:
    """Post real KEYDOWN events, pump the queue through the window, render."""
    pygame.event.clear()
    for k in keys:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=k, mod=0, unicode="", scancode=0))
    for event in pygame.event.get():
        window.handle_event(event)
    window.render()


def panel_pixels(window: PlayWindow, index: int) -> np.ndarray:
    rect = window.panel_rect(index)
    return pygame.surfarray.array3d(window.screen)[rect.left:rect.right, rect.top:rect.bottom].copy()


def test_key_press_steps_the_dream_and_changes_the_screen(window, tmp_path):
    before_dream, before_real = panel_pixels(window, 0), panel_pixels(window, 1)
    # The frames are drawn with crisp nearest scaling: each frame pixel is a 2x2 block.
    dream = window.info.dream_frame
    np.testing.assert_array_equal(before_dream[::2, ::2], dream.swapaxes(0, 1))
    np.testing.assert_array_equal(before_dream[1::2, 1::2], dream.swapaxes(0, 1))
    press(window, pygame.K_w)
    assert window.info.step == 1 and window.info.action_name == "up"
    after = panel_pixels(window, 0)
    assert not np.array_equal(before_dream, after)
    np.testing.assert_array_equal(after[::2, ::2], window.info.dream_frame.swapaxes(0, 1))
    np.testing.assert_array_equal(panel_pixels(window, 1)[::2, ::2], window.info.real_frame.swapaxes(0, 1))
    press(window, pygame.K_d, pygame.K_s)
    assert window.info.step == 3 and window.info.action_name == "down"
    window.save_screenshot(tmp_path / "shot.png")
    assert iio.imread(tmp_path / "shot.png").shape[:2] == window.screen.get_size()[::-1]
    press(window, pygame.K_x)  # unmapped: nothing happens
    assert window.info.step == 3
    press(window, pygame.K_RETURN)
    assert window.info.step == 0


def test_i_switches_the_world_model(window, bundle):
    press(window, pygame.K_w)
    header = pygame.surfarray.array3d(window.screen)[:, :20].copy()
    assert window.session.world_model is bundle.world_models[True]
    press(window, pygame.K_i)
    assert window.session.world_model is bundle.world_models[False]
    assert window.session._dream.world_model is bundle.world_models[False]
    assert "I-tokens off" in window.header_lines()[0]
    assert not np.array_equal(header, pygame.surfarray.array3d(window.screen)[:, :20])
    press(window, pygame.K_w)
    assert window.info.step == 2 and window.info.i_tokens is False
    press(window, pygame.K_i)
    assert window.session.world_model is bundle.world_models[True]


def test_g_records_a_gif_with_one_frame_per_step(window, capsys):
    press(window, pygame.K_g)
    assert window.session.recording
    press(window, pygame.K_w, pygame.K_a, pygame.K_s, pygame.K_d)
    press(window, pygame.K_g)
    assert not window.session.recording
    path = window.last_gif
    assert path is not None and path.exists()
    assert str(path) in capsys.readouterr().out
    n, h, w, _ = iio.improps(path, index=None).shape
    assert n == 5  # the frame on screen when recording started + 4 steps
    assert w == 2 * 64 * 2 + 2  # dream | real at scale 2
    assert [iio.immeta(path, index=k)["duration"] for k in range(n)] == [100] * n  # 10 fps


def test_agent_mode_steps_on_the_clock_and_pauses(bundle, tmp_path):
    w = PlayWindow(PlaySession(bundle, shadow=False, seed=0), mode="agent-dream", scale=1, fps=5,
                   out_dir=tmp_path, seed=2)
    try:
        assert w.session.controller == "agent"
        w.update(now=100.0)
        w.update(now=100.1)  # too early at 5 fps
        assert w.info.step == 1
        w.update(now=100.3)
        assert w.info.step == 2
        press(w, pygame.K_PERIOD)
        assert w.paused
        w.update(now=200.0)
        assert w.info.step == 2
        press(w, pygame.K_e)  # single step while paused
        assert w.info.step == 3
        press(w, pygame.K_m)  # back to human: no more clock steps
        assert w.session.controller == "human"
        press(w, pygame.K_PERIOD)
        w.update(now=300.0)
        assert w.info.step == 3
        press(w, pygame.K_RIGHTBRACKET)
        assert w.session.horizon == 5
        press(w, pygame.K_h)
        assert w.show_help
        press(w, pygame.K_ESCAPE)
        assert not w.running
    finally:
        w.close()


def test_replay_mode_shows_the_recording(bundle, run_dir, tmp_path):
    from model.data.store import EpisodeStore

    episodes = StoredEpisodes(EpisodeStore(run_dir / "store"))
    w = PlayWindow(PlaySession(bundle, shadow=False, seed=0), mode="replay", scale=1, fps=10,
                   out_dir=tmp_path, episodes=episodes, episode=0, start=0)
    try:
        ep = episodes[0]
        w.update(now=1.0)
        w.render()
        assert w.info.controller == "replay" and w.info.action == int(ep.actions[0])
        np.testing.assert_array_equal(panel_pixels(w, 1), ep.frames[1].swapaxes(0, 1))
        assert [label for label, _ in w.panels()] == ["dream (I-tokens)", "recorded episode"]
        press(w, pygame.K_RETURN)  # next stored episode
        assert w.info.step == 0 and w.episode_index == 1 % len(episodes)
    finally:
        w.close()


def _have_x_tools() -> str | None:
    for tool in ("xvfb-run", "xdotool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y xvfb xdotool)"
    return None


@pytest.mark.skipif(_have_x_tools() is not None, reason=str(_have_x_tools()))
@pytest.mark.slow
def test_real_window_under_xvfb_with_xdotool(run_dir, tmp_path):
    shot = tmp_path / "xshot.png"
    play = (f"{sys.executable} -m app play --checkpoint {run_dir} --scale 3 --seed 4 --verbose "
            f"--out-dir {tmp_path} --screenshot {shot}")
    script = f"""
{play} > {tmp_path}/out.txt 2>&1 &
PID=$!
WID=$(timeout 60 xdotool search --sync --pid $PID | head -1)
xdotool windowfocus --sync $WID
xdotool key --delay 150 w d s g a g Escape
wait $PID
"""
    env = {**os.environ, "SDL_VIDEODRIVER": "x11"}
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 800x600x24", "bash", "-c", script],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    out = (tmp_path / "out.txt").read_text()
    assert proc.returncode == 0, proc.stderr + out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[2] for line in steps] == ["up", "right", "down", "left"], out
    assert "GIF written:" in out
    gif = Path(out.split("GIF written:")[1].split()[0])
    assert iio.improps(gif, index=None).shape[0] == 2  # frame at `g` + one step
    img = iio.imread(shot)
    panel = 64 * 3
    assert img.shape[0] == HEADER_LINES * LINE_PX + 2 * GAP_PX + panel + LABEL_PX + GAP_PX
    assert img.shape[1] >= 2 * panel  # dream next to the shadow env
    assert img.std() > 5  # something was drawn


def test_real_modes_put_the_real_env_first_and_agent_sees_it(bundle, tmp_path):
    w = PlayWindow(PlaySession(bundle, shadow=False, seed=0), mode="agent-real", scale=1, fps=10,
                   out_dir=tmp_path, seed=3)
    try:
        assert w.session.shadow and w.info.real_frame is not None
        assert w.session.controller == "agent" and w.session.agent_view == "real"
        assert [label for label, _ in w.panels()] == ["real env", "dream (I-tokens)"]
        w.update(now=1.0)
        w.render()
        assert w.info.step == 1
        np.testing.assert_array_equal(panel_pixels(w, 0), w.info.real_frame.swapaxes(0, 1))
    finally:
        w.close()


def test_missing_variant_is_a_message_not_a_crash(bundle, tmp_path):
    only = ModelBundle(cfg=bundle.cfg, device=bundle.device, tokenizer=bundle.tokenizer,
                       world_models={True: bundle.world_models[True]}, actor_critic=None)
    w = PlayWindow(PlaySession(only, shadow=False, seed=0), mode="dream", scale=1, out_dir=tmp_path)
    try:
        press(w, pygame.K_i)
        assert w.session.i_tokens is True and "without I-tokens" in w.message
        press(w, pygame.K_m)
        assert w.session.controller == "human" and "no trained agent" in w.message
        press(w, pygame.K_w)
        assert w.info.step == 1
    finally:
        w.close()


def screen_pixels(window: PlayWindow, rect) -> np.ndarray:
    return pygame.surfarray.array3d(window.screen)[rect.left:rect.right, rect.top:rect.bottom].copy()


def test_b_shows_eight_futures_and_a_digit_continues_from_one(window):
    press(window, pygame.K_b)  # right after a reset: no action yet, so the futures of noop
    assert window.grid.action == 0 and "futures of 'noop'" in window.header_lines()[2]
    press(window, pygame.K_b)
    assert window.grid is None
    press(window, pygame.K_w)
    before = pygame.surfarray.array3d(window.screen).copy()
    press(window, pygame.K_b)
    grid = window.grid
    assert grid is not None and len(grid.branches) == 8 and len(grid.rects) == 8
    assert grid.action == 1 and "8 futures of 'up'" in window.header_lines()[2]
    assert window.screen.get_size() >= window.base_size
    for rect in grid.rects:
        assert rect.w >= 64 and window.screen.get_rect().contains(rect)
        assert (screen_pixels(window, rect) != BG).any()
    chosen = grid.branches[2]
    press(window, pygame.K_3)
    assert window.grid is None and window.screen.get_size() == window.base_size
    np.testing.assert_array_equal(window.session.info.dream_frame, chosen.frame)
    assert window.info is window.session.info and window.info.step == 2 and window.info.action_name == "up"
    assert "continued from branch 3" in window.message
    after = panel_pixels(window, 0)
    np.testing.assert_array_equal(after[::2, ::2], chosen.frame.swapaxes(0, 1))
    assert not np.array_equal(before, pygame.surfarray.array3d(window.screen))


def test_the_grid_takes_every_key_and_digits_reach_the_env_when_it_is_closed(window):
    window.session.keymap["1"] = 2  # as in Crafter, where 1-6 craft: here "1" moves down
    press(window, pygame.K_1)
    assert window.info.step == 1 and window.info.action_name == "down"
    press(window, pygame.K_b)
    assert window.grid.action == 2
    press(window, pygame.K_9, pygame.K_e, pygame.K_RETURN, pygame.K_i)  # no 9th future; controls are captured
    assert window.grid is not None and window.info.step == 1 and window.session.i_tokens
    press(window, pygame.K_a)  # an action key: the futures of that action instead
    assert window.grid.action == 3 and "futures of 'left'" in window.header_lines()[2]
    press(window, pygame.K_ESCAPE)  # closes the grid, not the window
    assert window.grid is None and window.running and window.info.step == 1
    press(window, pygame.K_b, pygame.K_a, pygame.K_1)  # "1" picks the first future of 'left', no step down
    assert window.grid is None and window.info.step == 2 and window.info.action_name == "left"
    np.testing.assert_array_equal(window.info.dream_frame, window.session.info.dream_frame)
    press(window, pygame.K_1)  # closed again: the env's key
    assert window.info.step == 3 and window.info.action_name == "down"
    assert "b: 8 futures" in window.keymap_text() and "v: token inspector" in window.keymap_text()


def test_v_inspector_swaps_a_token_and_draws_its_heat_map(window):
    press(window, pygame.K_v)  # the frame after a reset is a real one: no tokens to show
    assert window.inspector is None and "take a step first" in window.message
    press(window, pygame.K_w, pygame.K_v)
    insp = window.inspector
    k = len(insp.view.slots)
    assert insp is not None and k == len(window.session.inspect().slots) and insp.heat is None
    press(window, pygame.K_DOWN)  # selects a position: arrows do not step while the inspector is open
    assert insp.position == 1 % k and window.info.step == 1
    frame, screen = window.info.dream_frame.copy(), panel_pixels(window, 0)
    slot = insp.view.slots[insp.position]
    press(window, pygame.K_RIGHT)
    assert insp.view.slots[insp.position].token == insp.neighbour(slot, 1) != slot.token
    assert window.info is window.session.info and "token 2 set to" in window.message
    assert not np.array_equal(window.info.dream_frame, frame)
    assert not np.array_equal(panel_pixels(window, 0), screen)
    np.testing.assert_array_equal(panel_pixels(window, 0)[::2, ::2], window.info.dream_frame.swapaxes(0, 1))
    heat = screen_pixels(window, insp.heat_rect)
    assert insp.heat_rect.size == (64, 64) and (heat != BG).any()
    np.testing.assert_array_equal(heat, insp.heat.swapaxes(0, 1))  # drawn 1:1 at scale 2
    best = insp.view.slots[insp.position].top[0][0]
    press(window, pygame.K_1)
    assert insp.view.slots[insp.position].token == best
    press(window, pygame.K_r)
    assert "token 2 re-sampled" in window.message and window.info.step == 1
    press(window, pygame.K_v)
    assert window.inspector is None and window.screen.get_size() == window.base_size
    np.testing.assert_array_equal(panel_pixels(window, 1)[::2, ::2], window.info.real_frame.swapaxes(0, 1))
    press(window, pygame.K_v, pygame.K_ESCAPE)
    assert window.inspector is None and window.running


def test_the_inspector_edits_the_dream_in_real_mode_too(bundle, tmp_path):
    w = PlayWindow(PlaySession(bundle, shadow=True, seed=0), mode="real", scale=1, out_dir=tmp_path, seed=5)
    try:
        assert w.panels()[0][0] == "real env"
        press(w, pygame.K_d, pygame.K_v, pygame.K_r)
        assert w.inspector is not None and "re-sampled" in w.message
        np.testing.assert_array_equal(panel_pixels(w, 0), w.session.info.dream_frame.swapaxes(0, 1))
        rect = w.inspector.heat_rect
        assert w.screen.get_rect().contains(rect) and rect.left >= w.panel_rect(1).left
    finally:
        w.close()
