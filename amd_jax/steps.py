"""The training state and the three pure step functions of DMD2 / AMD.

One iteration (DMD2's order, TTUR = `dmd.ttur`):
    if step % ttur == 0:  state, x, r = generator_step(state, frozen, batch)   # student update
    else:                 x, r = sample_step(state, frozen, batch)             # samples only
    state = critic_step(state, frozen, batch, x, r)                             # fake teacher, every step
The critic trains on the same stop-gradient samples the generator produced in this iteration. An update whose loss
or gradient norm is not finite is skipped inside the step (parameters and optimizer state unchanged, the iteration
counted) and reported as `skipped_generator` / `skipped_critic`; the loop (amd_jax/loop.py) stops a run that keeps skipping.
With `student.ema_decay` > 0 the state is an EmaTrainState and an applied generator update also moves the student's
EMA (ema = decay * ema + (1 - decay) * student); a skipped one leaves it unchanged.
With `train.microbatches` = m > 1 (gradient accumulation) the generator and critic steps compute their loss and
gradient in m sequential pieces of the batch and average them (batching.mean_over_pieces): the same update up to
float rounding, since every loss is a mean over samples, and ~1/m of the activations; the statistics of the whole
batch (rewards, advantages, the Forbidden-Zone mask, DSA's and RLS's per-sample factors) are computed first, over
the whole batch. `frozen` holds the
teacher's and the reward model's parameters: arguments of every step, never part of the saved state.
The session (amd_jax/session.py) jit-compiles these functions with explicit shardings; here they are plain functions.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from amd_jax import method as M
from amd_jax.batching import mean_over_pieces, sequential_chunks
from amd_jax.models.common.bundle import Models

sg = jax.lax.stop_gradient


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: iterations done (= the data position)
    rng: jax.Array  # uint32[2] base key; per-iteration keys are fold_in(rng, step)
    student: Any
    critic: Any  # {'denoiser': ..., 'gan_head': ... (optional)}
    student_opt: Any
    critic_opt: Any


@flax.struct.dataclass
class EmaTrainState(TrainState):
    """The state of a run with `student.ema_decay` > 0: TrainState plus the float32 exponential moving average of
    the student's parameters (evaluated beside the raw student). A subclass, so that decay 0 keeps TrainState's
    exact tree, checkpoints and numbers."""

    student_ema: Any


def lr_schedule(opt_cfg, lr: float) -> optax.Schedule:
    """The learning rate after n applied updates: linear warm-up from 0 over optim.warmup_steps, then `lr`."""
    warmup = int(opt_cfg.warmup_steps)
    return optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else optax.constant_schedule(lr)


def make_optimizer(opt_cfg, lr: float) -> optax.GradientTransformation:
    """AdamW with linear warm-up and global-norm clipping (DMD2's SDXL recipe)."""
    return optax.chain(
        optax.clip_by_global_norm(opt_cfg.grad_clip),
        optax.adamw(lr_schedule(opt_cfg, lr), b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                    weight_decay=opt_cfg.weight_decay),
    )


class Steps:
    """Binds the config and the model bundle; its methods are the pure step functions."""

    def __init__(self, config, models: Models):
        self.c = config
        self.m = models
        amd = config.method == "amd"
        # s = 0 / lambda = 0 compile to exactly DMD2's program, hence DMD2's bits. (The zero-delta arithmetic is
        # bit-exact by itself, tests/test_method_amd.py, but XLA may fuse a different program differently by an ulp.)
        self.dsa = amd and config.amd.s != 0
        self.rls = amd and config.amd.rls_lambda != 0
        self.use_reward = amd or bool(config.reward.monitor)  # dmd2 may still log rewards and zone statistics
        self.use_gan = bool(config.gan.enabled)
        # Decoupled DMD (docs/METHOD.md section 4); both off compile exactly today's DMD2 / AMD program.
        self.ca_own_t = config.dmd.ca_t_min >= 0
        self.decoupled = bool(config.dmd.decoupled_normalizer) or self.ca_own_t
        self.student_tx = make_optimizer(config.optim, config.optim.student_lr)
        self.critic_tx = make_optimizer(config.optim, config.optim.critic_lr)
        self.timesteps = tuple(int(t) if models.student.schedule.discrete else float(t) for t in config.student.timesteps)
        self.ema_decay = float(config.student.get("ema_decay", 0.0))  # 0 = no EMA (a TrainState without one)
        self.microbatches = int(config.train.microbatches)  # gradient accumulation over sequential pieces
        # {'student': ..., 'critic': ...} NamedShardings of the trained parameters, set by the session: micro-batched
        # steps hold their gradient sums in them (None: XLA chooses, and may replicate a whole fp32 gradient)
        self.param_shardings = None

    # ----------------------------------------------------------------------------------------------- state
    def init(self, teacher_params, rng) -> TrainState:
        """Student and critic start as copies of the teacher (DMD2), the student's EMA (ema_decay > 0) too; the GAN
        head is freshly initialised."""
        k_state, k_head = jax.random.split(rng)
        copy = lambda p: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)
        student = copy(teacher_params)
        critic = {"denoiser": copy(teacher_params)}
        if self.use_gan:
            critic["gan_head"] = self.m.init_gan_head(k_head)
        fields = dict(step=jnp.zeros((), jnp.int32), rng=k_state, student=student, critic=critic,
                      student_opt=self.student_tx.init(student), critic_opt=self.critic_tx.init(critic))
        if self.ema_decay > 0:
            return EmaTrainState(**fields, student_ema=copy(teacher_params))
        return TrainState(**fields)

    def _grad_constraint(self, name):
        """For mean_over_pieces: keeps the running ((loss, metrics), gradient) sums' gradient in the sharding of
        the parameters `name` (student | critic), when the session has set param_shardings."""
        if self.param_shardings is None:
            return None
        sh = self.param_shardings[name]
        return lambda out: (out[0], jax.lax.with_sharding_constraint(out[1], sh))

    def _keys(self, state):
        return jax.random.split(jax.random.fold_in(state.rng, state.step), 3)

    # ------------------------------------------------------------------------------------------- sampling
    def _student_input(self, student_params, batch, rng):
        """(x_{t_k}, t_k): the input of student step k, a random step reached by backward simulation (no gradient)."""
        st, cond = self.m.student, batch["cond"]
        bsz = jax.tree_util.tree_leaves(cond)[0].shape[0]
        k_z, k_k, k_sim = jax.random.split(rng, 3)
        ts = jnp.asarray(self.timesteps, jnp.int32 if st.schedule.discrete else jnp.float32)
        z = jax.random.normal(k_z, (bsz,) + tuple(self.m.sample_shape), jnp.float32)
        k = jax.random.randint(k_k, (), 0, len(self.timesteps)) if len(self.timesteps) > 1 else 0
        frozen_g = lambda x, t: st.x0(sg(student_params), x, t, cond)
        return M.backward_simulation(frozen_g, st.schedule, ts, z, k, k_sim), jnp.broadcast_to(ts[k], (bsz,))

    def _student_sample(self, student_params, batch, rng):
        """x = G(x_{t_k}, t_k) for a random step k reached by backward simulation; gradient flows to G only."""
        x_in, t_k = self._student_input(student_params, batch, rng)
        return self.m.student.x0(student_params, x_in, t_k, batch["cond"])

    def _rewards(self, frozen, x, batch):
        if not self.use_reward:
            return None
        reward = functools.partial(self.m.reward, frozen.get("reward"))
        rewards = sequential_chunks(reward, int(self.c.reward.chunks), sg(x), batch["cond"])
        return sg(rewards.astype(jnp.float32))

    def advantage(self, rewards):
        """(clipped group advantage, Forbidden-Zone mask, group std) of the rewards: docs/METHOD.md section 4."""
        a = self.c.amd
        adv, mean_g, std_g = M.group_advantage(rewards, a.group_size, a.std_floor, a.adv_eps, a.adv_clip)
        return adv, M.zone_mask(adv, a.tau), std_g

    def sample_step(self, state: TrainState, frozen, batch):
        """Student samples (no gradient) and their rewards, for iterations without a generator update."""
        k_sample, _, _ = self._keys(state)
        x = sg(self._student_sample(state.student, batch, k_sample))
        return x, self._rewards(frozen, x, batch)

    # ------------------------------------------------------------------------------------------ generator
    def generator_loss(self, student_params, state: TrainState, frozen, batch):
        """The whole batch's generator loss (train.microbatches = 1): (loss, (sg(x), rewards, metrics))."""
        k_sample, k_gen, _ = self._keys(state)
        x = self._student_sample(student_params, batch, k_sample)
        rewards = self._rewards(frozen, x, batch)
        deltas, metrics = self._adaptation(rewards)
        noise = self._generator_noise(k_gen, x.shape)
        loss, terms = self._generator_terms(x, state, frozen, batch["cond"], noise, deltas)
        return loss, (sg(x), rewards, {**metrics, **terms})

    def _generator_pieces(self, state: TrainState, frozen, batch):
        """The generator's loss and gradient in train.microbatches pieces: first the whole batch's samples and rewards
        (no gradient: the advantage needs every reward of the batch), then the loss and its gradient accumulated over
        micro-batches, each re-running the student's last step with gradient from the same input (one student
        forward more than the whole-batch step). The same update as generator_loss's up to float rounding; the
        metrics are the pieces' means (gt_zone/ ratios are averaged per piece). (loss, sg(x), rewards, metrics,
        grads)."""
        st, cond = self.m.student, batch["cond"]
        k_sample, k_gen, _ = self._keys(state)
        x_in, t_k = self._student_input(state.student, batch, k_sample)
        x = sg(st.x0(state.student, x_in, t_k, cond))
        rewards = self._rewards(frozen, x, batch)
        deltas, metrics = self._adaptation(rewards)
        rows = {"x_in": x_in, "t_k": t_k, "cond": cond, "noise": self._generator_noise(k_gen, x.shape),
                "deltas": deltas}

        def piece(params, others, r):
            critic, frozen_ = others
            x_piece = st.x0(params, r["x_in"], r["t_k"], r["cond"])
            return self._generator_terms(x_piece, state.replace(critic=critic), frozen_, r["cond"], r["noise"],
                                         r["deltas"])

        grad_fn = jax.value_and_grad(piece, has_aux=True)  # the student's gradient only
        weights = (state.student, (state.critic, frozen))  # every weight the pieces use: mean_over_pieces' barrier
        (loss, terms), grads = mean_over_pieces(lambda w, r: grad_fn(w[0], w[1], r), self.microbatches, weights,
                                                rows, self._grad_constraint("student"))
        return loss, x, rewards, {**metrics, **terms}, grads

    def _generator_noise(self, k_gen, shape):
        """The generator step's per-sample random draws for the whole batch (micro-batches slice the same draws):
        the re-noise timestep t and noise eps (and t_ca, decoupled), the GAN term's timestep and noise."""
        sched, d, b = self.m.teacher.schedule, self.c.dmd, shape[:1]
        k_t, k_eps, k_gan_t, k_gan_eps = jax.random.split(k_gen, 4)
        noise = {"t": sched.sample_t(k_t, b, d.t_min, d.t_max), "eps": jax.random.normal(k_eps, shape, jnp.float32)}
        if self.ca_own_t:
            noise["t_ca"] = sched.sample_t(jax.random.fold_in(k_t, 1), b, d.ca_t_min, d.ca_t_max)
        if self.use_gan:
            noise["gan_t"] = sched.sample_t(k_gan_t, b, 0.0, 1.0)
            noise["gan_eps"] = jax.random.normal(k_gan_eps, shape)
        return noise

    def _adaptation(self, rewards):
        """(DSA's per-sample (alpha_d, beta_d) or None, the reward metrics), from the whole batch's rewards."""
        if not self.use_reward:
            return None, {}
        adv, mask, std_g = self.advantage(rewards)
        metrics = _reward_metrics(rewards, adv, mask, std_g)
        if not self.dsa:
            return None, metrics
        alpha_d, beta_d = M.dsa_deltas(adv, mask, self.c.amd.s, self.c.amd.dsa_mode)
        return (alpha_d, beta_d), {**metrics, **_stats("alpha", 1.0 + alpha_d), **_stats("beta", 1.0 + beta_d)}

    def _generator_terms(self, x, state: TrainState, frozen, cond, noise, deltas):
        """(loss, metrics) of the student's samples x (gradient flows through x): the DMD term and the GAN term."""
        alpha_d, beta_d = (None, None) if deltas is None else deltas
        grad, dmd_metrics = self._dmd_grad(state, frozen, x, cond, noise, alpha_d, beta_d)
        loss_dm = M.dmd_loss(x, grad)
        loss = loss_dm
        metrics = dict(loss_dm=loss_dm, dmd_grad_abs=jnp.mean(jnp.abs(grad)), **dmd_metrics)
        if self.use_gan:
            t_g = noise["gan_t"]
            x_tg = M.add_noise(self.m.teacher.schedule, x, noise["gan_eps"], t_g)  # gradient flows to x
            _, feats = self.m.critic.x0_and_features(sg(state.critic["denoiser"]), x_tg, t_g, cond)
            loss_gan = M.gan_generator_loss(self.m.gan_head(sg(state.critic["gan_head"]), feats))
            loss = loss + self.c.gan.generator_weight * loss_gan
            metrics["loss_gan_generator"] = loss_gan
        metrics["loss_generator"] = loss
        return loss, metrics

    def _dmd_grad(self, state, frozen, x, cond, noise, alpha_d, beta_d):
        """The stop-gradient DMD gradient of the samples x and its metrics. DMD2 / AMD: one re-noise timestep t for
        both terms. Decoupled (dmd.decoupled_normalizer, dmd.ca_t_min/ca_t_max; docs/METHOD.md section 4): the CA
        term may have its own timestep t_ca (the same noise eps re-noised to t_ca), which costs two more teacher
        calls there; the fake score is only needed for the DM term, at t. `noise`: _generator_noise's draws."""
        d, sched, teacher, tp = self.c.dmd, self.m.teacher.schedule, self.m.teacher, frozen["teacher"]
        t, eps = noise["t"], noise["eps"]
        x_t = M.add_noise(sched, sg(x), eps, t)
        if self.ca_own_t:  # the CA term's teacher pair is at t_ca, below
            xr_c, xr_u = teacher.x0(tp, x_t, t, cond), None
        else:
            xr_c, xr_u = teacher.x0_cond_uncond(tp, x_t, t, cond)
        xf = self.m.critic.x0(state.critic["denoiser"], x_t, t, cond)
        if not self.decoupled:
            grad, norm = M.dmd_gradient(x, xr_c, xr_u, xf, d.guidance_scale, alpha_d, beta_d, d.normalizer)
            return grad, {"dmd_norm": jnp.mean(norm), **self._zone_probe(x, cond, xr_c, xr_u, xf)}
        ca_parts = (xr_c, xr_u)
        if self.ca_own_t:
            t_ca = noise["t_ca"]
            x_ca = M.add_noise(sched, sg(x), eps, t_ca)
            ca_parts = teacher.x0_cond_uncond(tp, x_ca, t_ca, cond)
        grad, metrics = M.decoupled_gradient(x, (xr_c, xf), ca_parts, d.guidance_scale, alpha_d, beta_d,
                                             d.normalizer, d.decoupled_normalizer)
        return grad, {**metrics, **self._zone_probe(x, cond, xr_c, xr_u, xf)}

    def _zone_probe(self, x, cond, xr_c, xr_u, xf):
        """Where the task knows its Forbidden Zone (Models.gt_zone; zones2d), the gaps that decide whether a sample
        can leave it, on the zone's samples (gt_zone/) and on the others (gt_out/), at this step's re-noise t:
        |xf - x| (the fake teacher's pull: ~0 when its repulsion has vanished) and, when xr_u is at the same t,
        |xr_cfg - xf| (the whole unnormalised DMD update). Per-sample Euclidean norms, averaged over the group's
        samples (0 when the batch has none); gt_zone/batch_fraction is the zone's share of the batch. {} elsewhere."""
        if self.m.gt_zone is None:
            return {}
        inside = self.m.gt_zone(sg(x), cond).astype(jnp.float32)
        gaps = {"xf_minus_x": xf - sg(x)}
        if xr_u is not None:
            gaps["cfg_minus_xf"] = M.cfg(xr_c, xr_u, self.c.dmd.guidance_scale) - xf
        out = {"gt_zone/batch_fraction": jnp.mean(inside)}
        for name, gap in gaps.items():
            norm = jnp.sqrt(jnp.sum(gap.reshape(gap.shape[0], -1) ** 2, -1))
            for group, w in (("gt_zone", inside), ("gt_out", 1.0 - inside)):
                out[f"{group}/{name}"] = jnp.sum(w * norm) / jnp.maximum(jnp.sum(w), 1.0)
        return out

    def generator_step(self, state: TrainState, frozen, batch):
        if self.microbatches == 1:
            grad_fn = jax.value_and_grad(self.generator_loss, has_aux=True)
            (loss, (x, rewards, metrics)), grads = grad_fn(state.student, state, frozen, batch)
        else:
            loss, x, rewards, metrics, grads = self._generator_pieces(state, frozen, batch)
        updates, opt = self.student_tx.update(grads, state.student_opt, state.student)
        grad_norm = optax.tree.norm(grads)
        ok = _finite(loss, grad_norm)
        student = _if_finite(ok, optax.apply_updates(state.student, updates), state.student)
        state = state.replace(student=student, student_opt=_if_finite(ok, opt, state.student_opt))
        if self.ema_decay > 0:
            state = state.replace(student_ema=_if_finite(ok, self._ema(state.student_ema, student), state.student_ema))
        metrics.update(grad_norm_student=grad_norm, skipped_generator=1.0 - ok.astype(jnp.float32))
        return state, x, rewards, metrics

    def _ema(self, ema, student):
        """decay * ema + (1 - decay) * student, leaf by leaf in float32."""
        d = self.ema_decay
        return jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p.astype(jnp.float32), ema, student)

    # --------------------------------------------------------------------------------------------- critic
    def critic_loss(self, critic_params, state: TrainState, frozen, batch, x, rewards):
        """The whole batch's critic loss (train.microbatches = 1): (loss, metrics)."""
        rows, metrics = self._critic_rows(state, batch, x, rewards)
        loss, terms = self._critic_terms(critic_params, rows)
        return loss, {**metrics, **terms}

    def _critic_pieces(self, state: TrainState, batch, x, rewards):
        """The critic's loss and gradient in train.microbatches pieces of _critic_rows (its RLS weights and random
        draws made for the whole batch). (loss, metrics, grads)."""
        rows, metrics = self._critic_rows(state, batch, x, rewards)
        (loss, terms), grads = mean_over_pieces(jax.value_and_grad(self._critic_terms, has_aux=True),
                                                self.microbatches, state.critic, rows, self._grad_constraint("critic"))
        return loss, {**metrics, **terms}, grads

    def _critic_rows(self, state: TrainState, batch, x, rewards):
        """The critic's per-sample inputs for the whole batch ({x, cond, real, weights, noise}) and the RLS weights'
        metrics."""
        _, _, k_crit = self._keys(state)
        x, real = sg(x), batch.get("real") if self.use_gan else None
        weights, metrics = self._critic_weights(rewards)
        noise = self._critic_noise(k_crit, x.shape, None if real is None else real.shape)
        return {"x": x, "cond": batch["cond"], "real": real, "weights": weights, "noise": noise}, metrics

    def _critic_weights(self, rewards):
        """(RLS's per-sample loss weights or None, their metrics), from the whole batch's rewards."""
        if not self.rls:
            return None, {}
        adv, mask, _ = self.advantage(rewards)
        weights = M.rls_weights(adv, mask, self.c.amd.rls_lambda, self.c.amd.rls_mode)
        return weights, _stats("rls_weight", weights)

    def _critic_noise(self, k_crit, shape, real_shape):
        """The critic step's per-sample random draws for the whole batch: the denoising timestep and noise, and the
        GAN logits' timesteps and noises of the fake and the real samples."""
        sched, b = self.m.critic.schedule, shape[:1]
        k_t, k_eps, k_gt, k_ge, k_rt, k_re = jax.random.split(k_crit, 6)
        noise = {"t": sched.sample_t(k_t, b, 0.0, 1.0), "eps": jax.random.normal(k_eps, shape, jnp.float32)}
        if self.use_gan:
            noise.update(fake_t=sched.sample_t(k_gt, b, 0.0, 1.0), fake_eps=jax.random.normal(k_ge, shape),
                         real_t=sched.sample_t(k_rt, b, 0.0, 1.0), real_eps=jax.random.normal(k_re, real_shape))
        return noise

    def _critic_terms(self, critic_params, rows):
        """(loss, metrics) of the fake teacher on the samples rows['x']: the (RLS-weighted) denoising loss and the
        GAN discriminator term (x against the real latents)."""
        sched, critic = self.m.critic.schedule, self.m.critic
        x, cond, real, noise, weights = (rows[k] for k in ("x", "cond", "real", "noise", "weights"))
        t, eps = noise["t"], noise["eps"]
        x_t = M.add_noise(sched, x, eps, t)
        pred = critic.native(critic_params["denoiser"], x_t, t, cond)
        loss_fake = M.denoising_loss(pred, M.target(sched, critic.prediction_type, x, eps, t), weights)
        loss, metrics = loss_fake, {"loss_fake": loss_fake}
        if self.use_gan:
            def logits(sample, tt, noise_):
                xt = M.add_noise(sched, sample, noise_, tt)
                _, feats = critic.x0_and_features(critic_params["denoiser"], xt, tt, cond)
                return self.m.gan_head(critic_params["gan_head"], feats)

            loss_gan = M.gan_critic_loss(logits(x, noise["fake_t"], noise["fake_eps"]),
                                         logits(real, noise["real_t"], noise["real_eps"]))
            loss = loss + self.c.gan.critic_weight * loss_gan
            metrics["loss_gan_critic"] = loss_gan
        metrics["loss_critic"] = loss
        return loss, metrics

    def critic_step(self, state: TrainState, frozen, batch, x, rewards):
        if self.microbatches == 1:
            grad_fn = jax.value_and_grad(self.critic_loss, has_aux=True)
            (loss, metrics), grads = grad_fn(state.critic, state, frozen, batch, x, rewards)
        else:
            loss, metrics, grads = self._critic_pieces(state, batch, x, rewards)
        updates, opt = self.critic_tx.update(grads, state.critic_opt, state.critic)
        grad_norm = optax.tree.norm(grads)
        ok = _finite(loss, grad_norm)
        critic = _if_finite(ok, optax.apply_updates(state.critic, updates), state.critic)
        state = state.replace(critic=critic, critic_opt=_if_finite(ok, opt, state.critic_opt), step=state.step + 1)
        metrics.update(grad_norm_critic=grad_norm, skipped_critic=1.0 - ok.astype(jnp.float32))
        return state, metrics


def _finite(loss, grad_norm):
    """True when the update can be applied: a finite loss and a finite global gradient norm (a NaN or inf anywhere
    in the gradient makes its norm non-finite)."""
    return jnp.isfinite(loss) & jnp.isfinite(grad_norm)


def _if_finite(ok, new, old):
    """`new` when ok, else `old` unchanged: the skipped update. An elementwise select that XLA fuses into the
    optimizer's own elementwise update, so it costs no extra pass over the parameters."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def _stats(name, v):
    return {f"{name}_mean": jnp.mean(v), f"{name}_min": jnp.min(v), f"{name}_max": jnp.max(v)}


def _reward_metrics(rewards, adv, mask, std_g):
    return {
        "reward_mean": jnp.mean(rewards),
        "reward_std": jnp.std(rewards),
        "zone_fraction": jnp.mean(mask),
        "advantage_abs_mean": jnp.mean(jnp.abs(adv)),
        "group_std_mean": jnp.mean(std_g),
    }
