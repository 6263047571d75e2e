"""A batched environment that runs inside the world model ("the dream").

``reset`` takes real context (frames x_0..x_{T0-1}, actions a_0..a_{T0-2}), tokenizes it and primes
the world model's KV cache with it (the burn-in); ``step`` samples the next frame's K tokens with the
cache and decodes them with the tokenizer: Δ: ``x_{t+1} = decode(x_t, a_t, z_{t+1})``; IRIS:
``x_{t+1} = decode(tok(x_{t+1}))``.

The dream keeps its recent frames, actions and tokens (one window), so ``set_world_model`` can swap
in another world model (e.g. the I-tokens on/off switch of the play engine) and carry on from the
current frame: the new model is primed from that history, real and dreamed frames alike.

All work happens under ``torch.inference_mode``; returned tensors are cloned outside it so they are
ordinary tensors (the actor-critic feeds dreamed frames into networks it trains).
"""
from __future__ import annotations

from collections import deque

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.device import image_autocast
from model.nets.world_model import WorldModel


@dataclass
class Branches:
    """``n`` sampled next steps from one state and action (:meth:`DreamEnv.branch`)."""

    frames: torch.Tensor  # (n, 3, H, W) decoded next frames
    tokens: torch.Tensor  # (n, K) their tokens
    logp: torch.Tensor  # (n,) log-probability of the tokens under the world model (temperature 1)
    reward: torch.Tensor  # (n,) predicted reward of the step
    end_prob: torch.Tensor  # (n,) predicted probability that the episode ended


class DreamEnv:
    def __init__(self, tokenizer, world_model: WorldModel, temperature: float = 1.0,
                 autocast_mode: str | None = None, probe_actions: bool = False) -> None:
        """``autocast_mode``: None (float32) or a :func:`model.device.autocast` mode for the conv nets only
        (:func:`model.device.image_autocast`: the transformer stays float32). ``probe_actions``:
        each ``step`` also sets ``outcomes``, the world model's reward and end probability (B, A) for every
        action from the state before the step (the actor-critic's lookahead term)."""
        self.tokenizer = tokenizer
        self.world_model = world_model
        self.temperature = temperature
        self.autocast_mode = autocast_mode
        self.probe_actions = probe_actions
        self.outcomes: tuple[torch.Tensor, torch.Tensor] | None = None
        self._check(tokenizer, world_model)
        self.cache = None
        self.frame: torch.Tensor | None = None  # current frame (B, 3, H, W)
        self._frames: deque = deque()
        self._actions: deque = deque()
        self._tokens: deque = deque()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check(tokenizer, wm: WorldModel) -> None:
        if tokenizer.kind != wm.layout:
            raise ValueError(f"a {tokenizer.kind!r} tokenizer cannot drive a {wm.layout!r} world model")
        if tokenizer.tokens_per_frame != wm.tokens_per_frame or tokenizer.vocab_size != wm.vocab_size:
            raise ValueError("tokenizer and world model disagree on tokens per frame or vocabulary size")

    @property
    def device(self) -> torch.device:
        return next(self.world_model.parameters()).device

    @property
    def batch_size(self) -> int:
        return 0 if self.frame is None else self.frame.size(0)

    def _autocast(self):
        return image_autocast(self.device, self.autocast_mode)

    def _encode(self, frames: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
        """Tokens of a context, as a list of (B, K): Δ one per transition, IRIS one per frame."""
        b, t = frames.shape[:2]
        flat = frames.flatten(0, 1)
        if self.tokenizer.kind == "iris":
            tokens = self.tokenizer.encode(None, None, flat).view(b, t, -1)
        elif t > 1:
            prev = frames[:, :-1].flatten(0, 1)
            nxt = frames[:, 1:].flatten(0, 1)
            tokens = self.tokenizer.encode(prev, actions.flatten(), nxt).view(b, t - 1, -1)
        else:
            return []
        return list(tokens.unbind(1))

    def _set_history(self, frames: list[torch.Tensor], actions: list[torch.Tensor], tokens: list[torch.Tensor]) -> None:
        """Keep one window: the ``max_steps`` last steps (what the cache attends to after a step)."""
        w = self.world_model.cfg.max_steps
        self._frames = deque(frames, maxlen=w + 1)
        self._actions = deque(actions, maxlen=w)
        self._tokens = deque(tokens, maxlen=w + 1 if self.tokenizer.kind == "iris" else w)

    def _prime(self) -> None:
        """Prime a fresh cache from the history: its last n transitions and the current frame."""
        wm = self.world_model
        n = min(len(self._actions), len(self._frames) - 1, wm.cfg.max_steps - 1)
        b = self.frame.size(0)
        frames = torch.stack(list(self._frames)[len(self._frames) - n - 1:], dim=1)
        actions = (torch.stack(list(self._actions)[len(self._actions) - n:], dim=1) if n
                   else torch.zeros(b, 0, dtype=torch.long, device=self.frame.device))
        self.cache = wm.new_cache(b)
        if wm.layout == "iris":
            tokens = torch.stack(list(self._tokens)[len(self._tokens) - n - 1:], dim=1)
            wm.prime(self.cache, None, actions, tokens)
        else:
            tokens = (torch.stack(list(self._tokens)[len(self._tokens) - n:], dim=1) if n
                      else torch.zeros(b, 0, wm.tokens_per_frame, dtype=torch.long, device=self.frame.device))
            wm.prime(self.cache, frames[:, :-1] if wm.i_tokens else None, actions, tokens)

    # ------------------------------------------------------------------ API

    def reset(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """frames (B, T0, 3, H, W) float in [0, 1], actions (B, T0-1) -> the current frame x_{T0-1}."""
        assert frames.dim() == 5 and actions.shape == frames.shape[:1] + (frames.size(1) - 1,), \
            "reset needs frames (B, T0, 3, H, W) and actions (B, T0-1)"
        with torch.inference_mode(), self._autocast():
            frames = frames.to(self.device, torch.float32)
            actions = actions.to(self.device, torch.long)
            tokens = self._encode(frames, actions)
            self.frame = frames[:, -1]
            self._set_history(list(frames.unbind(1)), list(actions.unbind(1)), tokens)
            self._prime()
        return self.frame.clone()

    def step(self, actions: torch.Tensor, tokens: torch.Tensor | None = None,
             frame: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """actions (B,) -> (next frame (B, 3, H, W), reward (B,), end probability (B,)).

        ``tokens`` (B, K) takes these tokens instead of sampling them (continuing from a chosen branch);
        ``frame`` is the frame already decoded from them, so the dream goes on from exactly that frame."""
        if self.cache is None:
            raise RuntimeError("call reset() before step()")
        with torch.inference_mode(), self._autocast():
            a = torch.as_tensor(actions, device=self.device).long().view(-1)
            x = self.frame
            tokens, reward, end_prob = self.world_model.generate_step(self.cache, x, a, self.temperature,
                                                                      tokens=tokens,
                                                                      score_actions=self.probe_actions)
            if self.probe_actions:
                self.outcomes = tuple(o.float().clone() for o in self.cache.outcomes)
            nxt = (self._decode(x, a, tokens) if frame is None else frame.to(self.device)).float()
            self.frame = nxt
            self._frames.append(nxt)
            self._actions.append(a)
            self._tokens.append(tokens)
        return nxt.clone(), reward.float().clone(), end_prob.float().clone()

    def _decode(self, x: torch.Tensor, a: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.tokenizer.kind == "iris":
            return self.tokenizer.decode(None, None, tokens)
        return self.tokenizer.decode(x, a, tokens)

    # ------------------------------------------------------------ branches and token edits (batch 1)

    def branch(self, action: int, n: int, temperature: float | None = None) -> Branches:
        """Sample ``n`` next steps for ``action`` from the current state, batched from one copy of the
        cache; the dream itself does not move. Continue from branch k with
        ``step([action], tokens=b.tokens[k:k+1], frame=b.frames[k:k+1])``."""
        self._require_single()
        t = self.temperature if temperature is None else temperature
        with torch.inference_mode(), self._autocast():
            self.world_model.settle(self.cache)
            cache = self.cache.repeat(n)
            a = torch.full((n,), int(action), dtype=torch.long, device=self.device)
            x = self.frame.expand(n, -1, -1, -1)
            tokens, reward, end_prob = self.world_model.generate_step(cache, x, a, t)
            logits = cache.last.token_logits[:, 0].float()  # (n, K, V)
            logp = F.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            frames = self._decode(x, a, tokens).float()
        return Branches(frames.clone(), tokens.clone(), logp.sum(-1).clone(), reward.float().clone(),
                        end_prob.float().clone())

    @property
    def last_tokens(self) -> torch.Tensor:
        """The current frame's tokens (B, K): sampled, chosen or (right after a reset) encoded."""
        if not self._tokens:
            raise RuntimeError("no tokens yet: reset() with at least two frames, or step()")
        return self._tokens[-1]

    def last_logits(self) -> torch.Tensor:
        """The world model's logits (K, V) for the tokens of the current frame, given the context and the
        frame's earlier tokens (teacher-forced over the window that ends at the current frame)."""
        self._require_single(stepped=True)
        wm = self.world_model
        with torch.inference_mode(), self._autocast():
            if wm.layout == "iris":
                n = min(len(self._tokens), wm.cfg.max_steps)
                tokens = torch.stack(list(self._tokens)[-n:], dim=1)
                acts = list(self._actions)[len(self._actions) - (n - 1):] if n > 1 else []
                acts = acts + [torch.zeros_like(self._tokens[-1][:, 0])]  # the next action: not read by the logits
                out = wm(None, torch.stack(acts, dim=1), tokens)
                return out.token_logits[0, -2].float().clone()
            n = min(len(self._actions), wm.cfg.max_steps)
            frames = torch.stack(list(self._frames)[-n - 1:-1], dim=1) if wm.i_tokens else None
            out = wm(frames, torch.stack(list(self._actions)[-n:], dim=1), torch.stack(list(self._tokens)[-n:], dim=1))
            return out.token_logits[0, -1].float().clone()

    def replace_last(self, tokens: torch.Tensor) -> torch.Tensor:
        """Give the current frame other tokens (1, K): it is decoded again from the previous frame and the
        last action (Δ) or from the tokens alone (IRIS), and the cache is re-primed. Returns the new frame."""
        self._require_single(stepped=True)
        with torch.inference_mode(), self._autocast():
            tokens = tokens.to(self.device).long().view(1, -1)
            prev = self._frames[-2] if len(self._frames) > 1 else None
            a = self._actions[-1] if self._actions else None
            frame = self._decode(prev, a, tokens).float()
            self._frames[-1], self._tokens[-1], self.frame = frame, tokens, frame
            self._prime()
        return frame.clone()

    def _require_single(self, stepped: bool = False) -> None:
        """A primed batch-1 dream; ``stepped``: one whose current frame has tokens (not the primed real one)."""
        if self.cache is None:
            raise RuntimeError("call reset() before branching or editing tokens")
        if self.batch_size != 1:
            raise ValueError(f"branches and token edits work on a batch-1 dream, this one has {self.batch_size}")
        if stepped and not self._actions:
            raise RuntimeError("no step yet: the current frame is the primed real one, it has no tokens")

    def set_world_model(self, world_model: WorldModel, tokenizer=None) -> None:
        """Swap the world model (and optionally the tokenizer), keeping the current frame.

        With the same tokenizer the sampled tokens are reused as they are; a new tokenizer re-encodes
        the kept frames."""
        new_tok = tokenizer if tokenizer is not None else self.tokenizer
        self._check(new_tok, world_model)
        retokenize = new_tok is not self.tokenizer
        self.world_model, self.tokenizer = world_model, new_tok
        if self.frame is None:
            return
        with torch.inference_mode(), self._autocast():
            frames, actions, tokens = list(self._frames), list(self._actions), list(self._tokens)
            n = min(len(actions), len(frames) - 1)
            frames, actions = frames[len(frames) - n - 1:], actions[len(actions) - n:]
            if retokenize:
                stacked = torch.stack(actions, 1) if n else torch.zeros(self.frame.size(0), 0, dtype=torch.long,
                                                                        device=self.frame.device)
                tokens = self._encode(torch.stack(frames, 1), stacked)
            self._set_history(frames, actions, tokens)
            self._prime()
