"""SAC on Pendulum-v1: fastrl_lite against Stable-Baselines3 with rl-zoo's tuned hyper-parameters
(see `pendulum.py`).

    python benchmarks/sac_pendulum.py --steps 20000 --seeds 0 1 2 --threads 2
"""
from pendulum import main

if __name__ == "__main__":
    main("sac", __file__)
