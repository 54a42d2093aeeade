"""The methods the paper compares, and what each is offered, as data.

A flow method (ours, the isotropic ablation, Asim et al.) is tuned over
(value, start) pairs: a numeric hyperparameter (β or γ) and a ``Start``
(where the optimiser begins, what it moves, its Adam learning rate and its
step budget).  Every flow method is offered every start of the
experiment's protocol that its loss can take (``Method.start_kinds``), so
no method gets a start, a learning rate or a step budget another flow
method is denied (``check_fair``).  Bora et al. keeps its own protocol
(``BORA``), BM3D has only σ.

A numeric grid starts at the paper's values and grows on the validation
images (``grow``) until the chosen value is interior: never the smallest or
largest value tried (0 counts as interior where it is the weight's natural
bound), with its neighbours at most ``Grid.ratio`` apart (2, or √2 for
BM3D's σ).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, \
    Tuple

from mapflow.solve.engine import DEFAULT_LEARNING_RATE

# Adam learning rate (the library's default, defined once there) and steps
# of a start that names neither.
BASE_LR = DEFAULT_LEARNING_RATE
BASE_STEPS = 100

# Where a start begins and what it moves (``Start.kind``):
START_KINDS = {
    "zeros": "the image latent, from z = 0",
    "measurements": "the image latent, from the clipped back-projection of y",
    "random": "the image latent, from RESTARTS draws z ~ N(0, INIT_STD^2); "
              "each image keeps the draw whose run ends at the lowest loss",
    "pixels": "the image itself, from the clipped back-projection of y",
    "noise_latent": "the noise flow's latent, from w = 0, with "
                    "x = f^-1(y - G_noise(w)) (flow noise, invertible f)",
    "isotropic": "the ablation's MAP at the same β, then the true noise "
                 "model from there: twice the steps",
}
# The "random" start's draws per image and their latent std.
RANDOM_RESTARTS = 4
RANDOM_INIT_STD = 0.7


class Start(NamedTuple):
  """Where a flow method starts, what it moves, and how long and fast.

  ``steps`` is the budget of one run; ``cost`` the optimiser steps the
  start spends in all (the continuation start runs twice).
  """

  kind: str
  lr: float = BASE_LR
  steps: int = BASE_STEPS

  @property
  def cost(self) -> int:
    return 2 * self.steps if self.kind == "isotropic" else self.steps

  @property
  def label(self) -> str:
    """``kind[@lr][:steps]``, leaving out the base values."""
    out = self.kind
    if not math.isclose(self.lr, BASE_LR):
      out += f"@{self.lr:g}"
    if self.steps != BASE_STEPS:
      out += f":{self.steps}"
    return out


def parse_start(text: str) -> Start:
  """``"pixels@0.003"`` -> ``Start("pixels", 0.003)``; ``"zeros:200"`` ->
  200 steps.  Raises ValueError naming the text."""
  text = str(text).strip()
  head, _, steps = text.partition(":")
  kind, at, lr = head.partition("@")
  if kind not in START_KINDS:
    raise ValueError(f"inits: got start {text!r}, expected one of "
                     f"{tuple(START_KINDS)}, optionally with @LR and :STEPS "
                     "(as in pixels@0.003 or zeros:200)")
  try:
    rate = float(lr) if at else BASE_LR
  except ValueError:
    rate = float("nan")
  if not (math.isfinite(rate) and rate > 0):
    raise ValueError(f"inits: got start {text!r}, expected a positive "
                     "learning rate after '@' (as in pixels@0.003)")
  try:
    n = int(steps) if steps else BASE_STEPS
  except ValueError:
    n = 0
  if n < 1:
    raise ValueError(f"inits: got start {text!r}, expected a positive "
                     "integer step count after ':' (as in zeros:200)")
  return Start(kind, rate, n)


def parse_starts(text: str) -> Tuple[Start, ...]:
  """A comma-separated list of starts, in order, without repeats."""
  out = []
  for part in str(text).split(","):
    if part.strip():
      st = parse_start(part)
      if st not in out:
        out.append(st)
  if not out:
    raise ValueError(f"inits: got {text!r}, expected at least one start")
  return tuple(out)


class Grid(NamedTuple):
  """A numeric hyperparameter's grid: where it starts, and how it grows.

  ``ratio``: the largest factor allowed between the chosen value and each
  neighbour, and the factor by which an edge grows.  ``zero_is_bound``: 0 is
  the weight's natural bound, so a chosen 0 is interior.
  """

  symbol: str
  values: Tuple[float, ...]
  ratio: float = 2.0
  zero_is_bound: bool = True
  max_values: int = 24


def _key(v: float) -> float:
  """Values as they are stored (6 significant digits), so a grown value
  and the same value read back from a table are one key."""
  return float(f"{float(v):.6g}")


# Validation scores (dB) closer than this are ties.
TIE_DB = 0.01

# The grids of the best GROWN_STARTS starts grow until settled: a start whose
# peak falls between the base grid's values (RADIAL s = 0.8's ablation from
# zeros:200: 18.28 dB on the base grid, 20.04 at β 0.2) would otherwise lose
# to one whose grid alone was refined.  Every start would be fairest, at
# perhaps half again the fits.
GROWN_STARTS = 2


def grow(grid: Grid, scores: Dict[float, float]) -> List[float]:
  """Values still to try before the grid's choice is settled.

  ``scores`` maps each value tried to its validation score (higher is
  better; non-finite is worst).  Returns [] once the chosen value
  (``choose``) is interior with neighbours at most ``grid.ratio`` apart,
  once ``max_values`` are tried, or if no score is finite.
  """
  if len(scores) >= grid.max_values or not any(
      math.isfinite(v) for v in scores.values()):
    return []
  vals = sorted(scores)
  best = choose(scores)
  i = vals.index(best)
  r = grid.ratio
  tol = 1 + 1e-6
  want = []
  if best == 0.0:
    if not grid.zero_is_bound:
      raise ValueError(f"{grid.symbol}: 0 chosen on a grid without a "
                       "natural bound at 0")
    return want  # the natural bound: interior by definition
  # Below: an edge grows down; a gap wider than the ratio is filled.
  if i == 0 or vals[i - 1] * r * tol < best:
    want.append(best / r)
  if i == len(vals) - 1 or vals[i + 1] > best * r * tol:
    want.append(best * r)
  return [_key(v) for v in want if _key(v) not in scores]


def settled(grid: Grid, scores: Dict[float, float]) -> bool:
  """Whether the choice among ``scores`` is interior and fine enough."""
  return not grow(grid._replace(max_values=10 ** 9), scores)


def choose(scores: Dict[float, float]) -> Optional[float]:
  """The value with the best score.  Scores within ``TIE_DB`` of the best
  tie; among ties the value farthest from the grid's ends is chosen (then
  the smaller), so a flat stretch of scores does not grow the grid."""
  if not scores:
    return None
  vals = sorted(scores)
  top = max(_finite(scores[v]) for v in vals)
  if top == -math.inf:
    return vals[0]
  ties = [k for k, v in enumerate(vals) if _finite(scores[v]) >= top - TIE_DB]
  n = len(vals)
  k = max(ties, key=lambda k: (min(k, n - 1 - k), -k))
  return vals[k]


def _finite(s) -> float:
  return s if math.isfinite(s) else -math.inf


class Method(NamedTuple):
  """One compared method.

  ``family``: "flow" (a loss minimised over a flow's latent or image, tuned
  over ``Grid`` x starts), "generator" (Bora et al.: a VAE's latent, its own
  protocol) or "denoiser" (BM3D).  ``noise``: which noise model a MAP
  method scores the residual with ("true" or "isotropic"; None for the
  others).  ``start_kinds``: the starts its loss can take.  ``select``:
  how a (value, start) is scored on the validation images: "psnr" (mean
  PSNR against the truth) or "heldout" (how well held-out measurement
  entries are predicted, ``mapflow.holdout``: no ground truth).
  """

  name: str
  title: str
  family: str
  grid: Grid
  start_kinds: Tuple[str, ...] = ()
  noise: Optional[str] = None
  select: str = "psnr"


PAPER_BETAS = (0.1, 0.5, 1.0, 5.0, 10.0)
PAPER_GAMMAS = (0.0, 0.1, 0.5, 1.0, 5.0)
PAPER_LAMBDAS = (0.0, 0.001, 0.01, 0.1, 1.0)
# BM3D's σ, as multiples of the largest noise std.
PAPER_BM3D_FACTORS = (0.1, 0.5, 1.0, 2.0, 5.0)

_LATENT = ("zeros", "measurements", "random")
METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("ours", "ours", "flow", Grid("β", PAPER_BETAS),
           _LATENT + ("pixels", "noise_latent", "isotropic"), "true"),
    # Ours with β and the start chosen from the validation measurements
    # alone (``cells.blind_score_kind``), not from their ground truth.
    Method("ours_heldout", "ours, chosen without ground truth", "flow",
           Grid("β", PAPER_BETAS),
           _LATENT + ("pixels", "noise_latent", "isotropic"), "true",
           "heldout"),
    Method("ablation", "ablation (isotropic noise)", "flow",
           Grid("β", PAPER_BETAS), _LATENT + ("pixels",), "isotropic"),
    # Asim et al.'s loss has no noise model; over the image it is the same
    # loss at z = G^-1(x) (``objectives.asim_loss_x``).
    Method("asim", "Asim et al.", "flow", Grid("γ", PAPER_GAMMAS),
           _LATENT + ("pixels",)),
    Method("bora", "Bora et al.", "generator", Grid("λ", PAPER_LAMBDAS)),
    Method("bm3d", "BM3D", "denoiser",
           Grid("σ", PAPER_BM3D_FACTORS, ratio=math.sqrt(2.0),
                zero_is_bound=False)),
)}


class BoraProtocol(NamedTuple):
  """Bora et al.'s own optimisation: Adam from random latents, the best
  restart by loss, a fixed budget (not tuned with the flow methods)."""

  steps: int = 300
  restarts: int = 4
  lr: float = BASE_LR


BORA = BoraProtocol()


def offers(method: Method, starts: Sequence[Start],
           can: Iterable[str] = tuple(START_KINDS)) -> Tuple[Start, ...]:
  """The starts of a protocol that ``method`` takes: those its loss can
  take (``method.start_kinds``) and the task allows (``can``)."""
  can = set(can)
  return tuple(s for s in starts
               if s.kind in method.start_kinds and s.kind in can)


def check_fair(methods: Sequence[str], starts: Sequence[Start],
               can: Iterable[str] = tuple(START_KINDS)):
  """Raises ValueError if some flow method is offered a learning rate or a
  step budget that another flow method is denied."""
  flow = [METHODS[m] for m in methods if METHODS[m].family == "flow"]
  budgets = {m.name: {(s.lr, s.cost) for s in offers(m, starts, can)}
             for m in flow}
  every = set().union(*budgets.values()) if budgets else set()
  for name, have in budgets.items():
    lacking = sorted(every - have)
    if lacking:
      raise ValueError(
          f"inits: {name} would lack the (learning rate, steps) budgets "
          f"{lacking} that another flow method gets; offer every flow "
          "method a start with each budget (e.g. zeros@LR:STEPS), or drop "
          "the start that needs it")
