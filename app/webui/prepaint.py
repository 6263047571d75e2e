"""The first frames before Gradio's page exists.

Gradio's front-end needs about a second and a half here before any component exists, but the index HTML itself
arrives at once. So the server writes into that HTML the first frames of a session made ready for this page (a
splash over the page), keeps the session under a random claim id, and the page's load event claims that very
session (the id travels in ``window.deltaplayClaim``): the frames the player sees first are the ones Gradio then
shows, and the splash goes as soon as Gradio's own frames are on show.
"""
from __future__ import annotations

import html
import secrets
import threading
import time
from typing import Any, Callable

from app.webui.lane import png_url

CLAIM_S = 120.0  # a session whose page never claimed it is closed after this
MOST_CLAIMS = 8  # sessions waiting for their page at once; a page beyond gets no splash (it loads as before)


class Claims:
    """Sessions made ready for a page whose HTML is on its way, by claim id."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def put(self, session: Any) -> str | None:
        with self._lock:
            self._expire()
            if len(self._held) >= MOST_CLAIMS:
                return None
            claim = secrets.token_urlsafe(18)
            self._held[claim] = (session, time.monotonic())
            return claim

    def take(self, claim: str, bundle: Any, i_tokens: bool) -> Any | None:
        """The session of ``claim`` when it was made for this bundle and variant, else None."""
        with self._lock:
            held = self._held.get(claim)
            if held is None or held[0].bundle is not bundle or held[0].i_tokens != i_tokens:
                return None
            del self._held[claim]
            return held[0]

    def _expire(self) -> None:
        now = time.monotonic()
        for claim, (s, t) in list(self._held.items()):
            if now - t > CLAIM_S:
                del self._held[claim]
                s.close()

    def close(self) -> None:
        with self._lock:
            for s, _ in self._held.values():
                s.close()
            self._held.clear()


def splash(session: Any, claim: str) -> str:
    """The splash: a reset session's first dream and real frames, and the script that claims them and leaves."""
    info = session.info
    frames = "".join(
        f"<figure><img alt='{html.escape(label)}' src='{url}'><figcaption>{html.escape(label)}</figcaption></figure>"
        for label, url in (("Dream (world model)", png_url(info.dream_frame)),
                           ("Real env (same actions)", png_url(info.real_frame))) if url)
    return f"""
<div id="prepaint"><div class="prepaint-frames">{frames}</div>
<p>seed {session.seed} · step 0 · loading the controls…</p></div>
<style>
#prepaint {{position: fixed; inset: 0; z-index: 10000; display: flex; flex-direction: column; align-items: center;
  justify-content: center; gap: 8px; background: #fff; color: #222; font-family: sans-serif;}}
@media (prefers-color-scheme: dark) {{ #prepaint {{background: #0b0f19; color: #ddd;}} }}
#prepaint .prepaint-frames {{display: flex; gap: 16px;}}
#prepaint figure {{margin: 0; text-align: center;}}
#prepaint img {{width: 320px; height: 320px; image-rendering: pixelated;}}
</style>
<script>
window.deltaplayClaim = {claim!r};
(function leave(t0) {{  // Gradio's own frames are on show (or it never gets there): the splash goes
  const img = document.querySelector("#frame img");
  const el = document.getElementById("prepaint");
  if (!el) return;
  if ((img && img.complete && img.naturalWidth > 0) || performance.now() - t0 > 30000) el.remove();
  else setTimeout(() => leave(t0), 25);
}})(performance.now());
</script>
"""


def splash_maker(settings: Any, checkpoint: str | None) -> Callable[[], str]:
    """``make()`` for :class:`PrepaintMiddleware`: a spare session of the start checkpoint (one ready now, never
    waited for), claimed for the page that is loading; "" when there is none."""
    def make() -> str:
        if not checkpoint or settings.spares is None:
            return ""
        from app.engine import ModelBundle

        try:
            bundle = ModelBundle.load(checkpoint, device=settings.device)
            s = settings.spares.take(bundle, True in bundle.world_models, shadow=True, seed=None, wait=False)
            if s is None:
                return ""
            claim = settings.claims.put(s)
            if claim is None:
                s.close()
                return ""
            return splash(s, claim)
        except Exception:  # noqa: BLE001  (the page then loads as it would without a splash)
            return ""

    return make


class PrepaintMiddleware:
    """ASGI middleware: the index page's HTML with :func:`splash` written in after ``<body>``. ``make()`` returns
    the splash for a new page, or "" (no session ready: the page loads as it would without)."""

    def __init__(self, app: Any, make: Callable[[], str]) -> None:
        self.app, self.make = app, make

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in ("/", ""):
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool

        start: dict | None = None
        chunks: list[bytes] = []

        async def hold(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body, headers = b"".join(chunks), dict(start.get("headers", []))
            if start["status"] == 200 and b"text/html" in headers.get(b"content-type", b""):
                body = insert_after_body(body, (await run_in_threadpool(self.make)).encode())
            fixed = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*fixed, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)


def insert_after_body(page: bytes, snippet: bytes) -> bytes:
    at = page.find(b"<body")
    end = page.find(b">", at) if at >= 0 else -1
    return page if end < 0 or not snippet else page[:end + 1] + snippet + page[end + 1:]
