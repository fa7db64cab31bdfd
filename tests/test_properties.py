"""Property tests: random sequences against simple reference models."""

import torch
from hypothesis import given, settings, strategies as st
from torchdata.nodes import IterableWrapper

from fastrl_lite import ExperienceReplay, NStepper, SimpleStep

fast = settings(max_examples=60, deadline=None)


@fast
@given(max_sz=st.integers(1, 20),
       ops=st.lists(st.one_of(st.tuples(st.just("add"), st.integers(1, 30)),
                              st.tuples(st.just("sample"), st.integers(1, 8))), max_size=30))
def test_replay_matches_a_reference_ring(max_sz, ops):
    replay = ExperienceReplay(None, bs=1, max_sz=max_sz)
    reference, next_id = [], 0
    for op, k in ops:
        if op == "add":
            ids = torch.arange(next_id, next_id + k, dtype=torch.float32)
            replay.add(SimpleStep(state=ids[:, None], reward=ids))
            reference = (reference + ids.tolist())[-max_sz:]
            next_id += k
        elif reference:
            sample = replay.sample(k).step
            assert set(sample.reward.tolist()) <= set(reference)
            assert torch.equal(sample.state[:, 0], sample.reward)
    assert len(replay) == len(reference)
    assert sorted(replay.storage["reward"][:len(replay)].tolist() if reference else []) == sorted(reference)
    assert replay.added == next_id


episode_step = st.tuples(st.integers(-3, 3), st.sampled_from(["", "", "", "term", "trunc"]))


@fast
@given(n=st.integers(1, 4), gamma=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
       streams=st.lists(st.lists(episode_step, min_size=1, max_size=12), min_size=1, max_size=3).filter(
           lambda s: len({len(x) for x in s}) == 1))
def test_nstep_matches_a_reference_per_env(n, gamma, streams):
    envs, length = len(streams), len(streams[0])
    steps = []
    for t in range(length):
        steps.append(SimpleStep(
            state=torch.tensor([[float(t)] for _ in range(envs)]),
            action=torch.zeros(envs, dtype=torch.long),
            reward=torch.tensor([float(streams[e][t][0]) for e in range(envs)]),
            next_state=torch.tensor([[t + 1.0] for _ in range(envs)]),
            terminated=torch.tensor([streams[e][t][1] == "term" for e in range(envs)]),
            truncated=torch.tensor([streams[e][t][1] == "trunc" for e in range(envs)]),
            env_id=torch.arange(envs), episode_n=torch.zeros(envs, dtype=torch.long),
            step_n=torch.zeros(envs, dtype=torch.long)))
    out = list(NStepper(IterableWrapper(steps), n=n, gamma=gamma))
    got = sorted((int(e), int(s[0]), round(float(r), 5), int(k), float(ns[0]), bool(te), bool(tr))
                 for o in out for e, s, r, k, ns, te, tr in zip(o.env_id, o.state, o.reward, o.nsteps, o.next_state,
                                                                 o.terminated, o.truncated))
    expected = []
    for e, stream in enumerate(streams):
        for start in range(length):
            ret, end = 0.0, None
            for k in range(n):
                t = start + k
                if t >= length:
                    break
                ret += gamma ** k * stream[t][0]
                if stream[t][1] or k == n - 1:
                    end = t
                    break
            if end is not None:
                expected.append((e, start, round(ret, 5), end - start + 1, end + 1.0,
                                 stream[end][1] == "term", stream[end][1] == "trunc"))
    assert got == sorted(expected)


@fast
@given(sizes=st.lists(st.integers(0, 5), min_size=1, max_size=6), width=st.integers(1, 3))
def test_simple_step_cat_then_slice_gives_back_the_parts(sizes, width):
    parts, start = [], 0
    for size in sizes:
        ids = torch.arange(start, start + size, dtype=torch.float32)
        parts.append(SimpleStep(state=ids[:, None].repeat(1, width), reward=ids, terminated=ids > 3))
        start += size
    whole = SimpleStep.cat(parts)
    assert len(whole) == sum(sizes)
    offset = 0
    for part, size in zip(parts, sizes):
        piece = whole[offset:offset + size]
        assert all(torch.equal(getattr(piece, k), getattr(part, k)) for k in part.fields())
        offset += size
