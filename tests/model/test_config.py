import json

import pytest

from model.config import PRESETS, Config, get_preset


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip_through_json(name):
    cfg = get_preset(name)
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_override_parses_values_and_rejects_unknown_keys():
    cfg = get_preset("tiny").override("world_model.i_tokens", "false").override("train.lr", "0.01")
    assert cfg.world_model.i_tokens is False and cfg.train.lr == 0.01
    with pytest.raises(KeyError, match="nope"):
        cfg.override("train.nope", "1")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_env_adjustments_apply_to_their_env_only():
    from model.config import get_preset

    g, c = get_preset("cpu", "gridworld"), get_preset("cpu", "crafter")
    assert g.env.name == "gridworld" and g.world_model.frame_cnn_unshuffle and g.actor_critic.cnn_unshuffle
    assert g.world_model.action_sees_frame and not c.world_model.action_sees_frame
    assert (g.world_model.reward_encoding, g.world_model.token_loss_weight) == ("sign", 0.1)
    assert (c.world_model.reward_encoding, c.world_model.token_loss_weight) == ("twohot", 1.0)
    assert g.train.first_epoch_world_model_steps > c.train.first_epoch_world_model_steps
    # GridWorld's agent learns from the lookahead alone; Crafter's keeps the paper's REINFORCE update.
    assert (g.actor_critic.reinforce_weight, c.actor_critic.reinforce_weight) == (0.0, 1.0)
    assert g.actor_critic.lookahead_weight > 0 and c.actor_critic.lookahead_weight == 0
    assert c.to_dict() == {**get_preset("cpu").to_dict(), "env": c.to_dict()["env"]}  # Crafter: the plain preset
    p = get_preset("paper", "gridworld").world_model  # paper stays published
    assert not p.frame_cnn_unshuffle and not p.action_sees_frame
    assert get_preset("paper", "gridworld").actor_critic.lookahead_weight == 0


def test_defaults_are_the_published_crafter_setup():
    """The published Crafter config revives dead codes only below 1 bit of usage entropy
    (``max_codebook_updates_with_revival: 0``); 17 actions; 64x64 frames."""
    from model.config import IMAGE_SIZE

    cfg = Config()
    assert get_preset("paper") == cfg and cfg.tokenizer.revival == "collapsed"
    assert cfg.env.num_actions == 17 and IMAGE_SIZE == 64
    assert get_preset("cpu", "gridworld").env.num_actions == 5  # derived from the env, never stored
    assert "num_actions" not in cfg.to_dict()["env"]


@pytest.mark.parametrize("env, path", [("crafter", "tests/model/legacy_crafter_config.json"),
                                       ("gridworld", "tests/model/legacy_gridworld_config.json")])
def test_configs_of_older_checkpoints_load(env, path):
    """Older configs (the Crafter bundle's before session 31, the GridWorld bundle's before session 22) carry fields
    this version derives or dropped; they map, and the loaded config writes none of them back."""
    from helpers import REPO

    d = json.loads((REPO / path).read_text())
    assert {"image_size", "num_actions"} <= set(d["env"]) and "num_workers" in d["train"]
    cfg = Config.from_dict(d)
    assert cfg.env.name == env and cfg.tokenizer.revival == d["tokenizer"]["revival"]
    assert cfg.preset == "cpu" and cfg.world_model.embed_dim == d["world_model"]["embed_dim"]
    again = cfg.to_dict()
    assert "image_size" not in again["env"] and "revive_dead_codes" not in again["tokenizer"]
    assert Config.from_dict(again) == cfg


def test_legacy_revival_switch_maps_to_the_one_setting():
    old = get_preset("tiny").to_dict()
    old["tokenizer"].update(revive_dead_codes=False, revival="always")
    assert Config.from_dict(old).tokenizer.revival == "off"
    old["tokenizer"].update(revive_dead_codes=True)
    assert Config.from_dict(old).tokenizer.revival == "always"
    with pytest.raises(KeyError, match="image_size"):
        get_preset("tiny").override("env.image_size", "64")


def test_auto_autocast_is_bf16_where_the_hardware_multiplies_bf16():
    import torch

    from model.device import autocast_dtype, cpu_has_bf16_matmul

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_bf16_matmul() else None)
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    assert autocast_dtype(cpu, "off") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown autocast mode"):
        autocast_dtype(cpu, "fp8")


def test_bf16_counts_as_fast_on_amx_and_on_avx512_bf16_cpus():
    """AMD Zen 4 has AVX512-BF16 and no AMX, and trains 1.4-1.65x faster in bf16 (docs/benchmarks.md): both count."""
    from pathlib import Path

    from model.device import cpu_has_bf16_matmul

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs /proc/cpuinfo (Linux)")
    flags = set(cpuinfo.read_text().split())
    assert cpu_has_bf16_matmul() == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_a_dreams_conv_nets_take_bf16_only_where_it_is_faster():
    """image_autocast: ``auto`` is bf16 on a CPU with bf16 hardware (AMX or AVX512-BF16) and float32 on a GPU (a
    batch-1 dream is launch-bound there); an explicit mode holds anywhere; outside the block every conv net is
    float32 again."""
    import torch

    from model.device import cpu_has_bf16_matmul, image_autocast, image_autocast_dtype
    from model.nets.blocks import Encoder

    assert image_autocast_dtype(torch.device("cuda"), "auto") is None
    assert image_autocast_dtype(torch.device("cuda"), "bf16") == torch.bfloat16

    enc = Encoder(3, 8, (1, 2), (1, 0), latent=4).eval()
    seen: list[torch.dtype] = []
    enc.stem.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x = torch.rand(1, 3, 16, 16)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        for device, mode, inside in ((cpu, "auto", torch.bfloat16 if cpu_has_bf16_matmul() else torch.float32),
                                     (cpu, "bf16", torch.bfloat16), (cpu, "off", torch.float32),
                                     (cpu, None, torch.float32)):
            seen.clear()
            with image_autocast(device, mode):
                out = enc(x)
            assert out.dtype == torch.float32 and seen == [inside], mode
            enc(x)
            assert seen[-1] == torch.float32


def test_the_iris_baseline_keeps_its_own_code_when_the_delta_code_changes():
    from model.checkpoint import build_model, iris_tokenizer_config

    cfg = get_preset("cpu")
    cfg = cfg.override("tokenizer.fsq_levels", "[4,4,4]").override("tokenizer.vocab_size", "64")
    assert iris_tokenizer_config(cfg).vocab_size == 64  # by default it follows the Δ code
    cfg = cfg.override("train.iris_fsq_levels", "[4,4,4,4,4]")
    assert iris_tokenizer_config(cfg).vocab_size == 1024 and tuple(iris_tokenizer_config(cfg).fsq_levels) == (4,) * 5
    assert build_model("iris_tokenizer", cfg).vocab_size == 1024
