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


def test_a_bundle_is_assembled_from_parts_of_other_checkpoints_and_refuses_misfits(run_dir, tmp_path, capsys):
    from experiments.token_layout.assemble import main as assemble

    last = str(run_dir / "checkpoints" / "last")
    out = tmp_path / "bundle"
    # A world model with I-tokens cannot be the no-I-token twin: the shapes differ, and nothing is written.
    assert assemble([str(out), "--config", last, "--part", f"tokenizer={last}", "--part", f"world_model={last}",
                     "--part", f"world_model_no_itok={last}:world_model", "--set", "train.baselines=true"]) == 2
    assert "does not fit" in capsys.readouterr().err and not out.exists()
    assert assemble([str(out), "--config", last, "--part", f"tokenizer={last}", "--part", f"world_model={last}"]) == 0
    ck, src = load_checkpoint(out), load_checkpoint(last)
    assert set(ck.models) == {"tokenizer", "world_model"} and ck.state == {}
    own = src.models["world_model"].state_dict()
    assert all(v.equal(own[k]) for k, v in ck.models["world_model"].state_dict().items())


def test_a_part_named_twice_is_the_average_of_its_sources(run_dir, tmp_path, capsys):
    import torch

    from experiments.token_layout.assemble import main as assemble
    from model.checkpoint import save_checkpoint

    last = str(run_dir / "checkpoints" / "last")
    src = load_checkpoint(last)
    other = src.models["tokenizer"]
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path / "moved", {"tokenizer": other}, src.cfg)
    out = tmp_path / "mean"
    assert assemble([str(out), "--config", last, "--part", f"tokenizer={last}",
                     "--part", f"tokenizer={tmp_path / 'moved'}", "--part", f"world_model={last}"]) == 0
    assert "tokenizer: the average of 2 parts" in capsys.readouterr().out
    mean, base = load_checkpoint(out).models["tokenizer"], load_checkpoint(last).models["tokenizer"]
    moved = dict(other.named_parameters())
    for n, p in mean.named_parameters():
        assert torch.allclose(p, dict(base.named_parameters())[n] + 0.5, atol=1e-5) and not torch.equal(p, moved[n])
