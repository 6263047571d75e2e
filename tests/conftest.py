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
