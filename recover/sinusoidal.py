"""SINUSOIDAL denoising: python -m recover.sinusoidal --out DIR [--help]."""

from recover.denoising import main

if __name__ == "__main__":
  main("sinusoidal")
