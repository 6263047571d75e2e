"""The policy: a CNN-LSTM actor-critic trained purely in imagination (Δ-IRIS / IRIS recipe).

Frame -> FrameCNN (8x8 map, flattened) -> LSTMCell -> actor logits and critic logits over symlog
two-hot value buckets (the critic head starts at zero, i.e. value 0). An EMA copy of the whole
network (τ = ``cfg.target_tau``) provides the values used for λ-returns and as the baseline, which
keeps the targets from chasing themselves.

Training (``imagine_and_loss``): the LSTMs read the real burn-in frames (no gradient), the dream is
reset from the same frames, then ``cfg.horizon`` actions are sampled from the policy in the dream.
Loss = REINFORCE with the target critic as baseline (advantage = λ-return − target value, detached;
optionally centred per step and scaled, ``normalize_advantages``)
− entropy bonus + two-hot cross-entropy of the critic against the λ-returns, over steps up to and
including the first imagined end. Ends are sampled from the world model's end probability, as in
the published code. The EMA target is updated at each call (one step behind the optimizer, as in the
published code).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Categorical

from model.config import IMAGE_SIZE, ActorCriticConfig
from model.nets.blocks import FrameCNN
from model.nets.twohot import TwoHot

State = tuple[torch.Tensor, torch.Tensor]


def lambda_returns(rewards: torch.Tensor, values: torch.Tensor, ends: torch.Tensor, gamma: float,
                   lam: float) -> torch.Tensor:
    """λ-returns of a rollout: rewards, ends (B, T); values (B, T+1), the last one the bootstrap.

    G_t = r_t + γ (1 − d_t) [(1 − λ) V_{t+1} + λ G_{t+1}],  with G_T = V_T."""
    assert values.shape[1] == rewards.shape[1] + 1, "values needs one more step than rewards (the bootstrap)"
    cont = gamma * (1.0 - ends.float())
    out = torch.empty_like(rewards, dtype=torch.float32)
    g = values[:, -1].float()
    for t in reversed(range(rewards.shape[1])):
        g = rewards[:, t] + cont[:, t] * ((1 - lam) * values[:, t + 1] + lam * g)
        out[:, t] = g
    return out


def mask_until_first_end(ends: torch.Tensor) -> torch.Tensor:
    """(B, T) -> bool mask of the steps up to and including the first end (all steps if none)."""
    ended_before = torch.cumsum(ends.float(), dim=1) - ends.float()
    return ended_before == 0


def normalized_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) advantages -> centred per step over the rows where ``mask`` (B, T) is on, then scaled to unit
    root mean square over those entries. Why: the critic starts at 0, so early advantages are the (all
    positive) returns, and a short run can collapse the policy onto what it sampled first."""
    with torch.no_grad():
        per_step = (advantages * mask).sum(0) / mask.sum(0).clamp_min(1)
        centred = (advantages - per_step) * mask
        return centred / (centred.pow(2).sum() / mask.sum().clamp_min(1)).sqrt().clamp_min(1e-3)


class CnnLstm(nn.Module):
    def __init__(self, cfg: ActorCriticConfig, num_actions: int) -> None:
        super().__init__()
        self.cnn = FrameCNN(3, cfg.cnn_channels, cfg.cnn_latent, IMAGE_SIZE, out_size=8, unshuffle=cfg.cnn_unshuffle,
                            pool=cfg.cnn_pool, keypoints=cfg.cnn_keypoints)
        self.lstm = nn.LSTMCell(self.cnn.out_dim, cfg.lstm_dim)
        self.actor = nn.Linear(cfg.lstm_dim, num_actions)
        self.critic = nn.Linear(cfg.lstm_dim, cfg.num_value_buckets)
        nn.init.zeros_(self.critic.weight)
        nn.init.zeros_(self.critic.bias)

    def forward(self, frame: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        # the LSTM cell has no autocast rule on CPU: its input follows the state's dtype
        h, c = self.lstm(self.cnn.features(frame).to(state[0].dtype), state)
        return self.actor(h), self.critic(h), (h, c)

    def read(self, frames: torch.Tensor, state: State) -> State:
        """Advance the LSTM over frames (B, T, 3, H, W) (a burn-in): one CNN call for all T frames."""
        b, t = frames.shape[:2]
        if t == 0:
            return state
        feats = self.cnn.features(frames.flatten(0, 1)).view(b, t, -1).to(state[0].dtype)
        for i in range(t):
            state = self.lstm(feats[:, i], state)
        return state


class ActorCritic(nn.Module):
    def __init__(self, cfg: ActorCriticConfig, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_actions = num_actions
        self.model = CnnLstm(cfg, num_actions)
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        self.twohot = TwoHot(cfg.num_value_buckets)

    @property
    def device(self) -> torch.device:
        return self.model.actor.weight.device

    def train(self, mode: bool = True) -> "ActorCritic":
        """The EMA target only ever runs without gradients, so it stays in eval mode (no layer here
        behaves differently in train mode; eval lets its convs use the inference layout, model/nets/blocks.py)."""
        super().train(mode)
        self.target.eval()
        return self

    def zero_state(self, batch: int) -> State:
        """A fresh (zero) LSTM state (h, c) for ``batch`` rows."""
        z = torch.zeros(batch, self.cfg.lstm_dim, device=self.device)
        return z, z.clone()

    @torch.no_grad()
    def update_target(self) -> None:
        tau = self.cfg.target_tau
        for t, s in zip(self.target.parameters(), self.model.parameters()):
            t.lerp_(s.detach(), 1.0 - tau)
        for t, s in zip(self.target.buffers(), self.model.buffers()):
            t.copy_(s)

    def _dream_outcomes(self, dream) -> tuple[torch.Tensor, torch.Tensor]:
        outcomes = getattr(dream, "outcomes", None)
        if outcomes is None:
            raise ValueError("actor_critic.lookahead_weight > 0 needs a dream that scores every action "
                             "(DreamEnv(probe_actions=True) or the oracle)")
        return outcomes[0].to(self.device).float(), outcomes[1].to(self.device).float()

    def _lookahead_loss(self, logits: torch.Tensor, values: torch.Tensor,
                        outcomes: list[tuple[torch.Tensor, torch.Tensor]],
                        masked_mean) -> tuple[torch.Tensor, dict[str, float]]:
        """-(E_pi[Q(s, .)] + T H(pi(s))) per imagined state (T = ``lookahead_temperature``), with the one-step
        estimate Q(s, a) = r(s, a) + γ (1 − p(s, a)) V(s):
        the current state's target value stands in for the next one's (which would cost a dreamed frame per
        action), so an end costs what the agent would otherwise expect to earn. Its gradient moves probability
        towards every better action at once ("lookahead_weight" in ActorCriticConfig). Also returns
        ``lookahead_best_prob``: the policy's mean probability of the best-scored action where the scores differ."""
        r = torch.stack([o[0] for o in outcomes], 1)  # (B, H, A)
        p = torch.stack([o[1] for o in outcomes], 1)
        q = r + self.cfg.gamma * (1.0 - p) * values.unsqueeze(-1)
        probs = logits.softmax(-1)
        with torch.no_grad():  # how much of its probability the policy gives the best-scored move, where moves differ
            differs = (q.amax(-1) - q.amin(-1) > 0.1).float()
            best = probs.gather(-1, q.argmax(-1, keepdim=True)).squeeze(-1)
            stats = {"lookahead_best_prob": float((best * differs).sum() / differs.sum().clamp_min(1))}
        entropy = -(probs * logits.log_softmax(-1)).sum(-1)
        return -masked_mean((probs * q).sum(-1) + self.cfg.lookahead_temperature * entropy), stats

    def imagine_and_loss(self, dream, burn_in_frames: torch.Tensor,
                         burn_in_actions: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """burn_in_frames (B, L+1, 3, H, W) real frames, burn_in_actions (B, L) (a longer tensor is cut):
        the LSTMs read x_0..x_{L-1}, the dream starts at x_L; then ``cfg.horizon`` imagined steps."""
        cfg = self.cfg
        frames = burn_in_frames.to(self.device, torch.float32)
        b, n = frames.shape[:2]
        actions = burn_in_actions[:, :n - 1].to(self.device, torch.long)
        state, target_state = self.zero_state(b), self.zero_state(b)
        with torch.no_grad():
            state = self.model.read(frames[:, :n - 1], state)
            target_state = self.target.read(frames[:, :n - 1], target_state)
        obs = dream.reset(frames, actions).to(self.device)

        logits, value_logits, target_values, taken, rewards, ends, outcomes = [], [], [], [], [], [], []
        for _ in range(cfg.horizon):
            lg, vl, state = self.model(obs, state)
            a = Categorical(logits=lg.float(), validate_args=False).sample()  # no validation: no sync
            with torch.no_grad():
                _, tvl, target_state = self.target(obs, target_state)
            obs, reward, end_prob = dream.step(a)
            obs = obs.to(self.device)
            if cfg.lookahead_weight > 0:
                outcomes.append(self._dream_outcomes(dream))
            logits.append(lg)
            value_logits.append(vl)
            target_values.append(self.twohot.decode(tvl))
            taken.append(a)
            rewards.append(reward.to(self.device))
            ends.append(torch.bernoulli(end_prob.to(self.device).float().clamp(0, 1)))
        with torch.no_grad():
            _, tvl, _ = self.target(obs, target_state)
            target_values.append(self.twohot.decode(tvl))

        logits = torch.stack(logits, 1).float()  # (B, H, A)
        value_logits = torch.stack(value_logits, 1).float()  # (B, H, R)
        values = torch.stack(target_values, 1)  # (B, H+1)
        taken, rewards, ends = torch.stack(taken, 1), torch.stack(rewards, 1), torch.stack(ends, 1)
        with torch.no_grad():
            returns = lambda_returns(rewards, values, ends, cfg.gamma, cfg.lambda_)
            advantages = returns - values[:, :-1]
        mask = mask_until_first_end(ends).float()
        n = mask.sum()  # >= B: the first step always counts

        def masked_mean(x: torch.Tensor) -> torch.Tensor:  # weights, not boolean indexing: no sync
            return (x * mask).sum() / n

        if cfg.normalize_advantages:
            advantages = normalized_advantages(advantages, mask)

        dist = Categorical(logits=logits, validate_args=False)
        policy_loss = -masked_mean(dist.log_prob(taken) * advantages)
        entropy = masked_mean(dist.entropy())
        ce = F.cross_entropy(value_logits.flatten(0, 1), self.twohot.encode(returns).flatten(0, 1), reduction="none")
        value_loss = masked_mean(ce.view_as(returns))  # == twohot.loss over the masked steps
        loss = cfg.reinforce_weight * policy_loss + value_loss - cfg.entropy_weight * entropy
        extra = {}
        if outcomes:
            look, extra = self._lookahead_loss(logits, values[:, :-1], outcomes, masked_mean)
            loss = loss + cfg.lookahead_weight * look
        self.update_target()
        with torch.no_grad():
            values_out = torch.stack([loss, policy_loss, value_loss, entropy, masked_mean(rewards),
                                      returns[:, 0].mean(), masked_mean(values[:, :-1]), ends.mean()]).tolist()
        names = ("loss", "policy_loss", "value_loss", "entropy", "imagined_reward", "imagined_return", "value",
                 "end_rate")
        return loss, {**dict(zip(names, values_out)), **extra}
