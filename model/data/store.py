"""Crash-safe experience store: one compressed ``.npz`` file per finished episode.

Layout on disk::

    <root>/episodes/<split>/<id:06d>.npz   one finished episode (split: "train" | "test" | ...)
    <root>/index.json                       a cache of per-episode facts, rebuilt from the files

Episode file (``np.savez_compressed``; read with ``allow_pickle=False``), for an episode of T steps:

    frames             uint8   (T+1, H, W, 3)  x_0 .. x_T
    actions            int64   (T,)            a_t, taken in x_t, leads to x_{t+1}
    rewards            float32 (T,)            r_t
    terminated         bool    (T,)            True only at the last step of an episode that ended
    truncated          bool    (T,)            True only at the last step of a cut-off episode
    achievements       uint8   (T, n_ach)      Crafter: count of each achievement after step t
                                               (clipped to 255); shape (T, 0) for other envs
    achievement_names  str     (n_ach,)
    meta               str     ()              JSON: {"format": 1, "env": ..., "seed": ..., ...}

Crash safety. A file is written to a hidden temp file in the same folder, flushed and fsynced, renamed
over its final name with ``os.replace`` (atomic), and the folder is fsynced. A file under a final name
is therefore complete unless it was damaged later (disk fault, manual truncation). Such a file is
caught when read (zip CRC and shape checks), reported by name in ``store.corrupt`` and as a warning,
and never returned. Leftover temp files of dead writers are deleted on open.

The index (``{"format": 1, "episodes": {"<id>": {"split", "length", "return", "size", "mtime_ns"}}}``)
is only a cache: on open the store lists the files, trusts entries whose size and mtime match, checks
every other file, and rewrites the index (atomically, same temp + rename dance) when it changed. A
missing, corrupt or stale index is thus rebuilt from the files.

Ids are unique across splits and increase. One writer process per store (the collector, inside the
trainer); other processes may read and call ``refresh()`` to see new episodes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
_FILE_RE = re.compile(r"^(\d{6,})\.npz$")
_TMP_RE = re.compile(r"^\..*\.tmp(\d+)$")
_SPLIT_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class CorruptEpisodeError(KeyError):
    """An episode file exists but cannot be read back intact."""


@dataclass
class Episode:
    frames: np.ndarray  # uint8 (T+1, H, W, 3)
    actions: np.ndarray  # int64 (T,)
    rewards: np.ndarray  # float32 (T,)
    terminated: np.ndarray  # bool (T,)
    truncated: np.ndarray  # bool (T,)
    achievements: np.ndarray | None = None  # uint8 (T, n_ach); None -> (T, 0)
    achievement_names: tuple[str, ...] = ()
    seed: int | None = None
    env: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # extra JSON-serialisable facts

    def __post_init__(self):
        self.frames = np.asarray(self.frames, dtype=np.uint8)
        self.actions = np.asarray(self.actions, dtype=np.int64)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.terminated = np.asarray(self.terminated, dtype=bool)
        self.truncated = np.asarray(self.truncated, dtype=bool)
        self.achievement_names = tuple(str(n) for n in self.achievement_names)
        t = len(self.actions)
        if self.achievements is None:
            self.achievements = np.zeros((t, len(self.achievement_names)), np.uint8)
        self.achievements = np.asarray(np.clip(self.achievements, 0, 255), dtype=np.uint8)
        if self.frames.ndim != 4 or self.frames.shape[0] != t + 1 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T+1, H, W, 3) with T={t}, got {self.frames.shape}")
        for name in ("actions", "rewards", "terminated", "truncated"):
            if getattr(self, name).shape != (t,):
                raise ValueError(f"{name} must have shape ({t},), got {getattr(self, name).shape}")
        if self.achievements.shape != (t, len(self.achievement_names)):
            raise ValueError(f"achievements must be (T, n_ach) = ({t}, {len(self.achievement_names)}), "
                             f"got {self.achievements.shape}")

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def return_(self) -> float:
        return float(self.rewards.sum())

    @property
    def ends(self) -> np.ndarray:
        return self.terminated

    def unlocked(self) -> dict[str, bool]:
        """Achievement -> unlocked at least once during the episode."""
        last = self.achievements[-1] if self.length else np.zeros(len(self.achievement_names), np.uint8)
        return {n: bool(c > 0) for n, c in zip(self.achievement_names, last)}

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.terminated,
                                      self.truncated, self.achievements))

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = {"format": FORMAT, "env": self.env, "seed": self.seed, **self.meta}
        names = np.array(self.achievement_names, dtype=str) if self.achievement_names else np.zeros(0, "<U1")
        return {"frames": self.frames, "actions": self.actions, "rewards": self.rewards,
                "terminated": self.terminated, "truncated": self.truncated,
                "achievements": self.achievements, "achievement_names": names,
                "meta": np.array(json.dumps(meta))}

    @classmethod
    def from_arrays(cls, d) -> "Episode":
        meta = json.loads(str(d["meta"][()]))
        env, seed = meta.pop("env", ""), meta.pop("seed", None)
        meta.pop("format", None)
        ep = cls(frames=d["frames"], actions=d["actions"], rewards=d["rewards"],
                 terminated=d["terminated"], truncated=d["truncated"], achievements=d["achievements"],
                 achievement_names=tuple(d["achievement_names"].tolist()), seed=seed, env=env, meta=meta)
        return ep

    def freeze(self) -> "Episode":
        """Make the arrays read-only: cached episodes are shared between callers."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
        return self


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """``write(fileobj)`` into a temp file next to ``path``, fsync, rename over ``path``, fsync folder."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours, or unsupported: leave its files alone
        return True
    return True


class EpisodeStore:
    def __init__(self, root: str | os.PathLike, cache_size: int = 64, cache_bytes: int = 512 << 20):
        self.root = Path(root)
        self.dir = self.root / "episodes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.json"
        self.cache_size, self.cache_bytes = cache_size, cache_bytes
        self.corrupt: list[str] = []  # files (relative to root) found damaged, never loaded
        self.version = 0  # bumped whenever the set of episodes changes (samplers watch it)
        self._index: dict[int, dict[str, Any]] = {}
        self._cache: OrderedDict[int, Episode] = OrderedDict()
        self._cached_bytes = 0
        self._max_id = -1
        self._clean_tmp()
        self.refresh()

    # ------------------------------------------------------------------ index
    def _path(self, ep_id: int, split: str) -> Path:
        return self.dir / split / f"{ep_id:06d}.npz"

    def _read_index(self) -> dict[int, dict[str, Any]]:
        try:
            data = json.loads(self.index_path.read_text())
            if data.get("format") != FORMAT:
                return {}
            return {int(k): v for k, v in data["episodes"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("store index %s unreadable; rebuilding it from the episode files", self.index_path)
            return {}

    def _write_index(self) -> None:
        data = {"format": FORMAT, "episodes": {str(k): v for k, v in sorted(self._index.items())}}
        blob = json.dumps(data, separators=(",", ":")).encode()
        try:
            atomic_write(self.index_path, lambda f: f.write(blob))
        except OSError as e:  # a read-only reader can still use the in-memory index
            log.warning("could not write store index %s: %s", self.index_path, e)

    def _clean_tmp(self) -> None:
        for path in list(self.dir.glob("*/.*.tmp*")) + list(self.root.glob(".index.json.tmp*")):
            m = _TMP_RE.match(path.name)
            if m and not _pid_alive(int(m.group(1))):
                path.unlink(missing_ok=True)

    def _report_corrupt(self, path: Path, err: Exception) -> None:
        rel = str(path.relative_to(self.root))
        if rel not in self.corrupt:
            self.corrupt.append(rel)
        msg = f"episode file {rel} is damaged and skipped ({type(err).__name__}: {err})"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _load_file(self, path: Path) -> Episode:
        with np.load(path, allow_pickle=False) as d:
            return Episode.from_arrays(d)  # reads every array: zip CRC catches torn data

    def refresh(self) -> None:
        """Re-list the files; check the ones the index does not vouch for; rewrite a stale index."""
        old = self._read_index()
        found: dict[int, dict[str, Any]] = {}
        self.corrupt = []
        for split_dir in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            for path in sorted(split_dir.iterdir()):
                m = _FILE_RE.match(path.name)
                if not m:
                    continue
                ep_id = int(m.group(1))
                self._max_id = max(self._max_id, ep_id)
                st = path.stat()
                entry = old.get(ep_id)
                if not (entry and entry.get("split") == split_dir.name and entry.get("size") == st.st_size
                        and entry.get("mtime_ns") == st.st_mtime_ns):
                    try:
                        ep = self._load_file(path)
                    except Exception as e:  # noqa: BLE001 - any failure to read means damaged
                        self._report_corrupt(path, e)
                        continue
                    entry = self._entry(ep, split_dir.name, st)
                if ep_id in found:
                    self._report_corrupt(path, ValueError(f"id {ep_id} also in split {found[ep_id]['split']}"))
                    continue
                found[ep_id] = entry
        if found != self._index:
            for ep_id in set(self._cache) - {i for i in found if found[i] == self._index.get(i)}:
                self._drop_cached(ep_id)
            self._index = found
            self.version += 1
        if found != old or not self.index_path.exists():
            self._write_index()

    @staticmethod
    def _entry(ep: Episode, split: str, st: os.stat_result) -> dict[str, Any]:
        return {"split": split, "length": ep.length, "return": ep.return_, "env": ep.env,
                "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    # ------------------------------------------------------------------ writing
    def add(self, ep: Episode, split: str = "train") -> int:
        if not _SPLIT_RE.match(split):
            raise ValueError(f"bad split name {split!r}")
        ep_id = self._max_id + 1
        path = self._path(ep_id, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = ep.to_arrays()
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        self._max_id = ep_id
        self._index[ep_id] = self._entry(ep, split, path.stat())
        self.version += 1
        self._write_index()
        return ep_id

    def clear(self, split: str) -> None:
        """Delete every episode of a split (e.g. the previous evaluation's test episodes)."""
        for ep_id in self.ids(split):
            self._path(ep_id, split).unlink(missing_ok=True)
            del self._index[ep_id]
            self._drop_cached(ep_id)
        if (self.dir / split).exists():
            _fsync_dir(self.dir / split)
        self.version += 1
        self._write_index()

    # ------------------------------------------------------------------ reading
    def get(self, ep_id: int) -> Episode:
        ep_id = int(ep_id)
        if ep_id in self._cache:
            self._cache.move_to_end(ep_id)
            return self._cache[ep_id]
        if ep_id not in self._index:
            raise KeyError(f"no episode {ep_id} in {self.root}")
        path = self._path(ep_id, self._index[ep_id]["split"])
        try:
            ep = self._load_file(path).freeze()
        except Exception as e:  # noqa: BLE001
            self._report_corrupt(path, e)
            del self._index[ep_id]
            self.version += 1
            self._write_index()
            raise CorruptEpisodeError(f"episode {ep_id} ({path}) is damaged") from e
        self._cache[ep_id] = ep
        self._cached_bytes += ep.nbytes()
        while self._cache and (len(self._cache) > self.cache_size or self._cached_bytes > self.cache_bytes):
            self._drop_cached(next(iter(self._cache)))
        return ep

    def _drop_cached(self, ep_id: int) -> None:
        ep = self._cache.pop(ep_id, None)
        if ep is not None:
            self._cached_bytes -= ep.nbytes()

    def ids(self, split: str | None = None) -> list[int]:
        return sorted(i for i, e in self._index.items() if split is None or e["split"] == split)

    def info(self, ep_id: int) -> dict[str, Any]:
        """Index facts (split, length, return, env) without loading the episode."""
        return dict(self._index[int(ep_id)])

    def lengths(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        ids = self.ids(split)
        return np.array(ids, np.int64), np.array([self._index[i]["length"] for i in ids], np.int64)

    def episodes(self, split: str | None = None) -> Iterator[Episode]:
        for ep_id in self.ids(split):
            try:
                yield self.get(ep_id)
            except CorruptEpisodeError:
                continue

    def num_steps_in(self, split: str | None = None) -> int:
        """Environment steps (transitions) stored, in one split or all."""
        return int(sum(e["length"] for e in self._index.values() if split is None or e["split"] == split))

    @property
    def num_steps(self) -> int:
        return self.num_steps_in(None)

    @property
    def num_frames(self) -> int:
        """Stored frames: T+1 per episode of T steps."""
        return self.num_steps + len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, ep_id: object) -> bool:
        return ep_id in self._index

    def __iter__(self) -> Iterator[Episode]:
        return self.episodes()

    def __repr__(self) -> str:
        splits = sorted({e["split"] for e in self._index.values()})
        parts = ", ".join(f"{s}: {len(self.ids(s))} episodes / {self.num_steps_in(s)} steps" for s in splits)
        return f"EpisodeStore({str(self.root)!r}; {parts or 'empty'})"
