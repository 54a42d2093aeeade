"""Ship a trained model: copy a run's params into mapflow/pretrained/models.

python -m train.export --workdir DIR --name NAME --command "python -m ..."

The copy keeps the params and config and records the run's last test
figure, step, wall time and the command that trained it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mapflow import checkpoint as ckpt
from mapflow import pretrained
from mapflow.io import file_in_the_way


def last_eval(workdir: Path) -> dict:
  """The run's last test figure: a flow's evals.jsonl (a line a kill tore
  is skipped, as training skips it), else a VAE's eval.json."""
  from mapflow.training import read_jsonl
  rows = [r for r in read_jsonl(workdir / "evals.jsonl")
          if isinstance(r, dict)]
  if rows:
    return rows[-1]
  f = workdir / "eval.json"
  if not f.is_file():
    return {}
  try:
    ev = json.loads(f.read_text())
  except ValueError as e:  # not JSON, or not UTF-8
    raise SystemExit(f"--workdir: {f} is not readable as JSON ({e})"
                     ) from None
  if not isinstance(ev, dict):
    raise SystemExit(f"--workdir: {f} holds {type(ev).__name__}, expected "
                     "a JSON object")
  return ev


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m train.export")
  p.add_argument("--workdir", required=True)
  p.add_argument("--name", required=True,
                 choices=sorted(pretrained.DESCRIPTIONS))
  p.add_argument("--command", required=True,
                 help="the exact command that trained the model")
  p.add_argument("--data", help="flows: evaluate test bits/dim of the "
                 "exported params on this dataset's full test split")
  p.add_argument("--samples", default="docs/models/{name}_samples.png",
                 help="flows: PNG grid of 64 samples at temperature 0.8 "
                 "('' to skip)")
  p.add_argument("--data-dir", help="IDX directory or tfds data_dir for "
                 "--data")
  args = p.parse_args(argv)
  if not args.command.strip():
    p.error("--command: got '', expected the command that trained the "
            "model (it is recorded with it)")
  samples = None
  if args.samples:
    # Checked before the shipped model is replaced, not after.
    try:
      samples = Path(args.samples.format(name=args.name))
    except (KeyError, IndexError, ValueError) as e:
      p.error(f"--samples: got {args.samples!r}, expected a path in which "
              f"{{name}} is the only field ({type(e).__name__}: {e})")
    bad = file_in_the_way(samples.parent)
    if bad is not None or samples.is_dir():
      p.error(f"--samples: got {str(samples)!r}, " + (
          "which is a folder" if bad is None else
          f"under {str(bad)!r}, which is a file"))
  workdir = Path(args.workdir)
  if not ((workdir / "params").is_dir() or (workdir / "state").is_dir()):
    raise SystemExit(f"--workdir: got {str(workdir)!r}, which holds no "
                     "training run (no params/ or state/ checkpoint)")
  try:
    if (workdir / "params").is_dir():
      params, config = ckpt.load(workdir / "params")
      meta = ckpt.read_meta(workdir / "params")["extra"]
    else:  # runs/ keeps only the resumable state; its params are a subtree
      params, config = ckpt.load(workdir / "state", key="params")
      meta = ckpt.read_meta(workdir / "state")["extra"]
  except ckpt.CheckpointError as e:
    raise SystemExit(f"--workdir: {e}") from None
  try:
    pretrained.check_kind(args.name, config)
  except ValueError as e:
    raise SystemExit(f"--name: {str(e).partition(': ')[2]}; export it "
                     "under a name of its kind") from None
  if args.data and not hasattr(config, "num_bits"):
    raise SystemExit(f"--data: evaluates a flow's bits/dim; {args.name!r} "
                     "is not a flow")
  ev = last_eval(workdir)
  if args.data:
    from mapflow.flows import from_config
    from mapflow.training import evaluate_bpd
    from mapflow import data
    try:
      x = data.load(args.data, "test", args.data_dir)
    except (data.DatasetNotFoundError, ValueError) as e:
      raise SystemExit(f"--data: {e}") from None
    if tuple(x.shape[1:]) != tuple(config.image_shape):
      raise SystemExit(f"--data: {args.data}'s images are "
                       f"{tuple(x.shape[1:])}, the flow's "
                       f"{tuple(config.image_shape)}")
    seed = meta.get("train_config", {}).get("seed", 0)
    ev = {"step": meta.get("step"), "num_test": int(len(x)),
          "test_bpd": evaluate_bpd(from_config(config), params, x, 500, seed)}
  extra = {"step": meta.get("step", ev.get("step")), "eval": ev,
           "command": args.command}
  dest = pretrained.MODELS_DIR / args.name
  ckpt.save(dest, params, config, extra)
  print(json.dumps({"name": args.name, **extra}, indent=1))
  if samples is not None and hasattr(config, "image_shape"):
    import jax
    from mapflow import viz
    from mapflow.flows import from_config
    from mapflow.training import jitted_flow
    x = jitted_flow(from_config(config)).sample(
        params, jax.random.PRNGKey(0), 64, 0.8)
    viz.save_grid(samples, jax.numpy.clip(x, 0.0, 1.0), ncols=8, scale=2)
    print(f"samples: {samples}")


if __name__ == "__main__":
  main()
