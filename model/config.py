"""Configuration dataclasses and named presets.

One dataclass per concern (tokenizer, world model, actor-critic, training, env), gathered in
:class:`Config`. Presets:

* ``paper`` - the published Crafter configuration of Δ-IRIS (Micheli et al., ICML 2024).
* ``cpu``   - a documented deviation that trains usefully on a 2-core laptop in hours.
* ``tiny``  - for tests: a forward+backward pass well under a second.

Everything is plain data (ints, floats, strings, tuples) so that a config round-trips through
JSON and travels inside checkpoints; ``Config.from_dict(cfg.to_dict()) == cfg``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("tiny", "cpu", "paper")


@dataclass
class EnvConfig:
    name: str = "crafter"  # "crafter" | "gridworld" | "atari:<Game>"
    image_size: int = 64
    num_actions: int = 17  # filled from the env at build time
    max_episode_steps: int = 10000


@dataclass
class TokenizerConfig:
    kind: str = "delta"  # "delta" (Δ-tokenizer) | "iris" (frame-only baseline)
    # "paper": decoder sees x_{t-1} only through an 8x8 CNN summary (published design).
    # "residual": cpu-preset deviation, decoder also gets x_{t-1} at full resolution and
    # predicts a correction on top of it (see model/nets/tokenizer.py).
    decoder: str = "paper"
    image_size: int = 64
    channels: int = 64  # base width of the conv encoder/decoder
    mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    down: tuple[int, ...] = (1, 0, 1, 1, 0)  # 1 = downsample x2 after that level
    num_res_blocks: int = 1  # per level (published Crafter config: 1)
    latent_dim: int = 64  # channels of the 8x8 latent
    tokens_per_frame: int = 4  # K (Δ: a sqrt(K) x sqrt(K) grid of patches; IRIS: 16 or 64)
    vocab_size: int = 1024
    code_dim: int = 64
    commitment: float = 0.02
    ema_decay: float = 0.99
    usage_decay: float = 0.98
    revive_dead_codes: bool = True
    revival: str = "low_entropy"  # "low_entropy" (paper) | "always" (see model/nets/quantizer.py)
    # "vq": the paper's cosine VQ with an EMA codebook; "fsq": finite scalar quantization, a
    # factorised code of prod(fsq_levels) == vocab_size codes (cpu preset; see model/nets/quantizer.py).
    quantizer: str = "vq"
    fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4)
    frame_cnn_channels: int = 64  # width of the decoder's CNN over x_{t-1} (published: 64)
    frame_latent: int = 8  # channels of that CNN's 8x8 output
    action_emb_dim: int = 4  # channels of the decoder's action embedding at 8x8
    l1_weight: float = 0.1
    l2_weight: float = 1.0
    max_pixel_weight: float = 0.01
    # Pairs per chunk when computing a training batch's gradients (memory and CPU speed; see
    # Tokenizer.compute_loss): -1 = auto (16 on CPU, 128 on GPU), 0 = the whole batch at once.
    grad_chunk: int = -1


@dataclass
class WorldModelConfig:
    num_layers: int = 3
    num_heads: int = 8
    embed_dim: int = 512
    max_steps: int = 21  # context window in env steps
    dropout: float = 0.0
    i_tokens: bool = True  # False = the paper's ablation
    frame_cnn_channels: int = 32  # I-token CNN
    frame_latent: int = 8  # 8x8x8 = 512
    frame_cnn_unshuffle: bool = False  # I-token CNN starts with a 2x2 pixel-unshuffle (about 2x cheaper)
    frame_cnn_pool: bool = False  # the I-token also reads the CNN map's max per channel (model/nets/blocks.py FrameCNN)
    # Deviation (off in the paper preset): the action token's input is the action embedding *plus* the
    # step's I-token, so the heads read at the action token (reward, end, first Δ-token) see the
    # current frame without first learning to attend to it (see WorldModel._step_head).
    action_sees_frame: bool = False
    num_reward_buckets: int = 255
    # "twohot" (symlog two-hot over num_reward_buckets, the paper's Crafter setting) | "sign" (3 classes
    # -1/0/+1, the published code's Atari setting ``two_hot_rews: false``; see model/nets/twohot.py)
    reward_encoding: str = "twohot"
    # Loss weights (the published code's latents/rewards/ends_weight: 1/1/1 on Crafter, 0.1/1/0.1 on Atari)
    token_loss_weight: float = 1.0
    reward_loss_weight: float = 1.0
    end_loss_weight: float = 1.0
    # A step with a nonzero reward or an end weighs this much in the reward and end losses (1 = the paper).
    # Why: on GridWorld 2% of random-policy steps pay a coin and 1% end on an enemy; at weight 1 a 30-minute
    # world model learnt "the next cell holds something", not which thing (checkpoints/README.md, session 18).
    rare_step_weight: float = 1.0
    # The Δ-tokens of a step whose frame changed in at least 5% of its pixels weigh this much in the token loss
    # (1 = the paper). Why: in random play most steps change only the player's sprite, and the loss is spent
    # on them; the dream under the move keys needs the scrolls, where the tokens carry the change.
    change_step_weight: float = 1.0
    head_hidden: int = 512
    # Sequences per chunk of a training batch's gradients (see WorldModel.compute_loss):
    # -1 = auto (2 on CPU, whole batch on GPU), 0 = the whole batch at once.
    grad_chunk: int = -1


@dataclass
class ActorCriticConfig:
    cnn_channels: int = 32
    cnn_latent: int = 16  # 8x8x16 = 1024
    cnn_unshuffle: bool = False  # the CNN starts with a 2x2 pixel-unshuffle (about 2x cheaper)
    cnn_pool: bool = False  # the LSTM also reads the CNN map's max per channel (model/nets/blocks.py FrameCNN)
    cnn_keypoints: bool = False  # ... and its soft-argmax position per channel (model/nets/blocks.py FrameCNN)
    lstm_dim: int = 512
    num_value_buckets: int = 255
    burn_in: int = 5
    horizon: int = 15
    gamma: float = 0.997
    lambda_: float = 0.95
    entropy_weight: float = 1e-3
    # Deviation (off in every preset): centre the advantages per imagined step over the batch and scale
    # them to unit RMS. Why: the critic starts at 0, so early advantages are the (all positive) returns and a
    # short run collapses the policy onto whatever it sampled before the critic catches up (ActorCritic).
    normalize_advantages: bool = False
    target_tau: float = 0.995
    temperature: float = 1.0
    # Deviation (0 = off, the paper): weight of a one-step lookahead term. At each imagined state the world model
    # also scores every action's reward r(s, a) and end probability p(s, a) (one extra token each, read where
    # the step's reward is read: ``DreamEnv(probe_actions=True)``), and the policy gets the exact gradient of
    # E_pi[r + gamma (1 - p) V(s)] over all actions, not only the sampled one's REINFORCE estimate (an
    # "all-action" / mean actor-critic term). Why: on GridWorld few imagined steps carry a reward (about 2%), and
    # a flawless dream still left the paper's update below random after 1,500 updates (checkpoints/README.md).
    lookahead_weight: float = 0.0
    # The lookahead term maximises E_pi[Q] + T H(pi) per state, whose optimum is softmax(Q / T): a move that
    # scores 0.5 better is taken almost surely, one that scores 0.02 better (a world model's noise) barely
    # more often. Without it the policy turns greedy on that noise wherever nothing is near (measured: a
    # 29-minute GridWorld run collapsed to entropy 0.24 nats while the oracle's exact scores kept it uniform).
    lookahead_temperature: float = 0.05
    # Weight of the REINFORCE term (1 = the paper). GridWorld's cpu preset sets 0 and learns from the lookahead
    # alone: with a flawless dream, REINFORCE's noise at this batch collapsed the policy onto one or two moves.
    reinforce_weight: float = 1.0


@dataclass
class TrainConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    tokenizer_batch: int = 32  # sequences
    tokenizer_seq: int = 21  # steps per sequence (pairs per sequence = seq - 1 ... see trainer)
    world_model_batch: int = 32
    world_model_seq: int = 21
    actor_critic_batch: int = 86
    steps_per_epoch: int = 500  # per component
    first_epoch_tokenizer_steps: int = 5000
    first_epoch_world_model_steps: int = 2500
    first_epoch_actor_critic_steps: int = 500
    initial_random_frames: int = 100_000
    # Probability that the first collection's random policy repeats an env's previous action (0 = i.i.d.
    # uniform, the paper). See model/data/collector.py::RandomPolicy: the cpu preset walks on Crafter so the
    # models see the straight walks a person makes in the dream.
    random_repeat: float = 0.0
    frames_per_epoch: int = 10_000
    num_envs: int = 16
    epsilon: float = 0.01
    recency_exponent: float = 5.0
    eval_every: int = 50  # epochs
    test_episodes: int = 64
    total_frames: int = 10_000_000
    snapshot_every: int = 10  # epochs
    autocast: str = "auto"  # "auto" (bf16 on CUDA) | "bf16" | "off"
    num_workers: int = 0
    # Also train the comparison models on the same batches: a world model without I-tokens
    # (the paper's ablation) and an IRIS-style 16-token tokenizer. Used for the bundled checkpoint.
    baselines: bool = False
    iris_tokens: int = 16
    # Warm start: model name -> checkpoint folder ("folder" or "folder:stored_name") whose weights the
    # model starts from instead of a random init (e.g. tokenizers from `deltaplay eval tokenizers`). Kept
    # in the config, so every checkpoint of the run says where its weights began.
    init: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    env: EnvConfig = field(default_factory=EnvConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            sub = _SECTIONS.get(f.name)
            kw[f.name] = _build(sub, d[f.name]) if sub else d[f.name]
        return cls(**kw)

    def override(self, key: str, value: str) -> "Config":
        """Apply ``section.field=value`` (the CLI's ``--set``); the value is parsed as JSON
        when it can be, else kept as a string. Unknown keys raise ``KeyError`` naming them."""
        d = self.to_dict()
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise KeyError(f"unknown config section {p!r} in {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"unknown config field {key!r}")
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            parsed = value
        node[parts[-1]] = parsed
        return Config.from_dict(d)


_SECTIONS = {
    "env": EnvConfig,
    "tokenizer": TokenizerConfig,
    "world_model": WorldModelConfig,
    "actor_critic": ActorCriticConfig,
    "train": TrainConfig,
}


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kw)


def paper() -> Config:
    """The published Crafter configuration (see ../shared/reference.md)."""
    return Config(preset="paper")


def cpu() -> Config:
    """A 2-core-laptop preset. Deviations from ``paper`` (documented, deliberate):

    * tokenizer: width 32 and a residual decoder that sees x_{t-1} at full resolution, so the
      deterministic part of the frame is free and the 4 Δ-tokens carry only the change; tokens from
      finite scalar quantization (levels 4^5 = 1024 codes) instead of the cosine VQ, whose tokens
      this decoder learned to ignore (decoding with shuffled tokens gave the same PSNR);
    * world model: 3 layers of width 256 (4 heads) instead of 512 (8 heads);
    * actor-critic: LSTM 256;
    * schedule sized so that one Crafter epoch, evaluation included, takes under 15 minutes on
      2 cores (measured CPU time per step at 1 thread: tokenizer 1.6 s, world model 1.5 s,
      actor-critic 5.8 s): 150/120/30 first-epoch steps (tokenizer/world model/actor-critic), then
      60 each per epoch; batches 16x3 (32 pairs), 8x21 and 16; 2 envs; a 10k-frame random first collection,
      2k frames per epoch; evaluation (8 episodes) every epoch; lr 3e-4. On a GPU, raise the batches
      and steps with ``--set`` (scripts/gpu_bundle.sh shows the bundled checkpoint's settings).
    """
    c = Config(preset="cpu")
    c.tokenizer = TokenizerConfig(decoder="residual", channels=32, num_res_blocks=1, frame_cnn_channels=16,
                                  quantizer="fsq")
    c.world_model = WorldModelConfig(num_layers=3, num_heads=4, embed_dim=256, head_hidden=256,
                                     frame_cnn_channels=16)
    c.actor_critic = ActorCriticConfig(cnn_channels=16, lstm_dim=256)
    c.train = TrainConfig(
        lr=3e-4, tokenizer_batch=16, tokenizer_seq=3, world_model_batch=8, world_model_seq=21,
        actor_critic_batch=16, steps_per_epoch=60, first_epoch_tokenizer_steps=150,
        first_epoch_world_model_steps=120, first_epoch_actor_critic_steps=30,
        initial_random_frames=10_000, frames_per_epoch=2_000, num_envs=2, eval_every=1,
        test_episodes=8, total_frames=200_000, snapshot_every=5)
    return c


def tiny() -> Config:
    """For tests: every network a few thousand parameters, every schedule a handful of steps."""
    c = Config(preset="tiny")
    c.env.max_episode_steps = 200
    c.tokenizer = TokenizerConfig(channels=8, mult=(1, 1, 2), down=(1, 1, 1), num_res_blocks=1,
                                  latent_dim=16, vocab_size=64, code_dim=16, frame_cnn_channels=8,
                                  frame_latent=4)
    c.world_model = WorldModelConfig(num_layers=1, num_heads=2, embed_dim=32, max_steps=6,
                                     frame_cnn_channels=8, frame_latent=2, num_reward_buckets=33,
                                     head_hidden=32)
    c.actor_critic = ActorCriticConfig(cnn_channels=8, cnn_latent=2, lstm_dim=32,
                                       num_value_buckets=33, burn_in=2, horizon=4)
    c.train = TrainConfig(
        lr=1e-3, tokenizer_batch=4, tokenizer_seq=3, world_model_batch=4, world_model_seq=6,
        actor_critic_batch=4, steps_per_epoch=3, first_epoch_tokenizer_steps=5,
        first_epoch_world_model_steps=5, first_epoch_actor_critic_steps=3,
        initial_random_frames=300, frames_per_epoch=100, num_envs=2, eval_every=1,
        test_episodes=2, total_frames=600, snapshot_every=1)
    return c


def gridworld_cpu(c: Config) -> None:
    """The ``cpu`` preset on GridWorld: a schedule for a 30-minute run on 2 cores (issue: the agent must
    beat a random policy within it), spent on the world model and the actor-critic. GridWorld's
    flat 8-pixel cells need little tokenizer training (30 dB after 150 steps, 35 after 270); the world model has to
    see many rare reward events (2% of random-policy steps), so its phase is long, and the I-token and
    actor CNNs start with a lossless pixel-unshuffle (1.5x faster world-model steps). The world model
    takes the published code's Atari reward setting (sign classes, loss weights 0.1/1/0.1) and its action
    token also carries the I-token (``action_sees_frame``): over the 30-minute run, the mean predicted
    reward on coin steps of its training data went from 0.03 (two-hot, 1/1/1) to 0.53; on held-out frames
    it is 0.29 on coin steps and +0.33 on death steps (checkpoints/README.md)."""
    c.world_model.frame_cnn_unshuffle = True
    c.world_model.action_sees_frame = True
    c.world_model.reward_encoding = "sign"
    c.world_model.token_loss_weight = c.world_model.end_loss_weight = 0.1
    c.world_model.frame_cnn_pool = True
    # Coin and death steps count 10x in the reward and end losses. Scored on real frames after 1,200 world-model
    # steps, moves onto coins got r 0.74 (0.22 at weight 1) and moves onto enemies -0.56 (+0.07), with end
    # probability 0.62 (0.12, below the 0.16 it gave coin moves); checkpoints/README.md, session 18.
    c.world_model.rare_step_weight = 10.0
    # The actor-critic learns from the one-step lookahead alone (``lookahead_weight``, ``reinforce_weight``): with
    # a flawless dream (``deltaplay oracle``) it beat random after 200 updates where the paper's REINFORCE update
    # stayed below random after 1,500. The weight is 1000 because the term's gradient per state is small
    # (pi(a)(Q(a) - E Q), nonzero only next to a coin or an enemy) next to the critic's cross-entropy, which
    # shares the CNN-LSTM: at weight 1 or 100 the critic shaped the features and the policy turned passive;
    # at 1000 the features serve the policy and the critic head still fits its own targets (Adam scales each
    # parameter's step). A cheaper CNN that also reads pooled and keypoint features, and short imagined
    # rollouts over a wider batch: more scored states per second (checkpoints/README.md, session 18).
    ac = c.actor_critic
    ac.cnn_unshuffle = ac.cnn_pool = ac.cnn_keypoints = True
    ac.cnn_channels, ac.burn_in, ac.horizon = 8, 2, 5
    ac.lookahead_weight, ac.reinforce_weight = 1000.0, 0.0
    t = c.train
    t.actor_critic_batch = 48
    t.first_epoch_tokenizer_steps, t.first_epoch_world_model_steps, t.first_epoch_actor_critic_steps = 150, 1200, 200


ENV_ADJUSTMENTS = {("cpu", "gridworld"): gridworld_cpu}


def get_preset(name: str, env: str | None = None) -> Config:
    """A named preset, for ``env`` when given (with that env's adjustments, see ``ENV_ADJUSTMENTS``)."""
    try:
        cfg = {"tiny": tiny, "cpu": cpu, "paper": paper}[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    if env is not None:
        cfg.env.name = env
        adjust = ENV_ADJUSTMENTS.get((name, env.lower()))
        if adjust:
            adjust(cfg)
    return cfg
