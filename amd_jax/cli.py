"""What every absl entry point does the same way: train, evaluate, sweep, prepare_sdxl, bench_steps and the tools
(eval.convert_inception, eval.bench_inception, models.rewards.convert_openclip, models.rewards.bench, data.mnist).

- `run(main)`: absl's app.run with a flag parser that turns a bad flag (an unknown `--config.KEY`, a value of the
  wrong type) into one line naming the key and the nearest valid keys, instead of chained tracebacks.
- `prepare(config, workdir)`: the workdir and every local path of the config made absolute, once, here.
- `use_compilation_cache()`: JAX's persistent compilation cache, on by default for train, evaluate and sweep (a
  re-run or a resumed run reads its executables back instead of compiling them again).
"""

from __future__ import annotations

import difflib
import logging
import os
import sys

from absl import app, flags

from amd_jax import paths
from amd_jax.config.loading import load as load_config


CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX's own variable: a folder (local or gs://), or empty to turn it off
# JAX's default is 1 s. 0.5 s (the tests' value) keeps every training step of the small configs (0.6-15 s each here,
# depending on the load) and leaves out most tiny helpers: toy2d stores 6-13 entries (0.5 MB) instead of 26 at 0 s,
# and its warm re-runs were not measurably faster with 0 s (14-24 s either way at load 8).
MIN_COMPILE_SECONDS = 0.5


def default_cache_dir() -> str:
    """The user's local cache, never the workdir (which may be gs:// and is one run's): $XDG_CACHE_HOME/amd_jax/jax,
    by default ~/.cache/amd_jax/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "amd_jax", "jax")


def use_compilation_cache() -> str:
    """Turn JAX's persistent compilation cache on (call before the first compilation); returns its folder, '' when
    off. JAX_COMPILATION_CACHE_DIR, when set, decides: a folder (local or gs://) is used as it is, an empty value
    turns the cache off; unset, the folder is `default_cache_dir()`. Executables compiled in under
    MIN_COMPILE_SECONDS are not stored, unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise (JAX reads
    that variable, and the other JAX_PERSISTENT_CACHE_* ones, itself)."""
    import jax

    folder = os.environ[CACHE_ENV] if CACHE_ENV in os.environ else default_cache_dir()
    if folder and "://" not in folder:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:  # JAX would warn at every compilation instead, and compile anyway
            logging.getLogger("amd_jax").warning(
                "Compilation cache off: cannot create %s (%s). Set %s to a writable folder, or to '' to turn it off.",
                folder, e.strerror or e, CACHE_ENV)
            folder = ""
    if not folder:
        jax.config.update("jax_enable_compilation_cache", False)
        return ""
    jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder


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


def config_lines(config) -> list[str]:
    """Every key of `config` (references resolved, local paths made absolute) with its value, one
    `KEY=VALUE` line each in the form `--config.KEY=VALUE` takes, after a header naming how to override."""
    config = config.copy_and_resolve_references()
    paths.resolve_config_paths(config)
    items = sorted(_flat_items(config))
    return [f"# {len(items)} config keys; override any with --config.KEY=VALUE"] + [
        f"{key}={value if isinstance(value, str) else repr(value)}" for key, value in items]


def _flat_items(node, prefix=""):
    """(dotted key, value) of every leaf; an empty block (e.g. `evals`) is a leaf {}, so it is listed too."""
    for key in node.keys():
        value = node[key]
        if hasattr(value, "keys") and len(value.keys()):
            yield from _flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value.to_dict() if hasattr(value, "to_dict") else value


def _flat_keys(node, prefix=""):
    for key in node.keys():
        value = node[key]
        if hasattr(value, "keys"):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
