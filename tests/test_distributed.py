"""Data-parallel training: 2 ranks, gloo, CPU, one torch thread each, launched with torchrun in a
subprocess (tests/distributed_job.py holds the runs)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastrl_lite import distributed
from fastrl_lite.learner import CheckpointError
from fastrl_lite.learner.core import rank_checkpoint_path

sys.path.insert(0, str(Path(__file__).parent))
from resume_job import build  # noqa: E402

JOB = Path(__file__).parent / "distributed_job.py"


def torchrun(*args, nproc=2, env=None, timeout=240):
    "Run torchrun in a subprocess; returns (return code, output, seconds)."
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def ranks(folder, mode):
    return [torch.load(folder / f"{mode}.rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    "A 2-rank run: fit 2 epochs, checkpoint, fit 2 more."
    folder = tmp_path_factory.mktemp("straight")
    code, out, _ = torchrun(JOB, "straight", folder)
    assert code == 0, out
    return folder


def test_rank_seeds_differ_and_rank_0_keeps_the_run_seed():
    assert distributed.rank_seed(7, 0) == 7
    seeds = {distributed.rank_seed(7, r) for r in range(1, 64)}
    assert len(seeds) == 63 and 7 not in seeds and 8 not in seeds
    assert distributed.rank_seed(7, 1) == distributed.rank_seed(7, 1) != distributed.rank_seed(8, 1)
    assert distributed.rank_seed(None, 3) is None
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()


def test_two_ranks_keep_identical_weights_and_see_different_episodes(straight):
    zero, one = ranks(straight, "straight")
    assert zero["world"] == one["world"] == 2 and zero["batch"] == one["batch"] == 240
    start = build(seed=0).model.state_dict()
    for name, weight in zero["weights"].items():
        assert torch.equal(weight, one["weights"][name]), name  # 240 rounds, still bit-identical
    assert any(not torch.equal(w, start[k]) for k, w in zero["weights"].items())  # and they did train
    # each rank steps its own envs, seeded apart, into its own buffer, and samples its own batches
    assert not torch.equal(zero["first_states"], one["first_states"])
    assert zero["returns"] != one["returns"]
    assert not torch.equal(zero["losses"], one["losses"])
    # the epoch's figures: env steps and episodes summed over the ranks, the same row on each rank
    assert zero["history"] == one["history"]
    last = zero["history"][-1]
    assert last["env_steps"] == zero["env_steps"] + one["env_steps"]
    assert last["episodes"] == len(zero["returns"]) + len(one["returns"])
    # and the loss averaged: the mean of each rank's mean over the epoch's 60 rounds
    means = [float(rank["losses"][60:].mean()) for rank in (zero, one)]
    assert last["q_loss"] == pytest.approx(sum(means) / 2, rel=1e-6) and means[0] != means[1]


def shared(state) -> set:
    "The keys of a nested pipeline state left for rank 0's file."
    if not isinstance(state, dict):
        return set()
    found = {k for k, v in state.items() if isinstance(v, str) and v == "<saved once, in rank 0's file>"}
    return found.union(*(shared(v) for v in state.values()))


def without_speed(history):
    return [{k: v for k, v in row.items() if k != "steps_per_s"} for row in history]


def test_with_the_same_data_on_both_ranks_two_ranks_train_exactly_as_one_process(tmp_path):
    "The averaged gradient of two equal gradients is that gradient, bit for bit: nothing else changes a round."
    code, out, _ = torchrun(JOB, "same_data", tmp_path)
    assert code == 0, out
    learner = build(seed=0)
    learner.fit(2)
    one = learner.records.values("q_loss")
    for rank in ranks(tmp_path, "same_data"):
        assert len(rank["losses"]) == len(one) == 120 and torch.equal(rank["losses"], one)
        for name, weight in learner.model.state_dict().items():
            assert torch.equal(weight, rank["weights"][name])


def test_resume_of_a_two_rank_run_in_new_processes_is_bit_exact(straight):
    files = sorted(p.name for p in straight.glob("checkpoint*.pt"))
    assert files == ["checkpoint.pt", "checkpoint.rank1.pt"]
    main = torch.load(straight / "checkpoint.pt", weights_only=False)
    other = torch.load(straight / "checkpoint.rank1.pt", weights_only=False)
    assert main["meta"]["world_size"] == 2 and isinstance(main["models"]["model"], dict)
    # the models, the optimizer and the target network once, in rank 0's file
    assert shared(other["pipe"]) == {"optimizers", "schedulers", "scaler", "target_model"} and not shared(main["pipe"])
    assert other["models"] == "<saved once, in rank 0's file>"
    code, out, _ = torchrun(JOB, "resumed", straight)
    assert code == 0, out
    for straight_rank, resumed_rank in zip(ranks(straight, "straight"), ranks(straight, "resumed")):
        assert torch.equal(straight_rank["losses"], resumed_rank["losses"])
        assert straight_rank["returns"] == resumed_rank["returns"]
        assert straight_rank["env_steps"] == resumed_rank["env_steps"]
        assert without_speed(straight_rank["history"]) == without_speed(resumed_rank["history"])
        for name, weight in straight_rank["weights"].items():
            assert torch.equal(weight, resumed_rank["weights"][name])


def test_resume_with_another_number_of_ranks_is_refused(straight, tmp_path):
    learner = build(seed=0)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"run of 2 rank\(s\) and this run has 1.*--nproc 2"):
        learner.load(straight / "checkpoint.pt")
    assert all(torch.equal(v, learner.model.state_dict()[k]) for k, v in before.items()) and learner.batch == 0
    single = build(seed=0)
    single.fit(1)
    single.save(tmp_path / "checkpoint.pt")
    code, out, _ = torchrun(JOB, "other_world", tmp_path)
    assert code == 0, out
    for rank in ranks(tmp_path, "other_world"):
        assert "run of 1 rank(s) and this run has 2" in rank["error"]


def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_round_and_saves(tmp_path):
    code, out, _ = torchrun(JOB, "sigint", tmp_path)
    assert code == 0, out
    zero, one = ranks(tmp_path, "sigint")
    assert zero["interrupted"] and one["interrupted"]
    assert zero["batch"] == one["batch"] < 60  # rank 1 was interrupted at round 30 of a 20-epoch fit
    assert out.count("Interrupted after gradient round") == 1  # rank 0 alone says so
    for r in range(2):
        saved = torch.load(rank_checkpoint_path(tmp_path / "interrupted.pt", r), weights_only=False)
        assert saved["batch"] == zero["batch"]


def test_a_rank_that_raises_ends_every_rank_with_its_error(tmp_path):
    code, out, seconds = torchrun(JOB, "raise", tmp_path)
    assert code != 0
    assert "ValueError: boom on rank 1 at round 30" in out
    # rank 0, whose all-reduce broke, ends with rank 1's error rather than a bare connection error
    assert "RankFailedError: The run stopped because rank 1: ValueError: boom on rank 1" in out
    assert seconds < 120 and not list(tmp_path.glob("raise.rank*.pt"))


def test_a_rank_that_hangs_ends_the_run_at_the_process_group_timeout(tmp_path):
    code, out, seconds = torchrun(JOB, "hang", tmp_path, env={"FASTRL_LITE_DIST_TIMEOUT": "4"})
    assert code != 0
    assert "did not answer within the process-group timeout of 4 s" in out
    assert seconds < 120 and not list(tmp_path.glob("hang.rank*.pt"))  # rank 1 sleeps an hour unless stopped


def test_ranks_wait_to_leave_while_rank_0_works_on_past_the_collective_timeout(tmp_path):
    code, out, _ = torchrun(JOB, "slow_main", tmp_path, env={"FASTRL_LITE_DIST_TIMEOUT": "2"})
    assert code == 0, out  # a gloo barrier here would time out on rank 1 and abort it
    assert "terminate called" not in out and len(list(tmp_path.glob("slow_main.rank*.pt"))) == 2


def test_fastrl_lite_train_nproc_2_rank_0_alone_writes_and_reports(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fastrl_lite", "train", "dqn", "--steps", "4000", "--eval-episodes", "2"]
    proc = subprocess.run([*command, "--out", str(out), "--nproc", "2", "--eval-every", "2000"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert said.count("rolling_reward") == 1 and said.count("Greedy evaluation") == 1  # one table, one report
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "checkpoint.rank1.pt", "config.json", "eval.json",
                                               "metrics.csv", "model.pt", "returns.csv", "returns.png"}
    assert not any(p.name.endswith(".tmp") or "rank1" in p.name and p.name != "checkpoint.rank1.pt"
                   for p in out.iterdir())
    rows = (out / "metrics.csv").read_text().splitlines()
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(rows) == 1 + checkpoint["epoch"]  # rank 0's rows only, once each
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["env_steps"] == 4000  # --steps counts both ranks' env steps: 2000 each
    assert '"nproc": 2' in (out / "config.json").read_text()
    # --eval-every counts both ranks' env steps too: rank 0 evaluates after 1000 of its own
    assert (out / "best_model.pt").exists() and rows[-1].split(",")[rows[0].split(",").index("eval_mean")] != "nan"
    # a 2-rank run resumed on one process is refused, and its folder is left as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.run([*command, "--resume", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "run of 2 rank(s) and this run has 1" in proc.stderr and "--nproc 2" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_two_machines_meeting_at_torchruns_rendezvous_train_as_one_run(tmp_path):
    """torchrun's multi-node flags as the README gives them: two launchers, one per machine (here both
    on this one, over loopback), meet at a c10d rendezvous and run one 2-rank run."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-machines",
              "-m", "fastrl_lite", "train", "dqn", "--steps", "3000", "--eval-episodes", "1", "--out", str(out),
              "--hp", "net_arch=[32]"]
    machines = [subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    said = [machine.communicate(timeout=300)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], said
    assert sum(s.count("rolling_reward") for s in said) == 1  # one table, from the machine that holds rank 0
    assert json.loads((out / "eval.json").read_text())["env_steps"] == 3000  # both machines' env steps
    assert '"nproc": 2' in (out / "config.json").read_text() and (out / "checkpoint.rank1.pt").exists()


class _Joined(Exception):
    "Raised by the stand-in for `init_process_group`, after it recorded the backend asked for."


def _record_backend(monkeypatch):
    asked = []

    def init_process_group(backend, **kwargs):
        asked.append(backend)
        raise _Joined

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    return asked


def test_the_command_line_asks_for_gloo_also_where_cuda_is_available(monkeypatch, tmp_path):
    asked = _record_backend(monkeypatch)
    with pytest.raises(_Joined):
        distributed.init()
    assert asked == ["nccl"]  # a script's GPU models get NCCL ...
    from fastrl_lite.cli import train
    with pytest.raises(_Joined):
        train("dqn", steps=100, out=tmp_path / "run")
    assert asked == ["nccl", "gloo"]  # ... the command line's CPU models gloo, which NCCL would not serve
    assert not (tmp_path / "run").exists()


def test_cpu_gradients_under_nccl_are_refused_with_what_to_do(monkeypatch):
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
        with pytest.raises(ValueError, match="NCCL, which reduces CUDA tensors only.*backend='gloo'"):
            distributed.GradientAllReduce(torch.nn.Linear(2, 2).parameters())
        monkeypatch.undo()
        distributed.GradientAllReduce(torch.nn.Linear(2, 2).parameters())  # gloo takes CPU tensors
    finally:
        dist.destroy_process_group()
