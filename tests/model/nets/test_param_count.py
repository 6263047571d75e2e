"""The paper preset matches the published model sizes (Δ-IRIS counts the actor-critic's EMA target)."""
import torch

from app.bench_workloads import build_models
from model.config import paper


def test_paper_preset_totals_25m_with_the_breakdown(capsys):
    models = build_models(paper(), torch.device("cpu"))
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    ac = models["actor_critic"]
    trainable_ac = sum(p.numel() for p in ac.model.parameters())
    total = counts["tokenizer"] + counts["world_model"] + 2 * trainable_ac  # + the EMA target copy
    with capsys.disabled():
        print("\nparameters (paper preset): " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
              + f", actor-critic trainable {trainable_ac / 1e6:.2f}M; total with EMA target {total / 1e6:.2f}M")
    assert abs(counts["tokenizer"] - 5.4e6) / 5.4e6 < 0.10
    assert abs(counts["world_model"] - 11.9e6) / 11.9e6 < 0.10
    assert abs(trainable_ac - 3.75e6) / 3.75e6 < 0.10
    assert abs(total - 25e6) / 25e6 < 0.10, total
