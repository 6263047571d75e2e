"""Plain helpers shared by tests (pytest puts this folder on sys.path: ``from helpers import ...``)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from model.data.envs import make_env
from model.data.store import Episode

REPO = Path(__file__).resolve().parents[1]
"""The repository root (tests live at several depths below it)."""


def gridworld_episode(seed: int, max_steps: int = 40) -> Episode:
    """A real GridWorld rollout under a seeded random policy."""
    env = make_env("gridworld", max_steps=max_steps)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, term, trunc = [obs], [], [], [], []
    while True:
        a = int(rng.integers(5))
        obs, r, te, tr, _ = env.step(a)
        frames.append(obs), actions.append(a), rewards.append(r), term.append(te), trunc.append(tr)
        if te or tr:
            return Episode(np.stack(frames), actions, rewards, term, trunc, seed=seed, env="gridworld")


def tiny_gridworld_run(tmp_path_factory) -> Path:
    """A tiny GridWorld run folder (both world-model variants, IRIS tokenizer, agent, store) trained for one
    epoch by the real trainer, once per pytest session: the tests/ and experiments/ conftests both ask for it,
    and the second finds the first's folder."""
    import torch

    from model.config import tiny
    from model.train.loop import train

    root = tmp_path_factory.getbasetemp() / "tiny_gridworld_run"
    if (root / "checkpoints" / "last").is_dir():
        return root
    cfg = tiny()
    cfg.env.name = "gridworld"
    cfg.train.baselines = True
    torch.manual_seed(0)
    train(cfg, run_dir=root, max_epochs=1, console=False)
    return root


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository root on one thread, its output captured as text."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def download_gif(page, path: Path, timeout_ms: float) -> Path:
    """Clicks the web page's GIF export and saves what its download link serves to ``path``, as a person would."""
    page.locator("#btn-gif").click()
    link = page.locator("#gif-file a").first
    link.wait_for(timeout=timeout_ms)
    with page.expect_download(timeout=timeout_ms) as dl:
        link.click()
    dl.value.save_as(path)
    return path
