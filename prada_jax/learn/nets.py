"""Networks of paper section 5.1.1 (Flax linen).

- `PolicyNet` pi_theta and `ValueNet` V_phi: four dense layers with ReLU, hidden 512-256-512; pi outputs the
  logits of a softmax over {0: SLM, 1: LLM}, V a scalar.
- `AuxRegressor` A_omega (with FiLM) and D_psi (without): input BatchNorm, optional FiLM (dense 256 -> SiLU ->
  dense 2 x input width, giving a scale and a shift of the input features), then dense 256 -> SiLU -> dense 512
  -> SiLU -> dense 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

PI_HIDDEN = (512, 256, 512)
AUX_HIDDEN = (256, 512)
FILM_HIDDEN = 256


class MLP(nn.Module):
    """Dense layers `hidden` with ReLU, then a dense output layer of width `out`."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class PolicyNet(nn.Module):
    """pi_theta(a | x): logits over {SLM, LLM}."""

    hidden: Sequence[int] = PI_HIDDEN

    @nn.compact
    def __call__(self, x):
        return MLP(self.hidden, 2)(x)


class ValueNet(nn.Module):
    """V_phi(x): scalar state value."""

    hidden: Sequence[int] = PI_HIDDEN

    @nn.compact
    def __call__(self, x):
        return MLP(self.hidden, 1)(x)[..., 0]


class FiLM(nn.Module):
    """Feature-wise affine modulation of x by itself: x * (1 + scale) + shift, [scale, shift] = g(x)."""

    hidden: int = FILM_HIDDEN

    @nn.compact
    def __call__(self, x):
        h = nn.silu(nn.Dense(self.hidden)(x))
        scale, shift = jnp.split(nn.Dense(2 * x.shape[-1])(h), 2, axis=-1)
        return x * (1.0 + scale) + shift


class AuxRegressor(nn.Module):
    """A_omega (use_film=True) or D_psi (use_film=False): BatchNorm -> [FiLM] -> 256 -> SiLU -> 512 -> SiLU -> 1."""

    use_film: bool = True
    hidden: Sequence[int] = AUX_HIDDEN
    film_hidden: int = FILM_HIDDEN

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        if self.use_film:
            x = FiLM(self.film_hidden)(x)
        for width in self.hidden:
            x = nn.silu(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]
