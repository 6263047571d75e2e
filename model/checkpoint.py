"""Checkpoints: a folder that rebuilds every model from its config alone.

    checkpoint/
      weights.safetensors   all weights, keys prefixed by model name (tokenizer.*, world_model.*,
                            world_model_no_itok.*, iris_tokenizer.*, actor_critic.*, actor_critic_target.*)
      config.json           the full Config (Config.to_json): enough to rebuild the networks
      state.pt              optimizers and counters; tensors and primitives only, so it loads with
                            torch.load(weights_only=True) (no pickle code execution)

Safetensors instead of torch.save for weights: no pickle, mmap-able, readable from other languages.
A checkpoint is written to a hidden temp folder, fsynced, then renamed into place, so a crash or a
full disk at any moment leaves either the old or the new checkpoint, never a half-written one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.config import Config

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
STATE = "state.pt"
FORMAT_VERSION = "1"

# Every model a checkpoint may hold. Rebuilt by ``build_model`` from the config alone.
MODEL_NAMES = ("tokenizer", "world_model", "world_model_no_itok", "iris_tokenizer", "actor_critic",
               "actor_critic_target")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class LoadedCheckpoint:
    cfg: Config
    models: dict[str, nn.Module]
    state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


# ------------------------------------------------------------------------------------- building

def iris_tokenizer_config(cfg: Config):
    """The IRIS-style baseline tokenizer trained beside Δ (``train.baselines``): same conv widths,
    frames alone, ``train.iris_tokens`` tokens per frame, ``train.iris_fsq_levels`` when set."""
    tok = dataclasses.replace(cfg.tokenizer, kind="iris", tokens_per_frame=cfg.train.iris_tokens)
    levels = tuple(cfg.train.iris_fsq_levels)
    if levels:
        tok = dataclasses.replace(tok, fsq_levels=levels, vocab_size=math.prod(levels))
    return tok


def build_model(name: str, cfg: Config) -> nn.Module:
    """One model from the config; the only place that knows how names map to classes."""
    from model.nets.actor_critic import ActorCritic
    from model.nets.tokenizer import build_tokenizer
    from model.nets.world_model import WorldModel

    a = cfg.env.num_actions
    if name == "tokenizer":
        return build_tokenizer(cfg.tokenizer, a)
    if name == "iris_tokenizer":
        return build_tokenizer(iris_tokenizer_config(cfg), a)
    if name in ("world_model", "world_model_no_itok"):
        wm_cfg = cfg.world_model
        if name == "world_model_no_itok":
            wm_cfg = dataclasses.replace(wm_cfg, i_tokens=False)
        fsq = cfg.tokenizer.quantizer == "fsq" and cfg.tokenizer.kind != "iris"
        return WorldModel(wm_cfg, tokens_per_frame=cfg.tokenizer.tokens_per_frame,
                          vocab_size=cfg.tokenizer.vocab_size, num_actions=a,
                          layout="iris" if cfg.tokenizer.kind == "iris" else "delta",
                          digit_levels=tuple(cfg.tokenizer.fsq_levels) if fsq else None,
                          view=cfg.env.scroll_view if wm_cfg.motion_input else None)
    if name in ("actor_critic", "actor_critic_target"):
        return ActorCritic(cfg.actor_critic, a)
    raise ValueError(f"unknown model name {name!r}; expected one of {MODEL_NAMES}")


# ---------------------------------------------------------------------------------------- saving

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _side(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _recover(path: Path) -> None:
    """Finish an interrupted swap: if only the previous checkpoint (``.old``) survives, restore it;
    delete temp folders of writers that died mid-write."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
    old = _side(path, "old")
    if old.exists() and not path.exists():
        os.replace(old, path)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(path: str | Path, models: dict[str, nn.Module], cfg: Config,
                    state: dict[str, Any] | None = None, half: bool = False, skip: tuple[str, ...] = ()) -> Path:
    """Write ``models`` (name -> module, names from MODEL_NAMES), the config and ``state`` atomically.

    ``half=True`` stores floating weights as float16 (the bundled checkpoint: half the download);
    loading casts them back to the models' float32 parameters. ``skip``: weight-name prefixes left out
    (only ones the loader can rebuild, see :data:`REBUILDABLE`)."""
    from safetensors.torch import save_file

    path = Path(path)
    unknown = set(models) - set(MODEL_NAMES)
    if unknown:
        raise ValueError(f"unknown model names {sorted(unknown)}; expected a subset of {MODEL_NAMES}")
    tensors: dict[str, torch.Tensor] = {}
    for name, module in models.items():
        for k, v in module.state_dict().items():
            t = v.detach().to("cpu")
            if half and t.is_floating_point():
                t = t.half()
            if any(f"{name}.{k}".startswith(p) for p in skip):
                continue
            tensors[f"{name}.{k}"] = t.contiguous().clone()  # clone: safetensors refuses shared storage

    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp = _side(path, f"tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS),
                  metadata={"format": "pt", "deltaplay_version": FORMAT_VERSION, "half": str(half)})
        (tmp / CONFIG).write_text(cfg.to_json(), encoding="utf-8")
        torch.save(state or {}, tmp / STATE)
        for f in (WEIGHTS, CONFIG, STATE):
            _fsync_file(tmp / f)
        _fsync_dir(tmp)
        old = _side(path, "old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _recover(path)
        raise
    return path


# --------------------------------------------------------------------------------------- loading

def checkpoint_exists(path: str | Path) -> bool:
    path = Path(path)
    _recover(path)
    return (path / WEIGHTS).is_file() and (path / CONFIG).is_file()


def load_config(path: str | Path) -> Config:
    """The config of a checkpoint folder (or of a ``config.json`` file)."""
    path = Path(path)
    file = path if path.suffix == ".json" else path / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (a checkpoint folder needs {CONFIG})")
    try:
        return Config.from_dict(json.loads(file.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: does not match this version's Config ({e})") from None


def load_weights(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """name -> state dict, from ``weights.safetensors``."""
    from safetensors.torch import load_file

    file = Path(path) / WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        flat = load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt headers
        raise CheckpointError(f"{file}: unreadable or corrupt safetensors file ({e})") from None
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        name, _, sub = key.partition(".")
        if name not in MODEL_NAMES or not sub:
            raise CheckpointError(f"{file}: unexpected weight {key!r} (not under {', '.join(MODEL_NAMES)})")
        out.setdefault(name, {})[sub] = t
    return out


def stored_models(path: str | Path) -> list[str]:
    """The names of the models in a checkpoint folder, from its weights file's header (no tensor is read)."""
    from safetensors import safe_open

    file = Path(path) / WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        with safe_open(str(file), "pt") as f:
            keys = list(f.keys())
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt headers
        raise CheckpointError(f"{file}: unreadable or corrupt safetensors file ({e})") from None
    return sorted({key.partition(".")[0] for key in keys})


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    file = Path(path) / STATE
    if not file.is_file():
        return {}
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file}: unreadable training state ({e})") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    names: tuple[str, ...] | None = None, with_state: bool = True) -> LoadedCheckpoint:
    """Rebuild every model stored in the checkpoint (or only ``names``) from its config and load
    the weights in float32. Raises :class:`CheckpointError` naming the file on any mismatch."""
    path = Path(path)
    if not path.is_dir():
        _recover(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    weights = load_weights(path)
    cfg = load_config(path)
    file = path / WEIGHTS
    for required in ("tokenizer", "world_model"):
        if required not in weights and (names is None or required in names):
            raise CheckpointError(f"{file}: no {required}.* weights")
    wanted = [n for n in MODEL_NAMES if n in weights and (names is None or n in names)]
    if names is not None:
        missing = [n for n in names if n not in weights]
        if missing:
            raise CheckpointError(f"{file}: has no weights for {', '.join(missing)}")
    models: dict[str, nn.Module] = {}
    for name in wanted:
        try:
            model = build_model(name, cfg)
        except Exception as e:
            raise CheckpointError(f"{path / CONFIG}: cannot build {name} from this config ({e})") from None
        sd = dict(weights[name])
        own = model.state_dict()
        if name == "actor_critic" and not any(k.startswith("target.") for k in sd):
            # An exported (play-only) checkpoint leaves out the EMA target critic: start it from the online
            # network, which it tracks (only training reads it).
            sd.update({"target." + k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")})
        sd = {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v) for k, v in sd.items()}
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(s.strip() for s in first[:4])
            raise CheckpointError(f"{file}: {name} weights do not fit the config ({detail})") from None
        models[name] = model.to(device).float()
    state = load_state(path, device="cpu") if with_state else {}
    return LoadedCheckpoint(cfg=cfg, models=models, state=state, path=path)


def split_init_spec(spec: str) -> tuple[str, str | None]:
    """``folder`` or ``folder:stored_name`` -> (folder, stored_name or None); a colon counts only in the
    last path component, so Windows drives and folders with colons higher up are left alone."""
    if ":" in Path(spec).name:
        folder, _, stored = spec.rpartition(":")
        return folder, stored or None
    return spec, None


def load_init_weights(name: str, spec: str, cfg: Config, model: nn.Module) -> str:
    """Warm start (``train.init``): copy into ``model`` (this run's ``name``) the weights of a model stored
    in another checkpoint. ``spec`` is ``folder`` or ``folder:stored_name`` (e.g. an IRIS tokenizer that
    the tokenizer experiment stored as ``tokenizer``). Returns a line for the log; raises
    :class:`CheckpointError` when the stored model was built for another env or other shapes."""
    folder, stored = split_init_spec(spec)
    stored = stored or name
    src = load_checkpoint(folder, names=(stored,), with_state=False)
    if src.cfg.env.name != cfg.env.name:
        raise CheckpointError(f"{folder}: train.init.{name} was trained on {src.cfg.env.name}, "
                              f"this run is {cfg.env.name}")
    state = src.models[stored].state_dict()
    if hasattr(model, "adapt_state_dict"):  # e.g. a flat token head into a digit head
        state = model.adapt_state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(x.strip() for x in str(e).strip().splitlines()[:3])
        raise CheckpointError(f"{folder}: its {stored} does not fit this run's {name} ({detail})") from None
    steps = load_state(folder).get("steps")
    return f"{name} starts from {folder} ({stored}{f', {steps} steps' if steps else ''})"


REBUILDABLE = ("actor_critic.target.",)  # weights the loader can rebuild when a checkpoint leaves them out


def export_checkpoint(src: str | Path, dst: str | Path, half: bool = True,
                      names: tuple[str, ...] | None = None, play_only: bool = True) -> Path:
    """A shareable copy of a checkpoint (e.g. the bundled one): weights only (no optimizer state),
    float16 by default, optionally only some models. ``play_only`` also leaves out the actor-critic's
    EMA target (a copy-sized network that only training reads; 3 MB of the bundle)."""
    ck = load_checkpoint(src, device="cpu", names=names, with_state=False)
    state = load_state(src)
    counters = {k: state[k] for k in ("epoch", "env_frames") if k in state}
    return save_checkpoint(dst, ck.models, ck.cfg, counters, half=half, skip=REBUILDABLE if play_only else ())
