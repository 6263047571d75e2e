"""Test setup for the experiments' tests: one torch thread and the tiny GridWorld run of tests/ (pytest
applies tests/conftest.py to tests/ only; the run itself is built by ``helpers.tiny_gridworld_run``)."""
import pytest
import torch

from helpers import tiny_gridworld_run

torch.set_num_threads(1)  # tiny models: more threads only oversubscribe a shared 2-core machine


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """The shared tiny run folder (read only)."""
    return tiny_gridworld_run(tmp_path_factory)
