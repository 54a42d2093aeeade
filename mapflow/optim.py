"""Optimisers beyond optax's, as optax ``GradientTransformation`` s.

``guarded_lbfgs`` is L-BFGS with a fixed step, as torch's ``LBFGS`` runs
by default (GlowIP recovered with it): it keeps a curvature pair only when
``s·y > 0``.  ``optax.lbfgs`` without a line search keeps every pair, so on
a non-convex MAP objective a pair with ``s·y < 0`` turns its direction
uphill and the latents diverge.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree


class GuardedLBFGSState(NamedTuple):
  count: jnp.ndarray      # updates made
  stored: jnp.ndarray     # curvature pairs accepted (newest at stored-1 mod M)
  prev_params: jnp.ndarray
  prev_grad: jnp.ndarray
  s: jnp.ndarray          # (M, n) parameter differences
  y: jnp.ndarray          # (M, n) gradient differences
  rho: jnp.ndarray        # (M,) 1 / (s·y); 0 marks an empty slot
  gamma: jnp.ndarray      # initial inverse-Hessian scale s·y / y·y


def guarded_lbfgs(learning_rate: float = 0.1, memory_size: int = 10,
                  curvature_eps: float = 1e-10
                  ) -> optax.GradientTransformation:
  """L-BFGS with a fixed step and a curvature guard (torch's defaults).

  With gradient ``g_k`` at ``w_k``, ``s = w_k - w_{k-1}`` and
  ``y = g_k - g_{k-1}``, the pair ``(s, y)`` is stored only if
  ``s·y > curvature_eps``; then ``gamma = s·y / y·y``.  The two-loop
  recursion over the stored pairs gives ``d = H_k g_k`` with
  ``H_k ≈ ∇²f⁻¹`` and ``H_k⁰ = gamma I``, and the update is
  ``-lr · t_k · d`` with ``t_0 = min(1, 1 / ||g_0||_1)`` (the first step,
  taken with no curvature information, is shrunk) and ``t_k = 1`` after.
  An empty slot has ``rho = 0`` and is then a no-op in both loops.

  Params may be any pytree; they are flattened to one vector.
  """
  if learning_rate <= 0:
    raise ValueError(f"learning_rate: got {learning_rate}, expected > 0")
  if memory_size < 1:
    raise ValueError(f"memory_size: got {memory_size}, expected >= 1")

  def init(params):
    flat, _ = ravel_pytree(params)
    n = flat.shape[0]
    z = jnp.zeros((memory_size, n), flat.dtype)
    return GuardedLBFGSState(
        count=jnp.zeros((), jnp.int32), stored=jnp.zeros((), jnp.int32),
        prev_params=jnp.zeros_like(flat), prev_grad=jnp.zeros_like(flat),
        s=z, y=z, rho=jnp.zeros((memory_size,), flat.dtype),
        gamma=jnp.ones((), flat.dtype))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("guarded_lbfgs: params are required, got None")
    g, unravel = ravel_pytree(updates)
    w, _ = ravel_pytree(params)
    s_new, y_new = w - state.prev_params, g - state.prev_grad
    sy = jnp.vdot(s_new, y_new)
    accept = (state.count > 0) & (sy > curvature_eps)
    slot = state.stored % memory_size
    put = lambda buf, v: jnp.where(accept, buf.at[slot].set(v), buf)
    s_mem, y_mem = put(state.s, s_new), put(state.y, y_new)
    rho = put(state.rho, jnp.where(accept, 1.0 / sy, 0.0))
    gamma = jnp.where(accept, sy / jnp.vdot(y_new, y_new), state.gamma)
    stored = state.stored + accept.astype(jnp.int32)

    # Two-loop recursion, newest pair first, then back oldest first.
    order = [(stored - 1 - i) % memory_size for i in range(memory_size)]
    q, alphas = g, []
    for j in order:
      a = rho[j] * jnp.vdot(s_mem[j], q)
      q = q - a * y_mem[j]
      alphas.append(a)
    r = gamma * q
    for j, a in zip(reversed(order), reversed(alphas)):
      b = rho[j] * jnp.vdot(y_mem[j], r)
      r = r + (a - b) * s_mem[j]

    first = jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(g)))
    t = jnp.where(state.count == 0, first, 1.0)
    new = GuardedLBFGSState(count=state.count + 1, stored=stored,
                            prev_params=w, prev_grad=g, s=s_mem, y=y_mem,
                            rho=rho, gamma=gamma)
    return unravel(-learning_rate * t * r), new

  return optax.GradientTransformation(init, update)
