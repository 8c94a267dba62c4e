"""The TPU plan (amd_jax/plan): the HLO collective parser on handwritten HLO with known sizes; the sdxl task's
abstract batch and frozen parameters against what its loaders and data really give (sdxl_tiny, no libtpu); the
traced-only plan (--nocompile) on an AbstractMesh in a process that cannot import libtpu; and, where libtpu is
installed (requirements-tpu.txt), the sdxl_tiny steps compiled for v5p:2x2x1 through the session,
their per-chip argument bytes checked against the sharded abstract state's bytes."""

from __future__ import annotations

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.config import load
from amd_jax.plan import hlo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "sdxl_tiny.py")

_HLO = """
HloModule jit_step, entry_computation_layout={(f32[2,128]{1,0})->f32[8,128]{1,0}}

%region_0 (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add = f32[] add(%a, %b)
}

ENTRY %main (param: f32[2,128]) -> f32[8,128] {
  %param = f32[2,128]{1,0:T(8,128)} parameter(0)
  %all-gather = f32[8,128]{1,0:T(8,128)} all-gather(%param), channel_id=1, dimensions={0}, metadata={op_name="all-gather(x)"}
  %all-gather-start = (bf16[2,64]{1,0}, bf16[8,64]{1,0}) all-gather-start(%x), dimensions={0}
  %all-gather-done = bf16[8,64]{1,0} all-gather-done(%all-gather-start)
  %reduce-scatter.3 = bf16[2,64]{1,0:T(8,128)(2,1)} reduce-scatter(%y), dimensions={0}, to_apply=%region_0
  %all-reduce.1 = (f32[4]{0}, bf16[4]{0}) all-reduce(%p, %q), to_apply=%region_0
  %all-reduce-start = f32[16]{0} all-reduce-start(%r), to_apply=%region_0
  %all-reduce-done = f32[16]{0} all-reduce-done(%all-reduce-start)
  %all-to-all = s32[4,4]{1,0} all-to-all(%z), dimensions={0}
  %collective-permute-start = (u8[100]{0}, u8[100]{0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%w)
  %collective-permute-done = u8[100]{0} collective-permute-done(%collective-permute-start)
  %fusion = f32[8,128]{1,0} fusion(%all-gather, %param), kind=kLoop, calls=%fused, metadata={op_name="all-reduce"}
  ROOT %copy = f32[8,128]{1,0} copy(%fusion)
}
"""


def test_hlo_collectives_count_each_ops_output_bytes_once():
    got = hlo.collective_bytes(_HLO)
    assert got["all-gather"] == {"ops": 2, "bytes": 8 * 128 * 4 + 8 * 64 * 2}  # sync + the -done of an async pair
    assert got["reduce-scatter"] == {"ops": 1, "bytes": 2 * 64 * 2}
    assert got["all-reduce"] == {"ops": 2, "bytes": 4 * 4 + 4 * 2 + 16 * 4}  # a tuple's elements summed
    assert got["all-to-all"] == {"ops": 1, "bytes": 16 * 4}
    assert got["collective-permute"] == {"ops": 1, "bytes": 100}
    assert hlo.shape_bytes("pred[3,5]{1,0}") == 15 and hlo.shape_bytes("f8e4m3fn[10]") == 10
    assert hlo.collective_bytes("HloModule empty") == {k: {"ops": 0, "bytes": 0} for k in hlo.KINDS}


_LOOPS = """
HloModule jit_loops

%scan_cond (p: (s32[], f32[8])) -> pred[] {
  %constant.53.clone.1 = s32[]{:T(128)} constant(10)
  %p = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %get-tuple-element.217 = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt.10 = pred[]{:T(512)} compare(%get-tuple-element.217, %constant.53.clone.1), direction=LT
}

%traced_cond (q: (s32[], f32[8], s32[])) -> pred[] {
  %q = (s32[]{:T(128)}, f32[8]{0}, s32[]{:T(128)}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%q), index=0
  %k = s32[]{:T(128)} get-tuple-element(%q), index=2
  ROOT %lt.2 = pred[]{:T(512)} compare(%i, %k), direction=LT
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %while.30 = (s32[]{:T(128)}, f32[8]{0}) while(%tuple.48), condition=%scan_cond, body=%scan_body
  %while.31 = (s32[]{:T(128)}, f32[8]{0}) while(%tuple.49), condition=%scan_cond, body=%scan_body.2
  %while.9 = (s32[]{:T(128)}, f32[8]{0}, s32[]{:T(128)}) while(%tuple.12), condition=%traced_cond, body=%b
  ROOT %copy = f32[8]{0} copy(%x)
}
"""


def test_hlo_while_loops_read_constant_trip_counts_and_flag_the_iteration():
    import ml_collections

    from amd_jax.plan import figures, table
    from amd_jax.plan.chips import CHIPS

    assert hlo.while_loops(_LOOPS) == [10, 10, None] and hlo.while_loops(_HLO) == []
    assert figures.loop_summary([10, 10, None]) == "10 trips x 2, traced x 1"
    config = ml_collections.ConfigDict({"dmd": {"ttur": 5}, "total_steps": 12, "global_batch": 64})
    steps = {n: {"flops_per_chip": 1e12, "bytes_accessed_per_chip": 1e9, "optimal_seconds": 0.5,
                 "roofline_seconds": 0.1, "while_loops": loops}
             for n, loops in (("generator", [10, None]), ("sample", [None]), ("critic", []))}
    it = figures.iteration(steps, config, chips=32, chip=CHIPS["v5p"])
    assert it["loops_counted_once"] == {"generator": 2, "sample": 1}
    assert "LOWER BOUND: loop bodies counted once in generator, sample" in table._iteration(it, 32)
    del steps["generator"]["while_loops"], steps["sample"]["while_loops"]  # plans written before the field
    assert "loops_counted_once" not in figures.iteration(steps, config, chips=32, chip=CHIPS["v5p"])


def test_traced_only_plan_reports_the_jaxpr_iteration():
    """--nocompile: per step only the jaxpr count; the iteration by it is TTUR-weighted, in denoiser forwards too."""
    import ml_collections

    from amd_jax.plan import figures, table
    from amd_jax.plan.chips import CHIPS

    config = ml_collections.ConfigDict({"dmd": {"ttur": 5}, "total_steps": 12, "global_batch": 64})
    steps = {n: {"jaxpr": {"flops_per_chip": f, "denoiser_forwards": f / 10, "traced_loops": 0, "pallas_calls": 0}}
             for n, f in (("generator", 100.0), ("sample", 20.0), ("critic", 50.0))}
    it = figures.jaxpr_iteration(steps, config, CHIPS["v5p"])
    assert it["flops_per_chip"] == pytest.approx((100 + 4 * 20) / 5 + 50)
    assert it["denoiser_forwards"] == pytest.approx(it["flops_per_chip"] / 10)
    assert it["seconds_at_peak"] == pytest.approx(it["flops_per_chip"] / 459e12)
    plan = {"config": "sdxl", "method": "amd", "topology": "v5p:2x4x4", "chips": 32, "chip": vars(CHIPS["v5p"]),
            "mesh": {"data": 2, "fsdp": 16}, "global_batch": 64, "batch_per_chip": 2, "compiler_options": {},
            "steps": steps, "iteration": figures.iteration(steps, config, 32, CHIPS["v5p"]), "jaxpr_iteration": it}
    text = table.text(plan)
    assert "generator      (not compiled) jaxpr 0.000 TFLOP/chip = 10.00 student denoiser forwards" in text
    assert "iteration by the jaxpr:" in text and "needs the compiled" not in text


# the traced-only plan in a process where `import libtpu` fails, whether or not it is installed in this venv
_NO_LIBTPU = """
import runpy, sys
sys.modules["libtpu"] = None  # `import libtpu` raises ModuleNotFoundError, importlib.util.find_spec gives None
try:
    import libtpu  # noqa: F401
    raise SystemExit("libtpu imported")
except ImportError:
    pass
sys.argv = ["amd_jax.plan", *sys.argv[1:]]
runpy.run_module("amd_jax.plan", run_name="__main__", alter_sys=True)
"""


def _plan_without_libtpu(*args, timeout=600):
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _NO_LIBTPU, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_traced_only_plan_runs_without_libtpu():
    """--nocompile for sdxl_tiny on v5p:2x2x1 (4 chips; the config's mesh over 4 devices) in a process that cannot
    import libtpu: the session is built on an AbstractMesh of the chip table's device count and every step's
    jaxpr FLOPs are printed; without --nocompile the same process says in one line that compiling needs libtpu."""
    r = _plan_without_libtpu(f"--config={TINY}", "--topology=v5p:2x2x1", "--nocompile", "--config.mesh.shape=(2,2)")
    print(r.stdout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sdxl (amd) on v5p:2x2x1: 4 x TPU v5p" in r.stdout and "mesh {'data': 2, 'fsdp': 2}" in r.stdout
    for name in ("generator", "sample", "critic", "eval_sampler"):
        line = next(l for l in r.stdout.splitlines() if l.startswith(name + " "))
        assert "(not compiled) jaxpr" in line and "student denoiser forwards" in line, line
        forwards = float(line.split("TFLOP/chip = ")[1].split()[0])
        assert forwards > 1.0, line  # every step runs the student at least once, the generator several networks
    assert "iteration by the jaxpr:" in r.stdout
    assert "Flax classes are deprecated" not in r.stderr  # diffusers' per-instance warning is silenced

    r = _plan_without_libtpu(f"--config={TINY}", "--topology=v5p:2x2x1", "--config.mesh.shape=(2,2)")
    errors = [l for l in r.stderr.splitlines() if l.startswith("Plan error")]
    assert r.returncode != 0 and len(errors) == 1 and "needs libtpu" in errors[0] and "--nocompile" in errors[0]


def test_topology_device_counts_from_the_chip_table():
    """The traced plan's device count per topology name: chips from the shape, v4 described per TensorCore (2
    devices per chip, as libtpu does), v5p per chip (megacore); malformed names are refused with an example."""
    from amd_jax.errors import ConfigError
    from amd_jax.plan import chips

    assert chips.topology_chips("v5p:2x4x4") == 32 and chips.topology_device_count("v5p:2x4x4") == 32
    assert chips.topology_device_count("v5p:2x2x1") == 4
    assert chips.topology_chips("v4:2x2x4") == 16 and chips.topology_device_count("v4:2x2x4") == 32
    assert chips.topology_device_count("v5e:4x4") == 16 and chips.topology_device_count("V6E:2x2") == 4
    share, per_chip = chips.device_share(chips.CHIPS["v4"])  # no libtpu device: the table's devices per chip
    assert per_chip == 2 and share.hbm_gib == 16
    assert chips.device_share(chips.CHIPS["v5p"]) == (chips.CHIPS["v5p"], 1)
    for bad, match in (("v5p:2x2", "3 sizes"), ("v5e:2x2x1", "2 sizes"), ("v5p", "3 sizes"), ("v5p:2x0x1", "3 sizes"),
                       ("v9:2x2", "unknown TPU generation")):
        with pytest.raises(ConfigError, match=match):
            chips.topology_device_count(bad)


def test_abstract_mesh_session_has_the_resolved_mesh_shape():
    """Session(..., devices=N, abstract=True): an AbstractMesh of the config's mesh resolved for N devices (-1 filled
    in), whose shardings trace; a mesh that cannot fill N devices is the usual ConfigError."""
    from jax.sharding import AbstractMesh

    from amd_jax.errors import ConfigError
    from amd_jax.session import Session

    session = Session(load(TINY, {"mesh.shape": (-1, 4)}), None, devices=8, abstract=True)
    assert isinstance(session.mesh, AbstractMesh) and dict(session.mesh.shape) == {"data": 2, "fsdp": 4}
    batch = session.abstract_batch()
    assert all(a.sharding.mesh is session.mesh for a in jax.tree_util.tree_leaves(batch))
    with pytest.raises(ConfigError, match="needs 8 devices but 4"):
        Session(load(TINY), None, devices=4, abstract=True)


def test_iteration_uses_the_roofline_bound_when_the_compiler_gives_no_estimate():
    import ml_collections

    from amd_jax.plan import figures, table
    from amd_jax.plan.chips import CHIPS

    v5p = CHIPS["v5p"]
    config = ml_collections.ConfigDict({"dmd": {"ttur": 5}, "total_steps": 12, "global_batch": 64})
    # flops-bound, bytes-bound and flops-bound steps: the bound is the larger of FLOPs / peak and bytes / bandwidth
    cost = {"generator": (4.59e14, 1e9), "sample": (1e12, 2.765e12), "critic": (9.18e13, 0.0)}
    bound = {"generator": 1.0, "sample": 1.0, "critic": 0.2}
    steps = {n: {"flops_per_chip": f, "bytes_accessed_per_chip": b, "optimal_seconds": 0.5,
                 "roofline_seconds": figures.roofline_seconds(f, b, v5p)} for n, (f, b) in cost.items()}
    for n in steps:
        assert steps[n]["roofline_seconds"] == pytest.approx(bound[n])

    it = figures.iteration(steps, config, chips=32, chip=v5p)  # all estimates usable: the compiler's times
    assert it["time_source"] == "compiler" and it["seconds"] == pytest.approx((0.5 + 4 * 0.5) / 5 + 0.5)
    assert it["run_hours"] == pytest.approx((3 * 0.5 + 9 * 0.5 + 12 * 0.5) / 3600)  # generator at 0, 5, 10

    steps["critic"]["optimal_seconds"] = -0.25  # what libtpu gave for sit_xl2 on v5p
    it = figures.iteration(steps, config, chips=32, chip=v5p)
    assert it["time_source"] == "roofline" and it["no_compiler_estimate"] == {"critic": -0.25}
    assert it["seconds"] == pytest.approx((1.0 + 4 * 1.0) / 5 + 0.2)
    assert it["run_hours"] == pytest.approx((3 * 1.0 + 9 * 1.0 + 12 * 0.2) / 3600)
    assert it["mfu"] == pytest.approx(((4.59e14 + 4e12) / 5 + 9.18e13) / it["seconds"] / 459e12)
    assert "ROOFLINE BOUND" in table._iteration(it, 32) and "critic -0.25" in table._iteration(it, 32)
    del steps["sample"]
    assert "sample" in figures.iteration(steps, config, chips=32, chip=v5p)["error"]


# ------------------------------------------------------------------------------------- abstract sdxl task
def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)), jnp.dtype(a.dtype).name), tree)


def test_abstract_sdxl_task_matches_its_loaders_and_data():
    """What the plan compiles against (abstract_frozen, abstract_batch: no file read) has exactly the shapes and
    dtypes of what the real task loads and batches for sdxl_tiny (tiny fixtures on disk)."""
    from amd_jax import tasks

    config = load(TINY)
    real, abstract = tasks.build(config), tasks.build(config, abstract=True)
    frozen = abstract.abstract_frozen()
    assert _shapes(frozen["teacher"]) == _shapes(real.teacher())
    assert _shapes(frozen["reward"]) == _shapes(real.reward())
    batch = real.data.global_batch(0, config.global_batch)
    if real.condition is not None:  # the steps receive the batch after the task's conditioning (token ids -> embeddings)
        batch = {**batch, "cond": real.condition.apply(real.condition.params(), batch["cond"])}
    assert _shapes(abstract.abstract_batch(config.global_batch)) == _shapes(batch)
    assert abstract.data is None and abstract.teacher is None  # nothing to load from


def test_memory_advice_names_the_tasks_own_knobs_only_for_that_task():
    """figures.knobs (the plan's advice for a step that does not fit) is generic; SDXL adds its activation
    checkpointing through amd_jax.tasks.memory_knobs, a task without such knobs adds nothing."""
    from amd_jax import tasks
    from amd_jax.plan import figures

    sdxl, toy = load(TINY), load(os.path.join(ROOT, "configs", "toy2d_tiny.py"))
    assert tasks.memory_knobs(toy) == []
    (sdxl_knob,) = tasks.memory_knobs(sdxl)
    assert "--config.model.unet_remat=block" in sdxl_knob
    memory = {"temp": 2, "argument": 1}  # activations dominate: the activation knobs come first
    acts, state = figures.knobs(sdxl, {"data": 2, "fsdp": 2}, memory, tasks.memory_knobs(sdxl))
    assert acts.endswith(sdxl_knob) and "fsdp" in state
    assert "unet" not in figures.knobs(toy, {"data": 2, "fsdp": 2}, memory)[0].lower()


def test_planning_a_task_without_abstract_hooks_is_a_clear_error():
    from amd_jax import tasks
    from amd_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be planned without its files"):  # validate runs it in a Session
        tasks.check(load(os.path.join(ROOT, "configs", "toy2d_tiny.py")), abstract=True)


# ------------------------------------------------------------------------------------- compiled for TPU
_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not _LIBTPU, reason="libtpu is not installed in this venv (the TPU compiler; "
                                  "pip install -r requirements-tpu.txt in a venv of its own to run this test)")


@pytest.fixture(scope="module")
def tiny_plan():
    """sdxl_tiny's three training steps compiled once for v5p:2x2x1 (4 chips, mesh data=2 x fsdp=2): 7-25 min
    on a shared 2-core machine."""
    from amd_jax.plan import core

    config = load(TINY, {"mesh.shape": (2, 2)})
    # conftest's persistent cache stores these executables but jax 0.10.2 cannot read them back (a UserWarning),
    # and it cannot be switched off once used in this process: every run compiles afresh
    return config, core.make_plan(config, "v5p:2x2x1", ("generator", "sample", "critic"))


def _sharded_bytes(tree, shardings) -> int:
    """Per-chip bytes of a tree under its NamedShardings: each leaf's shard shape x itemsize, summed."""
    leaves, shs = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(shardings)
    assert len(leaves) == len(shs)
    return sum(math.prod(s.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize for a, s in zip(leaves, shs))


def _expected_argument_bytes(config):
    """Per-chip bytes of what each step takes, from jax.eval_shape of the state and the task's abstract frozen
    params and batch, each leaf's shard shape under its NamedSharding (the config's rules on an abstract 2 x 2
    mesh) x itemsize. jit passes only the arguments a step reads, and a donated argument whole (its unchanged
    leaves are aliased to the outputs): the sample step takes the keys (step, rng), the student, the reward's VAE
    decoder and scorer and the condition; the generator the whole (donated) state, the teacher, the reward and
    the condition; the critic step the whole state, the condition without reward tokens, the samples x and
    rewards r. No step reads the GAN's real latents here (gan.enabled=False)."""
    from jax.sharding import AbstractMesh, AxisType

    from amd_jax import tasks
    from amd_jax.parallel.mesh import batch_sharding
    from amd_jax.parallel.sharding import tree_shardings
    from amd_jax.steps import Steps

    mesh = AbstractMesh((2, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    task = tasks.build(config, abstract=True)
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(Steps(config, task.models).init, jax.eval_shape(task.models.init_denoiser, key), key)
    frozen, batch = task.abstract_frozen(), task.abstract_batch(config.global_batch)
    rules, min_size = tuple(config.sharding.rules), config.sharding.fsdp_min_size
    sharded = lambda t: _sharded_bytes(t, tree_shardings(t, mesh, rules, min_size))
    rows = lambda t: _sharded_bytes(t, jax.tree_util.tree_map(lambda a: batch_sharding(mesh, ("data", "fsdp"), a.ndim), t))
    cond = batch["cond"]
    keys = sharded((state.step, state.rng))
    xr = rows((jax.ShapeDtypeStruct((config.global_batch,) + task.models.sample_shape, jnp.float32),
               jax.ShapeDtypeStruct((config.global_batch,), jnp.float32)))
    vae, scorer = frozen["reward"]["vae"], frozen["reward"]["scorer"]
    reward = {"vae": {k: vae[k] for k in ("decoder", "post_quant_conv")},  # decoding reads no encoder weight
              "scorer": {k: v for k, v in scorer.items() if k != "logit_scale"}}  # HPSv2's cosine ignores it
    sample = keys + sharded(state.student) + sharded(reward) + rows(cond)
    unsharded = sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(state))
    assert sharded(state) < 0.75 * unsharded  # the fsdp axis really splits the state (the check means something)
    return {"sample": sample,
            "generator": sharded((state, frozen["teacher"], reward)) + rows(cond),
            "critic": sharded(state) + xr
            + rows({k: v for k, v in cond.items() if k != "reward_tokens"})}


@needs_libtpu
def test_tiny_plan_argument_bytes_are_the_sharded_state_frozen_and_batch(tiny_plan):
    config, plan = tiny_plan
    assert plan["chips"] == 4 and plan["mesh"] == {"data": 2, "fsdp": 2}
    results = {}
    for name, expected in _expected_argument_bytes(config).items():
        memory = plan["steps"][name]["memory_bytes"]
        print(f"{name}: {memory['argument_logical']} logical / {memory['argument']} allocated argument bytes per "
              f"chip; sharded abstract arguments: {expected}")
        results[name] = (memory["argument_logical"], expected)
    assert all(got == expected for got, expected in results.values()), results
    for name, (_, expected) in results.items():
        memory = plan["steps"][name]["memory_bytes"]
        assert expected <= memory["argument"] <= 3 * expected  # + TPU tile padding (tiny leaves pad a lot)


@needs_libtpu
def test_tiny_plan_figures_and_iteration(tiny_plan):
    config, plan = tiny_plan
    steps = plan["steps"]
    for name in ("generator", "sample", "critic"):
        s = steps[name]
        assert s["fits"] and s["flops_per_chip"] > 0 and s["optimal_seconds"] > 0 and 0 < s["mfu"] < 1
        assert s["memory_bytes"]["peak"] >= s["memory_bytes"]["argument"]
        assert s["collectives"]["all-gather"]["bytes"] > 0  # FSDP gathers the sharded UNet kernels
    assert steps["generator"]["flops_per_chip"] > steps["critic"]["flops_per_chip"] > 0
    it, ttur = plan["iteration"], config.dmd.ttur
    t = {n: steps[n]["optimal_seconds"] for n in steps}
    assert it["seconds"] == pytest.approx((t["generator"] + (ttur - 1) * t["sample"]) / ttur + t["critic"])
    assert it["images_per_second_per_chip"] == pytest.approx(config.global_batch / it["seconds"] / 4)
    run_s = 2 * t["generator"] + 2 * t["sample"] + 4 * t["critic"]  # total_steps 4, TTUR 2: generator at 0 and 2
    assert it["chip_hours"] == pytest.approx(run_s * 4 / 3600)


def test_device_share_halves_a_v4_chip_described_per_tensorcore():
    """libtpu's v4 topologies have one device per TensorCore (num_cores 1: 16 GiB each, as its compiler's own
    limit of 15.25 GiB says); v5p's one per chip (megacore, num_cores 2); v5e has one core per chip."""
    import types

    from amd_jax.plan.chips import CHIPS, device_share

    share, per_chip = device_share(CHIPS["v4"], types.SimpleNamespace(num_cores=1))
    assert per_chip == 2 and share.hbm_gib == 16 and share.bf16_tflops == 137.5 and share.hbm_gbps == 600
    assert device_share(CHIPS["v5p"], types.SimpleNamespace(num_cores=2)) == (CHIPS["v5p"], 1)
    assert device_share(CHIPS["v5e"], types.SimpleNamespace(num_cores=1)) == (CHIPS["v5e"], 1)
