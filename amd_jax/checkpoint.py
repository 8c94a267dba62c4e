"""Orbax checkpoints of the sharded train state (the frozen teacher is never saved).

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `state` is the TrainState as a plain nested dict (flax state
dict), restored straight into the target shardings, which may come from a different mesh. `meta` is JSON: the
resolved config, the data position and the mesh it was written with. `check_compatible` compares the saved
tree's paths, shapes and dtypes with the abstract state of the current config BEFORE anything is compiled or
written, and names the fix when they differ.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization

from amd_jax.errors import ConfigError
from amd_jax.parallel.sharding import path_str


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.dir = epath.Path(workdir) / "checkpoints"
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.dir, options=opts, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def check_compatible(self, step: int, abstract_state, config: dict | None = None) -> dict:
        """Raise ConfigError if the checkpoint at `step` cannot be restored into `abstract_state`; return its meta.

        With `config` (the current config as a dict) the error also lists the config keys that differ."""
        saved = self.manager.item_metadata(step)["state"]
        saved = getattr(saved, "tree", saved)
        if saved is None:
            raise ConfigError(f"Cannot read the state metadata of {self.dir / str(step)}: is it an amd_jax checkpoint?")
        want = _leaf_table(serialization.to_state_dict(abstract_state))
        have = _leaf_table(saved)
        problems = [f"missing in checkpoint: {p}" for p in sorted(set(want) - set(have))]
        problems += [f"not in this config's state: {p}" for p in sorted(set(have) - set(want))]
        problems += [
            f"{p}: checkpoint {have[p]} vs config {want[p]}" for p in sorted(set(want) & set(have)) if have[p] != want[p]
        ]
        if problems:
            shown = "\n  ".join(problems[:12]) + ("\n  ..." if len(problems) > 12 else "")
            keys = ""
            if config is not None:
                old, new = _flat(self.restore_meta(step).get("config", {})), _flat(config)
                diff = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
                keys = "\nConfig keys that differ from the checkpoint's:\n  " + "\n  ".join(diff[:20])
            raise ConfigError(
                f"The checkpoint at {self.dir / str(step)} was written by an incompatible config "
                f"({len(problems)} differences):\n  {shown}{keys}\nUse a new --workdir for this config, or restore the "
                f"config the checkpoint was made with (its meta JSON holds it). Nothing was changed in {self.dir}."
            )
        return self.restore_meta(step)

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state, shardings):
        """Restore into `shardings` (any mesh): returns (state, meta)."""
        target = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
        )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(serialization.to_state_dict(target)), meta=ocp.args.JsonRestore()
            ),
        )
        return serialization.from_state_dict(abstract_state, out["state"]), out["meta"]

    def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(serialization.to_state_dict(state)), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def _leaf_table(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(p): (tuple(getattr(v, "shape", ())), str(getattr(v, "dtype", ""))) for p, v in leaves}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out
