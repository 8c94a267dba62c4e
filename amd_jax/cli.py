"""What every absl entry point does the same way: train, evaluate, sweep, prepare_sdxl, bench_steps and the tools
(eval.convert_inception, eval.bench_inception, models.rewards.convert_openclip, models.rewards.bench, data.mnist).

- `run(main)`: absl's app.run with a flag parser that turns a bad flag (an unknown `--config.KEY`, a value of the
  wrong type) into one line naming the key and the nearest valid keys, instead of chained tracebacks.
- `prepare(config, workdir)`: the workdir and every local path of the config made absolute, once, here.
"""

from __future__ import annotations

import difflib
import sys

from absl import app, flags

from amd_jax import paths
from amd_jax.config.loading import load as load_config


def run(main):
    app.run(main, flags_parser=_parse_flags)


def prepare(config, workdir: str | None, flag: str = "--workdir") -> str:
    """Absolute workdir (an empty one is refused with ConfigError) and absolute config paths, in place."""
    workdir = paths.workdir(workdir, flag)
    paths.resolve_config_paths(config)
    return workdir


def _parse_flags(argv):
    try:
        rest = flags.FLAGS(argv)
    except Exception as e:  # absl and ml_collections parse errors, at the command line's boundary only
        text = str(e).strip()
        line = unknown_config_keys(argv) or (text.splitlines()[-1].strip() if text else type(e).__name__)
        print(f"Flag error: {line}", file=sys.stderr)
        sys.exit(2)
    for name in list(flags.FLAGS):  # a config file that failed to load (missing, broken) raises on first use only
        error = _config_file_error(flags.FLAGS[name].value)
        if error:
            print(f"Flag error: --{name}: {error}", file=sys.stderr)
            sys.exit(2)
    return rest


def _config_file_error(value) -> str:
    """'' unless `value` (a flag's) is ml_collections' stand-in for a config file that could not be loaded
    (missing, unreadable), which raises two chained tracebacks at the first use of the config; then the reason
    in one line."""
    if type(value).__name__ != "_ErrorConfig":
        return ""
    text = str(vars(value).get("_error", "")).strip()
    return text.splitlines()[-1].strip() if text else "the config file could not be loaded"


def unknown_config_keys(argv, flag: str = "config") -> str:
    """'' when every --config.KEY of argv exists in the --config file; else one line naming each unknown key and
    the nearest valid ones."""
    path = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
    keys = [a[len(flag) + 3:].split("=", 1)[0] for a in argv if a.startswith(f"--{flag}.")]
    if path is None or not keys:
        return ""
    try:
        valid = sorted(_flat_keys(load_config(path.split(":", 1)[0])))
    except Exception:  # the config file itself is broken: the caller reports the original error
        return ""
    problems = []
    for key in keys:
        if key not in valid and not any(v.startswith(key + ".") for v in valid):
            problems.append(f"unknown config key {key!r} in {path}; {_nearest(key, valid)}")
    return ". ".join(problems)


def _nearest(key: str, valid: list[str]) -> str:
    """The valid keys closest to `key`: similar names in the same block, else that block's keys, else any."""
    parent, _, leaf = key.rpartition(".")
    siblings = [v for v in valid if v.rpartition(".")[0] == parent]
    near = [f"{parent}.{n}" if parent else n
            for n in difflib.get_close_matches(leaf, [v.rpartition(".")[2] for v in siblings], n=3, cutoff=0.5)]
    if near:
        return "did you mean " + " or ".join(near) + "?"
    if siblings:
        return f"valid keys in {parent or 'the top level'}: " + ", ".join(siblings)
    return "nearest valid keys: " + ", ".join(difflib.get_close_matches(key, valid, n=3, cutoff=0.0))


def _flat_keys(node, prefix=""):
    for key in node.keys():
        value = node[key]
        if hasattr(value, "keys"):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
