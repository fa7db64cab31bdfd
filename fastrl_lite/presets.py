"""Per-env hyper-parameter presets for `fastrl-lite train ALGO`, as data.

The names are rl-zoo's (Stable-Baselines3's), in their units, so a setting from an rl-zoo
`hyperparams/*.yml` file carries over to `--hp key=value` as it stands:
- `n_timesteps`: env steps of the run (all envs together);
- `train_freq`: env steps *per env* between training bursts; `gradient_steps`: gradient rounds per
  burst, -1 for as many as the env steps collected in the burst;
- `learning_starts`: transitions stored before the first gradient round;
- `target_update_interval`: env steps between target-network updates (rl-zoo's unit), or
  `target_update_rounds`: gradient rounds between them (fastrl's unit), never both; `tau`: Polyak
  coefficient of the actor-critic algorithms' soft target updates;
- `exploration_fraction`: share of the run over which ε decays from `exploration_initial_eps` to
  `exploration_final_eps`;
- `net_arch`: hidden layer sizes; `n_envs`: envs stepped side by side;
- `noise_type` (DDPG, TD3): 'normal' or 'ornstein-uhlenbeck' exploration, of scale `noise_std`;
- `activation_fn` ('tanh' or 'relu') and `ortho_init` (PPO): rl-zoo's `policy_kwargs` of the same
  names, the hidden layers' activation and the orthogonal initialisation of the usual PPO;
- `use_sde` (SAC): generalized state-dependent exploration, with `log_std_init` its initial log σ
  and `sde_sample_freq` the env steps each exploration matrix is held (-1: one collection phase).

Each algorithm has defaults (`DEFAULTS`) and, per env id, named presets (`PRESETS`); a preset lists
only what differs from the defaults, and says where its values come from. For an env, the preset
called "default" is used unless another is asked for; an env without presets runs on the defaults.
"""
from __future__ import annotations

import json
from typing import Dict, Optional, Tuple

__all__ = ["DEFAULTS", "PRESETS", "SCHEDULED", "GSDE_ONLY", "resolve", "parse_overrides", "preset_names"]

ZOO = "rl-baselines3-zoo hyperparams/{}.yml, {}"

DEFAULTS: Dict[str, Dict] = {
    # SB3's DQN defaults where a value has one (max_grad_norm 10, ε 1 → 0.05 over 10%, γ 0.99)
    "dqn": {"n_timesteps": 50_000, "learning_rate": 1e-4, "batch_size": 32, "buffer_size": 100_000,
            "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10_000, "target_update_rounds": None,
            "train_freq": 4, "gradient_steps": 1, "exploration_fraction": 0.1, "exploration_initial_eps": 1.0,
            "exploration_final_eps": 0.05, "max_grad_norm": 10.0, "net_arch": [64, 64], "double_q": False,
            "n_envs": 1, "prioritized": False, "sail": False},
    # SB3's DDPG/TD3 defaults (γ 0.99, τ 0.005, batch 256, 1M buffer, 100 learning starts)
    "ddpg": {"n_timesteps": 20_000, "learning_rate": 1e-3, "batch_size": 256, "buffer_size": 1_000_000,
             "learning_starts": 100, "gamma": 0.99, "tau": 0.005, "train_freq": 1, "gradient_steps": 1,
             "noise_type": "normal", "noise_std": 0.1, "net_arch": [400, 300], "n_envs": 1},
    "td3": {"n_timesteps": 20_000, "learning_rate": 1e-3, "batch_size": 256, "buffer_size": 1_000_000,
            "learning_starts": 100, "gamma": 0.99, "tau": 0.005, "train_freq": 1, "gradient_steps": 1,
            "noise_type": "normal", "noise_std": 0.1, "policy_delay": 2, "target_policy_noise": 0.2,
            "target_noise_clip": 0.5, "net_arch": [400, 300], "n_envs": 1},
    # SB3's SAC defaults (lr 3e-4, 1M buffer, 100 learning starts, batch 256, τ 0.005, γ 0.99, α tuned to the
    # target entropy -|A|); as in SB3, SAC's `target_update_interval` counts gradient rounds, not env steps
    "sac": {"n_timesteps": 20_000, "learning_rate": 3e-4, "batch_size": 256, "buffer_size": 1_000_000,
            "learning_starts": 100, "gamma": 0.99, "tau": 0.005, "train_freq": 1, "gradient_steps": 1,
            "ent_coef": "auto", "target_entropy": "auto", "target_update_interval": 1, "net_arch": [256, 256],
            "n_envs": 1, "use_sde": False, "sde_sample_freq": -1, "log_std_init": -3.0},
    # SB3's PPO defaults; `normalize` is rl-zoo's (running mean/std of observations and rewards), a
    # learning rate or clip range may be rl-zoo's "lin_<value>" (falling linearly to 0 over the run)
    "ppo": {"n_timesteps": 100_000, "learning_rate": 3e-4, "n_steps": 2048, "batch_size": 64, "n_epochs": 10,
            "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "clip_range_vf": None,
            "normalize_advantage": True, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5, "target_kl": None,
            "net_arch": [64, 64], "log_std_init": 0.0, "normalize": False, "n_envs": 1, "activation_fn": "tanh",
            "ortho_init": True},
}

# the settings that take rl-zoo's "lin_<start>" schedules as well as numbers (PPO's builder checks them);
# every other numeric setting takes numbers only
SCHEDULED: Dict[str, Tuple[str, ...]] = {"ppo": ("learning_rate", "clip_range", "clip_range_vf")}
# SAC's settings that act only with gSDE (use_sde=true)
GSDE_ONLY = ("sde_sample_freq", "log_std_init")

_ZOO_CARTPOLE_DQN = {"n_timesteps": 50_000, "learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000,
                     "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10, "train_freq": 256,
                     "gradient_steps": 128, "exploration_fraction": 0.16, "exploration_final_eps": 0.04,
                     "net_arch": [256, 256]}
_ZOO_SMALL_DQN = {"n_timesteps": 100_000, "learning_rate": 6.3e-4, "batch_size": 128, "buffer_size": 50_000,
                  "learning_starts": 0, "gamma": 0.99, "target_update_interval": 250, "train_freq": 4,
                  "gradient_steps": -1, "exploration_fraction": 0.12, "exploration_final_eps": 0.1,
                  "net_arch": [256, 256]}
# rl-zoo's Pendulum settings for DDPG and TD3 (its train_freq of one episode becomes one gradient
# round per env step, and learning starts at most half-way through a short run)
_ZOO_PENDULUM = {"n_timesteps": 20_000, "gamma": 0.98, "buffer_size": 200_000, "learning_starts": 10_000,
                 "noise_std": 0.1, "learning_rate": 1e-3, "net_arch": [400, 300]}

# rl-zoo's MountainCarContinuous settings for DDPG and TD3: SB3's defaults with temporally correlated
# (Ornstein-Uhlenbeck) exploration of σ 0.5; TD3 reaches the flag with them (benchmarks/README.md)
_ZOO_MOUNTAINCAR = {"n_timesteps": 300_000, "noise_type": "ornstein-uhlenbeck", "noise_std": 0.5}

# rl-zoo's settings for the MuJoCo envs, tuned on their -v4 versions; gymnasium's -v5 envs are the same
# robots and tasks with bugs fixed, so the presets carry over under the -v5 ids
MUJOCO_ENVS = ("HalfCheetah", "Ant", "Hopper", "Walker2d", "Humanoid", "Swimmer")


def _mujoco(algo: str, hp: Dict) -> Dict[str, Dict]:
    "`algo`'s preset for each MuJoCo env: `hp`, with Humanoid's longer run and Swimmer's γ 0.9999 as rl-zoo has them."
    special = {"Humanoid": {"n_timesteps": 2_000_000}, "Swimmer": {"gamma": 0.9999}}
    return {f"{env}-v5": {"default": {"source": ZOO.format(algo, f"{env}-v4") + ", on -v5",
                                      "hp": {**hp, **special.get(env, {})}}} for env in MUJOCO_ENVS}


# DDPG and TD3 on MuJoCo: SB3's defaults (Gaussian noise σ 0.1, lr 1e-3, batch 256, [400, 300]) for 1M steps,
# learning from 10k random steps on; SAC the same with its own defaults
_ZOO_MUJOCO_OFF_POLICY = {"n_timesteps": 1_000_000, "learning_starts": 10_000}
# rl-zoo's BipedalWalker settings for DDPG and TD3 (TD3's train_freq of one episode becomes one gradient
# round per env step, as for Pendulum)
_ZOO_BIPEDAL = {**_ZOO_PENDULUM, "n_timesteps": 1_000_000}
# PPO on the MuJoCo envs tuned by rl-zoo: ReLU bodies of [256, 256] each, no orthogonal initialisation,
# log σ starting at -2, and normalized observations and rewards
_ZOO_PPO_MUJOCO_POLICY = {"normalize": True, "n_envs": 1, "n_timesteps": 1_000_000, "log_std_init": -2.0,
                          "ortho_init": False, "activation_fn": "relu", "net_arch": [256, 256]}
_ZOO_PPO_LUNAR = {"n_envs": 16, "n_timesteps": 1_000_000, "n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98,
                  "gamma": 0.999, "n_epochs": 4, "ent_coef": 0.01}

PRESETS: Dict[str, Dict[str, Dict[str, Dict]]] = {
    "dqn": {
        "CartPole-v1": {
            "default": {"source": "rl-zoo's CartPole-v1 settings with double Q (benchmarks/dqn_defaults.py)",
                        "hp": {**_ZOO_CARTPOLE_DQN, "double_q": True}},
            "zoo": {"source": ZOO.format("dqn", "CartPole-v1"), "hp": _ZOO_CARTPOLE_DQN},
        },
        "Acrobot-v1": {"default": {"source": ZOO.format("dqn", "Acrobot-v1"), "hp": _ZOO_SMALL_DQN}},
        "LunarLander-v3": {"default": {"source": ZOO.format("dqn", "LunarLander-v2"), "hp": _ZOO_SMALL_DQN}},
        "MountainCar-v0": {"default": {"source": ZOO.format("dqn", "MountainCar-v0"),
                                       "hp": {"n_timesteps": 120_000, "learning_rate": 4e-3, "batch_size": 128,
                                              "buffer_size": 10_000, "learning_starts": 1000, "gamma": 0.98,
                                              "target_update_interval": 600, "train_freq": 16,
                                              "gradient_steps": 8, "exploration_fraction": 0.2,
                                              "exploration_final_eps": 0.07, "net_arch": [256, 256]}}},
    },
    "ddpg": {"Pendulum-v1": {"default": {"source": ZOO.format("ddpg", "Pendulum-v1"), "hp": _ZOO_PENDULUM}},
             "LunarLanderContinuous-v3": {"default": {"source": ZOO.format("ddpg", "LunarLanderContinuous-v2"),
                                                      "hp": {**_ZOO_PENDULUM, "n_timesteps": 300_000}}},
             "MountainCarContinuous-v0": {"default": {"source": ZOO.format("ddpg", "MountainCarContinuous-v0"),
                                                      "hp": _ZOO_MOUNTAINCAR}},
             "BipedalWalker-v3": {"default": {"source": ZOO.format("ddpg", "BipedalWalker-v3"), "hp": _ZOO_BIPEDAL}},
             **_mujoco("ddpg", _ZOO_MUJOCO_OFF_POLICY)},
    "td3": {"Pendulum-v1": {"default": {"source": ZOO.format("td3", "Pendulum-v1"), "hp": _ZOO_PENDULUM}},
            "LunarLanderContinuous-v3": {"default": {"source": ZOO.format("td3", "LunarLanderContinuous-v2"),
                                                     "hp": {**_ZOO_PENDULUM, "n_timesteps": 300_000}}},
            "MountainCarContinuous-v0": {"default": {"source": ZOO.format("td3", "MountainCarContinuous-v0"),
                                                     "hp": _ZOO_MOUNTAINCAR}},
            "BipedalWalker-v3": {"default": {"source": ZOO.format("td3", "BipedalWalker-v3"), "hp": _ZOO_BIPEDAL}},
            **_mujoco("td3", _ZOO_MUJOCO_OFF_POLICY)},
    "sac": {"Pendulum-v1": {"default": {"source": ZOO.format("sac", "Pendulum-v1"),
                                        "hp": {"n_timesteps": 20_000, "learning_rate": 1e-3}}},
            # rl-zoo lets the learning rate fall linearly to 0 (lin_7.3e-4); here it stays constant
            "LunarLanderContinuous-v3": {"default": {
                "source": ZOO.format("sac", "LunarLanderContinuous-v2") + " with a constant learning rate",
                "hp": {"n_timesteps": 500_000, "learning_rate": 7.3e-4, "buffer_size": 1_000_000, "batch_size": 256,
                       "ent_coef": "auto", "gamma": 0.99, "tau": 0.01, "train_freq": 1, "gradient_steps": 1,
                       "learning_starts": 10_000, "net_arch": [400, 300]}}},
            # gSDE's state-dependent exploration is what reaches the flag in rl-zoo's tuning
            "MountainCarContinuous-v0": {"default": {
                "source": ZOO.format("sac", "MountainCarContinuous-v0"),
                "hp": {"n_timesteps": 50_000, "learning_rate": 3e-4, "buffer_size": 50_000, "batch_size": 512,
                       "ent_coef": 0.1, "train_freq": 32, "gradient_steps": 32, "gamma": 0.9999, "tau": 0.01,
                       "learning_starts": 0, "use_sde": True, "log_std_init": -3.67, "net_arch": [64, 64]}}},
            "BipedalWalker-v3": {"default": {
                "source": ZOO.format("sac", "BipedalWalker-v3"),
                "hp": {"n_timesteps": 500_000, "learning_rate": 7.3e-4, "buffer_size": 300_000, "batch_size": 256,
                       "ent_coef": "auto", "gamma": 0.98, "tau": 0.02, "train_freq": 64, "gradient_steps": 64,
                       "learning_starts": 10_000, "use_sde": True, "log_std_init": -3.0, "net_arch": [400, 300]}}},
            **_mujoco("sac", _ZOO_MUJOCO_OFF_POLICY)},
    "ppo": {
        "CartPole-v1": {"default": {"source": ZOO.format("ppo", "CartPole-v1"),
                                    "hp": {"n_envs": 8, "n_timesteps": 100_000, "n_steps": 32, "batch_size": 256,
                                           "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0,
                                           "learning_rate": "lin_1e-3", "clip_range": "lin_0.2"}}},
        # rl-zoo also uses gSDE here (use_sde, sde_sample_freq 4), which fastrl_lite does not have
        "Pendulum-v1": {"default": {"source": ZOO.format("ppo", "Pendulum-v1") + " without gSDE",
                                    "hp": {"n_envs": 4, "n_timesteps": 100_000, "n_steps": 1024, "gae_lambda": 0.95,
                                           "gamma": 0.9, "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 1e-3,
                                           "clip_range": 0.2}}},
        "Acrobot-v1": {"default": {"source": ZOO.format("ppo", "Acrobot-v1"),
                                   "hp": {"normalize": True, "n_envs": 16, "n_timesteps": 1_000_000, "n_steps": 256,
                                          "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0}}},
        "MountainCar-v0": {"default": {"source": ZOO.format("ppo", "MountainCar-v0"),
                                       "hp": {"normalize": True, "n_envs": 16, "n_timesteps": 1_000_000, "n_steps": 16,
                                              "gae_lambda": 0.98, "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0}}},
        "LunarLander-v3": {"default": {"source": ZOO.format("ppo", "LunarLander-v3"), "hp": _ZOO_PPO_LUNAR}},
        "LunarLanderContinuous-v3": {"default": {"source": ZOO.format("ppo", "LunarLanderContinuous-v3"),
                                                 "hp": _ZOO_PPO_LUNAR}},
        "BipedalWalker-v3": {"default": {"source": ZOO.format("ppo", "BipedalWalker-v3"),
                                         "hp": {"normalize": True, "n_envs": 32, "n_timesteps": 5_000_000,
                                                "n_steps": 2048, "batch_size": 64, "gae_lambda": 0.95, "gamma": 0.999,
                                                "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 3e-4,
                                                "clip_range": 0.18}}},
        "Ant-v5": {"default": {"source": ZOO.format("ppo", "Ant-v4") + ", on -v5",
                               "hp": {"normalize": True, "n_timesteps": 1_000_000}}},
        "Swimmer-v5": {"default": {"source": ZOO.format("ppo", "Swimmer-v4") + ", on -v5",
                                   "hp": {"normalize": True, "n_timesteps": 1_000_000, "gamma": 0.9999, "n_envs": 4,
                                          "n_steps": 1024, "batch_size": 256, "learning_rate": 6e-4,
                                          "gae_lambda": 0.98}}},
        "HalfCheetah-v5": {"default": {"source": ZOO.format("ppo", "HalfCheetah-v4") + ", on -v5",
                                       "hp": {**_ZOO_PPO_MUJOCO_POLICY, "batch_size": 64, "n_steps": 512, "gamma": 0.98,
                                              "learning_rate": 2.0633e-05, "ent_coef": 0.000401762, "clip_range": 0.1,
                                              "n_epochs": 20, "gae_lambda": 0.92, "max_grad_norm": 0.8,
                                              "vf_coef": 0.58096}}},
        "Hopper-v5": {"default": {"source": ZOO.format("ppo", "Hopper-v4") + ", on -v5",
                                  "hp": {**_ZOO_PPO_MUJOCO_POLICY, "batch_size": 32, "n_steps": 512, "gamma": 0.999,
                                         "learning_rate": 9.80828e-05, "ent_coef": 0.00229519, "clip_range": 0.2,
                                         "n_epochs": 5, "gae_lambda": 0.99, "max_grad_norm": 0.7,
                                         "vf_coef": 0.835671}}},
        "Humanoid-v5": {"default": {"source": ZOO.format("ppo", "Humanoid-v4") + ", on -v5",
                                    "hp": {**_ZOO_PPO_MUJOCO_POLICY, "n_timesteps": 10_000_000, "batch_size": 256,
                                           "n_steps": 512, "gamma": 0.95, "learning_rate": 3.56987e-05,
                                           "ent_coef": 0.00238306, "clip_range": 0.3, "n_epochs": 5, "gae_lambda": 0.9,
                                           "max_grad_norm": 2.0, "vf_coef": 0.431892}}},
        "Walker2d-v5": {"default": {"source": ZOO.format("ppo", "Walker2d-v4") + ", on -v5",
                                    "hp": {"normalize": True, "n_envs": 1, "n_timesteps": 1_000_000, "batch_size": 32,
                                           "n_steps": 512, "gamma": 0.99, "learning_rate": 5.05041e-05,
                                           "ent_coef": 0.000585045, "clip_range": 0.1, "n_epochs": 20,
                                           "gae_lambda": 0.95, "max_grad_norm": 1.0, "vf_coef": 0.871923}}},
        "InvertedPendulum-v5": {"default": {"source": ZOO.format("ppo", "InvertedPendulum-v2") + ", on -v5",
                                            "hp": {"normalize": True, "n_envs": 1, "n_timesteps": 1_000_000,
                                                   "batch_size": 64, "n_steps": 32, "gamma": 0.999,
                                                   "learning_rate": 0.000222425, "ent_coef": 1.37976e-07,
                                                   "clip_range": 0.4, "n_epochs": 5, "gae_lambda": 0.9,
                                                   "max_grad_norm": 0.3, "vf_coef": 0.19816}}},
    },
}
for _algo in PRESETS:
    for _env in PRESETS[_algo]:
        PRESETS[_algo][_env]["zoo"] = PRESETS[_algo][_env].get("zoo", PRESETS[_algo][_env]["default"])


def preset_names(algo: str, env_id: str):
    return sorted(PRESETS.get(algo, {}).get(env_id, {}))


def parse_overrides(pairs) -> Dict:
    """`["lr=1e-3", "net_arch=[64,64]"]` → {"lr": 0.001, "net_arch": [64, 64]}: values are read as
    JSON (numbers, lists, true/false), anything else stays a string. A key given twice with two
    values is refused (which one was meant?); given twice with the same value, it counts once."""
    out = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp takes key=value, got {pair!r}; e.g. --hp learning_rate=1e-3.")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = {"True": True, "False": False}.get(text, text)
        key = key.strip()
        if key in out and (type(out[key]) is not type(value) or out[key] != value):
            raise ValueError(f"--hp gives {key} twice, {key}={out[key]} and {key}={value}; give it once.")
        out[key] = value
    return out


def resolve(algo: str, env_id: str, preset: Optional[str] = None, overrides: Optional[Dict] = None
            ) -> Tuple[Dict, str]:
    """The hyper-parameters a run uses: `algo`'s defaults, then `env_id`'s preset (`preset`, else its
    "default"), then `overrides`; and a sentence saying which preset it took. Turning SAC's gSDE off
    (use_sde=false) on an env whose preset has it on leaves out the preset's gSDE-only settings too."""
    if algo not in DEFAULTS:
        raise ValueError(f"No hyper-parameters for {algo!r}; known: {sorted(DEFAULTS)}.")
    hp = dict(DEFAULTS[algo])
    presets = PRESETS.get(algo, {}).get(env_id, {})
    if preset is not None and preset not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise ValueError(f"{algo} has no preset {preset!r} for {env_id} (its presets: {known}).")
    if presets:
        name = preset or "default"
        hp.update(presets[name]["hp"])
        said = f"Hyper-parameters: preset {name!r} for {env_id} ({presets[name]['source']})"
    else:
        with_presets = ", ".join(sorted(PRESETS.get(algo, {}))) or "none"
        said = (f"Hyper-parameters: no {algo} preset for {env_id}, so {algo}'s defaults "
                f"(presets exist for {with_presets})")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(hp))
    if unknown:
        raise ValueError(f"Unknown hyper-parameter(s) {unknown} for {algo}; known: {sorted(hp)}.")
    targets = {"target_update_interval", "target_update_rounds"}
    if targets <= set(overrides):
        raise ValueError("Give target_update_interval (env steps) or target_update_rounds (gradient rounds), "
                         "not both.")
    for key, value in overrides.items():
        default = hp[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool) and key not in SCHEDULED.get(algo, ()) \
                and isinstance(value, (bool, list, dict, str)):
            raise ValueError(f"{key} must be a number (its default here is {default!r}), got {value!r}.")
        if key in targets:  # one unit replaces the other
            hp.update(dict.fromkeys(targets, None))
        hp[key] = value
    if overrides:
        said += "; overridden: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    if "use_sde" in DEFAULTS[algo] and overrides.get("use_sde") is False and presets \
            and presets[name]["hp"].get("use_sde") is True:
        left_out = {k: hp[k] for k in GSDE_ONLY if k not in overrides and hp[k] != DEFAULTS[algo][k]}
        hp.update({k: DEFAULTS[algo][k] for k in left_out})
        if left_out:
            said += "; use_sde=False drops the preset's gSDE-only " + ", ".join(f"{k}={v}" for k, v in left_out.items())
    return hp, said
