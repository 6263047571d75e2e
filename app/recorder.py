"""Record rollout frames and write them as looping GIFs.

Side-by-side panels get a header strip with the columns' names. Every GIF frame gets a thin footer: the step number in a 3x5 pixel font and a progress bar. It tells the
viewer where they are in the rollout, and it keeps consecutive frames distinct, so Pillow's GIF writer
(which merges identical consecutive frames into one) keeps one GIF frame per recorded step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np

# 3x5 bitmaps for the digits, one string per row ("#" = lit).
_DIGITS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
}
_GLYPHS = {d: np.array([[c == "#" for c in row] for row in rows]) for d, rows in _DIGITS.items()}
SEPARATOR_PX = 2  # gap between side-by-side panels
HEADER_PX = 16  # the strip of column names above side-by-side panels
LABELS = {"real": "real env", "no_i_tokens": "no I-tokens", "with_i": "I-tokens", "without_i": "no I-tokens"}
_BG = np.array([24, 24, 24], np.uint8)
_FG = np.array([235, 235, 235], np.uint8)
_BAR = np.array([90, 170, 250], np.uint8)


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling: world-model pixels stay crisp, as in the pygame window."""
    if scale == 1:
        return frame
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


def hstack(panels: list[np.ndarray]) -> np.ndarray:
    """Panels (H, W, 3) side by side with a dark separator; heights must match."""
    out: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if i:
            out.append(np.broadcast_to(_BG, (p.shape[0], SEPARATOR_PX, 3)))
        out.append(p)
    return np.concatenate(out, axis=1)


def draw_number(img: np.ndarray, number: int, x: int, y: int, size: int = 1,
                color: np.ndarray = _FG) -> int:
    """Draw ``number`` (digits ``size`` times 3x5 pixels) at top-left (x, y) in place; returns the x
    after the last digit. Digits falling outside ``img`` are clipped."""
    for ch in str(int(number)):
        g = _GLYPHS[ch].repeat(size, 0).repeat(size, 1)
        h, w = g.shape
        region = img[y:y + h, x:x + w]
        region[g[: region.shape[0], : region.shape[1]]] = color
        x += w + size
    return x


def add_footer(frame: np.ndarray, step: int, index: int, total: int) -> np.ndarray:
    """Append a footer: ``step`` as digits on the left, a bar filled to (index + 1) / total."""
    h, w, _ = frame.shape
    size = 2 if w >= 200 else 1
    footer = np.empty((5 * size + 4, w, 3), np.uint8)
    footer[:] = _BG
    x = draw_number(footer, step, 2, 2, size)
    bar_x0, bar_x1 = x + 2 * size, w - 2
    y0, y1 = 2 + size, 2 + 4 * size
    if bar_x1 > bar_x0:
        filled = bar_x0 + round((bar_x1 - bar_x0) * (index + 1) / max(total, 1))
        footer[y0:y1, bar_x0:bar_x1] = (60, 60, 60)
        footer[y0:y1, bar_x0:filled] = _BAR
    return np.concatenate([frame, footer], axis=0)


def column_header(names: list[str], width: int) -> np.ndarray:
    """A strip naming each of the side-by-side panels (``width`` pixels each), so a GIF says which
    column is the dream and which the real env."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12 if width >= 160 else 9)
    img = Image.new("RGB", (len(names) * width + (len(names) - 1) * SEPARATOR_PX, HEADER_PX), tuple(_BG))
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        x0 = i * (width + SEPARATOR_PX)
        label = LABELS.get(name, name.replace("_", " "))
        while draw.textlength(label, font=font) > width - 4 and len(label) > 1:
            label = label[:-1]
        x = x0 + (width - draw.textlength(label, font=font)) / 2
        draw.text((x, HEADER_PX / 2), label, fill=tuple(_FG), font=font, anchor="lm")
    return np.asarray(img, np.uint8)


def write_gif(path: str | Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write uint8 (H, W, 3) frames as a looping GIF. imageio's ``duration`` is in milliseconds."""
    if not frames:
        raise ValueError("no frames to write: record at least one step first")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    duration_ms = round(1000.0 / fps)
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=duration_ms, loop=0)
    return path


@dataclass
class FrameRecorder:
    """Collects (step, columns); columns are named uint8 frames, e.g. dream and real.

    Two modes. By default it records between :meth:`start` and :meth:`stop` (the window's ``g``).
    With ``keep`` > 0 it always keeps the last ``keep`` steps, so there is always something to export;
    :meth:`start` then marks where a clip begins and the export writes from there. A step number that
    goes back (a reset) starts a new buffer.

    Column names stay in insertion order; a column missing at some step (the real env ended) is drawn
    black so that every GIF frame has the same size.
    """

    recording: bool = False
    steps: list[int] = field(default_factory=list)
    columns: list[dict[str, np.ndarray]] = field(default_factory=list)
    keep: int = 0  # > 0: a rolling buffer of the last ``keep`` steps
    clip_from: int | None = None  # rolling mode: the step the clip starts at (None: no clip)

    def start(self) -> None:
        """Record from now: clears the recording, or in rolling mode marks the clip start."""
        self.recording = True
        if self.keep > 0:
            self.clip_from = self.steps[-1] if self.steps else 0
            return
        self.steps.clear()
        self.columns.clear()

    def stop(self) -> int:
        self.recording = False
        self.clip_from = None
        return len(self.steps)

    def set_keep(self, keep: int) -> None:
        """Switch to (``keep`` > 0) or out of rolling mode; the oldest steps beyond ``keep`` go."""
        self.keep = max(0, int(keep))
        self._trim()

    def add(self, step: int, **frames: np.ndarray | None) -> None:
        """Record a step; the same step again (a token edit re-decoded its frame) replaces it."""
        if not (self.recording or self.keep > 0):
            return
        cols = {k: np.asarray(v, np.uint8).copy() for k, v in frames.items() if v is not None}
        step = int(step)
        if self.steps and self.steps[-1] == step and step > 0:
            self.columns[-1] = cols
            return
        if self.keep > 0 and self.steps and step <= self.steps[-1]:  # a reset: a new episode, a new buffer
            self.steps.clear()
            self.columns.clear()
            self.clip_from, self.recording = None, False
        self.steps.append(step)
        self.columns.append(cols)
        self._trim()

    def _trim(self) -> None:
        if self.keep > 0 and len(self.steps) > self.keep:
            del self.steps[:len(self.steps) - self.keep]
            del self.columns[:len(self.columns) - self.keep]

    def span(self) -> tuple[list[int], list[dict[str, np.ndarray]]]:
        """The steps an export writes: the clip (rolling mode, once started), else all kept steps."""
        if self.keep > 0 and self.clip_from is not None:
            i = next((k for k, s in enumerate(self.steps) if s >= self.clip_from), len(self.steps))
            return self.steps[i:], self.columns[i:]
        return self.steps, self.columns

    def __len__(self) -> int:
        """How many steps an export writes."""
        return len(self.span()[0])

    def compose(self, names: list[str] | None = None, scale: int = 4) -> list[np.ndarray]:
        """One composed image per exported step: the named columns side by side under a header naming
        them (when more than one), upscaled, with the footer."""
        steps, columns = self.span()
        if not steps:
            raise ValueError("nothing recorded: start recording and take at least one step")
        if names is None:
            names = []
            for cols in columns:
                names += [k for k in cols if k not in names]
        shape = next(iter(columns[0].values())).shape
        blank = np.zeros(shape, np.uint8)
        header = column_header(names, shape[1] * scale) if len(names) > 1 else None
        out = []
        for i, (step, cols) in enumerate(zip(steps, columns)):
            panels = [upscale(cols.get(n, blank), scale) for n in names]
            body = hstack(panels) if header is None else np.concatenate([header, hstack(panels)], axis=0)
            out.append(add_footer(body, step, i, len(steps)))
        return out

    def write_gif(self, path: str | Path, names: list[str] | None = None, fps: float = 10.0,
                  scale: int = 4) -> Path:
        return write_gif(path, self.compose(names, scale), fps)
