"""``mapflow.optim.guarded_lbfgs``: convergence, its first step, the guard."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mapflow.optim import guarded_lbfgs


def _quadratic(n=12, seed=0):
  m = jax.random.normal(jax.random.PRNGKey(seed), (n, n))
  a = m @ m.T / n + 0.2 * jnp.eye(n)
  b = jnp.linspace(-1.0, 2.0, n)
  return a, b, lambda x: 0.5 * x @ a @ x - b @ x


@pytest.mark.parametrize("lr", [1.0, 0.3])
def test_reaches_the_quadratic_minimiser(lr):
  a, b, f = _quadratic()
  opt = guarded_lbfgs(lr, memory_size=5)
  x = jnp.zeros_like(b)
  state = opt.init(x)
  step = jax.jit(lambda x, s: opt.update(jax.grad(f)(x), s, x))
  for _ in range(150):
    u, state = step(x, state)
    x = optax.apply_updates(x, u)
  np.testing.assert_allclose(x, jnp.linalg.solve(a, b), rtol=1e-3, atol=1e-3)


def test_first_step_is_shrunk_like_torch():
  # With no curvature pairs, the step is -lr * min(1, 1/||g||_1) * g.
  opt = guarded_lbfgs(0.1)
  params = {"a": jnp.ones((3,)), "b": jnp.zeros((2, 2))}
  g = {"a": jnp.array([3.0, -1.0, 2.0]), "b": jnp.full((2, 2), 1.0)}
  u, state = opt.update(g, opt.init(params), params)
  chex.assert_trees_all_close(
      u, jax.tree.map(lambda v: -0.1 * v / 10.0, g), rtol=1e-6)
  assert int(state.count) == 1 and int(state.stored) == 0


def test_negative_curvature_pair_is_not_stored():
  opt = guarded_lbfgs(1.0, memory_size=3)
  w0, w1 = jnp.zeros(2), jnp.array([1.0, 0.0])
  _, s = opt.update(jnp.array([-1.0, 0.0]), opt.init(w0), w0)
  # s = (1, 0), y = g1 - g0 = (-1, 0): s.y < 0 (concave direction).
  u, s2 = opt.update(jnp.array([-2.0, 0.0]), s, w1)
  assert int(s2.stored) == 0 and float(jnp.sum(jnp.abs(s2.rho))) == 0.0
  # Still a descent step: -lr * gamma0 * g with gamma0 = 1.
  np.testing.assert_allclose(u, [2.0, 0.0])
  # A convex pair is stored, with gamma = s.y / y.y.
  _, s3 = opt.update(jnp.array([0.0, 0.0]), s2, jnp.array([3.0, 0.0]))
  assert int(s3.stored) == 1
  np.testing.assert_allclose(s3.gamma, 2.0 * 2.0 / 4.0)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="learning_rate"):
    guarded_lbfgs(0.0)
  with pytest.raises(ValueError, match="memory_size"):
    guarded_lbfgs(memory_size=0)
