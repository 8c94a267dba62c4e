"""The launchers' local check of a run's config, before anything is shipped to a TPU slice.

  python launch/preflight.py --slice=v5p-64 --config=configs/X.py [--config.key=value ...]

launch/tpu_vm.sh, gke_jobset.py and xm_launch.py run it before their first command (their --no-check /
--no_check skips it). The config is loaded as every host of the slice will load it: the --config file relative to
the repo root, the --config.key=value overrides parsed by ml_collections as amd_jax.train parses them (an unknown
key or a value of the wrong type is an error here), local paths made absolute from the repo root (the hosts run in
their copy of it). Then amd_jax.config.validate runs with the slice's JAX device and host counts (launch/slices.py;
one device per chip: v4 and v5p run as megacore): every generic and evaluator check and the task's own, its
required inputs included (configs/sdxl.py needs model.path, reward.path and data.path).

Not checked here, and said so:
- gs:// (and other URL) paths: not checked for existence (no cloud credentials are used); each is listed.
- Local paths are checked on this machine; one outside the folders the launchers ship (amd_jax/, configs/) must
  also exist at that path on every host: each is listed (use gs:// for inputs).
- The hosts' backend is taken to be TPU (model.unet_attention=flash, a TPU kernel, is not refused here).
- The workdir's checkpoints (resuming with another config is refused by the run itself, at start).

A failed check is one line on stderr, `preflight: error: ...`, and exit code 2 (the launchers print their own name).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHIPPED = ("amd_jax", "configs")  # what both the tpu_vm.sh tarball and launch/Dockerfile put on the hosts
sys.path.insert(0, HERE)
import slices  # noqa: E402


class PreflightError(ValueError):
    """A config the slice's run would refuse: one line."""


def one_line(text) -> str:
    return " ".join(str(text).split())


def check(config_file: str, slice_name: str, overrides=()) -> list[str]:
    """Load `config_file` (relative to the repo root) with `overrides` (--config.key=value) and validate it for the
    slice; returns the notes (what was not checked, and where); raises PreflightError (one line)."""
    try:
        s = slices.lookup(slice_name)
    except slices.UnknownSliceError as e:
        raise PreflightError(str(e)) from None
    path = config_file if os.path.isabs(config_file) else os.path.join(REPO, config_file)
    if not os.path.isfile(path.split(":", 1)[0]):
        raise PreflightError(f"config file {path} not found")
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise PreflightError(f"overrides must look like --config.key=value, got {bad}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no accelerator is probed or used: nothing runs here
    os.environ.setdefault("USE_TF", "0")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    with _cwd(REPO):
        config = _load(path, list(overrides))
        notes = _path_notes(config)
        _validate(config, s["chips"], s["hosts"])
    hosts = f"{s['hosts']} host" + ("s" if s["hosts"] > 1 else "")
    return [f"{config_file} validated for {s['slice']} ({s['chips']} devices, {hosts})", *notes]


def _load(path: str, overrides: list[str]):
    """The config as amd_jax.train builds it from its command line: --config=PATH --config.key=value ..."""
    from absl import flags
    from ml_collections import config_flags

    from amd_jax import cli, paths

    values = flags.FlagValues()
    argv = ["preflight", f"--config={path}", *overrides]
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    try:
        values(argv)
    except Exception as e:  # absl / ml_collections parse errors: unknown key, wrong type
        text = str(e).strip()
        raise PreflightError(cli.unknown_config_keys(argv) or one_line(text.splitlines()[-1] if text else e)) from None
    error = cli._config_file_error(values["config"].value)  # a config file that fails to load
    if error:
        raise PreflightError(f"--config={path}: {one_line(error)}")
    config = values["config"].value
    try:
        paths.resolve_config_paths(config)
    except Exception as e:
        raise PreflightError(one_line(e)) from None
    return config


def _path_notes(config) -> list[str]:
    from amd_jax import paths
    from amd_jax.config import flatten

    urls, outside = [], []
    shipped = tuple(os.path.join(REPO, d) + os.sep for d in SHIPPED)
    for key, value in sorted(flatten(config.to_dict()).items()):
        if not (isinstance(value, str) and value and paths.is_path_key(key)):
            continue
        if paths.is_url(value):
            urls.append(f"{key}={value}")
        elif not value.startswith(shipped):
            outside.append(f"{key}={value}")
    notes = []
    if urls:
        notes.append("not checked for existence here (URLs): " + ", ".join(urls))
    if outside:
        notes.append("local paths outside the shipped folders (" + ", ".join(f"{d}/" for d in SHIPPED)
                     + "), checked on this machine only; every host must have them at the same path, or use "
                     "gs://: " + ", ".join(outside))
    return notes


def _validate(config, num_devices: int, num_processes: int) -> None:
    from unittest import mock

    import jax

    from amd_jax.config import validate
    from amd_jax.errors import ConfigError

    try:  # the hosts are TPU VMs: a check of this machine's backend would not be theirs
        with mock.patch.object(jax, "default_backend", lambda: "tpu"):
            validate(config, num_devices, num_processes)
    except ConfigError as e:
        raise PreflightError(one_line(e)) from None


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def prog() -> str:
    return os.path.basename(sys.argv[0]) or "launch"


def fail(message) -> None:
    """The launcher's error: one line on stderr, exit code 2."""
    print(f"{prog()}: error: {one_line(message)}", file=sys.stderr)
    sys.exit(2)


def run_absl(main) -> None:
    """absl's app.run for the Python launchers: --help / -h / --helpshort print the usage and exit 0 (absl exits
    1), and a flag error is one line (absl adds a hint line; a --config.key=value before `--` says where it goes)."""
    from absl import app, flags

    def parse(argv):
        head = argv[1:argv.index("--")] if "--" in argv else argv[1:]
        if any(a in ("-h", "--help", "-help", "--helpshort", "-?") for a in head):
            app.usage(shorthelp=True, writeto_stdout=True)
            sys.exit(0)
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            hint = ""
            if isinstance(e, flags.UnrecognizedFlagError) and e.flagname.startswith("config."):
                hint = " (--config.key=value overrides go after `--`: ... -- --config.total_steps=2000)"
            fail(f"{e}{hint}")

    app.run(main, flags_parser=parse)


def check_or_fail(config_file: str, slice_name: str, overrides=()) -> None:
    """check() for the Python launchers: its notes on stderr, or its error as one line and exit code 2."""
    try:
        notes = check(config_file, slice_name, overrides)
    except PreflightError as e:
        fail(f"{e} (--no_check skips this check)")
    for line in notes:
        print(f"{prog()}: {line}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block before them) and exit code 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> int:
    parser = OneLineParser(
        prog="launch/preflight.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 2)[2], usage="python launch/preflight.py --slice=SLICE --config=FILE "
        "[--config.key=value ...]")
    parser.add_argument("--slice", required=True, help="Cloud TPU slice type, e.g. v5p-64 (launch/slices.py).")
    parser.add_argument("--config", required=True, help="Config file, relative to the repo root.")
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse's own error (usage + message) or --help
        return int(e.code or 0)
    try:
        notes = check(args.config, args.slice, [a for a in rest if a != "--"])
    except PreflightError as e:
        print(f"preflight: error: {e}", file=sys.stderr)
        return 2
    for line in notes:
        print(f"preflight: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
