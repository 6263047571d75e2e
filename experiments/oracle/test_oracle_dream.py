"""The GridWorld oracle dream: frames parse back to the env state exactly, the oracle steps like the real env,
and `python -m experiments.oracle.cli` trains and tests an actor-critic in it."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from model.nets.actor_critic import ActorCritic
from model.config import tiny
from model.data.envs.gridworld import COIN, EMPTY, ENEMY, GridWorldEnv, parse_frame
from model.data.frames import to_tensor
from experiments.oracle.cli import main
from experiments.oracle.oracle_dream import OracleDream, adjacent_coin_states, burn_in_windows, move_probability
from helpers import run_module

CLI = "experiments.oracle.cli"


def test_parse_frame_recovers_the_state_of_every_rendered_frame():
    env = GridWorldEnv()
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    seen = {COIN: 0, ENEMY: 0}
    for _ in range(1500):
        grid, agent = parse_frame(obs)
        assert np.array_equal(grid, env.grid) and np.array_equal(agent, env.agent)
        seen[COIN] += int((grid == COIN).sum())
        seen[ENEMY] += int((grid == ENEMY).sum())
        obs, _, term, trunc, _ = env.step(int(rng.integers(5)))
        if term or trunc:
            obs, _ = env.reset()
    assert seen[COIN] > 100 and seen[ENEMY] > 100  # both kinds were on screen many times
    with pytest.raises(ValueError, match="64, 64, 3"):
        parse_frame(obs[:32])
    with pytest.raises(ValueError, match="one agent, this one 0"):
        parse_frame(np.zeros_like(obs))


def _scene(agent, coins=(), enemies=()):
    env = GridWorldEnv()
    env.reset(seed=0)
    env.grid[:] = EMPTY
    for c in coins:
        env.grid[c] = COIN
    for e in enemies:
        env.grid[e] = ENEMY
    env.agent = np.array(agent)
    return env.render()


def test_oracle_pays_coins_ends_on_enemies_and_stays_ended():
    # Row 0: a coin right of the agent; row 1: an enemy below it; burn-in of two frames (the last one counts).
    frames = np.stack([np.stack([_scene((4, 4)), _scene((3, 3), coins=[(3, 4)])]),
                       np.stack([_scene((4, 4)), _scene((3, 3), enemies=[(4, 3)])])])
    dream = OracleDream(2, seed=1)
    start = dream.reset(to_tensor(frames), torch.zeros(2, 1, dtype=torch.long))
    assert torch.equal(start, to_tensor(frames[:, -1]))
    obs, reward, end = dream.step(torch.tensor([4, 2]))  # right onto the coin, down onto the enemy
    assert reward.tolist() == [1.0, -1.0] and end.tolist() == [0.0, 1.0]
    scored_r, scored_end = dream.outcomes  # every action from the state before the step (noop up down left right)
    assert scored_r.tolist() == [[0, 0, 0, 0, 1], [0, 0, -1, 0, 0]]
    assert scored_end.tolist() == [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0]]
    grid, agent = parse_frame((obs[0].permute(1, 2, 0) * 255).round().byte().numpy())
    assert agent.tolist() == [3, 4] and grid[3, 4] == EMPTY  # the coin is gone
    _, reward, end = dream.step(torch.tensor([0, 1]))
    assert reward[1] == 0.0 and end[1] == 1.0  # an ended row stays ended, with no more reward
    with pytest.raises(ValueError, match="runs 2 envs"):
        dream.reset(to_tensor(frames[:1]), torch.zeros(1, 1, dtype=torch.long))


def test_burn_in_windows_never_end_on_a_terminal_frame():
    from model.data.policies import RandomPolicy
    from model.eval.parts import run_episodes

    eps = run_episodes("gridworld", RandomPolicy(5, seed=0), list(range(12)))
    assert any(e.terminated[-1] for e in eps)  # some episodes end on an enemy
    wins = burn_in_windows(eps, 3)
    assert len(wins) == sum(max(0, e.length - int(e.terminated[-1]) - 2) for e in eps)
    for frames, actions in wins:
        assert frames.shape == (4, 64, 64, 3) and actions.shape == (3,)
        parse_frame(frames[-1])  # every last frame shows the agent, so the oracle can restore it


def test_adjacent_coin_probe_is_uniform_for_an_untrained_policy_and_right_for_a_rigged_one():
    from model.nets.actor_critic import ActorCritic
    from model.config import tiny

    frames, moves = adjacent_coin_states(40, seed=2)
    for f, m in zip(frames, moves):  # the recorded move steps onto a coin
        grid, agent = parse_frame(f)
        assert grid[tuple(agent + np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)][m]))] == COIN
    torch.manual_seed(0)
    ac = ActorCritic(tiny().actor_critic, 5)
    with torch.no_grad():
        ac.model.actor.weight.zero_()
        ac.model.actor.bias.zero_()
    assert move_probability(ac, frames, moves) == pytest.approx(0.2, abs=1e-6)
    with torch.no_grad():
        ac.model.actor.bias[4] = 20.0  # always "right"
    expected = float(np.mean(moves == 4))
    assert move_probability(ac, frames, moves) == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_oracle_cli_trains_and_tests_an_agent(tmp_path):
    out = tmp_path / "oracle.json"
    res = run_module(CLI, "--preset", "tiny", "--updates", "3", "--eval-every", "2", "--episodes", "2",
                     "--data-episodes", "3", "--threads", "1", "--set", "actor_critic.gamma=0.5", "--json", str(out),
                     "--quiet")
    assert res.returncode == 0, res.stderr
    printed = res.stdout
    assert "gamma 0.5" in printed and "update     3" in printed and "random policy on the same seeds" in printed
    rec = json.loads(out.read_text())
    assert rec["config"]["actor_critic"]["gamma"] == 0.5
    assert [r["update"] for r in rec["records"]] == [0, 2, 3]
    for r in rec["records"]:
        assert np.isfinite(r["return"]) and np.isfinite(r["random_return"]) and 0 <= r["deaths"] <= 2 and 0 < r["p_onto_adjacent_coin"] < 1
    assert all(0 < r["entropy"] <= np.log(5) + 1e-5 for r in rec["records"][1:])


def test_oracle_cli_refuses_an_unknown_preset_or_field(capsys):
    assert main(["--preset", "huge"]) == 2
    assert main(["--preset", "tiny", "--set", "actor_critic.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'huge'" in err and "actor_critic.nope" in err


def test_lookahead_needs_a_dream_that_scores_actions():
    cfg = dataclasses.replace(tiny().actor_critic, horizon=2, lookahead_weight=1.0)
    ac = ActorCritic(cfg, 5)
    frames = to_tensor(np.stack([np.stack([_scene((3, 3), coins=[(3, 4)])] * 3)] * 2))
    actions = torch.zeros(2, 2, dtype=torch.long)
    loss, _ = ac.imagine_and_loss(OracleDream(2), frames, actions)  # the oracle scores actions exactly
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="scores every action"):
        ac.imagine_and_loss(_NoOutcomes(OracleDream(2)), frames, actions)


class _NoOutcomes:
    """A dream that does not score actions (a DreamEnv without probe_actions)."""

    def __init__(self, dream):
        self.dream, self.outcomes = dream, None

    def reset(self, frames, actions):
        return self.dream.reset(frames, actions)

    def step(self, actions):
        return self.dream.step(actions)[:3]
