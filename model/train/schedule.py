"""How much each epoch does: env steps to collect, optimiser steps per component, and the time the next
epoch should take (so a run with a time budget ends on an epoch boundary)."""
from __future__ import annotations

from model.config import Config

COMPONENTS = ("tokenizer", "world_model", "actor_critic")


def collection_target(cfg: Config, epoch: int) -> int:
    """Env steps the store should hold once epoch ``epoch`` (1-based) has collected."""
    tr = cfg.train
    return min(tr.total_frames, tr.initial_random_frames + (epoch - 1) * tr.frames_per_epoch)


def steps_for(cfg: Config, component: str, epoch: int) -> int:
    """Optimiser steps of ``component`` (tokenizer, world_model, actor_critic) in epoch ``epoch``."""
    tr = cfg.train
    if epoch == 1:
        return {"tokenizer": tr.first_epoch_tokenizer_steps, "world_model": tr.first_epoch_world_model_steps,
                "actor_critic": tr.first_epoch_actor_critic_steps}[component]
    return tr.steps_per_epoch


def next_epoch_seconds(cfg: Config, epoch: int, phase_times: dict[str, float]) -> float:
    """Seconds epoch ``epoch + 1`` should take: each phase of the latest epoch that ran it, scaled by its
    share of work (the first epoch's long warm-up says little about the later, shorter epochs).
    Without timings (no epoch done yet) it is 0: the first epoch always runs."""
    if not phase_times:
        return 0.0
    est = 0.0
    for comp in COMPONENTS:
        est += phase_times.get(comp, 0.0) * steps_for(cfg, comp, epoch + 1) / max(1, steps_for(cfg, comp, epoch))
    collected = collection_target(cfg, epoch) - collection_target(cfg, epoch - 1) if epoch > 1 \
        else collection_target(cfg, 1)
    upcoming = collection_target(cfg, epoch + 1) - collection_target(cfg, epoch)
    est += phase_times.get("collect", 0.0) * upcoming / max(1, collected)
    if (epoch + 1) % cfg.train.eval_every == 0:
        est += phase_times.get("evaluate", 0.0)
    return est
