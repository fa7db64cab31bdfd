"""The opt-in torch.compile of the loss stages: same maths as eager, original modules everywhere."""
import pytest
import torch
from torchdata.nodes import IterableWrapper

from fastrl_lite import GymDataPipe, SimpleStep, TrainBatch, set_seed
from fastrl_lite.algos.ddpg import Actor, Critic, DDPGAgent, DDPGLearner
from fastrl_lite.algos.dqn import DQN, DQNAgent, DQNLearner, QLoss, QTarget
from fastrl_lite.learner.compiling import compile_options, maybe_compile

ROUNDS = 24  # gradient rounds per learner; the first ones must agree with eager to rtol 1e-4
FIRST = 8


def dqn_learner(compile, seed=0):
    set_seed(seed)
    model = DQN(4, 2, hidden=(32, 32))
    dl = GymDataPipe(["CartPole-v1"], agent=DQNAgent(model, max_steps=500), seed=seed)
    return DQNLearner(model, [dl], warmup=64, bs=16, train_every=4, updates=2, batches=ROUNDS, target_sync=10,
                      double=True, compile=compile)


def ddpg_learner(compile, seed=0):
    set_seed(seed)
    actor, critic = Actor(3, 1, 32, 32), Critic(3, 1, 32, 32)
    dl = GymDataPipe(["Pendulum-v1"], agent=DDPGAgent(actor), seed=seed)
    return DDPGLearner(actor, critic, [dl], warmup=64, bs=16, batches=ROUNDS, tau=0.01, compile=compile)


# Compilation is the slow part: each pair of learners is built and trained once for the module.
@pytest.fixture(scope="module", params=["dqn", "ddpg"])
def trained(request):
    build = {"dqn": dqn_learner, "ddpg": ddpg_learner}[request.param]
    pair = {}
    for compile in (False, True):
        learner = build(compile)
        learner.fit(1)
        pair[compile] = learner
    return pair


def test_compile_argument_is_checked():
    assert compile_options(False) is None and compile_options(True) == {}
    assert compile_options({"mode": "max-autotune-no-cudagraphs"}) == {"mode": "max-autotune-no-cudagraphs"}
    for bad in ("yes", 1, None, ["mode"]):
        with pytest.raises(TypeError, match="compile= takes True/False or a dict"):
            dqn_learner(bad)
    with pytest.raises(TypeError, match="compile= takes"):
        ddpg_learner("max-autotune")
    with pytest.raises(TypeError, match="compile="):
        QLoss(IterableWrapper([]), DQN(4, 2), compile={"no_such_option": 1})


def test_losses_and_parameters_match_eager(trained):
    eager, compiled = trained[False], trained[True]
    assert compiled.batch == eager.batch == ROUNDS
    names = [n for n in eager.records.series if n.endswith("_loss")]
    assert names
    for name in names:
        a, b = eager.records.values(name), compiled.records.values(name)
        assert len(a) == len(b) == ROUNDS
        torch.testing.assert_close(b[:FIRST], a[:FIRST], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    for key, model in eager.models.items():
        for (k, p), (k2, q) in zip(model.state_dict().items(), compiled.models[key].state_dict().items()):
            assert k == k2
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_learner_agent_and_checkpoints_keep_the_original_modules(trained, tmp_path):
    eager, compiled = trained[False], trained[True]
    for key, model in compiled.models.items():
        assert type(model) is type(eager.models[key])
    assert compiled.stepper.agent.model is next(iter(compiled.models.values()))
    assert all(p.requires_grad for m in compiled.models.values() for p in m.parameters())

    def keys(tree, prefix=""):
        if isinstance(tree, dict):
            return {k for name, v in tree.items() for k in keys(v, f"{prefix}{name}.")}
        return {prefix}

    states = [torch.load(learner.save(tmp_path / f"{c}.pt"), weights_only=False) for c, learner in trained.items()]
    assert keys(states[0]["models"]) == keys(states[1]["models"])
    assert keys(states[0]["pipe"]) == keys(states[1]["pipe"])
    assert not any("_orig_mod" in k for k in keys(states[1]))
    # an eager learner resumes from the compiled one's checkpoint
    fresh = {"DQN": dqn_learner, "DDPG": ddpg_learner}[compiled.name](False).load(tmp_path / "True.pt")
    for key, model in fresh.models.items():
        for p, q in zip(model.parameters(), compiled.models[key].parameters()):
            assert torch.equal(p, q)


def test_stage_level_switch_on_a_fixed_batch():
    torch.manual_seed(0)
    model = DQN(1, 2, hidden=(8,))
    batch = TrainBatch(SimpleStep(
        state=torch.tensor([[0.0], [1.0], [2.0]]), action=torch.tensor([0, 1, 0]),
        reward=torch.tensor([1.0, 2.0, 3.0]), next_state=torch.tensor([[1.0], [2.0], [1.0]]),
        terminated=torch.tensor([False, True, False]), truncated=torch.tensor([False, False, True]),
        nsteps=torch.tensor([1, 1, 3])))
    eager = next(QLoss(QTarget(IterableWrapper([batch]), model, gamma=0.5), model))
    y, loss = eager.targets.clone(), eager.losses["q"].detach().clone()
    batch.losses.clear()
    # the dict reaches torch.compile: the "eager" backend traces with dynamo but generates no code
    options = {"backend": "eager"}
    out = next(QLoss(QTarget(IterableWrapper([batch]), model, gamma=0.5, compile=options), model, compile=options))
    torch.testing.assert_close(out.targets, y)
    torch.testing.assert_close(out.losses["q"].detach(), loss)
    fn = lambda x: x + 1  # noqa: E731
    assert maybe_compile(fn, False) is fn and maybe_compile(fn, options) is not fn
