"""The paper preset has exactly the published model's parameters, component by component."""
from model.checkpoint import build_model
from model.config import paper

# Counted by instantiating the published Δ-IRIS code's modules (Tokenizer, WorldModel, ActorCritic of
# its src/models) at its config/params/crafter.yaml with 17 actions, as its Trainer builds them.
PUBLISHED = {"tokenizer": 5_409_611, "world_model": 11_948_457, "actor_critic": 3_745_216,
             "actor_critic_with_target": 7_490_432}


def test_paper_preset_has_the_published_parameter_counts():
    cfg = paper()
    tok, wm, ac = (build_model(name, cfg) for name in ("tokenizer", "world_model", "actor_critic"))

    def count(m):
        return sum(p.numel() for p in m.parameters())

    ours = {"tokenizer": count(tok), "world_model": count(wm), "actor_critic": count(ac.model),
            "actor_critic_with_target": count(ac)}
    assert ours == PUBLISHED
    assert sum(PUBLISHED[k] for k in ("tokenizer", "world_model", "actor_critic_with_target")) == 24_848_500  # "25M"
