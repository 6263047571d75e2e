"""Experience collection: N real envs stepped in lockstep, each in its own process, every finished
episode written to the store at once (so a crash loses only unfinished episodes).

Policies follow the protocol in model/data/policies.py. ``policy.reset`` is also called for all envs
at the start of each ``collect`` call, and ``policy.burn_in`` then rebuilds a recurrent state from the
frames of the in-flight episodes (as the published code does before resuming collection).

Crafter's reset (world generation) costs more CPU than a whole random episode of steps. In
lockstep every env would wait for it, so the pool keeps ``spares`` extra env processes that reset in
the background: a finished env is swapped for a spare whose next episode is ready, and then resets
itself while the others keep stepping. Default: num_envs // 2 spares (at least 1) for Crafter, none
for the others. GridWorld runs in-process by default (``processes=False``): pipes would cost more
than its microsecond steps.

Episode seeds are drawn from ``SeedSequence([seed, k])`` for the k-th episode started, recorded in
the episode (``Episode.seed``): ``make_env(name).reset(seed=ep.seed)`` + its actions replays it.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .envs import achievement_names, canonical_name, make_env, num_actions
from .policies import Policy, RandomPolicy
from .store import Episode, EpisodeStore

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- env processes
def _worker(conn, env_name: str, env_kwargs: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl+C and closes us
    try:
        env = make_env(env_name, **env_kwargs)
    except Exception:  # noqa: BLE001 - report any construction failure to the parent
        conn.send(("err", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while True:
        try:
            cmd, arg = conn.recv()
        except EOFError:
            return
        try:
            if cmd == "reset":
                conn.send(("ok", env.reset(seed=arg)))
            elif cmd == "step":
                conn.send(("ok", env.step(arg)))
            elif cmd == "close":
                env.close()
                conn.send(("ok", None))
                return
        except Exception:  # noqa: BLE001
            conn.send(("err", traceback.format_exc()))


class _RemoteEnv:
    """One env in a spawned process: ``request`` sends a command, ``result`` waits for its answer."""

    def __init__(self, ctx, env_name: str, env_kwargs: dict[str, Any]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, env_name, env_kwargs), daemon=True)
        self.proc.start()
        child.close()
        self.pending = True  # the startup message
        self.seed: int | None = None

    def request(self, cmd: str, arg: Any = None) -> None:
        self.conn.send((cmd, arg))
        self.pending = True

    def result(self) -> Any:
        try:
            status, value = self.conn.recv()
        except EOFError:
            self.proc.join(timeout=1)
            raise RuntimeError(f"env worker process died (exit code {self.proc.exitcode}); with the "
                               "'spawn' start method the main script must be a file, guarded by "
                               "if __name__ == '__main__'") from None
        self.pending = False
        if status == "err":
            raise RuntimeError(f"env worker failed:\n{value}")
        return value

    def close(self) -> None:
        try:
            if self.pending:
                self.result()
            self.request("close")
            self.result()
        except (EOFError, OSError, RuntimeError, BrokenPipeError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()


class _LocalEnv:
    """The same interface in this process (``processes=False``): simple to debug, no pipes."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any]):
        self.env = make_env(env_name, **env_kwargs)
        self._result: Any = None
        self.pending = False
        self.seed: int | None = None

    def request(self, cmd: str, arg: Any = None) -> None:
        self._result = self.env.reset(seed=arg) if cmd == "reset" else self.env.step(arg)
        self.pending = True

    def result(self) -> Any:
        self.pending = False
        return self._result

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------- collector
class _Track:
    """The in-flight episode of one env slot."""

    def __init__(self, obs: np.ndarray, seed: int | None):
        self.frames, self.seed = [obs], seed
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.achievements: list[np.ndarray] = []


class Collector:
    def __init__(self, env_name: str, num_envs: int, store: EpisodeStore, seed: int = 0,
                 processes: bool | None = None, spares: int | None = None,
                 env_kwargs: dict[str, Any] | None = None):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.env_name = canonical_name(env_name)
        self.num_envs, self.store, self.seed = num_envs, store, seed
        # GridWorld steps in microseconds: pipes would cost more than they save, keep it in-process.
        self.processes = self.env_name != "gridworld" if processes is None else processes
        if spares is None:  # only Crafter's reset is slow enough to hide
            spares = max(1, num_envs // 2) if self.env_name == "crafter" else 0
        self.num_spares = spares if self.processes else 0
        self.env_kwargs = dict(env_kwargs or {})
        self.achievement_names = achievement_names(self.env_name)
        self.num_actions = num_actions(self.env_name)
        self.episodes_started = 0
        self.total_steps = 0
        self._slots: list[Any] = []
        self._spares: deque[Any] = deque()
        self._tracks: list[_Track] = []
        self._ended: set[int] = set()  # slots whose track ended and was not restarted yet
        self._excess = 0

    # -------------------------------------------------- process pool
    def start(self) -> None:
        """Start the env processes and their first episodes (also done lazily by ``collect``)."""
        if self._slots:
            return
        ctx = mp.get_context("spawn")
        n = self.num_envs + self.num_spares
        envs = [_RemoteEnv(ctx, self.env_name, self.env_kwargs) if self.processes
                else _LocalEnv(self.env_name, self.env_kwargs) for _ in range(n)]
        for e in envs:
            if e.pending:
                e.result()  # construction finished (processes start in parallel)
        for e in envs:
            self._request_reset(e)
        self._slots, self._spares = envs[:self.num_envs], deque(envs[self.num_envs:])
        self._tracks = [self._begin(e) for e in self._slots]

    def _next_seed(self) -> int:
        state = np.random.SeedSequence([self.seed, self.episodes_started]).generate_state(1)[0]
        self.episodes_started += 1
        return int(state % (2**31 - 1))

    def _request_reset(self, env) -> None:
        env.seed = self._next_seed()
        env.request("reset", env.seed)

    def _begin(self, env) -> _Track:
        obs, _ = env.result()
        return _Track(obs, env.seed)

    def _swap(self, i: int) -> None:
        """Slot i's episode ended: start its next episode, from a spare if there is one."""
        env = self._slots[i]
        self._request_reset(env)
        if self._spares:
            self._spares.append(env)
            self._slots[i] = self._spares.popleft()
        self._tracks[i] = self._begin(self._slots[i])

    def close(self) -> None:
        for e in self._slots + list(self._spares):
            e.close()
        self._slots, self._spares, self._tracks, self._ended = [], deque(), [], set()

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -------------------------------------------------- stepping
    def _finish(self, tr: _Track, split: str) -> int:
        ach = (np.stack(tr.achievements) if tr.achievements
               else np.zeros((len(tr.actions), len(self.achievement_names)), np.uint8))
        ep = Episode(np.stack(tr.frames), tr.actions, tr.rewards, tr.terminated, tr.truncated,
                     achievements=ach, achievement_names=self.achievement_names, seed=tr.seed,
                     env=self.env_name, meta={"collector_seed": self.seed})
        return self.store.add(ep, split)

    def _step(self, policy: Policy, active: list[bool]) -> list[tuple[int, _Track]]:
        """One lockstep round over the active slots; returns the (slot, track) of ended episodes."""
        obs = np.stack([t.frames[-1] for t in self._tracks])
        actions = np.asarray(policy(obs)).reshape(-1)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"policy returned {actions.shape} actions for {self.num_envs} envs")
        for i, env in enumerate(self._slots):
            if active[i]:
                env.request("step", int(actions[i]))
        ended = []
        for i, env in enumerate(self._slots):
            if not active[i]:
                continue
            o, r, term, trunc, info = env.result()
            tr = self._tracks[i]
            tr.frames.append(o), tr.actions.append(int(actions[i])), tr.rewards.append(float(r))
            tr.terminated.append(bool(term)), tr.truncated.append(bool(trunc))
            if self.achievement_names:
                counts = info.get("achievements", {})
                tr.achievements.append(np.array([min(counts.get(n, 0), 255) for n in self.achievement_names],
                                                np.uint8))
            if term or trunc:
                ended.append((i, tr))
        self.total_steps += sum(active)
        return ended

    def _reset_policy(self, policy: Policy, indices: list[int]) -> None:
        if indices and hasattr(policy, "reset"):
            policy.reset(indices)

    def _burn_in(self, policy: Policy) -> None:
        k = int(getattr(policy, "burn_in_steps", 0) or 0)
        if k <= 0 or not hasattr(policy, "burn_in"):
            return
        h, w, c = self._tracks[0].frames[0].shape
        frames = np.zeros((self.num_envs, k, h, w, c), np.uint8)
        for i, tr in enumerate(self._tracks):
            past = tr.frames[-k - 1:-1]  # the frames before the current one
            if past:
                frames[i, k - len(past):] = np.stack(past)
        policy.burn_in(frames)

    def collect(self, policy: Policy, num_steps: int, split: str = "train",
                progress: Progress | None = None) -> dict[str, Any]:
        """Step all envs until ``num_steps`` env steps were taken (rounded up to whole rounds; the
        excess is taken off the next call). Unfinished episodes carry over to the next call."""
        self.start()
        for i in sorted(self._ended):
            self._swap(i)
        self._ended.clear()
        target = max(0, num_steps - self._excess)
        self._reset_policy(policy, list(range(self.num_envs)))
        self._burn_in(policy)
        steps, ids, returns, lengths = 0, [], [], []
        active = [True] * self.num_envs
        while steps < target:
            ended = self._step(policy, active)
            steps += self.num_envs
            for i, tr in ended:
                ids.append(self._finish(tr, split))
                returns.append(float(np.sum(tr.rewards)))
                lengths.append(len(tr.actions))
                self._swap(i)
            self._reset_policy(policy, [i for i, _ in ended])
            if progress:
                progress(min(steps, target), target)
        self._excess = steps - target
        return {"steps": steps, "episode_ids": ids, "returns": returns, "lengths": lengths}

    def collect_episodes(self, policy: Policy, n: int, split: str = "test",
                         progress: Progress | None = None) -> list[int]:
        """Run exactly ``n`` fresh episodes to their end and store them (evaluation). Unfinished
        episodes of earlier ``collect`` calls are dropped, so every episode comes from ``policy``.
        Short episodes are not favoured: each env starts episodes only while fewer than n started."""
        self.start()
        for i in range(self.num_envs):  # fresh episodes only
            if self._tracks[i].actions or i in self._ended:
                self._swap(i)
        self._ended.clear()
        started = min(n, self.num_envs)
        active = [i < started for i in range(self.num_envs)]
        self._reset_policy(policy, list(range(self.num_envs)))
        ids: list[int] = []
        while any(active):
            ended = self._step(policy, active)
            for i, tr in ended:
                ids.append(self._finish(tr, split))
                if started < n:
                    started += 1
                    self._swap(i)
                else:
                    active[i] = False
                    self._ended.add(i)
            self._reset_policy(policy, [i for i, _ in ended if active[i]])
            if progress:
                progress(len(ids), n)
        return ids


# ---------------------------------------------------------------- benchmark
def benchmark_collect(env_name: str, num_workers: int, steps: int, seed: int = 0,
                      spares: int | None = None) -> float:
    """Env steps per second of random-policy collection into a temporary store, with
    ``num_workers`` envs (one process each, plus the default spares; GridWorld runs in-process).
    Process start-up and the first resets are not timed; later resets and episode writes are."""
    with tempfile.TemporaryDirectory() as tmp, \
            Collector(env_name, num_workers, EpisodeStore(tmp), seed=seed, spares=spares) as col:
        col.start()
        policy = RandomPolicy(col.num_actions, seed)
        t0 = time.perf_counter()
        done = col.collect(policy, steps)["steps"]
        return done / (time.perf_counter() - t0)
