"""A checkpoint's models for play: where the checkpoint is (a folder, a run folder or the bundled one)
and its networks in eval mode on one device, loaded once per folder and shared by every session."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from model.config import Config, get_preset
from model.device import resolve_device

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CHECKPOINT = REPO_ROOT / "checkpoints" / "crafter"
TRAIN_HINT = ("train one with `deltaplay train --env crafter --preset cpu --baselines --run-dir runs/crafter` "
              "(hours on a laptop CPU), then pass `--checkpoint runs/crafter` (a run folder or any "
              "checkpoint folder), or copy runs/crafter/checkpoints/last to checkpoints/crafter")


class CheckpointMissing(FileNotFoundError):
    """No checkpoint where one was expected; the message says how to get one."""


def resolve_checkpoint_path(path: str | Path | None) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder (its ``checkpoints/last``) or None
    (the bundled Crafter checkpoint)."""
    from model.checkpoint import CONFIG, WEIGHTS

    def checkpoint_exists(p: Path) -> bool:
        # Read-only check: model.checkpoint.checkpoint_exists also repairs interrupted swaps, which
        # must stay the writer's job (a trainer may be mid-swap while a UI looks).
        return (p / WEIGHTS).is_file() and (p / CONFIG).is_file()

    if path is None:
        if not checkpoint_exists(BUNDLED_CHECKPOINT):
            raise CheckpointMissing(f"the bundled Crafter checkpoint {BUNDLED_CHECKPOINT} is missing; {TRAIN_HINT}")
        return BUNDLED_CHECKPOINT
    p = Path(path).expanduser()
    if checkpoint_exists(p):
        return p.resolve()
    if checkpoint_exists(p / "checkpoints" / "last"):
        return (p / "checkpoints" / "last").resolve()
    if not p.exists():
        raise CheckpointMissing(f"{p}: no such checkpoint or run folder; {TRAIN_HINT}")
    raise CheckpointMissing(f"{p}: not a checkpoint folder (no weights.safetensors + config.json) and not a "
                            f"run folder with checkpoints/last; {TRAIN_HINT}")


def run_folder_of(checkpoint: Path | None) -> Path | None:
    """The run folder a checkpoint folder belongs to (``run/checkpoints/<name>``), if any."""
    if checkpoint is not None and checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    return None


def store_of(checkpoint: Path | None) -> Path | None:
    """The episode store of the run a checkpoint belongs to, if it has one."""
    run = run_folder_of(checkpoint)
    return run / "store" if run is not None and (run / "store").is_dir() else None


@dataclass
class ModelBundle:
    """Everything a session needs from a checkpoint, in eval mode on one device. Read-only after load,
    so sessions share it (each session owns its own KV cache and LSTM state)."""

    cfg: Config
    device: torch.device
    tokenizer: torch.nn.Module
    world_models: dict[bool, torch.nn.Module]  # i_tokens on/off -> world model
    actor_critic: torch.nn.Module | None
    path: Path | None = None  # None: built from a preset (untrained)
    iris_tokenizer: torch.nn.Module | None = None  # the IRIS-style baseline, when trained (train.baselines)

    @property
    def env_name(self) -> str:
        return self.cfg.env.name

    @property
    def run_dir(self) -> Path | None:
        return run_folder_of(self.path)

    @property
    def store_dir(self) -> Path | None:
        return store_of(self.path)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto") -> "ModelBundle":
        """Load (or fetch from the cache) the models of a checkpoint folder, run folder or, for
        None, the bundled ``checkpoints/crafter``. The cache key includes the weights' mtime, so a
        checkpoint rewritten by training is reloaded."""
        from model.checkpoint import WEIGHTS, load_checkpoint

        ckpt = resolve_checkpoint_path(path)
        dev = resolve_device(device)
        key = (str(ckpt), str(dev), (ckpt / WEIGHTS).stat().st_mtime_ns)
        with _CACHE_LOCK:
            hit = _BUNDLES.get(key)
            if hit is not None:
                return hit
            loaded = load_checkpoint(ckpt, device=dev, with_state=False)
            bundle = cls.from_models(loaded.cfg, loaded.models, dev, path=ckpt)
            for k in [k for k in _BUNDLES if k[:2] == key[:2]]:  # drop stale versions of this folder
                del _BUNDLES[k]
            _BUNDLES[key] = bundle
            return bundle

    @classmethod
    def from_models(cls, cfg: Config, models: dict[str, torch.nn.Module], device: torch.device,
                    path: Path | None = None) -> "ModelBundle":
        wms: dict[bool, torch.nn.Module] = {bool(cfg.world_model.i_tokens): models["world_model"]}
        if models.get("world_model_no_itok") is not None:
            wms.setdefault(False, models["world_model_no_itok"])
        ac, iris = models.get("actor_critic"), models.get("iris_tokenizer")
        for m in [models["tokenizer"], ac, iris, *wms.values()]:
            if m is not None:
                m.to(device).eval().requires_grad_(False)
        return cls(cfg=cfg, device=device, tokenizer=models["tokenizer"], world_models=wms,
                   actor_critic=ac, path=path, iris_tokenizer=iris)

    @classmethod
    def from_preset(cls, preset: str | Config, env: str | None = None, device: str = "auto") -> "ModelBundle":
        """Untrained models at a preset's size: for benchmarks, where speed not quality matters."""
        from model.checkpoint import build_model

        cfg = get_preset(preset, env) if isinstance(preset, str) else preset
        if env is not None:
            cfg.env.name = env
        torch.manual_seed(cfg.seed)
        models = {n: build_model(n, cfg) for n in ("tokenizer", "world_model", "actor_critic")}
        return cls.from_models(cfg, models, resolve_device(device))


_BUNDLES: dict[tuple, ModelBundle] = {}
_CACHE_LOCK = threading.Lock()
