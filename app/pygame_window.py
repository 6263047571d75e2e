"""`deltaplay play`: play inside a world model in a pygame window.

The window only translates keys into :class:`~app.engine.PlaySession` calls and draws what the
session returns. :class:`PlayWindow` holds the loop's state and exposes ``handle_event(event)``,
``update()`` and ``render()``, so tests drive it with real pygame events under the SDL dummy driver.

Stepping: in human modes the dream advances one step per key press (a turn-based feel that keeps
a CPU-bound dream responsive; ``e`` steps with no key = noop). With the agent in control (and in
replay) it steps continuously at ``--fps``; ``.`` pauses, ``e`` single-steps while paused.

What the Δ-tokens carry (:mod:`app.window_futures`): ``b`` opens a grid of 8 sampled next steps for the last
action (digits continue the dream from one), ``v`` the token inspector (swap a token of the current frame and
see the pixels it moves). While one is open it takes every key, Esc included (it closes it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import app  # noqa: F401  (no-telemetry environment)
from model.config import IMAGE_SIZE

MODES = ("dream", "real", "agent-dream", "agent-real", "replay")
HEADER_LINES = 3
LINE_PX = 20
LABEL_PX = 20
GAP_PX = 8
BG = (18, 18, 22)
FG = (230, 230, 230)
DIM = (150, 150, 160)
ACCENT = (250, 190, 60)
REC = (235, 60, 60)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder or run folder (default: the bundled checkpoints/crafter)")
    p.add_argument("--mode", default="dream", choices=MODES,
                   help="dream: you play the dream (default); real: you play the real env, the dream "
                        "follows; agent-dream / agent-real: the trained agent plays; replay: the dream "
                        "replays stored episodes of a run next to the recording")
    p.add_argument("--scale", type=int, default=6, help="pixels per frame pixel (nearest-neighbour)")
    p.add_argument("--fps", type=float, default=10.0, help="steps per second when the agent or a replay plays")
    p.add_argument("--seed", type=int, default=None, help="real env seed of the first episode")
    p.add_argument("--no-shadow", action="store_true", help="do not step a real env beside the dream")
    p.add_argument("--horizon", type=int, default=None, help="dream steps before the memory is re-primed")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the dream")
    p.add_argument("--no-i-tokens", action="store_true", help="start with the world model without I-tokens")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0 = auto: 1 on CPU, where a batch-1 dream gains nothing from more)")
    p.add_argument("--out-dir", default="gifs",
                   help="where `g` writes GIFs (default: ./gifs, in the current folder)")
    p.add_argument("--run", default=None, help="replay: run folder whose store/ holds the episodes "
                                               "(default: the checkpoint's run folder)")
    p.add_argument("--episode", type=int, default=0, help="replay: first stored episode to show")
    p.add_argument("--start", type=int, default=0, help="replay: frame of the episode to start from")
    p.add_argument("--max-steps", type=int, default=0, help="quit after this many steps (0 = never)")
    p.add_argument("--screenshot", default=None, help="save the window as PNG when quitting")
    p.add_argument("--verbose", action="store_true", help="print one line per step")


def run(args: argparse.Namespace) -> int:
    from app.cli import UserError
    from app.engine import CheckpointMissing, ModelBundle, PlaySession, set_play_threads
    from model.checkpoint import CheckpointError

    if args.scale < 1 or args.fps <= 0:
        raise UserError("--scale must be >= 1 and --fps > 0")
    try:
        bundle = ModelBundle.load(args.checkpoint, device=args.device)
    except (CheckpointMissing, CheckpointError, ValueError) as e:
        raise UserError(str(e)) from None
    set_play_threads(args.threads, bundle.device)
    shadow = not args.no_shadow or args.mode in ("real", "agent-real")
    session = PlaySession(bundle, shadow=shadow, seed=args.seed, temperature=args.temperature,
                          horizon=args.horizon, i_tokens=False if args.no_i_tokens else None)
    episodes = None
    if args.mode == "replay":
        episodes = load_episodes(Path(args.run) / "store" if args.run else bundle.store_dir)
    window = PlayWindow(session, mode=args.mode, scale=args.scale, fps=args.fps, out_dir=Path(args.out_dir),
                        episodes=episodes, episode=args.episode, start=args.start, verbose=args.verbose,
                        seed=args.seed)
    print(window.keymap_text())
    sys.stdout.flush()
    try:
        window.loop(max_steps=args.max_steps)
        if args.screenshot:
            window.save_screenshot(args.screenshot)
    finally:
        window.close()
    return 0


def load_episodes(store_dir: Path | None) -> "StoredEpisodes":
    from app.cli import UserError

    if store_dir is None or not Path(store_dir).is_dir():
        raise UserError("replay needs stored episodes: pass --run RUN_FOLDER (with a store/ folder) or a "
                        "checkpoint inside a run folder")
    from model.data.store import EpisodeStore

    episodes = StoredEpisodes(EpisodeStore(Path(store_dir)))
    if not len(episodes):
        raise UserError(f"{store_dir}: no stored episodes to replay")
    return episodes


class StoredEpisodes:
    """A store's episodes as a sequence, loaded one at a time (a Crafter run holds gigabytes)."""

    def __init__(self, store) -> None:
        self.store, self.ids = store, store.ids()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.store.get(self.ids[i])


def key_name(key: int) -> str:
    """pygame key code -> the front-end neutral names of model/data/envs/keymaps.py."""
    import pygame

    name = pygame.key.name(key)
    return {"return": "enter", "page up": "pageup", "page down": "pagedown"}.get(name, name)


def window_futures():
    """app.window_futures, imported on first use (it imports this module's palette)."""
    from app import window_futures

    return window_futures


class PlayWindow:
    """The window's state machine; ``loop()`` is only event pump + ``update()`` + ``render()``."""

    def __init__(self, session, mode: str = "dream", scale: int = 6, fps: float = 10.0,
                 out_dir: Path = Path("gifs"), episodes: list[Any] | None = None, episode: int = 0,
                 start: int = 0, verbose: bool = False, seed: int | None = None):
        import pygame

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.session, self.mode, self.scale, self.fps = session, mode, int(scale), float(fps)
        self.out_dir, self.verbose = Path(out_dir), verbose
        self.episodes, self.episode_index, self.start = episodes, episode, start
        self.paused = False
        self.show_help = False
        self.running = True
        self.steps_taken = 0
        self.last_gif: Path | None = None
        self.message = ""
        self._next_step_at = 0.0
        self.grid = None  # window_futures.FuturesGrid while the branching futures are shown
        self.inspector = None  # window_futures.TokenInspector while the token inspector is shown
        self.key_action: int | None = None  # the action of the last env key pressed
        # Control keys; the env's keymap wins for arrows (Crafter moves with them), so the horizon
        # also lives on PageUp/PageDown and [ ].
        km = session.keymap
        self.horizon_up = {"pageup", "]"} | ({"up"} if "up" not in km else set())
        self.horizon_down = {"pagedown", "["} | ({"down"} if "down" not in km else set())
        if mode in ("real", "agent-real") and not session.shadow:
            session.set_shadow(True)  # these modes show (and the agent may see) the real env
        pygame.init()
        pygame.display.set_caption("Δ-IRIS Playground")
        self.font = pygame.font.Font(None, 22)
        self.small = pygame.font.Font(None, 19)
        size = IMAGE_SIZE * self.scale
        self.panel_px = size
        w = max(2 * size + 3 * GAP_PX if self._two_panels_possible() else size + 2 * GAP_PX, 560)
        h = HEADER_LINES * LINE_PX + 2 * GAP_PX + size + LABEL_PX + GAP_PX
        self.base_size = (w, h)  # an overlay may grow the window while it is open
        self.screen = pygame.display.set_mode((w, h))
        self.info = None
        if mode == "replay":
            if not episodes:
                raise ValueError("replay mode needs stored episodes")
            self.info = session.reset_from_episode(episodes[episode % len(episodes)], start)
        else:
            self.info = session.reset(seed=seed)
            if mode in ("agent-dream", "agent-real"):
                if mode == "agent-real":
                    session.set_agent_view("real")
                self.info = self._safe(lambda: session.set_controller("agent")) or self.info
        self.message = self.info.message
        self.render()

    # -------------------------------------------------------------------------- events
    def handle_event(self, event) -> bool:
        """Apply one pygame event; returns False once the window should close."""
        import pygame

        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            self.handle_key(key_name(event.key))
        return self.running

    def handle_key(self, name: str) -> None:
        s = self.session
        if self.overlay is not None and name != "h":
            window_futures().overlay_key(self, name)
        elif name == "escape":
            self.running = False
        elif name == "h":
            self.show_help = not self.show_help
        elif name == "enter":
            self._reset()
        elif name == ".":
            self.paused = not self.paused
            self._say("paused" if self.paused else "running")
        elif name == "e":
            self._step(None)
        elif name == "m":
            new = "human" if s.controller != "human" else "agent"
            if new == "agent" and self.mode in ("real", "agent-real"):
                s.set_agent_view("real")
            self._safe(lambda: s.set_controller(new))
        elif name == "i":
            self._safe(lambda: s.set_i_tokens(not s.i_tokens))
        elif name == "g":
            self._toggle_recording()
        elif name == "b":
            window_futures().open_grid(self)
        elif name == "v":
            window_futures().open_inspector(self)
        elif name in self.horizon_up or name in self.horizon_down:
            h = s.set_horizon(s.horizon + (1 if name in self.horizon_up else -1))
            self._say(f"horizon {h}")
        elif name in ("=", "-"):
            t = s.set_temperature(round(max(0.1, s.temperature + (0.1 if name == "=" else -0.1)), 2))
            self._say(f"temperature {t:.1f}")
        elif name in s.keymap and s.controller != "agent":
            self.key_action = s.keymap[name]
            self._step(s.keymap[name])

    def update(self, now: float | None = None) -> None:
        """Step on the clock when the agent (or a replay) is in control and not paused."""
        if self.paused or self.session.controller == "human" or self.overlay is not None:
            return
        now = time.perf_counter() if now is None else now
        if now >= self._next_step_at:
            self._next_step_at = now + 1.0 / self.fps
            ended = self.info is not None and self.info.real_done
            if ended and (self.mode == "agent-real" or self.session.controller == "replay"):
                self._reset()
            else:
                self._step(None)

    # --------------------------------------------------------------------------- actions
    def _step(self, action: int | None) -> None:
        info = self._safe(lambda: self.session.step(action))
        if info is None:
            return
        self.info = info
        self.steps_taken += 1
        if info.message:
            self._say(info.message)
        if self.verbose:
            print(self.status_line(), flush=True)

    def _reset(self) -> None:
        s = self.session
        if self.mode == "replay" and self.episodes:
            self.episode_index = (self.episode_index + 1) % len(self.episodes)
            info = self._safe(lambda: s.reset_from_episode(self.episodes[self.episode_index], 0))
        else:
            info = self._safe(s.reset)  # an agent in control is burned in again by the session
        if info is not None:
            self.info = info
            self._say(info.message)

    def _toggle_recording(self) -> None:
        s = self.session
        if not s.recording:
            s.start_recording()
            self._say("recording GIF (g again to stop and write it)")
            return
        n = s.stop_recording()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"dream_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{self.steps_taken}.gif"
        self.last_gif = s.export_gif(path, fps=self.fps, scale=min(self.scale, 4), side_by_side=True)
        self._say(f"wrote {n} frames to {self.last_gif}")
        print(f"GIF written: {self.last_gif}", flush=True)

    # ---------------------------------------------------------------------------- overlays
    @property
    def overlay(self):
        """The open futures grid or token inspector (they take every key), or None."""
        return self.grid if self.grid is not None else self.inspector

    def fit_window(self, need: tuple[int, int]) -> None:
        """Grow the window to what an overlay needs, or back to the base size when it closes."""
        import pygame

        size = (max(self.base_size[0], need[0]), max(self.base_size[1], need[1]))
        if size != self.screen.get_size():
            self.screen = pygame.display.set_mode(size)

    def _safe(self, fn):
        """Run a session call; a refused switch (no such variant, no agent) becomes a message."""
        from app.engine import VariantUnavailable

        try:
            out = fn()
        except (VariantUnavailable, ValueError) as e:
            self._say(str(e))
            print(f"note: {e}", flush=True)
            return None
        if out is not None and hasattr(out, "message"):
            self.info = out
            if out.message:
                self._say(out.message)
        return out

    def _say(self, text: str) -> None:
        self.message = text

    # ---------------------------------------------------------------------------- drawing
    def _two_panels_possible(self) -> bool:
        return self.session.shadow or self.mode == "replay"

    def panels(self) -> list[tuple[str, Any]]:
        """(label, uint8 frame) left to right: the mode's main view first."""
        info, dream = self.info, self.dream_panel()
        if info.real_frame is None:
            return [dream]
        real = ("recorded episode" if self.mode == "replay" else "real env", info.real_frame)
        return [real, dream] if self.mode in ("real", "agent-real") else [dream, real]

    def dream_panel(self) -> tuple[str, Any]:
        return f"dream ({'I-tokens' if self.session.i_tokens else 'no I-tokens'})", self.info.dream_frame

    def panel_rect(self, index: int):
        import pygame

        x = GAP_PX + index * (self.panel_px + GAP_PX)
        y = HEADER_LINES * LINE_PX + GAP_PX
        return pygame.Rect(x, y, self.panel_px, self.panel_px)

    def status_line(self) -> str:
        i = self.info
        err = f"  err {i.pixel_error:5.1f}" if i.pixel_error is not None else ""
        return (f"step {i.step:4d}  {i.action_name or '-':<18} reward {i.reward:+.2f}  return {i.return_:+.2f}"
                f"  end {i.end_prob:.2f}{err}  {i.fps:4.1f} fps")

    def header_lines(self) -> list[str]:
        s, i = self.session, self.info
        state = "PAUSED  " if self.paused else ""
        top = (f"{state}{self.mode}  |  {s.controller}  |  I-tokens {'on' if s.i_tokens else 'off'}  |  "
               f"horizon {s.horizon} ({i.steps_since_flush})  |  T {s.temperature:.1f}  |  h: help")
        third = self.message
        if self.overlay is not None:
            third = self.overlay.title + (f"  |  {third}" if third else "")
        elif i.achievements:
            third = f"achievements: {', '.join(sorted(i.achievements))}" + (f"  |  {third}" if third else "")
        return [top, self.status_line(), third]

    def render(self) -> None:
        import pygame

        scr = self.screen
        scr.fill(BG)
        for n, line in enumerate(self.header_lines()):
            color = ACCENT if n == 2 else FG
            scr.blit(self.font.render(line, True, color), (GAP_PX, 4 + n * LINE_PX))
        if self.session.recording:
            pygame.draw.circle(scr, REC, (scr.get_width() - 14, 12), 7)
        if self.grid is not None:
            self.grid.draw(self, self.overlay_area())
        else:
            self._draw_panels([self.dream_panel()] if self.inspector is not None else self.panels())
        if self.inspector is not None:
            self.inspector.draw(self)
        if self.show_help:
            self._draw_help()
        pygame.display.flip()

    def _draw_panels(self, panels: list[tuple[str, Any]]) -> None:
        import pygame

        for k, (label, frame) in enumerate(panels):
            rect = self.panel_rect(k)
            surf = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
            self.screen.blit(pygame.transform.scale(surf, rect.size), rect.topleft)
            self.screen.blit(self.small.render(label, True, DIM), (rect.x, rect.bottom + 4))

    def overlay_area(self):
        """Everything below the header: the futures grid's room."""
        import pygame

        top = HEADER_LINES * LINE_PX + GAP_PX
        w, h = self.screen.get_size()
        return pygame.Rect(GAP_PX, top, w - 2 * GAP_PX, h - top - GAP_PX)

    def _draw_help(self) -> None:
        import pygame

        lines = self.help_lines()
        w, h = self.screen.get_size()
        overlay = pygame.Surface((w, h), pygame.SRCALPHA)
        overlay.fill((0, 0, 0, 230))
        self.screen.blit(overlay, (0, 0))
        for n, line in enumerate(lines):
            self.screen.blit(self.small.render(line, True, FG), (2 * GAP_PX, 2 * GAP_PX + n * 17))

    def help_lines(self) -> list[str]:
        by_action: dict[int, list[str]] = {}
        for k, a in self.session.keymap.items():
            by_action.setdefault(a, []).append(k)
        names = self.session.action_names
        acts = [f"{'/'.join(keys)}: {names[a]}" for a, keys in sorted(by_action.items())]
        rows = ["actions (one step per press; no key = noop, e):"]
        for j in range(0, len(acts), 3):
            rows.append("   " + "    ".join(acts[j:j + 3]))
        rows += [
            "",
            "Enter: reset (replay: next episode)    .: pause    e: single step (noop for a human)",
            "m: human <-> agent    i: I-tokens on/off    g: start/stop GIF recording",
            "b: 8 futures of the last action (1-8: go on from one; an action key: its futures)",
            "v: token inspector (up/down: position; left/right, Enter, 1-5: other token; r: re-sample)",
            "    while open, the futures and the inspector take every key; b, v or Esc closes them",
            f"{'/'.join(sorted(self.horizon_up))}: horizon +1    {'/'.join(sorted(self.horizon_down))}: horizon -1"
            "    = / -: temperature",
            "h: this help    Esc: quit",
        ]
        return rows

    def keymap_text(self) -> str:
        return "Δ-IRIS Playground: " + self.session.env_name + "\n" + "\n".join(self.help_lines())

    def save_screenshot(self, path: str | Path) -> Path:
        import pygame

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(self.screen, str(path))
        return path

    # ------------------------------------------------------------------------------ loop
    def loop(self, max_steps: int = 0) -> None:
        import pygame

        clock = pygame.time.Clock()
        while self.running:
            for event in pygame.event.get():
                self.handle_event(event)
            self.update()
            if max_steps and self.steps_taken >= max_steps:
                self.running = False
            self.render()
            clock.tick(60)

    def close(self) -> None:
        import pygame

        self.session.close()
        pygame.display.quit()
