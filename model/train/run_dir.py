"""The run folder: where a training run keeps everything, and the small writers that fill it.

Layout (one run = one folder; the UI, `deltaplay eval` and `--resume` all read it)::

    run_dir/
      config.json            resolved config (Config.to_json)
      checkpoints/last/      newest checkpoint (model/checkpoint.py format)
      checkpoints/epoch_0010/ snapshots every ``train.snapshot_every`` epochs
      store/                 finished episodes (model/data/store.py); DDP rank r>0 uses store/rank{r}
      metrics.jsonl          one JSON object per finished epoch
      media/                 recon_epoch_XXXX.png, dream_epoch_XXXX.gif
      train.log              plain-text log
      .lock                  pid of the trainer holding the folder
"""
from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


class RunLockedError(RuntimeError):
    """Another live trainer holds the run folder."""


class RunFolderError(RuntimeError):
    """The folder does not suit the request: a new run where one exists, or a resume where none does."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    def snapshot(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}"

    def store(self, rank: int = 0) -> Path:
        return self.root / "store" if rank == 0 else self.root / "store" / f"rank{rank}"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def create(self) -> None:
        for d in (self.root, self.checkpoints, self.media):
            d.mkdir(parents=True, exist_ok=True)

    def check(self, resume: bool) -> None:
        """Raise :class:`RunFolderError` unless the folder suits a new run (or, with ``resume``, a resume)."""
        from model.checkpoint import checkpoint_exists

        started = self.config.exists() or checkpoint_exists(self.last)
        if not resume and (started or any(self.root.glob("store/episodes/*/*.npz"))):
            raise RunFolderError(f"{self.root} already holds a run; pass --resume to continue it or choose "
                                 "another --run-dir")
        if resume and not started:
            raise RunFolderError(f"nothing to resume in {self.root} (no checkpoint and no config.json)")


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file + fsync + rename, so a crash or a full disk leaves the old file intact."""
    from model.data.store import atomic_write  # the store's crash-safe writer (also fsyncs the folder)

    atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | Path, obj: Any) -> Path:
    """A result file (eval, bench, experiment): parent folders made, written atomically, indented."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2))
    return path


# ----------------------------------------------------------------------------------------- lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """A lock file holding ``pid@host``. A lock whose pid is dead (same host) is stale and taken over,
    so a SIGKILLed trainer never blocks ``--resume``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    def acquire(self) -> "RunLock":
        me = f"{os.getpid()}@{socket.gethostname()}"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read_owner()
                if owner is not None and self._owner_alive(owner):
                    raise RunLockedError(
                        f"{self.path.parent} is in use by another trainer (pid {owner[0]} on {owner[1]}); "
                        f"stop it or delete {self.path} if that process is gone") from None
                try:  # stale: remove and retry
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise RunLockedError(f"could not take the lock {self.path}")

    def _read_owner(self) -> tuple[int, str] | None:
        try:
            text = self.path.read_text().strip()
            pid, _, host = text.partition("@")
            return int(pid), host
        except (OSError, ValueError):
            return None  # unreadable or half-written: treat as stale

    @staticmethod
    def _owner_alive(owner: tuple[int, str]) -> bool:
        pid, host = owner
        if host and host != socket.gethostname():
            return True  # cannot check another machine: be safe
        return pid != os.getpid() and _pid_alive(pid)

    def release(self) -> None:
        if not self.held:
            return
        owner = self._read_owner()
        if owner is not None and owner[0] == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -------------------------------------------------------------------------------------- metrics

class MetricsWriter:
    """Appends one JSON object per line and fsyncs it, so a reader (the web UI) can tail the file and
    a SIGKILL loses at most the line being written (readers skip a torn last line)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_plain(record), sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            # A torn line from a killed writer would glue onto ours: start on a fresh line.
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write("\n")
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (written before a crash, but not checkpointed), so a
        resumed run writes each epoch exactly once."""
        if not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if int(r.get("epoch", 0)) <= epoch]
        write_text_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(x: Any) -> Any:
    """JSON-safe copy: numpy/torch scalars to Python numbers, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        try:
            x = x.item()
        except (ValueError, RuntimeError):
            return str(x)
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete records; a torn or corrupt line (a killed writer) is skipped."""
    return list(iter_metrics(path))


def iter_metrics(path: Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def is_no_space(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
