"""Play sessions made before anyone asks, so a page's first frames come at once.

When the server starts, the Play tab's checkpoint is loaded and its models warmed (a few dream steps),
and reset sessions wait for the next pages (two, so that pages opened one after the other both find
one). A page load with a random seed takes one instead of building an env and priming the dream, and a
new one is made in the background for the page after.

Crafter builds its world in pure Python (a second or more of noise functions per reset). In the server's process
that work holds the interpreter lock the dream steps of every page need, so :class:`EnvMaker` resets envs in a
child process and hands them over (an env pickles in about a millisecond; the channel is between this server
and the child it started).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

log = logging.getLogger("deltaplay.webui")

WARM_STEPS = 3  # dream steps that run the kernels once before anyone plays
REFILL_AFTER_S = 1.0  # the next spare is made once the page that took one got its frames
REFILL_NICE = 10  # and below the server's threads (Linux niceness is per thread)
WAIT_FOR_SPARE_S = 5.0  # a page load waits this long for a spare being made, rather than make its own
MAKE_ENV_S = 60.0  # an env reset in the child process takes at most this (else it is made here)


def reset_env(env_name: str, seed: int) -> tuple[Any, Any, dict]:
    """(env, first observation, info) of a new env reset with ``seed``; runs in the EnvMaker's process."""
    from model.data.envs import make_env

    env = make_env(env_name)
    obs, info = env.reset(seed=seed)
    return env, obs, info


class EnvMaker:
    """Resets envs in one child process, started on first use (``spawn``: no copy of the server's threads)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.broken = False  # the child could not start or failed once: resets stay in the caller's process

    def reset(self, env_name: str, seed: int) -> tuple[Any, Any, dict] | None:
        """A reset env from the child, or None when the child cannot make one or the env is cheap to reset
        here (only Crafter's worlds are worth the trip); the caller then resets it itself."""
        if env_name != "crafter" or self.broken:
            return None
        try:
            with self._lock:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                future = self._pool.submit(reset_env, env_name, seed)
            return future.result(timeout=MAKE_ENV_S)
        except Exception as e:  # noqa: BLE001  (a broken child costs speed, never a page)
            log.warning("could not make an env in a child process (%s): resets stay in this one", type(e).__name__)
            self.broken = True
            self.close()
            return None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class SpareSessions:
    """Up to ``per_checkpoint`` reset :class:`~app.engine.PlaySession` per checkpoint (real env on, the
    default world-model variant) and ``most`` in all, each keeping the last ``keep_last`` steps for the
    GIF export."""

    def __init__(self, device: str, keep_last: int, per_checkpoint: int = 2, most: int = 4):
        self.device, self.keep_last, self.per_checkpoint, self.most = device, keep_last, per_checkpoint, most
        self._spares: list[Any] = []
        self._filling: set[int] = set()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # a spare was made (or its making failed)
        self.envs = EnvMaker()

    def warm(self, checkpoint: str | None) -> None:
        """Load ``checkpoint``'s models and make its first spare session (a broken checkpoint is left
        alone here: its error shows when a page opens it)."""
        if not checkpoint:
            return
        from app.engine import ModelBundle

        try:
            bundle = ModelBundle.load(checkpoint, device=self.device)
            for _ in range(self.per_checkpoint):
                self._fill(bundle, warm_steps=WARM_STEPS)
        except Exception as e:  # noqa: BLE001  (a page shows this checkpoint's error in plain words)
            log.warning("could not warm %s: %s", checkpoint, type(e).__name__)

    def take(self, bundle: Any, i_tokens: bool, shadow: bool, seed: int | None, wait: bool = True) -> Any | None:
        """A ready session that matches (random seed, real env on, this variant), or None; the next
        spare is made in the background. ``wait``: wait for one being made rather than return None."""
        if seed is not None or not shadow:
            return None
        with self._ready:
            found = self._find(bundle, i_tokens)
            if found is None and wait and id(bundle) in self._filling:  # one is being made: cheaper to wait for it
                self._ready.wait_for(lambda: id(bundle) not in self._filling, timeout=WAIT_FOR_SPARE_S)
                found = self._find(bundle, i_tokens)
            if found is not None:
                self._spares.remove(found)
        refill = threading.Timer(REFILL_AFTER_S, self._fill, args=(bundle,), kwargs={"nice": True})
        refill.daemon = True
        refill.start()
        return found

    def _count(self, bundle: Any) -> int:
        return sum(s.bundle is bundle for s in self._spares)

    def _find(self, bundle: Any, i_tokens: bool) -> Any | None:
        return next((s for s in self._spares if s.bundle is bundle and s.i_tokens == i_tokens), None)

    def _fill(self, bundle: Any, warm_steps: int = 0, nice: bool = False) -> None:
        from app.engine import PlaySession

        if nice:
            try:  # building an env must not slow the pages being served
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REFILL_NICE)
            except (AttributeError, OSError):
                pass
        with self._lock:
            if id(bundle) in self._filling or self._count(bundle) >= self.per_checkpoint:
                return
            self._filling.add(id(bundle))
        try:
            s = PlaySession(bundle, shadow=True, i_tokens=True if True in bundle.world_models else False)
            seed = random.randrange(2**31)
            s.reset(seed, made=self.envs.reset(bundle.env_name, seed))
            for _ in range(warm_steps):
                s.step(0)
            if warm_steps:
                s.reset()
            s.keep_last(self.keep_last)
            with self._lock:
                self._spares.append(s)
                while len(self._spares) > self.most:
                    self._spares.pop(0).close()
        except Exception as e:  # noqa: BLE001  (a page then opens its session the slow way)
            log.warning("could not make a spare session: %s", type(e).__name__)
        finally:
            with self._ready:
                self._filling.discard(id(bundle))
                self._ready.notify_all()

    def close(self) -> None:
        with self._lock:
            for s in self._spares:
                s.close()
            self._spares.clear()
        self.envs.close()
