"""Pictures of an epoch for people to look at: a reconstruction strip (PNG) and the agent in the dream (GIF)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.data.frames import to_uint8
from model.data.policies import Agent
from model.data.sampler import to_torch
from model.nets.imagination import DreamEnv
from model.train.phases import Phases

STRIP_FRAMES = 8
GIF_SCALE = 4  # nearest-neighbour upscaling of the 64x64 frames


@torch.no_grad()
def write_media(phases: Phases, folder: Path, epoch: int) -> dict[str, str]:
    """Write ``recon_epoch_XXXX.png`` (real frames over their reconstructions) and ``dream_epoch_XXXX.gif``
    (the agent acting in the world model from a real start) into ``folder``; returns their paths."""
    import imageio.v3 as iio

    cfg, models, device = phases.cfg, phases.models, phases.device
    tok = models["tokenizer"]
    prev, act, nxt, _ = phases.pairs()
    k = min(STRIP_FRAMES, nxt.size(0))
    recon, _ = tok.reconstruct(prev[:k], act[:k], nxt[:k])
    strip = np.concatenate([np.concatenate(list(to_uint8(nxt[:k])), axis=1),
                            np.concatenate(list(to_uint8(recon)), axis=1)], axis=0)
    png = folder / f"recon_epoch_{epoch:04d}.png"
    iio.imwrite(png, strip)

    b = to_torch(phases.samplers["actor_critic"].sample_burn_in(1), device)
    dream = DreamEnv(tok, models["world_model"], temperature=1.0, autocast_mode=cfg.train.autocast)
    agent = Agent(models["actor_critic"])
    for t in range(b.frames.size(1) - 1):
        agent.observe(b.frames[:, t])
    frame = dream.reset(b.frames, b.actions[:, :-1])
    frames = [to_uint8(frame[0])]
    for _ in range(max(16, 2 * cfg.actor_critic.horizon)):
        frame, _, end_prob = dream.step(agent.act(frame))
        frames.append(to_uint8(frame[0]))
        if float(end_prob[0]) > 0.5:
            break
    gif = folder / f"dream_epoch_{epoch:04d}.gif"
    big = [f.repeat(GIF_SCALE, axis=0).repeat(GIF_SCALE, axis=1) for f in frames]
    iio.imwrite(gif, np.stack(big), duration=100, loop=0)
    return {"recon": str(png), "dream": str(gif)}
