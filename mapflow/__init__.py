"""mapflow: MAP estimation for inverse problems with normalizing-flow priors.

Reimplements Whang, Lei & Dimakis, "Compressed Sensing with Invertible
Generative Models and Dependent Noise" (2020) in JAX.
"""

from mapflow import flows

__version__ = "0.1.0"
