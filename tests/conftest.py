"""Shared test setup: no telemetry, headless SDL, few threads (CI has 2 cores)."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the models in tests are tiny, and 2 threads oversubscribe a loaded 2-core machine
# (measured 5-25x slower than 1 thread when other processes run).
torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg():
    from model.config import tiny

    return tiny()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Built once per pytest session and shared by the engine, window, GIF, eval and web UI tests."""
    from helpers import tiny_gridworld_run

    return tiny_gridworld_run(tmp_path_factory)



@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The shared tiny run folder (the engine, GIF, window and eval tests read it; none writes to it)."""
    return tiny_run


@pytest.fixture(scope="module")
def bundle(run_dir):
    """The tiny run's models, loaded once per test module through the engine's one loading path."""
    from app.engine import ModelBundle

    return ModelBundle.load(run_dir, device="cpu")
