"""The warm start across token layouts: a checkpoint's tensors copied into models of another token grid, and the
folder it writes accepted by ``train.init``."""
from experiments.token_layout.make_init import main
from model.checkpoint import build_model, load_checkpoint, load_init_weights
from model.config import Config

K16 = ["--set", "tokenizer.tokens_per_frame=16", "--set", "tokenizer.vocab_size=16", "--set",
       "tokenizer.fsq_levels=[4,4]", "--set", "tokenizer.quantizer=fsq"]


def test_a_sixteen_token_start_keeps_the_conv_nets_and_the_transformer_body(run_dir, tmp_path, capsys):
    out = tmp_path / "k16"
    assert main([str(run_dir / "checkpoints" / "last"), str(out), *K16, "--models", "tokenizer", "world_model"]) == 0
    printed = capsys.readouterr().out
    assert "fresh: quantizer.proj_in.bias" in printed and "token_emb.weight" in printed
    src = load_checkpoint(run_dir / "checkpoints" / "last", with_state=False).models
    new = load_checkpoint(out, with_state=False)
    assert new.cfg.tokenizer.tokens_per_frame == 16 and new.cfg.tokenizer.vocab_size == 16
    for name, prefix in (("tokenizer", "encoder."), ("world_model", "blocks.")):
        own, old = new.models[name].state_dict(), src[name].state_dict()
        shared = [k for k in own if k.startswith(prefix)]
        assert shared and all(own[k].equal(old[k]) for k in shared), f"{name}: {prefix}* copied"
    cfg = Config.from_dict(new.cfg.to_dict())
    model = build_model("tokenizer", cfg)
    assert "tokenizer starts from" in load_init_weights("tokenizer", str(out), cfg, model)
