"""Glow (Kingma & Dhariwal, 2018): ActNorm, invertible 1x1 conv, coupling.

Data direction, for level ``l`` of ``L`` with input (H, W, C):

    x -> squeeze (H/2, W/2, 4C) -> K steps -> factor out 2C channels
      -> level l+1 on the other 2C -> unsqueeze back to (H, W, C)

with the last level having no factor-out.  A step is
``ActNorm -> InvConv1x1 -> channel coupling``.  ``L`` levels need H and W
to be multiples of ``2^L``.  Pixels enter as ``x - 0.5`` (log|det| = 0).
The factored-out halves go to the standard normal base (no learned split
prior), so the latent is one standard normal array of the image's shape.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import distrax
import jax.numpy as jnp
import numpy as np

from mapflow.flows import config_checks as cc
from mapflow.flows.base import stateless
from mapflow.flows.coupling import ChannelCoupling, _coupling_params
from mapflow.flows.flow import Flow, default_scan, make_flow
from mapflow.flows.layers import (ActNorm, CentrePreprocess, InvConv1x1,
                                  SplitApplySpec, Squeeze, actnorm_init,
                                  lu_init)
from mapflow.flows.nets import GlowConditioner
from mapflow.flows.stack import RepeatedSpec

COUPLINGS = ("affine", "additive")


@dataclasses.dataclass(frozen=True)
class GlowConfig:
  """Glow.

  Attributes:
    image_shape: (H, W, C).
    num_levels: L, levels; each starts with a squeeze.
    steps_per_level: K, flow steps per level.
    hidden_channels: width of the coupling networks.
    coupling: "affine" (sigmoid scale) or "additive" (volume-preserving).
    num_bits: bit depth of the data.
    seed: seeds the fixed permutations of the 1x1 convolutions, which are
      part of the architecture, not of the params.
    scan_layers: stack the K steps with ``lax.scan``; None picks the
      backend's default.
    remat: rematerialise scanned steps in the backward pass.
  """

  image_shape: Tuple[int, int, int] = (28, 28, 1)
  num_levels: int = 2
  steps_per_level: int = 8
  hidden_channels: int = 128
  coupling: str = "affine"
  num_bits: int = 8
  seed: int = 0
  scan_layers: Optional[bool] = None
  remat: bool = False

  def __post_init__(self):
    shape = cc.check_image_shape("GlowConfig", self.image_shape)
    object.__setattr__(self, "image_shape", shape)
    cc.check_positive("GlowConfig", num_levels=self.num_levels,
                      steps_per_level=self.steps_per_level,
                      hidden_channels=self.hidden_channels)
    cc.check_num_bits("GlowConfig", self.num_bits)
    cc.check_switches("GlowConfig", scan_layers=self.scan_layers,
                      remat=self.remat)
    cc.check_squeezable("GlowConfig", shape, self.num_levels,
                        f"num_levels={self.num_levels}")
    if self.coupling not in COUPLINGS:
      raise ValueError(f"GlowConfig.coupling: got {self.coupling!r}, "
                       f"expected one of {COUPLINGS}")
    if isinstance(self.seed, bool) or not isinstance(self.seed, int) or \
        not 0 <= self.seed < 2 ** 32:
      raise ValueError(f"GlowConfig.seed: got {self.seed!r}, expected an "
                       "int in [0, 2**32)")


class GlowStep:
  """Step spec: ActNorm (data-dependent init) -> 1x1 conv -> coupling."""

  def __init__(self, net, kind):
    self.net, self.kind = net, kind

  def init(self, key, x, const):
    act = actnorm_init(x)
    h, _ = ActNorm(act).forward_and_log_det(x)
    conv = {k: jnp.asarray(v) for k, v in const["lu_init"].items()}
    h, _ = InvConv1x1(conv, const).forward_and_log_det(h)
    c1 = h.shape[-1] // 2
    coup = _coupling_params(key, self.net, h[..., :c1], self.kind,
                            h.shape[-1] - c1)
    return {"actnorm": act, "invconv": conv, "coupling": coup}

  def build(self, params, const):
    return distrax.Chain([
        ChannelCoupling(self.net, params["coupling"]["net"], self.kind),
        InvConv1x1(params["invconv"], const),
        ActNorm(params["actnorm"]),
    ])


def _level_specs(cfg, shape, level, scan, rng):
  h, w, c = shape
  c4 = 4 * c
  c2 = c4 - c4 // 2
  kind = "sigmoid" if cfg.coupling == "affine" else "additive"
  net = GlowConditioner(cfg.hidden_channels,
                        2 * c2 if kind != "additive" else c2)
  consts = [lu_init(c4, rng) for _ in range(cfg.steps_per_level)]
  const = {
      "perm": np.stack([k["perm"] for _, k in consts]),
      "sign": np.stack([k["sign"] for _, k in consts]),
      "lu_init": {n: np.stack([p[n] for p, _ in consts])
                  for n in ("l", "u", "log_s")},
  }
  specs = [stateless(Squeeze),
           RepeatedSpec(GlowStep(net, kind), const, cfg.steps_per_level, scan,
                        cfg.remat)]
  if level < cfg.num_levels - 1:
    inner = _level_specs(cfg, (h // 2, w // 2, c4 // 2), level + 1, scan, rng)
    specs.append(SplitApplySpec(inner, c4 // 2))
  specs.append(stateless(lambda: distrax.Inverse(Squeeze())))
  return specs


def glow(cfg: GlowConfig) -> Flow:
  """Builds a Glow ``Flow`` from its config."""
  if not isinstance(cfg, GlowConfig):
    raise TypeError(f"cfg: got {type(cfg).__name__}, expected GlowConfig")
  scan = default_scan(cfg.scan_layers)
  rng = np.random.RandomState(cfg.seed)
  specs = [stateless(CentrePreprocess)]
  specs += _level_specs(cfg, cfg.image_shape, 0, scan, rng)
  return make_flow(cfg, specs, cfg.image_shape, cfg.num_bits)
