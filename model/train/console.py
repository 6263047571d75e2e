"""What a run tells people while it trains: ``train.log``, a progress bar and printed lines (rank 0 on a
terminal), and optional TensorBoard scalars."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("deltaplay.train")

LOG_EVERY_S = 30.0  # progress lines in train.log while the bar is off (nohup, the web UI's jobs)
SUMMARY_FIELDS = (("tok", "tokenizer_loss", ".4f"), ("psnr", "recon_psnr", ".1f"), ("wm", "world_model_loss", ".3f"),
                  ("acc", "token_accuracy", ".2f"), ("ac", "actor_critic_loss", ".3f"), ("return", "return_mean", ".2f"),
                  ("score", "crafter_score", ".2f"))


def fmt_s(seconds: float) -> str:
    """A duration as ``1h02m`` or ``3m07s``."""
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def summary_line(rec: dict[str, Any]) -> str:
    """One line per finished epoch: frames, the headline losses and scores, speed."""
    parts = [f"epoch {rec['epoch']}", f"frames {rec['env_frames']}/{rec['total_frames']}"]
    parts += [f"{label} {rec[key]:{fmt}}" for label, key, fmt in SUMMARY_FIELDS if key in rec]
    parts.append(f"{rec['fps']:.1f} fps")
    return " | ".join(parts)


class Console:
    """Rank 0's outputs. ``printing`` is off for other ranks and for quiet runs (the log file stays)."""

    def __init__(self, printing: bool):
        self.printing = printing
        self.bar: Any = None
        self.tensorboard: Any = None
        self._log_file: logging.Handler | None = None
        self._last_log = 0.0

    def open_log(self, path: Path) -> None:
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        self._log_file = h

    def open_tensorboard(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("--tensorboard: the tensorboard package is not installed; skipping")
            self.say("tensorboard is not installed (pip install tensorboard); metrics.jsonl only")
            return
        self.tensorboard = SummaryWriter(str(folder))

    def open_bar(self, total: int, done: int) -> None:
        """A frame counter on the terminal (tqdm turns itself off when stdout is not a terminal)."""
        if not self.printing:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=min(done, total), unit="frame", dynamic_ncols=True, disable=None,
                        bar_format="{n_fmt}/{total_fmt} frames |{bar}| {postfix}")

    def say(self, text: str) -> None:
        if not self.printing:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def progress(self, event: dict[str, Any], wall_time: float) -> None:
        """Show a progress event (see :func:`model.train.loop.train`): bar postfix, a throttled log line."""
        phase, frames, total = event["phase"], event["env_frames"], event["total_frames"]
        now = time.monotonic()
        if "step" in event and now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            loss = f" loss {event['loss']:.4f}" if "loss" in event else ""
            log.info("epoch %d %s step %s/%s%s", event["epoch"], phase, event["step"], event["steps"], loss)
        if self.bar is None:
            return
        self.bar.n = min(frames, self.bar.total)
        post = {"ep": event["epoch"], "phase": phase}
        if "step" in event:
            post["step"] = f"{event['step']}/{event['steps']}"
        if "loss" in event:
            post["loss"] = f"{event['loss']:.3f}"
        if wall_time > 0 and frames:
            fps = frames / wall_time
            post["fps"] = f"{fps:.1f}"
            post["eta"] = fmt_s(max(0, total - frames) / fps)
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(0)

    def scalars(self, rec: dict[str, Any], step: int) -> None:
        """The numbers of an epoch's record as TensorBoard scalars at ``step`` env frames."""
        if self.tensorboard is None:
            return
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "time"):
                self.tensorboard.add_scalar(k, v, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self._log_file is not None:
            log.removeHandler(self._log_file)
            self._log_file.close()
