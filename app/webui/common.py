"""What every tab of the web UI shares: settings, the per-browser-tab state, the page's CSS, named
output views, and small helpers that turn engine errors into user messages.

Importing this module first sets the no-telemetry environment (app/__init__.py) before gradio loads.
"""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import app  # noqa: F401  (no-telemetry environment before gradio is imported)
import gradio as gr
import numpy as np

from app.webui.compare import upscale
from app.webui.guard import Gate, Scrubber, make_gates, refuse, short, text
from app.webui.jobs import latest_checkpoint

SCALE = 1  # play frames go out at 64x64 (cheap to encode and send every step); the page scales them up, pixelated

CSS = """
#frame img, #real img, .pixelated img { image-rendering: pixelated; image-rendering: crisp-edges; }
#frame img, #real img { width: 100%; height: 100%; object-fit: contain; }
#action-buttons button { min-width: 0; }
#keymap, #key-batch, #btn-keys { display: none !important; }
#pending-moves { min-height: 1.2em; color: #d97706; font-weight: 600; }
#train-status { min-height: 0; }
.fit-gallery .fixed-height { min-height: 0 !important; max-height: none !important; }
"""

PRIVATE = dict(api_visibility="private")  # an event the page uses that is not part of the HTTP API


# ------------------------------------------------------------------------------------ settings

@dataclass
class UISettings:
    checkpoint: str | None
    runs_dir: Path
    gallery_dir: Path
    device: str = "auto"
    gif_frames: int = 300  # the Play tab's rolling GIF buffer: the last N steps
    gates: dict[str, Gate] = field(default_factory=make_gates)
    spares: Any = None  # app.webui.sessions.SpareSessions, set by build_app
    claims: Any = None  # app.webui.prepaint.Claims: sessions whose first frames a loading page already shows

    def gate(self, name: str) -> Gate:
        """The busy gate of a heavy endpoint (app.webui.guard.GATES)."""
        return self.gates[name]

    def scrubber(self) -> Scrubber:
        return Scrubber(self.runs_dir, self.gallery_dir)


def checkpoint_choices(settings: UISettings) -> list[str]:
    """Checkpoints the Play tab offers: the bundled one, --checkpoint, and every run's latest."""
    from app.engine import BUNDLED_CHECKPOINT
    from model.checkpoint import checkpoint_exists

    out: list[str] = []
    if settings.checkpoint:
        out.append(str(settings.checkpoint))
    if checkpoint_exists(BUNDLED_CHECKPOINT) and str(BUNDLED_CHECKPOINT) not in out:
        out.append(str(BUNDLED_CHECKPOINT))
    if settings.runs_dir.exists():
        for d in sorted(settings.runs_dir.iterdir()):
            if d.is_dir() and latest_checkpoint(d) is not None and str(d) not in out:
                out.append(str(d))
    return out


def default_checkpoint(settings: UISettings) -> str | None:
    choices = checkpoint_choices(settings)
    return choices[0] if choices else None


def env_of(checkpoint: str | None) -> str:
    """The env a checkpoint was trained on (Crafter when there is none or it cannot be read: a
    broken checkpoint shows its error when it is loaded, not when the page is built)."""
    if checkpoint:
        try:
            from app.engine import resolve_checkpoint_path
            from model.checkpoint import load_config

            return load_config(resolve_checkpoint_path(checkpoint)).env.name
        except Exception:
            pass
    return "crafter"


def gallery_path(settings: UISettings, prefix: str) -> Path:
    """A fresh GIF name in the gallery folder: ``prefix-YYYYmmdd-HHMMSS-xxxxxx.gif``."""
    return settings.gallery_dir / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.gif"


# ------------------------------------------------------------------------------------ state

@dataclass
class TabState:
    """One browser tab: its checkpoint, its PlaySession, and what its plots show."""

    checkpoint: str | None
    session: Any = None
    errors: list[float] = field(default_factory=list)
    rollout: Any = None  # the I-tokens tab's last rollout
    lock: threading.Lock = field(default_factory=threading.Lock)
    plot_at: float = 0.0  # when the error plot was last sent (it is redrawn at most once a second)
    futures_shown: bool = False  # the Futures grid shows samples a step makes stale
    lane: str = ""  # this tab's held-key lane id, once a load opened it (app/webui/lane.py)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def close_state(st: Any) -> None:
    """The ``gr.State`` delete callback: a closed browser tab frees its session."""
    if isinstance(st, TabState):
        st.close()


class View:
    """A tab's widgets by name, so a handler returns ``{widget: value}`` instead of a positional list."""

    def parts(self, *names: str) -> list[Any]:
        """The named widgets, in this order (an event's inputs or outputs)."""
        return [getattr(self, n) for n in names]

    def values(self, **by_name: Any) -> dict[Any, Any]:
        """``name=value`` -> ``{widget: value}``, what a handler returns; widgets left out stay as they are."""
        return {getattr(self, n): v for n, v in by_name.items()}


# ------------------------------------------------------------------------------------ helpers

def user_error(e: BaseException) -> gr.Error:
    """A problem the user can act on, as a toast instead of a traceback."""
    return gr.Error(str(e) or type(e).__name__, print_exception=False)


@contextmanager
def shown_to_user(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the given exceptions into a toast for the user (no traceback)."""
    try:
        yield
    except errors as e:
        raise user_error(e) from None


def load_bundle(checkpoint: str | None, device: str):
    """The engine's (cached) models of a checkpoint; a bad path or file is a message for the user."""
    from app.engine import CheckpointMissing, ModelBundle
    from model.checkpoint import CheckpointError

    checkpoint = text(checkpoint, "the checkpoint path", 1024)
    with shown_to_user(CheckpointMissing, CheckpointError, ValueError):
        try:
            return ModelBundle.load(checkpoint or None, device=device)
        except OSError as e:
            if isinstance(e, CheckpointMissing):
                raise
            why = (e.strerror or type(e).__name__).lower()
            raise refuse(f"cannot open the checkpoint {short(checkpoint)}: {why}") from None


def bundle_of(st: TabState | None, settings: UISettings):
    """The models of the checkpoint this browser tab plays (the default one before it played)."""
    ckpt = st.checkpoint if st is not None else default_checkpoint(settings)
    if not ckpt:
        raise gr.Error("No checkpoint loaded: open one in the Play tab or train one in the Train tab.",
                       print_exception=False)
    return load_bundle(ckpt, settings.device)


def big(frame: np.ndarray | None, scale: int = SCALE) -> np.ndarray | None:
    return None if frame is None else upscale(np.asarray(frame, np.uint8), scale)


def signed(v: float) -> str:
    """``+0.00`` for zero: a tiny negative reward must not read ``-0.00``."""
    return f"{(round(float(v), 2) or 0.0):+.2f}"


# ------------------------------------------------------------------------------------ keys

def key_labels(keymap: dict[str, int]) -> dict[int, str]:
    """action -> the first key that plays it (letters before arrows), for the button labels."""
    out: dict[int, str] = {}
    for key, a in sorted(keymap.items(), key=lambda kv: (len(kv[0]) > 1 and kv[0] not in ("space", "tab"), kv[0])):
        out.setdefault(a, key.upper() if len(key) == 1 else key.capitalize())
    return out
