"""Policies: epsilon-greedy, sticky random actions, and the agent with its explicit LSTM state."""
import numpy as np
import pytest
import torch

from model.config import tiny
from model.data.frames import to_tensor
from model.data.policies import Agent, EpsilonGreedy, RandomPolicy
from model.nets.actor_critic import ActorCritic

A = 5


def _agent() -> Agent:
    torch.manual_seed(0)
    return Agent(ActorCritic(tiny().actor_critic, A))


def test_agent_state_is_explicit_and_per_row():
    agent = _agent()
    frame = torch.rand(2, 3, 64, 64)
    assert agent.state is None
    first = agent.observe(frame)
    h, c = agent.state
    assert first.shape == (2, A) and h.shape == c.shape == (2, agent.ac.cfg.lstm_dim)
    second = agent.observe(frame)
    assert not torch.allclose(first, second)  # the LSTM remembers the first frame
    agent.reset([0])  # env 0 starts a new episode: only its row restarts
    again = agent.observe(frame)
    alone = Agent(agent.ac)  # env 1's frames alone, three in a row
    for _ in range(3):
        third = alone.observe(frame[1:])
    assert torch.allclose(again[0], first[0], atol=1e-6) and torch.allclose(again[1], third[0], atol=1e-6)
    agent.start(2)
    assert torch.equal(agent.observe(frame), first)
    agent.reset([5])  # a state of another size is dropped, not indexed out of range
    assert agent.state is None


def test_agents_sharing_one_network_keep_their_own_memory():
    a = _agent()
    b = Agent(a.ac)
    frame = torch.rand(1, 3, 64, 64)
    first = a.observe(frame)
    a.observe(frame)
    assert torch.equal(b.observe(frame), first)  # b starts fresh although a has seen two frames


def test_agent_burn_in_matches_observing_the_frames_and_acts_greedily_at_zero_temperature():
    agent = _agent()
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 64, 64, 3), dtype=np.uint8)
    agent.burn_in(frames)
    burnt = tuple(t.clone() for t in agent.state)
    agent.start(3)
    for k in range(4):
        agent.observe(to_tensor(frames[:, k]))
    assert all(torch.equal(x, y) for x, y in zip(burnt, agent.state))
    agent.temperature = 0.0
    obs = frames[:, -1]
    before = tuple(t.clone() for t in agent.state)
    actions = agent(obs)
    agent.state = before
    logits = agent.observe(to_tensor(obs))
    assert actions.shape == (3,) and (actions == logits.argmax(-1).numpy()).all()


def test_agent_samples_at_its_temperature_and_epsilon_greedy_explores_around_it():
    """Greedy (temperature 0) takes the argmax of the logits, sampling (temperature 1) departs from it in some
    rows; with epsilon 1 every action is uniform, all of them appear, and the agent's LSTM still advances."""
    agent = _agent()
    obs = np.random.default_rng(1).integers(0, 256, (300, 64, 64, 3), dtype=np.uint8)
    logits = agent.observe(to_tensor(obs))
    agent.temperature = 0.0
    agent.state = None
    assert (agent(obs) == logits.argmax(-1).numpy()).all()
    agent.temperature = 1.0
    agent.state = None
    torch.manual_seed(1)
    sampled = agent(obs)
    assert sampled.shape == (300,) and sampled.min() >= 0 and sampled.max() < A
    assert (sampled != logits.argmax(-1).numpy()).any()
    agent.state = None
    explore = EpsilonGreedy(agent, 1.0, A, seed=1)(obs)
    assert explore.min() >= 0 and explore.max() < A and len(np.unique(explore)) == A
    stepped = agent.state
    agent.start(300)
    agent.observe(to_tensor(obs))
    assert all(torch.equal(x, y) for x, y in zip(stepped, agent.state))  # the inner agent saw the frame


def test_epsilon_greedy():
    class Constant:
        def __init__(self):
            self.reset_calls = []

        def __call__(self, obs):
            return np.full(len(obs), 2)

        def reset(self, idx):
            self.reset_calls.append(idx)

    obs = np.zeros((1000, 64, 64, 3), np.uint8)
    inner = Constant()
    assert (EpsilonGreedy(inner, 0.0, 17, seed=0)(obs) == 2).all()
    mixed = EpsilonGreedy(inner, 0.3, 17, seed=0)(obs)
    assert 0.6 < (mixed == 2).mean() < 0.8 and len(np.unique(mixed)) == 17
    wrapped = EpsilonGreedy(inner, 1.0, 17, seed=0)
    wrapped.reset([1])
    assert inner.reset_calls == [[1]]
    with pytest.raises(ValueError):
        EpsilonGreedy(inner, 1.5, 17)


def test_random_policy_repeat_walks_with_a_uniform_marginal():
    obs = np.zeros((4, 8, 8, 3), np.uint8)
    iid, sticky = RandomPolicy(5, seed=0), RandomPolicy(5, seed=0, repeat=0.75)
    a = np.stack([iid(obs) for _ in range(4000)])
    b = np.stack([sticky(obs) for _ in range(4000)])
    same = lambda x: float((x[1:] == x[:-1]).mean())
    assert abs(same(a) - 0.2) < 0.03  # i.i.d.: the next action matches 1 time in 5
    assert abs(same(b) - (0.75 + 0.25 * 0.2)) < 0.03  # kept 3 times in 4, else a fresh uniform draw
    assert np.abs(np.bincount(b.ravel(), minlength=5) / b.size - 0.2).max() < 0.03
    sticky.reset([1])  # a new episode in env 1 draws afresh: -1 is never returned, other envs keep theirs
    assert sticky.last[1] == -1 and (sticky(obs) >= 0).all()
    with pytest.raises(ValueError, match="repeat"):
        RandomPolicy(5, repeat=1.0)


def test_a_walking_random_policy_moves_as_often_as_its_share_says():
    """move_share of the fresh draws are moves (the arrow keys' actions), the rest stay uniform over every action."""
    from model.data.envs import action_names, move_actions

    moves = move_actions("crafter")
    assert [action_names("crafter")[a] for a in moves] == ["move_left", "move_right", "move_up", "move_down"]
    obs = np.zeros((4, 8, 8, 3), np.uint8)
    walker = RandomPolicy(17, seed=0, repeat=0.5, moves=moves, move_share=0.75)
    a = np.stack([walker(obs) for _ in range(4000)])
    assert abs(np.isin(a, moves).mean() - (0.75 + 0.25 * 4 / 17)) < 0.03
    assert set(np.unique(a)) == set(range(17)), "every action still occurs"
    with pytest.raises(ValueError, match="move_share"):
        RandomPolicy(17, move_share=0.5)  # no moves given
