"""Normalizing-flow priors as pure distrax bijectors."""

from mapflow.flows.flow import (Flow, dequantize, quantize,
                                standard_normal_log_prob, with_compute_dtype)
from mapflow.flows.glow import GlowConfig, glow
from mapflow.flows.presets import PRESETS, from_config, preset
from mapflow.flows.realnvp import RealNVPConfig, realnvp
from mapflow.flows.nets import weightnorm_l2
from mapflow.flows.linear import (LinearGaussianConfig, linear_gaussian,
                                  linear_gaussian_params)

__all__ = [
    "Flow", "GlowConfig", "LinearGaussianConfig", "linear_gaussian",
    "linear_gaussian_params", "PRESETS", "RealNVPConfig", "dequantize",
    "from_config", "glow", "preset", "quantize", "realnvp",
    "standard_normal_log_prob", "weightnorm_l2", "with_compute_dtype",
]
