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
