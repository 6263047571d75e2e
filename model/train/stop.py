"""Stopping a run cleanly: SIGTERM/SIGINT or the caller's stop ends it at the next step, with a checkpoint."""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from model.train.dist import Dist

log = logging.getLogger("deltaplay.train")

StopSource = Callable[[], bool] | threading.Event


class StopRequested(Exception):
    """Raised inside an epoch when a stop was asked for; the run saves what it trained and ends."""


class StopFlag:
    """A stop asked for by a signal or by ``source`` (an Event or a callable), agreed across ranks."""

    def __init__(self, source: StopSource | None = None):
        self.source = source
        self.requested = False
        self._first_signal: float | None = None
        self._old_handlers: list[tuple[int, Any]] = []

    def install_signals(self) -> None:
        """Handle SIGTERM/SIGINT (main thread only) until :meth:`restore_signals`."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers.append((sig, signal.signal(sig, self._on_signal)))

    def restore_signals(self) -> None:
        for sig, handler in self._old_handlers:
            signal.signal(sig, handler)
        self._old_handlers = []

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A second signal gives up at once, unless it is the echo of a process-group kill
        # (`timeout`, systemd and shells deliver the same signal twice within a moment).
        if self.requested and self._first_signal is not None and time.monotonic() - self._first_signal > 2.0:
            raise KeyboardInterrupt
        if self._first_signal is None:
            self._first_signal = time.monotonic()
        self.requested = True
        log.info("signal %d: stopping after the current step", signum)

    def check(self, dist: Dist | None = None) -> bool:
        """Was a stop asked for? With ``dist``, on any rank (a collective: every rank must call it)."""
        src = self.source
        if src is not None and (src.is_set() if isinstance(src, threading.Event) else src()):
            self.requested = True
        if dist is not None:
            self.requested = dist.any_flag(self.requested)
        return self.requested
