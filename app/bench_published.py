"""One timed workload of the published Δ-IRIS code (vmicheli/delta-iris), in its own process.

The child side of ``deltaplay bench side-by-side`` (app/bench_reference.py). The published code is
GPL-3.0 and is not part of this repository: it is imported at run time from an extracted copy
(``--reference DIR``, its ``src/`` put on ``sys.path``), unmodified, and configured from its own
``config/params/crafter.yaml``. This file only builds its modules the way its trainer does, feeds them
random inputs and times them on the CPU in float32, with the same counts of untimed and timed runs as
the matching ``deltaplay bench`` workload, so the two sides' figures compare one to one.

Why a child per workload: the allocator state one workload leaves behind changes the next one's time,
and a child killed for memory does not take the comparison down. The result is one JSON file.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable

#: What a folder must hold to be the published repository (checked before any child starts).
REQUIRED_PARTS = ("src/models/world_model.py", "src/models/tokenizer/tokenizer.py", "src/models/convnet.py",
                  "src/models/actor_critic/actor_critic.py", "src/envs/world_model_env.py", "src/data/batch.py",
                  "src/utils.py", "config/params/crafter.yaml")
#: Python packages the published modules import that this project does not depend on.
REQUIRED_PACKAGES = ("einops", "omegaconf")
NUM_ACTIONS = 17  # crafter.Env().action_space.n, as the published trainer passes it to the configs
WORKLOADS = ("dream", "imagine", "world_model", "tokenizer", "actor_critic")


# what its trainer runs under bf16 autocast (use_mixed_precision); never the actor-critic
MIXED_PARTS = ("tokenizer", "world_model")

def missing_parts(reference: Path) -> list[str]:
    """The files of the published repository that ``reference`` lacks (empty: it looks like the real thing)."""
    return [part for part in REQUIRED_PARTS if not (reference / part).is_file()]


def missing_packages() -> list[str]:
    """Packages the published code needs that this interpreter cannot import."""
    import importlib.util

    return [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]


# ------------------------------------------------------------------------------------- import set-up

def _install_stubs() -> list[str]:
    """In-memory stand-ins for packages that published modules import at module level but whose code
    the timed paths never call (gym type hints and Atari wrappers, cv2 and matplotlib for videos and plots,
    torchvision for a real env's reset). Only for packages that are not installed; nothing is written."""
    stubbed = []
    try:
        import gym  # noqa: F401
    except ImportError:
        gym = types.ModuleType("gym")

        class Env:
            pass

        class Wrapper(Env):
            def __init__(self, env: Any = None) -> None:
                self.env = env

        class ObservationWrapper(Wrapper):
            pass

        class RewardWrapper(Wrapper):
            pass

        gym.Env, gym.Wrapper = Env, Wrapper
        gym.ObservationWrapper, gym.RewardWrapper = ObservationWrapper, RewardWrapper
        gym.spaces = types.SimpleNamespace()
        gym.wrappers = types.SimpleNamespace()
        sys.modules["gym"] = gym
        stubbed.append("gym")
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")
        stubbed.append("cv2")
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        mpl, plt = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
        mpl.pyplot = plt
        sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": plt})
        stubbed.append("matplotlib.pyplot")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        import torch

        tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
        fn = types.ModuleType("torchvision.transforms.functional")
        fn.to_tensor = lambda a: torch.as_tensor(a).permute(2, 0, 1).float().div(255)
        tr.functional, tv.transforms = fn, tr
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})
        stubbed.append("torchvision")
    return stubbed


def load_params(reference: Path) -> dict[str, Any]:
    """``config/params/crafter.yaml`` resolved as the published ``src/main.py`` resolves it (OmegaConf with
    its ``eval`` resolver), as plain dicts."""
    from omegaconf import OmegaConf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not OmegaConf.has_resolver("eval"):
            OmegaConf.register_new_resolver("eval", eval)
    cfg = OmegaConf.create({"params": OmegaConf.load(reference / "config" / "params" / "crafter.yaml")})
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg.params)


class Published:
    """The published tokenizer, world model and actor-critic at its Crafter configuration, random weights.

    Built as its trainer builds them (what ``hydra.utils.instantiate`` does with the ``_target_`` entries);
    importing needs ``src/`` on the path, so this happens inside the child only."""

    def __init__(self, reference: Path, threads: int, seed: int = 0, mixed_precision: bool = False) -> None:
        self.mixed_precision = mixed_precision
        import crafter  # noqa: F401  (before the gym stand-in, so crafter takes its own no-gym path)

        self.stubbed = _install_stubs()
        sys.dont_write_bytecode = True  # leave the extracted tree as it is (no __pycache__)
        sys.path.insert(0, str(reference / "src"))
        import numpy as np
        import torch

        torch.set_num_threads(threads)
        torch.set_default_dtype(torch.float32)
        torch.manual_seed(seed)
        np.random.seed(seed)

        from models.actor_critic import ActorCritic, ActorCriticConfig, CnnLstmActorCritic
        from models.convnet import FrameCnnConfig
        from models.tokenizer import Tokenizer, TokenizerConfig
        from models.transformer import TransformerConfig
        from models.world_model import WorldModel, WorldModelConfig

        p = self.params = load_params(reference)

        def strip(d: dict) -> dict:
            return {k: v for k, v in d.items() if k != "_target_"}

        def cnn(d: dict) -> Any:
            return FrameCnnConfig(**strip(d))

        t = strip(p["tokenizer"]) | {"num_actions": NUM_ACTIONS}
        for k in ("encoder_config", "decoder_config", "frame_cnn_config"):
            t[k] = cnn(t[k])
        w = strip(p["world_model"]) | {"num_actions": NUM_ACTIONS}
        w["transformer_config"] = TransformerConfig(**strip(w["transformer_config"]))
        w["frame_cnn_config"] = cnn(w["frame_cnn_config"])
        a = strip(p["actor_critic"])
        m = strip(a["model"])
        a["model"] = CnnLstmActorCritic(frame_encoder_config=cnn(m["frame_encoder_config"]), num_actions=NUM_ACTIONS,
                                        two_hot_rets=m["two_hot_rets"])
        # Trainer.__init__'s order: tokenizer, world model, actor-critic.
        self.tokenizer = Tokenizer(TokenizerConfig(**t))
        self.world_model = WorldModel(WorldModelConfig(**w))
        self.actor_critic = ActorCritic(ActorCriticConfig(**a))
        self.burn_in = p["actor_critic"]["burn_in_length"]

    def batch(self, b: int, t: int) -> Any:
        """A training batch of random frames in [0, 1] and random actions (the published ``Batch``)."""
        import torch
        from data import Batch

        return Batch(torch.rand(b, t, 3, 64, 64), torch.randint(0, NUM_ACTIONS, (b, t)),
                     (torch.rand(b, t) < 0.05).float(), torch.zeros(b, t, dtype=torch.long),
                     torch.ones(b, t, dtype=torch.bool), [])

    def dream(self, b: int) -> tuple[Any, Any]:
        """The published ``WorldModelEnv`` primed on burn_in + 1 random frames; returns it and its first output."""
        import torch
        from envs.world_model_env import WorldModelEnv

        env = WorldModelEnv(self.tokenizer, self.world_model, "cpu")  # puts both in eval()
        past, first = env.reset_from_past(torch.rand(b, self.burn_in + 1, 3, 64, 64),
                                          torch.randint(0, NUM_ACTIONS, (b, self.burn_in)))
        return env, (past, first)

    def optimiser_step(self, part: str, loss: Callable[[], Any]) -> Callable[[], None]:
        """One step as the published ``Trainer.train_component`` takes it: loss (under its bf16 autocast with
        ``mixed_precision``), backward, gradient clipping, then its optimiser (AdamW with its weight-decay groups;
        Adam for the actor-critic)."""
        import torch
        from utils import configure_optimizer

        tp, lr = self.params["training"][part], self.params["training"]["learning_rate"]
        module = getattr(self, part)
        opt = (torch.optim.Adam(module.parameters(), lr=lr) if part == "actor_critic"
               else configure_optimizer(module, lr, tp["weight_decay"]))

        mixed = self.mixed_precision and part in MIXED_PARTS

        def step() -> None:
            module.train()
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=mixed):
                losses, _ = loss()
            losses.loss_total.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), tp["max_grad_norm"])
            opt.step()
            opt.zero_grad()

        return step


# ------------------------------------------------------------------------------------------ timing

def timed(fn: Callable[[], Any], repeats: int, warmup: int, before: Callable[[], Any] | None = None) -> dict[str, list]:
    """Wall and process CPU seconds of ``fn`` per timed run, after ``warmup`` untimed runs; ``before``
    (untimed) runs ahead of every run."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if before:
            before()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": wall, "cpu_s": cpu}


def per_unit(runs: dict[str, list], units: int) -> dict[str, float]:
    """Median milliseconds per unit (step, frame, pair) of timed runs that each did ``units`` units."""
    return {"wall_ms": 1000 * statistics.median(runs["wall_s"]) / units,
            "cpu_ms": 1000 * statistics.median(runs["cpu_s"]) / units}


def bench_dream(m: Published, a: argparse.Namespace) -> dict[str, Any]:
    """Batch 1: ``--steps`` consecutive ``WorldModelEnv.step`` calls per run (its K tokens with the KV cache,
    the decode, the next frame's CNN; the cache resets itself when full, as in its play loop)."""
    import torch

    env, _ = m.dream(1)
    act = torch.randint(0, NUM_ACTIONS, (1, 1))

    def run() -> None:
        for _ in range(a.steps):
            env.step(act)

    runs = timed(run, a.repeats, a.warmup)
    return {"unit": "step", "units_per_run": a.steps, **per_unit(runs, a.steps), "runs": runs}


def bench_imagine(m: Published, a: argparse.Namespace) -> dict[str, Any]:
    """Imagination as its actor-critic drives it, at inference: primed on burn_in + 1 frames (untimed), then
    ``--horizon`` steps of the actor choosing from the last frame and the dream answering. Same counts as
    ``deltaplay bench imagine``: one untimed rollout, then ``max(1, repeats // 2)`` timed ones."""
    import torch
    from torch.distributions.categorical import Categorical

    b, policy = a.batch, m.actor_critic.model.eval()
    state: dict[str, Any] = {}

    def prime() -> None:
        env, (past, first) = m.dream(b)
        with torch.no_grad():
            policy.reset(b)
            policy.burn_in(past)
        state.update(env=env, obs=first)

    def run() -> None:
        env, obs = state["env"], state["obs"]
        with torch.no_grad():
            for _ in range(a.horizon):
                action = Categorical(logits=policy(obs).logits_actions).sample()
                obs, _, _, _ = env.step(action)

    runs = timed(run, max(1, a.repeats // 2), 1, before=prime)
    frames = b * a.horizon
    out = per_unit(runs, frames)
    return {"unit": "frame", "units_per_run": frames, **out, "frames_per_s": 1000 / out["wall_ms"], "runs": runs}


class _GivenTokens:
    """Stands in for the tokenizer inside the published ``WorldModel.compute_loss``: answers every call with
    tokens the real tokenizer encoded once, so the step can also be timed without the per-step encoding
    (what a token cache saves)."""

    def __init__(self, tokens: Any) -> None:
        self.tokens = tokens

    def __call__(self, *_: Any) -> "_GivenTokens":
        return self


def bench_train(m: Published, a: argparse.Namespace) -> dict[str, Any]:
    """One optimiser step of the tokenizer (per frame pair), world model (per frame) or actor-critic (per
    step) on ``--batch`` random sequences of the published training length."""
    import torch

    part, b = a.workload, a.batch
    tp = m.params["training"][part]
    batch = m.batch(b, tp["sequence_length"])
    m.tokenizer.eval()  # the published trainer: the tokenizer is frozen while the others train
    m.world_model.eval()
    extra: dict[str, Any] = {}
    if part == "tokenizer":
        step = m.optimiser_step(part, lambda: m.tokenizer.compute_loss(batch))
        unit, units = "pair", b * (tp["sequence_length"] - 1)
    elif part == "world_model":
        step = m.optimiser_step(part, lambda: m.world_model.compute_loss(batch, tokenizer=m.tokenizer))
        unit, units = "frame", b * tp["sequence_length"]
    elif part == "actor_critic":
        step = m.optimiser_step(part, lambda: m.actor_critic.compute_loss(batch, tokenizer=m.tokenizer,
                                                                          world_model=m.world_model))
        unit, units = "step", 1
    else:
        raise ValueError(f"unknown training part {part!r}")
    runs = timed(step, a.repeats, a.warmup)
    if part == "world_model":
        with torch.no_grad():
            obs, act = batch.observations, batch.actions
            given = _GivenTokens(m.tokenizer(obs[:, :-1], act[:, :-1], obs[:, 1:]).tokens)
        given_step = m.optimiser_step(part, lambda: m.world_model.compute_loss(batch, tokenizer=given))
        given_runs = timed(given_step, a.repeats, a.warmup)
        extra = {"tokens_given": {**per_unit(given_runs, units), "runs": given_runs}}
    return {"unit": unit, "units_per_run": units, **per_unit(runs, units), "runs": runs, **extra}


BENCHES: dict[str, Callable[[Published, argparse.Namespace], dict[str, Any]]] = {
    "dream": bench_dream, "imagine": bench_imagine, "world_model": bench_train, "tokenizer": bench_train,
    "actor_critic": bench_train}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.bench_published",
                                 description="time one workload of the published Δ-IRIS code (a side-by-side child)")
    ap.add_argument("--reference", required=True, type=Path, help="extracted vmicheli/delta-iris tree")
    ap.add_argument("--workload", required=True, choices=WORKLOADS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50, help="dream: steps per timed run")
    ap.add_argument("--horizon", type=int, default=15, help="imagine: steps per rollout")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mixed-precision", action="store_true",
                    help="training steps under bf16 autocast, as its trainer runs the tokenizer and world model")
    ap.add_argument("--json", required=True, type=Path, help="write the result here")
    a = ap.parse_args(argv)
    reference = a.reference.resolve()
    if missing_parts(reference):
        ap.error(f"{reference} is not the published Δ-IRIS code (missing {', '.join(missing_parts(reference))})")
    t0 = time.perf_counter()
    m = Published(reference, a.threads, mixed_precision=a.mixed_precision)
    build_s = time.perf_counter() - t0
    out = BENCHES[a.workload](m, a)
    import torch

    mixed = a.mixed_precision and a.workload in MIXED_PARTS
    out.update(dtype="bf16 autocast" if mixed else "float32", side="reference", workload=a.workload, batch=a.batch,
               threads=torch.get_num_threads(),
               torch=torch.__version__, device="cpu", build_s=build_s, stubbed=m.stubbed,
               peak_rss_gib=peak_rss_gib(), reference=str(reference))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
