"""Every knob of every tiny config driven with bad values through amd_jax.config.validate alone (the generic checks
and the task's own `check`; no task is built, nothing trains, ~15 s): each value must be refused in one line that
names the key (ConfigError), or be one the config accepts on purpose (ACCEPTED, each with its reason). Anything
else raised is a crash, and there must be none. The counts are printed per config."""

from __future__ import annotations

import collections
import copy
import logging
import math
import os

import ml_collections
import pytest

from amd_jax.config import flatten, load, validate
from amd_jax.errors import ConfigError
from test_digits import tiny_digits_config
from test_zones2d import tiny_config as tiny_zones2d_config
from tiny import ROOT

CONFIGS = {  # name -> (the config as the tests run it, the devices its mesh is validated for)
    "toy2d_tiny": (lambda: load(os.path.join(ROOT, "configs", "toy2d_tiny.py")), 8),
    "zones2d": (tiny_zones2d_config, 8),
    "digits": (tiny_digits_config, 1),
    "sdxl_tiny": (lambda: load(os.path.join(ROOT, "configs", "sdxl_tiny.py")), 8),
    "sit_tiny": (lambda: load(os.path.join(ROOT, "configs", "sit_tiny.py")), 8),
}

# (label, value): zero, negative, huge, hugely negative, NaN, a string, and two wrong types
BAD = (("0", 0), ("-1", -1), ("1e30", 1e30), ("-1e30", -1e30), ("nan", math.nan), ("'abc'", "abc"),
       ("None", None), ("(1,)", (1,)))

SEEDS = "a seed: any integer in [0, 2^31)"
ALL = None  # every config that has the key
ACCEPTED = {  # (key, label) -> (why the value is valid there, the configs where it is: ALL or a tuple of names)
    ("seed", "0"): (SEEDS, ALL),
    ("data.seed", "0"): (SEEDS, ALL),
    ("data.seed", "-1"): ("SDXL and SiT: -1 = use `seed` for the data too", ("sdxl_tiny", "sit_tiny")),
    ("data.split_seed", "0"): (SEEDS, ALL),
    ("teacher.seed", "0"): (SEEDS, ALL),
    ("amd.s", "0"): ("s = 0: no Dynamic Score Adaptation (with rls_lambda = 0 it is DMD2 bit for bit)", ALL),
    ("amd.tau", "0"): ("tau = 0: the zone mask flags every sample below its group's mean reward", ALL),
    ("amd.std_floor", "0"): ("no floor on the group's reward std (the default)", ALL),
    ("amd.rls_lambda", "0"): ("lambda = 0: no Repulsive Landscape Sharpening (the DMD2 critic loss)", ALL),
    ("amd.group_size", "0"): ("0 (like 1) = the whole global batch is one group", ALL),
    ("dmd.t_min", "0"): ("the re-noise range may start at t = 0 (clean data)", ALL),
    ("dmd.ca_t_min", "-1"): ("-1 (with ca_t_max = -1, the default) = the CA term at the DM term's t", ALL),
    ("dmd.ca_t_max", "-1"): ("-1 (with ca_t_min = -1, the default) = the CA term at the DM term's t", ALL),
    ("gan.generator_weight", "0"): ("the GAN term off in the generator's loss", ALL),
    ("gan.critic_weight", "0"): ("the GAN term off in the critic's loss", ALL),
    ("log.sample_every", "0"): ("0 = no in-training samples", ALL),
    ("optim.warmup_steps", "0"): ("no learning-rate warm-up", ALL),
    ("optim.weight_decay", "0"): ("no weight decay (the small configs' default)", ALL),
    ("optim.b1", "0"): ("Adam without momentum (RMSProp-like)", ALL),
    ("optim.b2", "0"): ("Adam whose second moment is the last squared gradient (sign-like steps)", ALL),
    ("optim.student_lr", "0"): ("a frozen student: a control run", ALL),
    ("optim.critic_lr", "0"): ("a frozen critic (fake teacher): a control run", ALL),
    ("student.ema_decay", "0"): ("0 = no EMA of the student (the default)", ALL),
    ("student.timesteps", "(1,)"): ("t = 1 is the noise end of a continuous schedule: the one-step student "
                                    "(the int 1 == 1.0)", ("toy2d_tiny", "zones2d", "digits", "sit_tiny")),
    ("train.max_skipped_fraction", "0"): ("0 = a finished run with any skipped update fails", ALL),
    ("sharding.fsdp_min_size", "0"): ("0 = FSDP-shard every parameter, however small", ALL),
    ("model.depth", "0"): ("an MLP with no residual block (input and output layers only)", ALL),
    ("zone.source_class", "0"): ("class 0 owns the zone (the default)", ALL),
    ("zone.source_mode", "0"): ("mode 0 of the source class is the zone (the default)", ALL),
    ("zone.flip", "0"): ("clean teacher data: the control run without a zone", ALL),
    ("reward.noise", "0"): ("the proxy without its random field (a density alone)", ALL),
    ("teacher.dir", "'abc'"): ("a relative folder, created on first use", ALL),
    ("reward.dir", "'abc'"): ("a relative folder for the reward's cache, created on first use", ALL),
    ("eval.dir", "'abc'"): ("a relative folder for the held-out classifier's cache, created on first use", ALL),
    ("data.field", "'abc'"): ("a caption field name: read only from JSONL / parquet / TFDS captions", ALL),
}


def _with(d: dict, key: str, value) -> ml_collections.ConfigDict:
    """The config dict `d` with the dotted `key` set to `value`, past ConfigDict's type checks (a config file can
    build a block with any types)."""
    d = copy.deepcopy(d)
    *parents, leaf = key.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[leaf] = value
    return ml_collections.ConfigDict(d)


def _drive(name: str) -> dict:
    """{(key, label): ('refused' | 'accepted' | 'unclear' | 'crashed', detail)} for every knob and bad value."""
    make, devices = CONFIGS[name]
    config = make()
    validate(config, devices)  # the config itself is valid
    d = config.to_dict()
    out = {}
    for key in flatten(d):
        for label, value in BAD:
            try:
                validate(_with(d, key, value), devices)
                out[key, label] = ("accepted", "")
            except ConfigError as e:
                msg = str(e)
                out[key, label] = ("refused" if key in msg and "\n" not in msg else "unclear", msg)
            except Exception as e:  # anything else is a crash
                out[key, label] = ("crashed", f"{type(e).__name__}: {e}")
    return out


def _on_purpose(name: str, key: str, label: str) -> bool:
    entry = ACCEPTED.get((key, label))
    return entry is not None and (entry[1] is ALL or name in entry[1])


@pytest.fixture(scope="module")
def results():
    logging.disable(logging.WARNING)  # validate's notes on partial batches, thousands of times
    try:
        return {name: _drive(name) for name in CONFIGS}
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_bad_value_is_refused_in_one_line_or_accepted_on_purpose(name, results, capsys):
    res = results[name]
    counts = collections.Counter(kind for kind, _ in res.values())
    with capsys.disabled():
        print(f"\n[config fuzz] {name}: {len(res)} values over {len({k for k, _ in res})} keys: "
              f"{counts['refused']} refused, {counts['accepted']} accepted on purpose, {counts['crashed']} crashed, "
              f"{counts['unclear']} refused without naming the key", end="")
    crashed = {k: d for k, (kind, d) in res.items() if kind == "crashed"}
    assert not crashed, crashed
    unclear = {k: d for k, (kind, d) in res.items() if kind == "unclear"}
    assert not unclear, unclear
    surprise = [k for k, (kind, _) in res.items() if kind == "accepted" and not _on_purpose(name, *k)]
    assert not surprise, f"accepted but not listed in ACCEPTED (list it with the reason, or refuse it): {surprise}"
    stale = [k for k, (kind, _) in res.items() if kind == "refused" and _on_purpose(name, *k)]
    assert not stale, f"listed in ACCEPTED but refused: {stale}"


def test_every_accepted_entry_is_used(results):
    """No ACCEPTED entry is left over from a knob or a config that no longer has it."""
    used = {k for name, res in results.items() for k, (kind, _) in res.items() if kind == "accepted"}
    assert set(ACCEPTED) <= used, sorted(set(ACCEPTED) - used)
