"""The held-key lane: a held move key streams its steps over a plain route beside Gradio's queue.

Every Gradio event output passes through the server's event loop (postprocessing, one cached file per image,
one fetch per image by the page), and that loop shares the interpreter lock with the dream's thread: per step it
cost about as much as the dream step itself. A held key needs only the two frames and the stats line, so the lane
sends those as one JSON line per step (frames as PNG data URLs) and the page's script draws them; when the key
is up the page asks Gradio once for the whole step (``/play_sync``), so every widget ends where the dream is.

A page learns its lane (a random id per browser tab, :meth:`Lanes.open`) from the hidden ``#lane`` box a load
fills. ``POST /deltaplay/hold/<lane>/<action>/<hold id>`` plays; ``POST /deltaplay/release/<hold id>`` ends that
hold after the step in flight (it may even arrive first).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

HOLD_ROUTE = "/deltaplay/hold/{lane}/{action}/{hold_id}"
RELEASE_ROUTE = "/deltaplay/release/{hold_id}"
HOLD_MAX_S = 10.0  # one held-key stream ends after this; the page starts the next while the key stays down
MAX_HOLDS = 8  # held keys streaming at once, all pages together; one more hears "busy"
MAX_ID = 64  # characters of a hold id


class Releases:
    """The ids of held-key streams whose key is up, the last ``keep`` of them (an id is a random string per hold,
    so a page can only end its own streams)."""

    def __init__(self, keep: int = 4096):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def add(self, hold_id: str) -> None:
        with self._lock:
            self._ids[hold_id[:MAX_ID]] = None
            while len(self._ids) > self.keep:
                self._ids.popitem(last=False)

    def __contains__(self, hold_id: str) -> bool:
        return hold_id in self._ids


class Lanes:
    """lane id -> the browser tab's state, held weakly: a closed tab's state goes, and its lane with it."""

    def __init__(self) -> None:
        self._tabs: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def open(self, st: Any) -> str:
        if not st.lane:
            st.lane = secrets.token_urlsafe(18)
            self._tabs[st.lane] = st
        return st.lane

    def get(self, lane: str) -> Any | None:
        return self._tabs.get(lane)


RELEASES = Releases()
LANES = Lanes()


def png_url(frame: np.ndarray | None) -> str | None:
    """A 64x64 frame as a PNG data URL (fast compression: it lives for one step)."""
    if frame is None:
        return None
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def stats_html(markdown: str) -> str:
    """The first paragraph of the stats line (bold only), as the page's Markdown would show it."""
    first = markdown.split("\n\n", 1)[0]
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(first, quote=False))


def hold_steps(st: Any, action: int, hold_id: str, max_s: float = HOLD_MAX_S) -> Iterator[Any]:
    """The held move played again and again: one StepInfo per step, until hold ``hold_id`` is released (checked
    before every step, so a release that came first plays nothing), the page's session goes, or ``max_s`` pass."""
    from app.webui.play_view import note_error

    end = time.monotonic() + max_s
    while hold_id not in RELEASES and time.monotonic() < end:
        with st.lock:
            if st.session is None:
                return
            info = st.session.step(action)
            note_error(st, info)
        yield info


def hold_lines(st: Any, action: int, hold_id: str, max_s: float = HOLD_MAX_S) -> Iterator[bytes]:
    """The lane's body: a JSON line per step (step, dream and real frames, the stats line), then ``{"end": true}``."""
    from app.webui.play_view import stats_text

    for info in hold_steps(st, action, hold_id, max_s):
        line = {"step": info.step, "dream": png_url(info.dream_frame), "real": png_url(info.real_frame),
                "stats": stats_html(stats_text(info, st))}
        yield (json.dumps(line) + "\n").encode()
    yield b'{"end": true}\n'


def add_routes(app_: Any) -> None:
    """The hold and release routes on the server's FastAPI app (outside Gradio's queue)."""
    from fastapi.responses import JSONResponse, StreamingResponse

    streaming = [0]
    count = threading.Lock()

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def hold(lane: str, action: str, hold_id: str) -> Any:
        st = LANES.get(lane[:MAX_ID])
        if st is None or st.session is None:
            return refuse(404, "no dream on this page: press Reset")
        n = len(st.session.action_names)
        if not action.isdigit() or int(action) >= n:
            return refuse(400, f"the move must be an action of this env: 0..{n - 1}")
        if not hold_id or len(hold_id) > MAX_ID:
            return refuse(400, f"a hold id is 1 to {MAX_ID} characters")
        with count:
            if streaming[0] >= MAX_HOLDS:
                return refuse(429, "busy: too many held keys at once, try again")
            streaming[0] += 1

        def body() -> Iterator[bytes]:
            try:
                yield from hold_lines(st, int(action), hold_id)
            finally:
                with count:
                    streaming[0] -= 1

        return StreamingResponse(body(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})

    def release(hold_id: str) -> dict[str, bool]:  # a held key is up: outside the queue, so it arrives at once
        RELEASES.add(hold_id)
        return {"ok": True}

    app_.add_api_route(HOLD_ROUTE, hold, methods=["POST"])
    app_.add_api_route(RELEASE_ROUTE, release, methods=["POST"])
