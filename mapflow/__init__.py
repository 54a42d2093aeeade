"""mapflow: MAP estimation for inverse problems with normalizing-flow priors.

Reimplements Whang, Lei & Dimakis, "Compressed Sensing with Invertible
Generative Models and Dependent Noise" (2020) in JAX.
"""

from mapflow import (checkpoint, data, flows, io, metrics, noise, objectives,
                     operators, optim, pretrained, sample, sharding, solve,
                     training, vae, viz, xla)
from mapflow.objectives import Objective
from mapflow.sample import (LaplaceApproximation, PosteriorSamples,
                            SamplerConfig, conformal_inside,
                            conformal_std_scale, laplace_approximation,
                            sample_posterior)
from mapflow.solve import (RecoveryResult, SolverConfig, minimize, recover,
                           recover_asim, recover_bora, sweep)

__version__ = "0.1.0"

__all__ = [
    "checkpoint", "data", "flows", "io", "metrics", "noise", "objectives",
    "operators", "optim", "pretrained", "sample", "sharding", "solve",
    "training", "vae", "viz", "xla",
    "LaplaceApproximation", "Objective", "PosteriorSamples",
    "RecoveryResult", "SamplerConfig", "SolverConfig", "conformal_inside",
    "conformal_std_scale", "laplace_approximation", "minimize", "recover",
    "recover_asim", "recover_bora", "sample_posterior", "sweep",
]
