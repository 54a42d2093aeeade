"""Shipped, trained models, loaded offline in one call.

    prior, params = mapflow.pretrained.load("fashion_mnist_realnvp")
    decode, params = mapflow.pretrained.load("fashion_mnist_vae")
    x = decode(params, z)          # or recover_bora(generator=decode,
                                   #                 generator_params=params)

Each model is a checkpoint directory under ``mapflow/pretrained/models``
(params via orbax, config as JSON); MODELS.md lists how each was trained
and its test figure.
"""

from __future__ import annotations

import json
from pathlib import Path

from mapflow import checkpoint as ckpt

MODELS_DIR = Path(__file__).parent / "models"

DESCRIPTIONS = {
    "fashion_mnist_realnvp": "signal prior: RealNVP (realnvp_fmnist_cpu) on "
                             "Fashion-MNIST, step 5,200 (the first one)",
    "fashion_mnist_realnvp_10k": "signal prior: the same RealNVP trained on "
                                 "to step 10,100",
    "digits_realnvp": "noise prior: RealNVP on scikit-learn digits, 28x28",
    "fashion_mnist_glow": "small Glow (glow_fmnist_small) on Fashion-MNIST",
    "fashion_mnist_vae": "Bora et al.'s VAE (784-500-500-20) on "
                         "Fashion-MNIST",
}

# What each name holds: the config's type and the images it models, so a
# checkpoint of another kind is never shipped under it.
KINDS = {
    "fashion_mnist_realnvp": ("RealNVPConfig", (28, 28, 1)),
    "fashion_mnist_realnvp_10k": ("RealNVPConfig", (28, 28, 1)),
    "digits_realnvp": ("RealNVPConfig", (28, 28, 1)),
    "fashion_mnist_glow": ("GlowConfig", (28, 28, 1)),
    "fashion_mnist_vae": ("VAEConfig", (28, 28, 1)),
}


def check_kind(name: str, config) -> None:
  """Raises ValueError when ``config`` is not of the kind ``name`` holds."""
  kind, shape = KINDS[name]
  got = (type(config).__name__, tuple(getattr(config, "image_shape", ())))
  if got != (kind, shape):
    raise ValueError(f"config: got a {got[0]} for images {got[1]}, but "
                     f"{name!r} holds a {kind} for images {shape}")


def available() -> list:
  """Names of the models shipped in this installation."""
  if not MODELS_DIR.is_dir():
    return []
  return sorted(p.name for p in MODELS_DIR.iterdir()
                if (p / "meta.json").is_file())


def path(name: str) -> Path:
  if not isinstance(name, str) or name not in available():
    why = (" (a model this library knows, not trained and committed in "
           "this installation)" if isinstance(name, str) and
           name in DESCRIPTIONS else "")
    raise ValueError(f"name: got {name!r}{why}, expected one of "
                     f"{available()}; a checkpoint of your own loads with "
                     "mapflow.checkpoint.load")
  return MODELS_DIR / name


def info(name: str) -> dict:
  """The metadata saved with a model (training step, test figures)."""
  return json.loads((path(name) / "meta.json").read_text())["extra"]


def load(name: str):
  """``(prior, params)`` for a flow, ``(decode, params)`` for the VAE.

  ``decode(params, z)`` maps one latent (20,) to one image (28, 28, 1) in
  [0, 1].
  """
  from mapflow import vae
  from mapflow.flows import from_config
  params, config = ckpt.load(path(name))
  if isinstance(config, vae.VAEConfig):
    return vae.decoder(config), params
  return from_config(config), params
