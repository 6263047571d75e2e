"""What the Δ-tokens carry, in the play window: branching futures (``b``) and the token inspector (``v``).

A Δ-token encodes only what the previous frame and the action leave open, so one dream state holds a
*distribution* of next frames. :class:`FuturesGrid` shows N of them side by side (digits continue the dream
from one); :class:`TokenInspector` lists the current frame's tokens with the world model's top-5 alternatives
and lets the player swap one, drawing a heat map of the pixels that token moved.

Both are overlays of :class:`app.pygame_window.PlayWindow`: while one is open it takes every key, so the
digits pick a branch or an alternative instead of reaching the env's keymap (Crafter crafts with 1-6), and
the dream does not step on the clock. Each overlay's ``handle_key`` returns whether it stays open.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.pygame_window import ACCENT, BG, DIM, FG, GAP_PX, HEADER_LINES, LINE_PX

GRID_COLS, GRID_ROWS = 4, 2
N_FUTURES = GRID_COLS * GRID_ROWS
TOPK = 5
FRAME_PX = 64  # a frame's own size: no overlay draws one smaller
CAPTION_PX = 18
ROW_PX = 17
MAX_ROWS = 8  # token rows shown at once; a longer frame (IRIS: 16 tokens) scrolls with the selection
TABLE_W = 450
COLS = (0, 34, 76, 120)  # x of: position, current token, its probability, the first alternative
ALT_W = 66
SELECTED = (48, 48, 72)
BOX = (70, 70, 80)


def blit_frame(screen, frame: np.ndarray, rect) -> None:
    """Draw a uint8 (H, W, 3) frame into ``rect`` with nearest scaling (crisp pixels)."""
    import pygame

    surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
    screen.blit(pygame.transform.scale(surf, rect.size), rect.topleft)


def text(window, line: str, pos: tuple[int, int], color=FG, big: bool = False) -> None:
    window.screen.blit((window.font if big else window.small).render(line, True, color), pos)


def percent(p: float) -> str:
    return "<1%" if p < 0.005 else f"{p * 100:.0f}%"


# ------------------------------------------------------------------------ window glue
def open_grid(window) -> None:
    """``b``: the futures of the last action taken, else of the last action key's, else of noop."""
    i = window.info
    action = i.action if i.action is not None else (window.key_action or 0)
    try:
        window.grid = FuturesGrid(window.session, action)
    except (ValueError, RuntimeError) as e:
        window.message = str(e)
        return
    window.fit_window(FuturesGrid.min_size(window))
    window.message = ""


def open_inspector(window) -> None:
    """``v``: the inspector of the current frame's tokens."""
    try:
        window.inspector = TokenInspector(window.session)
    except RuntimeError:  # the frame after a reset is a real one: it has no tokens yet
        window.message = "no tokens yet: take a step first, then v"
        return
    window.fit_window(window.inspector.min_size(window))
    window.message = ""


def overlay_key(window, name: str) -> None:
    """Give a key to the open overlay; a pick or an edit changes the window's current frame."""
    over = window.overlay
    try:
        keep = over.handle_key(name)
    except (ValueError, RuntimeError) as e:
        keep, over.message = True, str(e)
    if not keep:
        window.grid = window.inspector = None
        window.fit_window(window.base_size)
    if getattr(over, "picked", None) is not None:
        window.info, over.message = over.picked, over.picked.message
        window.steps_taken += 1
    elif window.inspector is not None:
        window.info = window.session.info  # an edit decoded the current frame again
    if over.message:
        window.message, over.message = over.message, ""


# ------------------------------------------------------------------------------- futures
class FuturesGrid:
    """N sampled next steps of the current dream state for one action; the dream does not move until one
    is picked, and then it continues from exactly that branch's frame."""

    def __init__(self, session, action: int, n: int = N_FUTURES):
        self.session, self.n = session, n
        self.picked = None  # the StepInfo of the branch the player continued from
        self.message = ""
        self.rects: list[Any] = []  # where each branch was last drawn
        self.sample(action)

    def sample(self, action: int) -> None:
        self.action = int(action)
        self.branches = self.session.branches(self.action, self.n)

    @property
    def title(self) -> str:
        name = self.session.action_names[self.action]
        return f"{len(self.branches)} futures of '{name}'   1-{len(self.branches)}: continue from one   b: close"

    def handle_key(self, name: str) -> bool:
        if name in ("b", "escape"):
            return False
        if name.isdigit() and 1 <= int(name) <= len(self.branches):
            self.picked = self.session.pick_branch(int(name) - 1)
            return False
        if name in self.session.keymap and not name.isdigit():
            self.sample(self.session.keymap[name])  # another action: its futures instead
        return True

    @staticmethod
    def min_size(window) -> tuple[int, int]:
        """The smallest window in which every future is drawn at least at its own size."""
        top = HEADER_LINES * LINE_PX + GAP_PX
        w = 2 * GAP_PX + GRID_COLS * FRAME_PX + (GRID_COLS - 1) * GAP_PX
        return w, top + GRID_ROWS * (FRAME_PX + CAPTION_PX) + (GRID_ROWS - 1) * GAP_PX + GAP_PX

    def draw(self, window, area) -> None:
        import pygame

        cell_w = (area.w - (GRID_COLS - 1) * GAP_PX) // GRID_COLS
        cell_h = (area.h - (GRID_ROWS - 1) * GAP_PX) // GRID_ROWS
        side = max(1, min(cell_w, cell_h - CAPTION_PX))
        self.rects = []
        for b in self.branches:
            row, col = divmod(b.index, GRID_COLS)
            x = area.x + col * (cell_w + GAP_PX)
            y = area.y + row * (side + CAPTION_PX + GAP_PX)
            rect = pygame.Rect(x + (cell_w - side) // 2, y, side, side)
            blit_frame(window.screen, b.frame, rect)
            self.rects.append(rect)
            label = window.font.render(str(b.index + 1), True, ACCENT)
            window.screen.fill(BG, label.get_rect(topleft=rect.topleft).inflate(6, 2))
            window.screen.blit(label, (rect.x + 1, rect.y))
            caption = window.small.render(f"log p {b.logp:.1f}   r {b.reward:+.2f}", True, DIM)
            window.screen.blit(caption, caption.get_rect(midtop=(rect.centerx, rect.bottom + 3)))


# ----------------------------------------------------------------------------- inspector
class TokenInspector:
    """The current frame's tokens with the world model's top-5 at each position; an edit decodes the frame
    again at once and keeps the heat map of what it changed."""

    def __init__(self, session):
        self.session = session
        self.view = session.inspect(TOPK)  # RuntimeError before the first step: the caller says so
        self.position = 0
        self.heat: np.ndarray | None = None
        self.changed = 0.0
        self.message = ""
        self.heat_rect = None  # where the heat map was last drawn

    @property
    def title(self) -> str:
        return f"token inspector: {len(self.view.slots)} tokens   v: close"

    def handle_key(self, name: str) -> bool:
        slot = self.view.slots[self.position]
        if name in ("v", "escape"):
            return False
        if name in ("up", "down"):
            self.position = (self.position + (1 if name == "down" else -1)) % len(self.view.slots)
        elif name in ("left", "right", "enter"):
            self.edit(self.neighbour(slot, -1 if name == "left" else 1))
        elif name.isdigit() and 1 <= int(name) <= len(slot.top):
            self.edit(slot.top[int(name) - 1][0])
        elif name == "r":
            self.edit(None)
        return True

    @staticmethod
    def neighbour(slot, step: int) -> int:
        """The alternative ``step`` places from the current token in the top list (the first if it is not there)."""
        ranked = [t for t, _ in slot.top]
        if slot.token not in ranked:
            return ranked[0] if step > 0 else ranked[-1]
        return ranked[(ranked.index(slot.token) + step) % len(ranked)]

    def edit(self, token: int | None) -> None:
        """Put ``token`` (None: a sample) at the selected position; the session re-decodes the frame."""
        self.view = self.session.set_token(self.position, token)
        self.heat, self.changed = self.view.heat, self.view.changed
        self.message = f"{self.session.info.message} (mean change {self.changed:.2f})"

    # ------------------------------------------------------------------------- layout
    def table_height(self) -> int:
        return (min(len(self.view.slots), MAX_ROWS) + 4) * ROW_PX  # heading + rows + 2 hint lines + gap

    def layout(self, window, size: tuple[int, int]):
        """(heat rect, table rect, the window size they need) right of the dream panel: the heat map above
        the table when that fits, beside it when that fits, else above it in a grown window."""
        import pygame

        w, h = size
        x0, top = window.panel_rect(1).x, HEADER_LINES * LINE_PX + GAP_PX
        side = max(FRAME_PX, window.panel_px // 2 // FRAME_PX * FRAME_PX)
        th = self.table_height()
        stacked = (pygame.Rect(x0, top + CAPTION_PX, side, side),
                   pygame.Rect(x0, top + CAPTION_PX + side + GAP_PX, TABLE_W, th))
        beside = (pygame.Rect(x0, top + CAPTION_PX, side, side),
                  pygame.Rect(x0 + side + 2 * GAP_PX, top, TABLE_W, th))
        for heat, table in (stacked, beside):
            need = (max(heat.right, table.right) + GAP_PX, max(heat.bottom, table.bottom) + GAP_PX)
            if need[0] <= w and need[1] <= h:
                return heat, table, need
        heat, table = stacked
        return heat, table, (max(heat.right, table.right) + GAP_PX, max(heat.bottom, table.bottom) + GAP_PX)

    def min_size(self, window) -> tuple[int, int]:
        return self.layout(window, window.base_size)[2]

    # ------------------------------------------------------------------------ drawing
    def draw(self, window) -> None:
        heat, table, _ = self.layout(window, window.screen.get_size())
        self.heat_rect = heat
        self.draw_heat(window, heat)
        self.draw_table(window, table)

    def draw_heat(self, window, rect) -> None:
        import pygame

        if self.heat is None:
            text(window, "edit a token: the pixels it moves", (rect.x, rect.y - CAPTION_PX + 2), DIM)
            pygame.draw.rect(window.screen, BOX, rect, 1)
            return
        text(window, "heat map of the last edit", (rect.x, rect.y - CAPTION_PX + 2), DIM)
        blit_frame(window.screen, self.heat, rect)

    def draw_table(self, window, rect) -> None:
        slots = self.view.slots
        first = min(max(0, self.position - MAX_ROWS // 2), max(0, len(slots) - MAX_ROWS))
        y = rect.y
        for x, head in zip(COLS, ("pos", "token", "p", f"top-{TOPK} under the world model (keys 1-{TOPK})")):
            text(window, head, (rect.x + x, y), DIM)
        for slot in slots[first:first + MAX_ROWS]:
            y += ROW_PX
            self.draw_row(window, slot, rect.x, y)
        y += ROW_PX + ROW_PX // 2
        text(window, "up/down: position    left/right, Enter: prev/next alternative", (rect.x, y), DIM)
        text(window, f"1-{TOPK}: put that alternative    r: re-sample    v/Esc: close", (rect.x, y + ROW_PX), DIM)

    def draw_row(self, window, slot, x: int, y: int) -> None:
        selected = slot.position == self.position
        if selected:
            window.screen.fill(SELECTED, (x - 2, y - 1, TABLE_W, ROW_PX))
        color = ACCENT if selected else FG
        marker = ">" if selected else " "
        text(window, f"{marker} {slot.position + 1}", (x + COLS[0], y), color)
        text(window, str(slot.token), (x + COLS[1], y), color)
        text(window, percent(slot.prob), (x + COLS[2], y), color)
        for r, (token, p) in enumerate(slot.top):
            text(window, f"{token} {percent(p)}", (x + COLS[3] + r * ALT_W, y),
                 ACCENT if token == slot.token else DIM)
