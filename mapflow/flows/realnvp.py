"""Multiscale RealNVP (Dinh et al., 2016), as used by the paper (App. C).

Data direction, for scale ``s`` of ``S`` with input (H, W, C):

    x -> K checkerboard couplings -> squeeze (H/2, W/2, 4C)
      -> K channel couplings -> factor out 2C channels -> scale s+1 on the
         other 2C -> unsqueeze back to (H, W, C)

and the last scale is ``final_couplings`` checkerboard couplings.  So
``num_scales = S`` means ``S - 1`` squeezes: 28x28 allows S <= 3 and 64x64
allows S <= 7.  We read the paper's "6 scales" at 64x64 this way: five
squeeze/factor-out stages (64 -> 32 -> 16 -> 8 -> 4 -> 2) and a final
stage of checkerboard couplings at 2x2x96.

Pixels enter through ``logit(a + (1 - 2a) x)``; log-scales are
``rescale * tanh(raw)`` (see ``coupling``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import distrax
import numpy as np

from mapflow.flows import config_checks as cc
from mapflow.flows.base import stateless
from mapflow.flows.coupling import (ChannelCouplingStep, MaskedCouplingStep,
                                    checkerboard)
from mapflow.flows.flow import Flow, default_scan, make_flow
from mapflow.flows.layers import LogitPreprocess, SplitApplySpec, Squeeze
from mapflow.flows.nets import ResNetConditioner
from mapflow.flows.stack import RepeatedSpec


@dataclasses.dataclass(frozen=True)
class RealNVPConfig:
  """Multiscale RealNVP.

  Attributes:
    image_shape: (H, W, C) of the images.
    num_scales: scales S; S - 1 squeeze/factor-out stages.
    num_blocks: residual blocks in each s/t ResNet.
    hidden_channels: width of the s/t ResNets.
    logit_alpha: ``a`` of the logit preprocessing.
    num_bits: bit depth of the data (8 for MNIST-like, 5 for CelebA-HQ).
    couplings_per_scale: K, couplings of each kind (checkerboard, channel)
      per non-final scale.
    final_couplings: checkerboard couplings of the last scale.
    scan_layers: stack identical couplings with ``lax.scan``; None picks the
      backend's default (unrolled on CPU, scanned elsewhere).
    remat: rematerialise scanned steps in the backward pass (saves memory).
  """

  image_shape: Tuple[int, int, int] = (28, 28, 1)
  num_scales: int = 3
  num_blocks: int = 6
  hidden_channels: int = 64
  logit_alpha: float = 0.05
  num_bits: int = 8
  couplings_per_scale: int = 3
  final_couplings: int = 4
  scan_layers: Optional[bool] = None
  remat: bool = False

  def __post_init__(self):
    shape = cc.check_image_shape("RealNVPConfig", self.image_shape)
    object.__setattr__(self, "image_shape", shape)
    cc.check_positive("RealNVPConfig", num_scales=self.num_scales,
                      num_blocks=self.num_blocks,
                      hidden_channels=self.hidden_channels,
                      couplings_per_scale=self.couplings_per_scale,
                      final_couplings=self.final_couplings)
    cc.check_num_bits("RealNVPConfig", self.num_bits)
    cc.check_switches("RealNVPConfig", scan_layers=self.scan_layers,
                      remat=self.remat)
    cc.check_squeezable("RealNVPConfig", shape, self.num_scales - 1,
                        f"num_scales={self.num_scales}")
    if isinstance(self.logit_alpha, bool) or not isinstance(
        self.logit_alpha, (int, float, np.integer, np.floating)) or \
        not 0.0 <= self.logit_alpha < 0.5:
      raise ValueError(f"RealNVPConfig.logit_alpha: got {self.logit_alpha!r},"
                       " expected 0 <= alpha < 0.5")


def _checker_stack(cfg, shape, n, scan):
  h, w, c = shape
  net = ResNetConditioner(cfg.hidden_channels, cfg.num_blocks, 2 * c)
  masks = np.stack([checkerboard(h, w, i % 2) for i in range(n)])
  return RepeatedSpec(MaskedCouplingStep(net, "tanh"), {"mask": masks}, n,
                      scan, cfg.remat)


def _scale_specs(cfg, shape, scale, scan):
  if scale == cfg.num_scales - 1:
    return [_checker_stack(cfg, shape, cfg.final_couplings, scan)]
  h, w, c = shape
  k = cfg.couplings_per_scale
  c4 = 4 * c
  net = ResNetConditioner(cfg.hidden_channels, cfg.num_blocks,
                          2 * (c4 - c4 // 2))
  channel = RepeatedSpec(ChannelCouplingStep(net, "tanh"), {}, k, scan,
                         cfg.remat)
  inner = _scale_specs(cfg, (h // 2, w // 2, c4 // 2), scale + 1, scan)
  return [
      _checker_stack(cfg, shape, k, scan),
      stateless(Squeeze),
      channel,
      SplitApplySpec(inner, c4 // 2),
      stateless(lambda: distrax.Inverse(Squeeze())),
  ]


def realnvp(cfg: RealNVPConfig) -> Flow:
  """Builds a multiscale RealNVP ``Flow`` from its config."""
  if not isinstance(cfg, RealNVPConfig):
    raise TypeError(f"cfg: got {type(cfg).__name__}, expected RealNVPConfig")
  scan = default_scan(cfg.scan_layers)
  specs = [stateless(lambda: LogitPreprocess(cfg.logit_alpha))]
  specs += _scale_specs(cfg, cfg.image_shape, 0, scan)
  return make_flow(cfg, specs, cfg.image_shape, cfg.num_bits)
