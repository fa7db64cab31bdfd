import os

import pytest
import torch

# Rendering tests draw offscreen. One torch thread: the networks here are small, and OpenMP
# threads spinning against each other on a busy 2-core machine make every update many times slower.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
torch.set_num_threads(1)


@pytest.fixture
def seeded():
    from fastrl_lite import set_seed
    set_seed(0)
