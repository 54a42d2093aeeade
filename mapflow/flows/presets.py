"""Named flow configs: the paper's Table 1, OpenAI's Glow, and CPU scale."""

from __future__ import annotations

from typing import Union

from mapflow.flows.flow import Flow
from mapflow.flows.glow import GlowConfig, glow
from mapflow.flows.linear import LinearGaussianConfig, linear_gaussian
from mapflow.flows.realnvp import RealNVPConfig, realnvp

FlowConfig = Union[RealNVPConfig, GlowConfig]

PRESETS = {
    # Paper, Table 1 (MNIST): 3 scales, 6 residual blocks per s/t net.
    "realnvp_mnist_paper": RealNVPConfig(
        image_shape=(28, 28, 1), num_scales=3, num_blocks=6,
        hidden_channels=64, num_bits=8),
    # Paper, Table 1 (CelebA-HQ 64x64, 5-bit): 6 scales, 10 blocks.  See
    # realnvp.py for how 6 scales are laid out at 64x64.
    "realnvp_celebahq64_paper": RealNVPConfig(
        image_shape=(64, 64, 3), num_scales=6, num_blocks=10,
        hidden_channels=64, num_bits=5),
    # CPU scale: Fashion-MNIST prior that trains in a few CPU hours.
    "realnvp_fmnist_cpu": RealNVPConfig(
        image_shape=(28, 28, 1), num_scales=3, num_blocks=2,
        hidden_channels=32, num_bits=8),
    # Small, quick RealNVP for learned noise models on small images
    # (recover.learned_noise --noise-preset; its image shape is replaced).
    "realnvp_small": RealNVPConfig(
        image_shape=(8, 8, 1), num_scales=2, num_blocks=1,
        hidden_channels=16, num_bits=8),
    # Like OpenAI's CelebA-HQ 256 model: L=6, K=32, 512 wide, additive, 5-bit.
    "glow_celebahq256": GlowConfig(
        image_shape=(256, 256, 3), num_levels=6, steps_per_level=32,
        hidden_channels=512, coupling="additive", num_bits=5),
    # Small Glow for 28x28 (sub-pixel imputation at CPU scale).
    "glow_fmnist_small": GlowConfig(
        image_shape=(28, 28, 1), num_levels=2, steps_per_level=8,
        hidden_channels=64, coupling="affine", num_bits=8),
}


def preset(name: str) -> FlowConfig:
  """The config of a named preset."""
  if name not in PRESETS:
    raise ValueError(f"preset: got {name!r}, expected one of "
                     f"{sorted(PRESETS)}")
  return PRESETS[name]


def from_config(cfg: FlowConfig) -> Flow:
  """Builds the flow a config describes (RealNVP, Glow or linear
  Gaussian)."""
  if isinstance(cfg, RealNVPConfig):
    return realnvp(cfg)
  if isinstance(cfg, GlowConfig):
    return glow(cfg)
  if isinstance(cfg, LinearGaussianConfig):
    return linear_gaussian(cfg)
  raise TypeError(f"cfg: got {type(cfg).__name__}, expected RealNVPConfig, "
                  "GlowConfig or LinearGaussianConfig")
