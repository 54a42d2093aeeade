"""Probe (session 17): measurement-only scores for digit noise beside
validation PSNR, per (start, β) of ours on the 16 validation images.

  python results/digit_noise_probe/probe.py START[,START] BETA[,BETA] OUT.jsonl

Columns: lp_noise, the residual y - 0.5 x̂ log-density per pixel under the
digit flow; u2, its latent squared norm per pixel; lp_x and z2 the same of
x̂ under the Fashion-MNIST prior; "ref" (first line) has lp_noise and u2 of
the noise-only digits (lp_x, z2: the validation truths, for reference).
"""
import json, sys, time
import numpy as np
import jax, jax.numpy as jnp
from mapflow import data, metrics
from recover import common
from recover.paper import cells, protocol, methods as M

p = common.base_parser("probe", "probe")
p.add_argument("--noise-prior", default="digits_realnvp")
common.add_method_args(p, protocol.PROTOCOLS["digits"].methods)
args = p.parse_args(["--out", "/tmp/digit_noise_probe", "--methods", "ours", "--no-ood"])
noise_prior, noise_params = common.load_prior(args.noise_prior, "--noise-prior")
starts = sys.argv[1].split(",")
betas = [float(b) for b in sys.argv[2].split(",")]
with common.make_context(args, "digits") as ctx:
  n_val, n_test = len(ctx.images.x_val), len(ctx.images.x_test)
  digits = data.load("digits", "test").astype(np.float32) / 255.0
  rng = np.random.RandomState(args.seed)
  digits = digits[rng.permutation(len(digits))]
  task = cells.digit_noise_task(ctx, noise_prior, noise_params, digits[:n_val],
                                digits[n_val:n_val + n_test])
  spare = jnp.asarray(digits[n_val + n_test:])
  cell = cells._Cell(ctx, task, protocol.PROTOCOLS["digits"])
  prior, params = ctx.models.prior, ctx.models.params
  d = float(np.prod(spare.shape[1:]))
  def stats(delta, x):
    u, _ = noise_prior.inverse(noise_params, jnp.clip(delta, 1e-4, 1 - 1e-4))
    z, _ = prior.inverse(params, jnp.clip(x, 1e-4, 1 - 1e-4))
    return dict(
        lp_noise=np.asarray(task.noise.log_prob(delta)) / d,
        u2=np.asarray(jnp.sum(u ** 2, (1, 2, 3))) / d,
        lp_x=np.asarray(prior.log_prob(params, jnp.clip(x, 1e-4, 1 - 1e-4))) / d,
        z2=np.asarray(jnp.sum(z ** 2, (1, 2, 3))) / d)
  ref = stats(spare, jnp.asarray(ctx.images.x_val))  # x part: truth, for reference only
  ref = {"ref": True, **{k: float(np.mean(v)) for k, v in ref.items()}}
  print(json.dumps(ref), flush=True)
  with open(sys.argv[3], "a") as f:
    f.write(json.dumps(ref) + "\n")
  y = jnp.asarray(task.y_val)
  for s in starts:
    st = M.parse_starts(s)[0]
    for b in betas:
      t = time.time()
      x_hat = cell.solve(M.METHODS["ours"], st, b, "val")
      r = stats(y - 0.5 * x_hat, x_hat)
      row = dict(start=s, beta=b, psnr=float(jnp.mean(metrics.psnr(cell.x["val"], x_hat))),
                 **{k: float(np.mean(v)) for k, v in r.items()}, secs=time.time() - t)
      print(json.dumps(row), flush=True)
      with open(sys.argv[3], "a") as f:
        f.write(json.dumps(row) + "\n")
