"""Small 2-rank DQN runs used by tests/test_distributed.py, launched under torchrun:
`python -m torch.distributed.run --standalone --nproc-per-node 2 distributed_job.py MODE DIR`.

MODE `straight` fits 2 epochs, saves DIR/checkpoint.pt and fits 2 more; `resumed` loads
DIR/checkpoint.pt and fits 2 (so its last two epochs must equal `straight`'s); `raise` and `hang`
make rank 1 raise, or stop answering, at gradient round 30, and `sigint` sends rank 1 alone a
Ctrl-C there, during a fit that checkpoints to DIR/interrupted.pt; `other_world` loads
DIR/checkpoint.pt (written by another number of ranks); `same_data` fits 2 epochs with every rank
seeded as rank 0 (the same episodes, the same samples), which must train exactly as one process;
`slow_main` fits 1 epoch, then rank 0 works on for three collective timeouts before both leave. Each rank writes what it saw to DIR/MODE.rankR.pt."""
import os
import signal
import sys
import time
from pathlib import Path

import torch

from fastrl_lite import distributed
from fastrl_lite.learner import CheckpointError
from fastrl_lite.pipes import Pipe

sys.path.insert(0, str(Path(__file__).parent))
from resume_job import build, tail  # noqa: E402


class FailAt(Pipe):
    "Passes rounds through, and on rank 1 raises, hangs or is sent a Ctrl-C at round `at`."

    def __init__(self, source, at: int, mode: str):
        super().__init__(source)
        self.at, self.mode, self.rounds = at, mode, 0

    def next(self):
        batch = next(self.source)
        self.rounds += 1
        if distributed.rank() == 1 and self.rounds == self.at:
            if self.mode == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
                return batch
            if self.mode == "hang":
                time.sleep(3600)
            raise ValueError("boom on rank 1 at round 30")
        return batch


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "same_data":
        import fastrl_lite.envs.core
        distributed.rank_seed = fastrl_lite.envs.core.rank_seed = lambda seed, of_rank=None: seed
    distributed.init()
    learner = build(seed=0)
    learner._ranks_seeded = mode == "same_data"  # so rank 1 keeps rank 0's RNG streams too
    checkpoint = folder / "checkpoint.pt"
    out = {"rank": distributed.rank(), "world": distributed.world_size()}
    if mode == "straight":
        learner.fit(2)
        learner.save(checkpoint)
    elif mode == "resumed":
        learner.load(checkpoint)
    elif mode == "other_world":
        try:
            learner.load(checkpoint)
        except CheckpointError as error:
            out["error"] = str(error)
    elif mode in ("raise", "hang", "sigint"):
        learner.pipe = FailAt(learner.pipe, 30, mode)
    if mode in ("straight", "resumed", "raise", "hang", "sigint", "same_data"):
        start = learner.batch
        if mode == "sigint":
            learner.fit(20, checkpoint_every=1, checkpoint_path=folder / "interrupted.pt")
            out["interrupted"] = learner.interrupted
        else:
            learner.fit(2)
        out.update(tail(learner, start))
        out["history"] = learner.history
        out["weights"] = {k: v.clone() for k, v in learner.model.state_dict().items()}
        out["first_states"] = learner.collector.buffer.storage.tensors["state"][:20].clone()
    if mode == "slow_main":  # rank 0 works on longer than the collective timeout while rank 1 waits to leave
        learner.fit(1)
        if distributed.rank() == 0:
            time.sleep(3 * float(os.environ["FASTRL_LITE_DIST_TIMEOUT"]))
    torch.save(out, folder / f"{mode}.rank{distributed.rank()}.pt")
    distributed.shutdown()
