"""Background training runs for the web UI.

A run is a folder under ``runs_dir`` written by ``python -m app train``. This module starts that
command as a child process (so a crash or a stop never takes the UI down), stops it (SIGTERM, then
SIGKILL), resumes it, and reads its progress back from the files the trainer writes
(``metrics.jsonl``, ``train.log``). Its own bookkeeping lives in two files in the run folder:
``job.json`` (command, pid, how it ended) and ``process.log`` (the child's stdout and stderr, which is
where a crash's traceback lands).
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.train.run_dir import read_metrics

JOB_FILE = "job.json"
PROCESS_LOG = "process.log"
GALLERY = "gallery"  # the web UI's exported GIFs live in the runs folder under this name: no run may take it
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_RE = re.compile(r"^(crafter|gridworld|atari:[A-Za-z0-9]{1,40})$")
TRAIN_NICE = 19  # a training child takes only the CPU that play leaves: play stays smooth, training uses the rest


class JobError(Exception):
    """A request the manager refuses (bad name, folder busy, nothing to resume); the message is for the user."""


@dataclass
class TrainSpec:
    """What the Train tab's form asks for; turned into ``python -m app train`` arguments."""

    name: str
    env: str = "crafter"
    preset: str = "tiny"
    tokenizer: str = "delta"  # "delta" | "iris"
    i_tokens: bool = True
    device: str = "auto"
    frames: int | None = None  # total env-frame budget; None = the preset's
    baselines: bool = False
    epochs: int | None = None  # stop after this epoch number; None = run to the frame budget
    extra: list[str] = field(default_factory=list)

    def args(self, run_dir: Path, resume: bool = False) -> list[str]:
        """Arguments of `deltaplay train` (app/train_cmd.py). On resume the run's own config wins,
        so only the schedule (device, frame budget, epochs) is passed again."""
        a = ["--run-dir", str(run_dir), "--device", self.device, "--quiet"]
        if not resume:
            a += ["--env", self.env, "--preset", self.preset, "--tokenizer", self.tokenizer]
            if not self.i_tokens:
                a.append("--no-i-tokens")
            if self.baselines:
                a.append("--baselines")
        if self.frames:
            a += ["--frames", str(int(self.frames))]
        if self.epochs:
            a += ["--epochs", str(int(self.epochs))]
        if resume:
            a.append("--resume")
        return a + list(self.extra)


@dataclass
class RunStatus:
    name: str
    path: Path
    state: str  # "running" | "stopping" | "finished" | "stopped" | "crashed" | "unknown"
    pid: int | None
    progress: dict[str, Any]
    error: str | None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


_JSONL_CACHE: dict[str, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file (a half-written last line, the trainer mid-write, is skipped).
    Cached by (mtime, size): the UI polls every second and a long run's file is megabytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    key = (st.st_mtime_ns, st.st_size)
    hit = _JSONL_CACHE.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    rows = read_metrics(path)
    _JSONL_CACHE[str(path)] = (key, rows)
    return rows


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def extract_error(log_text: str) -> str | None:
    """The last Python traceback in a log (or the last 'error:' line of a CLI refusal), else None."""
    lines = log_text.splitlines()
    start = None
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            start = i
    if start is not None:
        return "\n".join(lines[start:]).strip()
    for line in reversed(lines):
        if "error:" in line.lower():
            return line.strip()
    return None


class JobManager:
    """Owns the training child processes started from one UI server."""

    def __init__(self, runs_dir: str | Path, python: str = sys.executable):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self._procs: dict[str, subprocess.Popen] = {}
        self._starting = threading.Lock()

    # ---- paths and bookkeeping -------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME_RE.match(name) or name == GALLERY:
            reserved = f" ({GALLERY!r} holds the exported GIFs)" if name == GALLERY else ""
            raise JobError(f"invalid run name {_shown(name)}{reserved}: use letters, digits, '-', '_' or '.' "
                           "(at most 64, starting with a letter or digit)")
        return self.runs_dir / name

    def _job(self, name: str) -> dict[str, Any]:
        p = self.run_dir(name) / JOB_FILE
        try:
            return json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write_job(self, name: str, job: dict[str, Any]) -> None:
        p = self.run_dir(name) / JOB_FILE
        tmp = p.with_name(f".{p.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(job, indent=2))
        os.replace(tmp, p)

    def is_running(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is not None:
            if proc.poll() is None:
                return True
            self._record_exit(name, proc.returncode)
            return False
        # Started by another UI process (or before a restart): trust the pid file while it lives.
        return _pid_alive(self._job(name).get("pid")) and self._job(name).get("returncode") is None

    def _record_exit(self, name: str, code: int) -> None:
        job = self._job(name)
        if job.get("returncode") is None:
            job["returncode"] = code
            job["ended"] = time.time()
            self._write_job(name, job)

    # ---- actions ---------------------------------------------------------------------------------
    def start(self, spec: TrainSpec, resume: bool = False) -> RunStatus:
        """Start ``deltaplay train`` for ``spec`` in the background; one run at a time per UI, so that
        training never takes the core that play needs."""
        run_dir = self.run_dir(spec.name)
        if not _ENV_RE.match(spec.env or ""):
            raise JobError("the environment must be crafter, gridworld or atari:<Game> (letters and digits)")
        with self._starting:
            if self.is_running(spec.name):
                raise JobError(f"run {spec.name!r} is already training; stop it first or choose another name")
            going = self.running()
            if going is not None:
                raise JobError(f"a training run is already going ({going}): one at a time, stop it first")
            if not resume and run_dir.exists() and any(run_dir.iterdir()):
                raise JobError(f"run folder runs/{spec.name} already exists; choose another name or press Resume")
            self._spawn(spec, run_dir, resume)
        return self.status(spec.name)

    def _spawn(self, spec: TrainSpec, run_dir: Path, resume: bool) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, "-m", "app", "train", *spec.args(run_dir, resume=resume)]
        log = open(run_dir / PROCESS_LOG, "ab")
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=train_env(), start_new_session=True)
        log.close()
        try:  # below play in the scheduler's eyes: a step of the dream must not wait for a training batch
            os.setpriority(os.PRIO_PROCESS, proc.pid, TRAIN_NICE)
        except (AttributeError, OSError):
            pass
        self._procs[spec.name] = proc
        self._write_job(spec.name, {"command": cmd, "spec": spec.__dict__, "pid": proc.pid,
                                    "started": time.time(), "returncode": None, "stopped": False})

    def running(self) -> str | None:
        """The run this UI is training now, if any."""
        return next((name for name in list(self._procs) if self.is_running(name)), None)

    def resume(self, name: str) -> RunStatus:
        job = self._job(name)
        if not job.get("spec"):
            raise JobError(f"run {name!r} was not started from this UI (no {JOB_FILE}); cannot resume it here")
        return self.start(TrainSpec(**job["spec"]), resume=True)

    def stop(self, name: str, grace_s: float = 20.0, wait: bool = False) -> RunStatus:
        """SIGTERM lets the trainer finish its step and save a checkpoint; a watcher thread sends
        SIGKILL if it has not exited after ``grace_s``. ``wait=False`` returns at once ("stopping")."""
        if not self.is_running(name):
            raise JobError(f"run {name!r} is not running")
        job = self._job(name)
        proc = self._procs.get(name)
        pid = proc.pid if proc is not None else job.get("pid")
        job["stopped"] = True
        self._write_job(name, job)
        _signal_group(pid, signal.SIGTERM)
        watcher = threading.Thread(target=self._kill_after, args=(name, pid, grace_s), daemon=True)
        watcher.start()
        if wait:
            watcher.join()
        return self.status(name)

    def _kill_after(self, name: str, pid: int | None, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.is_running(name):
            time.sleep(0.1)
        if self.is_running(name):
            _signal_group(pid, signal.SIGKILL)
        proc = self._procs.get(name)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return
            self._record_exit(name, proc.returncode)
        elif not _pid_alive(pid):
            self._record_exit(name, -9)

    def shutdown(self) -> None:
        """Stop every child this manager started (the UI is closing)."""
        for name in list(self._procs):
            if self.is_running(name):
                try:
                    self.stop(name, grace_s=5.0, wait=True)
                except JobError:
                    pass

    # ---- reading ---------------------------------------------------------------------------------
    def list_runs(self) -> list[RunStatus]:
        if not self.runs_dir.exists():
            return []
        out = []
        for d in sorted(self.runs_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            if d.is_dir() and _NAME_RE.match(d.name) and d.name != GALLERY:
                out.append(self.status(d.name))
        return out

    def metrics(self, name: str) -> list[dict[str, Any]]:
        return read_jsonl(self.run_dir(name) / "metrics.jsonl")

    def log_tail(self, name: str, lines: int = 40) -> str:
        d = self.run_dir(name)
        text = tail(d / "train.log", lines)
        return text or tail(d / PROCESS_LOG, lines)

    def error(self, name: str) -> str | None:
        """A crashed run's error: the traceback in the child's output (or in train.log)."""
        d = self.run_dir(name)
        return extract_error(tail(d / PROCESS_LOG, 200)) or extract_error(tail(d / "train.log", 200))

    def status(self, name: str) -> RunStatus:
        d = self.run_dir(name)
        running = self.is_running(name)
        job = self._job(name)
        code = job.get("returncode")
        if running:
            state = "stopping" if job.get("stopped") else "running"
        elif job.get("stopped"):
            state = "stopped"
        elif code == 0:
            state = "finished"
        elif code is not None:
            state = "crashed"
        elif job:
            state = "unknown"  # started by a UI that is gone; pid dead, exit not recorded
        else:
            state = "finished" if latest_checkpoint(d) else "unknown"
        err = self.error(name) if state in ("crashed", "unknown") else None
        return RunStatus(name=name, path=d, state=state, pid=job.get("pid") if running else None,
                         progress=progress(self.metrics(name), job), error=err)


def _shown(name: object, keep: int = 40) -> str:
    """A name as typed, cut short: a 1 MB name is not echoed back."""
    if isinstance(name, str) and len(name) > keep:
        return f"{name[:keep]!r}… ({len(name):,} characters)"
    return repr(name)


def train_threads() -> int:
    """Threads a training child may use: all cores but one, which stays free for play (and no more
    than an OMP_NUM_THREADS the server was given)."""
    free = max(1, (os.cpu_count() or 2) - 1)
    try:
        given = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        given = 0
    return min(free, given) if given > 0 else free


def train_env() -> dict[str, str]:
    """The training child's environment: unbuffered output, its thread count capped (train_threads)."""
    n = str(train_threads())
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)


def crash_line(error: str | None) -> str | None:
    """A crash's last line (``ValueError: ...``): what went wrong, without the traceback's frames."""
    if not error:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _signal_group(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.killpg(os.getpgid(pid), sig)  # the child runs in its own session: its group is its own
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _first(row: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    return None


def progress(rows: list[dict[str, Any]], job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Epoch, frames, frames/s and ETA from the latest metrics rows (robust to missing keys)."""
    out: dict[str, Any] = {"epoch": None, "frames": None, "total_frames": None, "fps": None, "eta_s": None}
    if not rows:
        return out
    last = rows[-1]
    out["epoch"] = _first(last, "epoch")
    frames = _first(last, "frames", "env_frames", "num_frames")
    out["frames"] = frames
    total = _first(last, "total_frames")
    if total is None and job and job.get("spec", {}).get("frames"):
        total = job["spec"]["frames"]
    out["total_frames"] = total
    fps = _first(last, "fps", "frames_per_s")
    if fps is None:
        timed = [(r.get("time"), _first(r, "frames", "env_frames")) for r in rows]
        timed = [(t, f) for t, f in timed if isinstance(t, (int, float)) and isinstance(f, (int, float))]
        if len(timed) >= 2 and timed[-1][0] > timed[0][0]:
            fps = (timed[-1][1] - timed[0][1]) / (timed[-1][0] - timed[0][0])
    out["fps"] = fps
    if isinstance(fps, (int, float)) and fps > 0 and isinstance(total, (int, float)) and isinstance(frames, (int, float)):
        out["eta_s"] = max(0.0, (total - frames) / fps)
    return out


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder (one holding ``weights.safetensors``) inside a run folder."""
    run_dir = Path(run_dir)
    for cand in (run_dir / "checkpoints" / "last", run_dir):  # model/train/run_dir.py layout first
        if (cand / "weights.safetensors").exists():
            return cand
    cands = [p.parent for p in run_dir.glob("**/weights.safetensors") if ".tmp" not in p.parent.name]
    if not cands:
        return None
    return max(cands, key=lambda p: (p / "weights.safetensors").stat().st_mtime)


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
