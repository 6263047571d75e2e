"""How the web UI fails: every input checked in plain words, no traceback or server path in what a client
sees, and busy gates that answer "busy, try again" at once instead of letting callers pile up behind a
heavy job.

:class:`GuardedBlocks` is the page's ``gr.Blocks``: it checks each input's type and range before gradio
converts it (a number box sent a string, a radio sent a value it does not offer), and turns any error on
the way out into a short ``gr.Error`` with server paths scrubbed; an unexpected exception is logged on the
server and the client only hears that something went wrong.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import app  # noqa: F401  (no-telemetry environment before gradio is imported)
import gradio as gr

log = logging.getLogger("deltaplay.webui")

MAX_TEXT = 4096  # the longest text any box of the page takes (a path, a run name, a key batch)
MAX_MESSAGE = 600  # the longest error message a client gets
SEED_MAX = 2**31 - 1
SOMETHING_WENT_WRONG = ("Something went wrong on the server while doing that (the details are in the server's "
                        "log). Try again, or reload the page.")
_ABS_PATH = re.compile(r"(?<![\w.~:/\\])(?:/[^\s'\"/,;()\[\]<>]+){2,}/?")


def refuse(message: str) -> gr.Error:
    """A plain-words refusal, shown as a toast (no traceback on the server either)."""
    return gr.Error(message[:1].upper() + message[1:], print_exception=False)


def short(value: Any, keep: int = 40) -> str:
    """``value`` as the user typed it, cut to ``keep`` characters (a 1 MB name is not echoed back)."""
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= keep:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters"
    return f"{text[:keep]}… ({size})"


# ------------------------------------------------------------------------------------ checks

def whole(value: Any, what: str, lo: int, hi: int) -> int:
    """``value`` as an int in lo..hi, else a message for the user."""
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        v = float(value)
        if not math.isfinite(v) or v != int(v):
            raise ValueError
        v = int(v)
    except (TypeError, ValueError, OverflowError):
        raise refuse(f"{what} must be a whole number between {lo} and {hi}, got {short(value)}") from None
    if not lo <= v <= hi:
        raise refuse(f"{what} must be between {lo} and {hi}, got {v}")
    return v


def number(value: Any, what: str, lo: float, hi: float) -> float:
    """``value`` as a finite float in lo..hi, else a message for the user."""
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        v = float(value)
        if not math.isfinite(v):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        span = f" between {lo:g} and {hi:g}" if math.isfinite(lo) and math.isfinite(hi) else ""
        raise refuse(f"{what} must be a number{span}, got {short(value)}") from None
    if not lo <= v <= hi:
        raise refuse(f"{what} must be between {lo:g} and {hi:g}, got {v:g}")
    return v


def seed_of(value: Any) -> int | None:
    """A Seed box, the same on every tab: empty or negative (-1) means a random seed (None)."""
    if value is None or value == "":
        return None
    v = whole(value, "the seed", -SEED_MAX, SEED_MAX)
    return None if v < 0 else v


def one_of(value: Any, what: str, choices: list[Any]) -> Any:
    if value not in choices:
        raise refuse(f"{what} must be one of: {', '.join(map(str, choices))}; got {short(value)}")
    return value


def text(value: Any, what: str, max_len: int = MAX_TEXT) -> str:
    """A text input (None is empty), refused when it is not text or longer than ``max_len``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise refuse(f"{what} must be text, got {short(value)}")
    if len(value) > max_len:
        raise refuse(f"{what} is too long: {len(value):,} characters (at most {max_len:,})")
    return value


def check_payload(block: Any, value: Any) -> None:
    """What a widget may be sent, checked before gradio converts it (its own errors are not for users)."""
    label = str(getattr(block, "label", None) or getattr(block, "elem_id", None) or "an input")
    if isinstance(block, (gr.Number, gr.Slider)):
        if value is None and isinstance(block, gr.Number):
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse(f"{label} must be a number, got {short(value)}")
        lo, hi = block.minimum, block.maximum
        number(value, label, -math.inf if lo is None else lo, math.inf if hi is None else hi)
    elif isinstance(block, gr.Checkbox):
        if value is not None and not isinstance(value, bool):
            raise refuse(f"{label} must be true or false, got {short(value)}")
    elif isinstance(block, gr.Dropdown) and block.allow_custom_value:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise refuse(f"{label} must be text or a number, got {short(value)}")
        if isinstance(value, str):
            text(value, label)
    elif isinstance(block, (gr.Radio, gr.Dropdown)):
        if value is not None:
            one_of(value, label, [v for _, v in block.choices])
    elif isinstance(block, gr.Textbox):
        text(value, label)
    elif isinstance(block, gr.File):
        if value is not None and not (isinstance(value, dict) and isinstance(value.get("path"), str)):
            raise refuse(f"{label} must be an uploaded file, got {short(value)}")


# ------------------------------------------------------------------------------------ messages

class Scrubber:
    """Takes server paths out of a message: the runs and gallery folders by their short names, any
    other absolute path by its last two parts."""

    def __init__(self, runs_dir: Path, gallery_dir: Path):
        self.named = sorted([(str(runs_dir), "runs"), (str(gallery_dir), "gallery")], key=lambda r: -len(r[0]))

    def _short(self, m: re.Match) -> str:
        p = m.group(0)
        for root, name in self.named:
            if p == root or p.startswith(root + "/"):
                return name + p[len(root):]
        parts = [x for x in p.split("/") if x]
        return "…/" + "/".join(parts[-2:])

    def paths(self, text: str) -> str:
        """``text`` with every absolute path shortened."""
        return _ABS_PATH.sub(self._short, str(text))

    def __call__(self, message: str) -> str:
        """A message for a client: paths shortened, a traceback replaced, the length capped."""
        out = self.paths(message)
        if "Traceback (most recent call last)" in out or re.search(r'File ".*", line \d+', out):
            return SOMETHING_WENT_WRONG
        return out if len(out) <= MAX_MESSAGE else out[:MAX_MESSAGE] + "…"


# ------------------------------------------------------------------------------------ busy gates

class Gate:
    """At most ``running`` callers at once and ``waiting`` more, each waiting up to ``wait_s``; anyone
    else hears "busy" at once, so a burst on a heavy endpoint never leaves callers hanging."""

    def __init__(self, what: str, running: int = 1, waiting: int = 1, wait_s: float = 5.0):
        self.what, self.limit, self.wait_s = what, running + waiting, wait_s
        self._slots = threading.BoundedSemaphore(running)
        self._lock = threading.Lock()
        self._in = 0

    def busy(self) -> gr.Error:
        return refuse(f"The server is busy with {self.what} for others; try again in a moment.")

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._in >= self.limit:
                raise self.busy()
            self._in += 1
        try:
            if not self._slots.acquire(timeout=self.wait_s):
                raise self.busy()
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._in -= 1


GATES = {  # name: (what the busy message calls it, running, waiting)
    "tokenizer_batch": ("a tokenizer batch", 1, 1),
    "token_maps": ("token maps", 1, 1),
    "compare": ("a tokenizer comparison", 2, 2),
    "itoken_rollout": ("an I-token rollout", 1, 1),
    "futures": ("sampling futures", 2, 2),
    "export_gif": ("writing a GIF", 2, 2),
    "load": ("opening a checkpoint", 2, 16),  # page loads: cheap once the models are cached
    "train": ("starting a training run", 1, 0),
}


def make_gates() -> dict[str, Gate]:
    return {name: Gate(what, running, waiting) for name, (what, running, waiting) in GATES.items()}


# ------------------------------------------------------------------------------------ the Blocks

class GuardedBlocks(gr.Blocks):
    """``gr.Blocks`` whose every event checks its inputs and fails in plain words. ``unexpected`` lists
    the exceptions no handler expected (logged with their traceback; the tests want none)."""

    scrub: Scrubber | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.unexpected: list[str] = []

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False):
        props = set(getattr(block_fn, "component_prop_inputs", []) or [])
        for i, (block, value) in enumerate(zip(block_fn.inputs, inputs)):
            if getattr(block, "stateful", False) or i in props:
                continue
            if state is not None and block._id in state:  # this page's copy (an update changed its range)
                block = state[block._id]
            check_payload(block, value)
        if len(inputs) < len(block_fn.inputs):
            raise refuse(f"this action needs {len(block_fn.inputs)} inputs, got {len(inputs)}")
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception:
            raise refuse("one of the inputs is not valid (a file that is not an upload, or a value of the "
                         "wrong kind)") from None

    async def process_api(self, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await super().process_api(block_fn, inputs, *args, **kwargs)
        except gr.Error as e:
            message = self.scrub(e.message) if self.scrub else str(e.message)
            raise gr.Error(message, duration=e.duration, visible=e.visible, title=e.title,
                           print_exception=False) from None
        except Exception as e:
            name = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "an event"
            log.exception("unexpected error in %s", name)
            self.unexpected.append(f"{time.strftime('%H:%M:%S')} {name}: {type(e).__name__}")
            raise refuse(SOMETHING_WENT_WRONG) from None
