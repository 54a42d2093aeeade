"""A PyTorch peer of mapflow's two flow priors, for benchmarking.

torch is not a dependency of mapflow: it is an optional ``[peer]`` extra
(``pip install 'mapflow[peer]'`` or just ``pip install torch``), needed by
this module and nothing else.

What it mirrors, layer for layer (``mapflow/flows``):

* RealNVP (``realnvp.py``): logit preprocessing ``logit(a + (1 - 2a) x)``
  with ``a = logit_alpha``; per non-final scale, K checkerboard couplings
  (parity ``i % 2``; the s/t net sees ``concat(b * x, b)``), squeeze, K
  channel couplings each followed by a channel reversal, factor-out of the
  first ``2C`` channels, the next scale on the rest, unsqueeze; the last
  scale is ``final_couplings`` checkerboard couplings.  Log-scales are
  ``rescale * tanh(raw)`` with a learned per-channel ``rescale``; the s/t net
  is a ResNet of weight-normalised 3x3 convolutions ending in a
  zero-initialised 3x3 convolution.
* Glow (``glow.py``): ``x - 0.5``; per level a squeeze, K steps of ActNorm
  (data-dependent init) -> LU-parametrised invertible 1x1 convolution ->
  channel coupling (sigmoid scale ``log_sigmoid(raw + 2) - log_sigmoid(2)``
  or additive), a factor-out (not at the last level), unsqueeze.  The fixed
  permutations and signs of the 1x1 convolutions come from
  ``numpy.random.RandomState(cfg.seed)`` drawn in the same order as mapflow,
  so they are the same constants.
* The base is a standard normal on a latent of the image's shape; the
  factored-out halves go to it directly (no learned split prior).

Conventions are mapflow's: a layer's ``forward`` runs in the data direction
``x -> h`` and returns ``(h, log|det|)``; its ``inverse`` undoes it.  A
flow's ``forward(z)`` is the generator ``G: z -> x`` (with
``log|det dG/dz|``), ``inverse(x)`` is ``G^{-1}`` and
``log_prob(x) = log N(G^{-1}(x); 0, I) + log|det dG^{-1}/dx|``.

The one deliberate difference is the layout: torch tensors are NCHW where
mapflow's are NHWC.  Channel order is the same (including a squeeze's
``(2a + b) * C + c``), so ``x_torch = x_mapflow.transpose(0, 3, 1, 2)`` and
the latents correspond the same way.  ``load_mapflow_params`` copies a
mapflow params pytree into a torch model (HWIO kernels become OIHW), so the
two compute the same function; ``tests/test_peer_torch.py`` checks that.

``map_step_fns`` builds one MAP recovery step (forward ``z -> x``, the loss,
backward to ``z``, one ``torch.optim.Adam`` update) for the two benchmarked
problems, and ``train_step_fn`` one maximum-likelihood training step of the
RealNVP (bits/dim with uniform dequantisation, as ``mapflow.training``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


# --------------------------------------------------------------------------
# Conditioner networks (mapflow/flows/nets.py)
# --------------------------------------------------------------------------

class WNConv(nn.Module):
  """Weight-normalised conv: ``kernel = scale * direction / ||direction||``,
  the norm over (in, kh, kw) per output channel, ``+ 1e-12`` inside the
  square root; "SAME" padding, stride 1."""

  def __init__(self, cin: int, cout: int, k: int = 3):
    super().__init__()
    self.direction = nn.Parameter(torch.randn(cout, cin, k, k) * 0.05)
    self.scale = nn.Parameter(torch.ones(cout))
    self.bias = nn.Parameter(torch.zeros(cout))
    self.pad = k // 2

  def forward(self, x):
    v = self.direction
    norm = torch.sqrt(torch.sum(v * v, dim=(1, 2, 3)) + 1e-12)
    kernel = v * (self.scale / norm).view(-1, 1, 1, 1)
    return F.conv2d(x, kernel, self.bias, padding=self.pad)


def zero_conv(cin: int, cout: int) -> nn.Conv2d:
  """A 3x3 convolution whose kernel and bias start at zero."""
  conv = nn.Conv2d(cin, cout, 3, padding=1)
  nn.init.zeros_(conv.weight)
  nn.init.zeros_(conv.bias)
  return conv


class ResNetConditioner(nn.Module):
  """in-conv -> blocks x [relu, conv, relu, conv, + skip] -> relu -> zero
  conv.  ``convs[i]`` is flax's ``WNConv_i``."""

  def __init__(self, cin: int, hidden: int, num_blocks: int, cout: int):
    super().__init__()
    convs = [WNConv(cin, hidden)]
    for _ in range(num_blocks):
      convs += [WNConv(hidden, hidden), WNConv(hidden, hidden)]
    self.convs = nn.ModuleList(convs)
    self.out = zero_conv(hidden, cout)
    self.num_blocks = num_blocks

  def forward(self, x):
    h = self.convs[0](x)
    for b in range(self.num_blocks):
      r = self.convs[1 + 2 * b](F.relu(h))
      r = self.convs[2 + 2 * b](F.relu(r))
      h = h + r
    return self.out(F.relu(h))


class GlowConditioner(nn.Module):
  """conv3x3 -> relu -> conv1x1 -> relu -> zero conv3x3."""

  def __init__(self, cin: int, hidden: int, cout: int):
    super().__init__()
    self.convs = nn.ModuleList([WNConv(cin, hidden, 3),
                                WNConv(hidden, hidden, 1)])
    self.out = zero_conv(hidden, cout)

  def forward(self, x):
    h = F.relu(self.convs[0](x))
    h = F.relu(self.convs[1](h))
    return self.out(h)


# --------------------------------------------------------------------------
# Layers (mapflow/flows/layers.py, coupling.py), data direction x -> h
# --------------------------------------------------------------------------

def _zeros(x: Tensor) -> Tensor:
  return x.new_zeros(x.shape[0])


def _sum3(a: Tensor) -> Tensor:
  return a.sum(dim=(1, 2, 3))


def squeeze2x2(x: Tensor) -> Tensor:
  """(N, C, H, W) -> (N, 4C, H/2, W/2); channel ``(2a + b) C + c`` at (i, j)
  holds input (c, 2i + a, 2j + b), as mapflow's ``Squeeze``."""
  n, c, h, w = x.shape
  y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
  return y.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze2x2(y: Tensor) -> Tensor:
  n, c4, h, w = y.shape
  c = c4 // 4
  x = y.reshape(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)
  return x.reshape(n, c, 2 * h, 2 * w)


class Stateless(nn.Module):
  """A layer without params (its mapflow params are ``()``)."""


class Squeeze(Stateless):
  def forward(self, x):
    return squeeze2x2(x), _zeros(x)

  def inverse(self, y):
    return unsqueeze2x2(y), _zeros(y)


class Unsqueeze(Stateless):
  """``distrax.Inverse(Squeeze())``."""

  def forward(self, x):
    return unsqueeze2x2(x), _zeros(x)

  def inverse(self, y):
    return squeeze2x2(y), _zeros(y)


class LogitPreprocess(Stateless):
  """``y = logit(a + (1 - 2a) x)``."""

  def __init__(self, alpha: float):
    super().__init__()
    self.a = float(alpha)

  def forward(self, x):
    a = self.a
    p = a + (1 - 2 * a) * x
    y = torch.log(p) - torch.log1p(-p)
    ld = math.log(1 - 2 * a) - torch.log(p) - torch.log1p(-p)
    return y, _sum3(ld)

  def inverse(self, y):
    a = self.a
    x = (torch.sigmoid(y) - a) / (1 - 2 * a)
    ld = -math.log(1 - 2 * a) + F.logsigmoid(y) + F.logsigmoid(-y)
    return x, _sum3(ld)


class CentrePreprocess(Stateless):
  """``y = x - 0.5``."""

  def forward(self, x):
    return x - 0.5, _zeros(x)

  def inverse(self, y):
    return y + 0.5, _zeros(y)


def checkerboard(h: int, w: int, parity: int) -> Tensor:
  """(1, 1, H, W): 1 where (i + j) % 2 == parity (conditioning pixels)."""
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  m = ((i + j) % 2 == parity).astype(np.float32)
  return torch.from_numpy(m)[None, None]


_LOG_SIGMOID_2 = float(-np.log1p(np.exp(-2.0)))


def _log_scale(kind: str, raw: Tensor, rescale: Optional[Tensor]) -> Tensor:
  if kind == "tanh":
    return rescale.view(1, -1, 1, 1) * torch.tanh(raw)
  if kind == "sigmoid":
    return F.logsigmoid(raw + 2.0) - _LOG_SIGMOID_2
  raise ValueError(f"scale kind: got {kind!r}")


class MaskedCoupling(nn.Module):
  """Checkerboard coupling, ``y = x * exp((1-b) s) + (1-b) t`` with
  ``s, t`` from ``net(concat(b * x, b))`` (RealNVP, tanh scale)."""

  def __init__(self, shape, parity: int, hidden: int, num_blocks: int):
    super().__init__()
    c, h, w = shape
    self.c = c
    self.register_buffer("mask", checkerboard(h, w, parity))
    self.net = ResNetConditioner(c + 1, hidden, num_blocks, 2 * c)
    self.rescale = nn.Parameter(torch.ones(c))

  def _shift_and_log_scale(self, x_given):
    mask = self.mask.to(x_given.dtype)
    b = mask.expand(x_given.shape[0], 1, -1, -1)
    out = self.net(torch.cat([x_given, b], dim=1))
    free = 1.0 - mask
    t, raw = out[:, :self.c], out[:, self.c:]
    return t * free, _log_scale("tanh", raw, self.rescale) * free

  def forward(self, x):
    t, s = self._shift_and_log_scale(x * self.mask.to(x.dtype))
    return x * torch.exp(s) + t, _sum3(s)

  def inverse(self, y):
    t, s = self._shift_and_log_scale(y * self.mask.to(y.dtype))
    return (y - t) * torch.exp(-s), -_sum3(s)


class ChannelCoupling(nn.Module):
  """The first ``C//2`` channels condition the rest.

  ``net`` is RealNVP's ResNet ("tanh", with ``rescale``) or Glow's net
  ("sigmoid" or "additive").
  """

  def __init__(self, c: int, net: nn.Module, kind: str):
    super().__init__()
    self.c1, self.c2, self.kind = c // 2, c - c // 2, kind
    self.net = net
    self.rescale = (nn.Parameter(torch.ones(self.c2)) if kind == "tanh"
                    else None)

  def _shift_and_log_scale(self, x1):
    out = self.net(x1)
    if self.kind == "additive":
      return out, None
    t, raw = out[:, :self.c2], out[:, self.c2:]
    return t, _log_scale(self.kind, raw, self.rescale)

  def forward(self, x):
    x1, x2 = x[:, :self.c1], x[:, self.c1:]
    t, s = self._shift_and_log_scale(x1)
    if s is None:
      return torch.cat([x1, x2 + t], 1), _zeros(x)
    return torch.cat([x1, x2 * torch.exp(s) + t], 1), _sum3(s)

  def inverse(self, y):
    y1, y2 = y[:, :self.c1], y[:, self.c1:]
    t, s = self._shift_and_log_scale(y1)
    if s is None:
      return torch.cat([y1, y2 - t], 1), _zeros(y)
    return torch.cat([y1, (y2 - t) * torch.exp(-s)], 1), -_sum3(s)


class RealNVPChannelStep(nn.Module):
  """A channel coupling, then a channel reversal (``ChannelCouplingStep``)."""

  def __init__(self, c: int, hidden: int, num_blocks: int):
    super().__init__()
    c2 = c - c // 2
    self.coupling = ChannelCoupling(
        c, ResNetConditioner(c // 2, hidden, num_blocks, 2 * c2), "tanh")

  def forward(self, x):
    y, ld = self.coupling(x)
    return torch.flip(y, dims=(1,)), ld

  def inverse(self, y):
    return self.coupling.inverse(torch.flip(y, dims=(1,)))


class ActNorm(nn.Module):
  """``y = x * exp(log_scale) + bias`` per channel; log|det| =
  H W sum(log_scale)."""

  def __init__(self, c: int):
    super().__init__()
    self.bias = nn.Parameter(torch.zeros(c))
    self.log_scale = nn.Parameter(torch.zeros(c))

  @torch.no_grad()
  def data_init(self, x, eps: float = 1e-6):
    """Zero mean, unit variance per channel on ``x`` (``actnorm_init``)."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    self.log_scale.copy_(-torch.log(std + eps))
    self.bias.copy_(-mean * torch.exp(self.log_scale))

  def forward(self, x):
    h, w = x.shape[2:]
    s = self.log_scale.view(1, -1, 1, 1)
    ld = (h * w) * self.log_scale.sum()
    return x * torch.exp(s) + self.bias.view(1, -1, 1, 1), ld.expand(
        x.shape[0])

  def inverse(self, y):
    h, w = y.shape[2:]
    s = self.log_scale.view(1, -1, 1, 1)
    ld = -(h * w) * self.log_scale.sum()
    return (y - self.bias.view(1, -1, 1, 1)) * torch.exp(-s), ld.expand(
        y.shape[0])


def lu_init(channels: int, rng: np.random.RandomState):
  """A random rotation ``W = P L U`` (same draws as mapflow's ``lu_init``):
  ``(l, u, log_s)`` learned, ``(perm, sign)`` fixed."""
  q, _ = np.linalg.qr(rng.randn(channels, channels))
  p, l, u = scipy.linalg.lu(q)
  d = np.diag(u)
  learned = (np.tril(l, -1), np.triu(u, 1), np.log(np.abs(d)))
  fixed = (p, np.sign(d))
  return ([a.astype(np.float32) for a in learned],
          [a.astype(np.float32) for a in fixed])


class InvConv1x1(nn.Module):
  """``W = P (L + I) (U + diag(sign exp(log_s)))``, per pixel ``y = W x``;
  log|det| = H W sum(log_s).  ``l`` and ``u`` are full C x C params of
  which only the strict triangles are used (as in mapflow)."""

  def __init__(self, c: int, rng: np.random.RandomState):
    super().__init__()
    (l, u, log_s), (perm, sign) = lu_init(c, rng)
    self.l = nn.Parameter(torch.from_numpy(l))
    self.u = nn.Parameter(torch.from_numpy(u))
    self.log_s = nn.Parameter(torch.from_numpy(log_s))
    self.register_buffer("perm", torch.from_numpy(perm))
    self.register_buffer("sign", torch.from_numpy(sign))
    self.register_buffer("eye", torch.eye(c))

  def _factors(self):
    lower = torch.tril(self.l, -1) + self.eye
    upper = torch.triu(self.u, 1) + torch.diag(self.sign * torch.exp(
        self.log_s))
    return lower, upper

  def weight(self):
    lower, upper = self._factors()
    return self.perm @ lower @ upper

  def forward(self, x):
    c, (h, w) = x.shape[1], x.shape[2:]
    y = F.conv2d(x, self.weight().view(c, c, 1, 1))
    return y, ((h * w) * self.log_s.sum()).expand(x.shape[0])

  def inverse(self, y):
    c, (h, w) = y.shape[1], y.shape[2:]
    lower, upper = self._factors()
    # W^-1 = U^-1 L^-1 P^T by triangular solves.
    l_inv = torch.linalg.solve_triangular(lower, self.eye, upper=False,
                                          unitriangular=True)
    u_inv = torch.linalg.solve_triangular(upper, self.eye, upper=True)
    w_inv = u_inv @ l_inv @ self.perm.T
    x = F.conv2d(y, w_inv.view(c, c, 1, 1))
    return x, (-(h * w) * self.log_s.sum()).expand(y.shape[0])


class GlowStep(nn.Module):
  """ActNorm -> InvConv1x1 -> channel coupling."""

  def __init__(self, c: int, hidden: int, kind: str,
               rng: np.random.RandomState):
    super().__init__()
    c2 = c - c // 2
    self.actnorm = ActNorm(c)
    self.invconv = InvConv1x1(c, rng)
    net = GlowConditioner(c // 2, hidden, c2 if kind == "additive" else 2 * c2)
    self.coupling = ChannelCoupling(c, net, kind)

  def forward(self, x):
    h, ld0 = self.actnorm(x)
    h, ld1 = self.invconv(h)
    h, ld2 = self.coupling(h)
    return h, ld0 + ld1 + ld2

  def inverse(self, y):
    h, ld2 = self.coupling.inverse(y)
    h, ld1 = self.invconv.inverse(h)
    h, ld0 = self.actnorm.inverse(h)
    return h, ld0 + ld1 + ld2


class Chain(nn.Module):
  """Layers in sequence (one per mapflow spec); log-dets add up."""

  def __init__(self, layers: Sequence[nn.Module]):
    super().__init__()
    self.layers = nn.ModuleList(layers)

  def forward(self, x):
    ld = _zeros(x)
    for layer in self.layers:
      x, l = layer(x)
      ld = ld + l
    return x, ld

  def inverse(self, y):
    ld = _zeros(y)
    for layer in reversed(self.layers):
      y, l = layer.inverse(y)
      ld = ld + l
    return y, ld


class Repeated(Chain):
  """A stack of identical steps (mapflow's ``Repeated``: params stacked
  along a leading axis of length n)."""


class SplitApply(nn.Module):
  """Channels ``[:k]`` are factored out; ``inner`` acts on the rest."""

  def __init__(self, inner: Chain, k: int):
    super().__init__()
    self.inner, self.k = inner, k

  def forward(self, x):
    b, ld = self.inner(x[:, self.k:])
    return torch.cat([x[:, :self.k], b], 1), ld

  def inverse(self, y):
    b, ld = self.inner.inverse(y[:, self.k:])
    return torch.cat([y[:, :self.k], b], 1), ld


# --------------------------------------------------------------------------
# Flows (mapflow/flows/flow.py, realnvp.py, glow.py)
# --------------------------------------------------------------------------

def standard_normal_log_prob(z: Tensor) -> Tensor:
  d = math.prod(z.shape[1:])
  return -0.5 * _sum3(z * z) - 0.5 * d * math.log(2 * math.pi)


class TorchFlow(nn.Module):
  """A flow prior: ``chain`` is the data-direction chain ``x -> z``.

  ``forward(z)`` is the generator ``G`` (z -> x, log|det dG/dz|),
  ``inverse(x)`` is ``G^{-1}`` (x -> z, log|det dG^{-1}/dx|); tensors are
  NCHW.
  """

  def __init__(self, config, chain: Chain):
    super().__init__()
    self.config = config
    self.chain = chain
    h, w, c = config.image_shape
    self.event_shape = (c, h, w)

  def forward(self, z):
    return self.chain.inverse(z)

  def inverse(self, x):
    return self.chain(x)

  def log_prob(self, x):
    z, ld = self.chain(x)
    return standard_normal_log_prob(z) + ld

  def sample(self, n: int, temperature: float = 1.0):
    p = next(self.parameters())
    z = temperature * torch.randn((n,) + self.event_shape, device=p.device,
                                  dtype=p.dtype)
    return self.forward(z)[0]

  def bits_per_dim(self, x_uint8, dequantize: bool = True):
    """``-log p(x) / (d log 2) + num_bits`` of ``x = (k + u) / 2^n``, u
    uniform (``dequantize``) or 0.5; ``x_uint8`` NCHW."""
    nb = self.config.num_bits
    k = torch.floor(x_uint8.to(torch.float32) / 2 ** (8 - nb))
    u = torch.rand_like(k) if dequantize else torch.full_like(k, 0.5)
    x = (k + u) / 2 ** nb
    d = math.prod(self.event_shape)
    return -self.log_prob(x) / (d * math.log(2.0)) + nb

  def weightnorm_l2(self):
    """Sum of squares of every weight-norm ``scale``."""
    return sum(torch.sum(m.scale ** 2) for m in self.modules()
               if isinstance(m, WNConv))

  def param_count(self) -> int:
    return sum(p.numel() for p in self.parameters())

  @torch.no_grad()
  def data_init(self, x):
    """Data-dependent init (ActNorm), layer after layer, as mapflow's
    ``init``: each ActNorm sees what reaches it from ``x``."""
    _data_init(self.chain, x)
    return self


def _data_init(module, x):
  """Pushes ``x`` through ``module`` (data direction), initialising every
  ActNorm on what reaches it; returns the output."""
  if isinstance(module, ActNorm):
    module.data_init(x)
    return module(x)[0]
  if isinstance(module, Chain):
    for layer in module.layers:
      x = _data_init(layer, x)
    return x
  if isinstance(module, SplitApply):
    b = _data_init(module.inner, x[:, module.k:])
    return torch.cat([x[:, :module.k], b], 1)
  if isinstance(module, GlowStep):
    h = _data_init(module.actnorm, x)
    h = module.invconv(h)[0]
    return module.coupling(h)[0]
  return module(x)[0]


def _checker_stack(cfg, shape, n):
  return Repeated([MaskedCoupling(shape, i % 2, cfg.hidden_channels,
                                  cfg.num_blocks) for i in range(n)])


def _realnvp_scale(cfg, shape, scale):
  if scale == cfg.num_scales - 1:
    return [_checker_stack(cfg, shape, cfg.final_couplings)]
  c, h, w = shape
  c4 = 4 * c
  k = cfg.couplings_per_scale
  channel = Repeated([RealNVPChannelStep(c4, cfg.hidden_channels,
                                         cfg.num_blocks) for _ in range(k)])
  inner = Chain(_realnvp_scale(cfg, (c4 // 2, h // 2, w // 2), scale + 1))
  return [_checker_stack(cfg, shape, k), Squeeze(), channel,
          SplitApply(inner, c4 // 2), Unsqueeze()]


class RealNVP(TorchFlow):
  """Multiscale RealNVP from a ``mapflow.flows.RealNVPConfig``."""

  def __init__(self, config):
    h, w, c = config.image_shape
    layers = [LogitPreprocess(config.logit_alpha)]
    layers += _realnvp_scale(config, (c, h, w), 0)
    super().__init__(config, Chain(layers))


def _glow_level(cfg, shape, level, rng):
  c, h, w = shape
  c4 = 4 * c
  kind = "sigmoid" if cfg.coupling == "affine" else "additive"
  # The 1x1 convs' constants of this level are drawn before the next
  # level's, as in mapflow.
  steps = Repeated([GlowStep(c4, cfg.hidden_channels, kind, rng)
                    for _ in range(cfg.steps_per_level)])
  layers = [Squeeze(), steps]
  if level < cfg.num_levels - 1:
    inner = Chain(_glow_level(cfg, (c4 // 2, h // 2, w // 2), level + 1, rng))
    layers.append(SplitApply(inner, c4 // 2))
  layers.append(Unsqueeze())
  return layers


class Glow(TorchFlow):
  """Glow from a ``mapflow.flows.GlowConfig``."""

  def __init__(self, config):
    h, w, c = config.image_shape
    rng = np.random.RandomState(config.seed)
    layers = [CentrePreprocess()] + _glow_level(config, (c, h, w), 0, rng)
    super().__init__(config, Chain(layers))


def from_config(config) -> TorchFlow:
  """The torch peer of a mapflow RealNVP or Glow config."""
  name = type(config).__name__
  if name == "RealNVPConfig":
    return RealNVP(config)
  if name == "GlowConfig":
    return Glow(config)
  raise TypeError(f"config: got {name}, expected RealNVPConfig or GlowConfig")


# --------------------------------------------------------------------------
# mapflow params -> torch
# --------------------------------------------------------------------------

def _t(a, like: Tensor) -> Tensor:
  return torch.as_tensor(np.array(a), dtype=like.dtype, device=like.device)


def _copy(param: Tensor, value):
  v = _t(value, param)
  if tuple(v.shape) != tuple(param.shape):
    raise ValueError(f"shape mismatch: mapflow {tuple(v.shape)}, torch "
                     f"{tuple(param.shape)}")
  param.copy_(v)


def _load_net(net: nn.Module, p: dict):
  for i, conv in enumerate(net.convs):
    q = p[f"WNConv_{i}"]
    _copy(conv.direction, np.transpose(np.asarray(q["direction"]),
                                       (3, 2, 0, 1)))
    _copy(conv.scale, q["scale"])
    _copy(conv.bias, q["bias"])
  expected = len(net.convs) + 1
  if len(p) != expected:
    raise ValueError(f"conditioner: mapflow has {sorted(p)}, torch has "
                     f"{len(net.convs)} WNConvs and one ZeroConv")
  q = p["ZeroConv_0"]["Conv_0"]
  _copy(net.out.weight, np.transpose(np.asarray(q["kernel"]), (3, 2, 0, 1)))
  _copy(net.out.bias, q["bias"])


def _load_step(step: nn.Module, p: dict):
  if isinstance(step, MaskedCoupling):
    _load_net(step.net, p["net"])
    _copy(step.rescale, p["rescale"])
  elif isinstance(step, RealNVPChannelStep):
    _load_net(step.coupling.net, p["net"])
    _copy(step.coupling.rescale, p["rescale"])
  elif isinstance(step, GlowStep):
    _copy(step.actnorm.bias, p["actnorm"]["bias"])
    _copy(step.actnorm.log_scale, p["actnorm"]["log_scale"])
    for name in ("l", "u", "log_s"):
      _copy(getattr(step.invconv, name), p["invconv"][name])
    _load_net(step.coupling.net, p["coupling"]["net"])
  else:
    raise TypeError(f"unexpected step {type(step).__name__}")


def _load(module: nn.Module, p):
  if isinstance(module, Repeated):
    for i, step in enumerate(module.layers):
      _load_step(step, {k: _index(v, i) for k, v in p.items()})
  elif isinstance(module, Chain):
    if len(p) != len(module.layers):
      raise ValueError(f"mapflow has {len(p)} layers here, torch "
                       f"{len(module.layers)}")
    for layer, q in zip(module.layers, p):
      _load(layer, q)
  elif isinstance(module, SplitApply):
    _load(module.inner, p)
  elif isinstance(module, Stateless):
    if len(p):
      raise ValueError(f"{type(module).__name__} has no params; mapflow "
                       "gave some")
  else:
    raise TypeError(f"unexpected layer {type(module).__name__}")


def _index(tree, i):
  if isinstance(tree, dict):
    return {k: _index(v, i) for k, v in tree.items()}
  return np.asarray(tree)[i]


@torch.no_grad()
def load_mapflow_params(torch_model: TorchFlow, mapflow_params) -> TorchFlow:
  """Copies a mapflow params pytree (from ``flow.init`` or a checkpoint)
  into ``torch_model`` in place; returns it.  Raises on any mismatch of
  structure or shape."""
  _load(torch_model.chain, mapflow_params)
  return torch_model


def nhwc_to_nchw(a) -> Tensor:
  """A mapflow (N, H, W, C) array as a torch (N, C, H, W) tensor."""
  return torch.as_tensor(np.ascontiguousarray(
      np.transpose(np.asarray(a), (0, 3, 1, 2))))


# --------------------------------------------------------------------------
# Benchmark steps
# --------------------------------------------------------------------------

# The two MAP problems of the peer comparison.
MAP_KINDS = ("realnvp_sinusoidal", "glow_cs")


def glow_cs_config():
  """Glow, L=4, K=8 at every level, 512 hidden, affine, 64x64x3."""
  from mapflow.flows import GlowConfig
  return GlowConfig(image_shape=(64, 64, 3), num_levels=4, steps_per_level=8,
                    hidden_channels=512, coupling="affine", num_bits=5)


def _device(device):
  if device is not None:
    return torch.device(device)
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device):
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def map_step_fns(kind: str, config=None, batch: Optional[int] = None, *,
                 params=None, lr: float = 0.03, weight: Optional[float] = None,
                 m: int = 2000, device=None,
                 seed: int = 0) -> Tuple[Callable[[], Tensor], int]:
  """One MAP recovery step in PyTorch; returns ``(step, param_count)``.

  ``kind``:

  * "realnvp_sinusoidal": the RealNVP (default ``realnvp_fmnist_cpu``) on
    SINUSOIDAL denoising (noise scale 0.4), ``mapflow.objectives.map_loss``:
    ``-log N(y - G(z); 0, std_map) - beta (log N(z) - log|det dG/dz|)``;
    ``weight`` is beta (default 0.5).  Default batch 16.
  * "glow_cs": the Glow (default ``glow_cs_config()``) on Gaussian
    compressed sensing with ``m`` rows, ``A_ij ~ N(0, 1/m)`` acting on the
    image flattened in mapflow's (H, W, C) order,
    ``mapflow.objectives.asim_loss``: ``||y - A G(z)||^2 + gamma ||z||``;
    ``weight`` is gamma (default 0.1).  Default batch 6.

  ``step()`` runs: forward ``z -> x``, the per-example loss, backward of its
  sum to ``z`` (the flow's params are frozen), one ``torch.optim.Adam(lr)``
  update of ``z``; it returns the summed loss without synchronising (call
  ``step.sync()`` before reading a clock).  ``params``: mapflow params to
  load (else a random init, data-dependent for Glow's ActNorm: the speed
  does not depend on the values).  ``step.model``, ``step.z`` and
  ``step.losses()`` (per-example, no grad), the measurements ``step.y``
  and (CS) the matrix ``step.a``, columns in (C, H, W) order, are there to
  inspect.
  """
  from mapflow import flows as mf_flows
  from mapflow import noise as mf_noise
  if kind not in MAP_KINDS:
    raise ValueError(f"kind: got {kind!r}, expected one of {MAP_KINDS}")
  dev = _device(device)
  torch.manual_seed(seed)
  rng = np.random.RandomState(seed)
  if kind == "realnvp_sinusoidal":
    config = config or mf_flows.preset("realnvp_fmnist_cpu")
    batch = batch or 16
  else:
    config = config or glow_cs_config()
    batch = batch or 6
  model = from_config(config).to(dev)
  h, w, c = config.image_shape
  x_true = torch.as_tensor(rng.uniform(0.05, 0.95, (batch, c, h, w)),
                           dtype=torch.float32, device=dev)
  if params is not None:
    load_mapflow_params(model, params)
  elif kind == "glow_cs":
    model.data_init(x_true)
  model.eval()
  model.requires_grad_(False)

  if kind == "realnvp_sinusoidal":
    beta = 0.5 if weight is None else float(weight)
    std = np.asarray(mf_noise.sinusoidal_std_map((h, w, c), 0.4))
    std = torch.as_tensor(np.array(np.transpose(std, (2, 0, 1))[None]),
                          device=dev)
    y = x_true + std * torch.randn_like(x_true)
    a = None
    log_std = torch.log(std)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def losses(z):
      x, logdet = model(z)
      r = y - x
      nll = -_sum3(-0.5 * torch.square(r / std) - log_std - half_log_2pi)
      return nll - beta * (standard_normal_log_prob(z) - logdet)
  else:
    gamma = 0.1 if weight is None else float(weight)
    d = h * w * c
    a = rng.randn(m, d).astype(np.float32) / math.sqrt(m)
    # Columns reordered once from (H, W, C) to (C, H, W), so NCHW images
    # need no transpose per step and A is mapflow's matrix.
    a = np.ascontiguousarray(a.reshape(m, h, w, c).transpose(0, 3, 1, 2)
                             .reshape(m, d))
    a = torch.as_tensor(a, device=dev)
    y = x_true.reshape(batch, -1) @ a.T

    def losses(z):
      x, _ = model(z)
      r = y - x.reshape(batch, -1) @ a.T
      return (torch.sum(r * r, dim=1)
              + gamma * torch.sqrt(_sum3(z * z) + 1e-12))

  z = torch.zeros((batch, c, h, w), device=dev, requires_grad=True)
  opt = torch.optim.Adam([z], lr=lr)

  def step():
    opt.zero_grad(set_to_none=True)
    total = losses(z).sum()
    total.backward()
    opt.step()
    return total.detach()

  def per_example():
    with torch.no_grad():
      return losses(z)

  step.model, step.z, step.losses = model, z, per_example
  step.y, step.a = y, a
  step.sync = lambda: _sync(dev)
  return step, model.param_count()


def train_step_fn(config=None, batch=64, *, lr: float = 1e-3,
                  max_grad_norm: float = 100.0, wn_l2: float = 5e-5,
                  halve_every: int = 4000, device=None,
                  seed: int = 0) -> Tuple[Callable[..., Tensor], int]:
  """One training step of the RealNVP (default ``realnvp_fmnist_cpu``), as
  ``mapflow.training.make_train_step``; returns ``(step, param_count)``.

  Loss ``mean bits/dim + wn_l2 * sum(weight-norm scales^2)`` of the batch
  dequantised uniformly afresh each step; gradients clipped to global norm
  ``max_grad_norm``; Adam, lr halved every ``halve_every`` steps.
  ``batch``: a batch size (random uint8 images) or a uint8 batch, NHWC as
  mapflow's.  ``step(x_uint8=None)`` trains on ``x_uint8`` (NCHW, uint8)
  or the stored batch and returns the loss without synchronising
  (``step.sync()``).
  """
  from mapflow import flows as mf_flows
  dev = _device(device)
  torch.manual_seed(seed)
  config = config or mf_flows.preset("realnvp_fmnist_cpu")
  model = from_config(config).to(dev).train()
  h, w, c = config.image_shape
  if isinstance(batch, (int, np.integer)):
    data = np.random.RandomState(seed).randint(0, 256, (int(batch), h, w, c))
    batch = data.astype(np.uint8)
  x_stored = nhwc_to_nchw(np.asarray(batch, np.uint8)).to(dev)
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  sched = torch.optim.lr_scheduler.StepLR(opt, halve_every, 0.5)
  params = list(model.parameters())

  def step(x_uint8: Optional[Tensor] = None):
    xb = x_stored if x_uint8 is None else x_uint8
    opt.zero_grad(set_to_none=True)
    loss = model.bits_per_dim(xb).mean() + wn_l2 * model.weightnorm_l2()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    sched.step()
    return loss.detach()

  step.model = model
  step.sync = lambda: _sync(dev)
  return step, model.param_count()
