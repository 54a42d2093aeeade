"""RADIAL denoising: python -m recover.radial --out DIR [--help]."""

from recover.denoising import main

if __name__ == "__main__":
  main("radial")
