"""Stacks of identical steps, run unrolled or under ``lax.scan``.

A *step spec* has ``init(key, x, const)`` and ``build(params, const)``; the
step's params are stored stacked along a leading axis of length ``n`` in both
modes, so checkpoints move freely between scanned and unrolled flows.
``const`` holds per-step constants (checkerboard masks, fixed permutations),
also stacked along the leading axis.

Why both modes: scanning keeps compile time flat in depth, but on XLA:CPU
convolutions inside a loop body run much slower (JAX issue #12868).  The
figures behind each backend's default are in BENCHMARKS.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mapflow.flows.base import ImageBijector


def _index(tree, i):
  return jax.tree_util.tree_map(lambda a: a[i], tree)


class Repeated(ImageBijector):
  """``n`` steps in sequence: ``step_{n-1} o ... o step_0`` (data direction).

  log|det| is the sum of the steps' log-dets.
  """

  def __init__(self, step, params, const, n: int, scan: bool,
               remat: bool = False):
    super().__init__()
    self._step, self._params, self._const = step, params, const
    self._n, self._scan, self._remat = n, scan, remat

  def _run(self, x, inverse: bool):
    def apply(h, pc):
      b = self._step.build(*pc)
      return b.inverse_and_log_det(h) if inverse else b.forward_and_log_det(h)

    if self._scan:
      body = jax.checkpoint(apply) if self._remat else apply
      h, lds = jax.lax.scan(body, x, (self._params, self._const),
                            reverse=inverse)
      return h, jnp.sum(lds, axis=0)
    order = range(self._n - 1, -1, -1) if inverse else range(self._n)
    ld = jnp.zeros(x.shape[:1], x.dtype)
    for i in order:
      x, l = apply(x, (_index(self._params, i), _index(self._const, i)))
      ld = ld + l
    return x, ld

  def _forward(self, x):
    return self._run(x, inverse=False)

  def _inverse(self, y):
    return self._run(y, inverse=True)


class RepeatedSpec:
  """Layer spec of a ``Repeated`` stack (data-dependent init, step by step)."""

  def __init__(self, step, const, n: int, scan: bool, remat: bool = False):
    self.step, self.const, self.n = step, const, n
    self.scan, self.remat = scan, remat

  def init(self, key, x):
    # Always scanned: init runs once, and a scanned init compiles one step
    # instead of n (tens of seconds saved on deep flows).
    def body(h, kc):
      k, c = kc
      p = self.step.init(k, h, c)
      h, _ = self.step.build(p, c).forward_and_log_det(h)
      return h, p

    _, params = jax.lax.scan(body, x, (jax.random.split(key, self.n),
                                       self.const))
    return params

  def build(self, params):
    # Unrolled, a longer stack's params would be cut silently to n steps.
    lead = {int(a.shape[0]) for a in jax.tree_util.tree_leaves(params)}
    if lead - {self.n}:
      raise ValueError(f"params: got a stack of {sorted(lead)} steps, "
                       f"expected {self.n} (params of another depth)")
    return Repeated(self.step, params, self.const, self.n, self.scan,
                    self.remat)
