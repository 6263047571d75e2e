"""Two-process DDP (gloo, CPU) runs one tiny GridWorld epoch; both ranks end with identical weights.

The test starts ``torchrun --standalone --nproc_per_node=2`` on this very file: each rank trains
through :class:`model.train.loop.Trainer` and dumps its own weights, which the test then compares.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _worker(out: Path, run: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from model.config import tiny
    from model.train.loop import Trainer

    torch.set_num_threads(1)
    cfg = tiny()
    cfg.env.name = "gridworld"
    t = cfg.train
    t.initial_random_frames, t.test_episodes, t.eval_every = 400, 2, 1
    t.first_epoch_tokenizer_steps = t.first_epoch_world_model_steps = t.first_epoch_actor_critic_steps = 2
    trainer = Trainer(cfg, run, max_epochs=1, console=False)
    summary = trainer.run()
    rank = int(os.environ["RANK"])
    weights = {f"{name}.{k}": v.detach().cpu().contiguous().clone()
               for name, m in trainer.models.items() for k, v in m.state_dict().items()}
    save_file(weights, str(out / f"rank{rank}.safetensors"), metadata={"env_frames": str(summary["env_frames"])})


@pytest.mark.slow
def test_two_rank_gloo_epoch_keeps_ranks_identical(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from model.checkpoint import load_checkpoint
    from model.train.run_dir import read_metrics

    out, run = tmp_path / "out", tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          __file__, str(out), str(run)], env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    w0, w1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and len(w0) > 50
    for k in w0:
        assert np.array_equal(w0[k].numpy(), w1[k].numpy()), f"{k} differs between ranks"

    # Each rank collected its own episodes (different seeds) and rank 0 alone wrote the run folder.
    eps0 = sorted((run / "store" / "episodes" / "train").glob("*.npz"))
    eps1 = sorted((run / "store" / "rank1" / "episodes" / "train").glob("*.npz"))
    assert eps0 and eps1
    with np.load(eps0[0]) as a, np.load(eps1[0]) as b:
        assert not (a["actions"].shape == b["actions"].shape and np.array_equal(a["actions"], b["actions"]))
    steps = sum(int(np.load(f)["actions"].shape[0]) for f in eps0 + eps1)
    (rec,) = read_metrics(run / "metrics.jsonl")
    assert rec["env_frames"] == steps and rec["episodes"] == 2
    with safe_open(str(out / "rank1.safetensors"), "pt") as f:
        assert int(f.metadata()["env_frames"]) == steps  # both ranks agree on the counter
    ck = load_checkpoint(run / "checkpoints" / "last")
    assert ck.state["world_size"] == 2 and set(ck.state["samplers"]) >= {"tokenizer@0", "tokenizer@1"}
    for name, m in ck.models.items():
        for k, v in m.state_dict().items():
            assert np.array_equal(v.numpy(), w0[f"{name}.{k}"].numpy())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
