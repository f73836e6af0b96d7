r"""The discrete (Bernoulli) diffusion process over deployment indicators, D3PM-style.

Each entry :math:`x_{s,n} \in \{0, 1\}` of the deployment indicator (microservice :math:`s`
deployed on node :math:`n`) is noised independently. One forward step keeps the bit with
probability :math:`1 - \beta_t` and otherwise redraws it from the stationary Bernoulli
distribution :math:`m = (1 - p, p)`:

.. math::

    Q_t = (1 - \beta_t) I + \beta_t \mathbf{1} m^\top, \qquad
    \bar Q_t = Q_1 \cdots Q_t = \bar\alpha_t I + (1 - \bar\alpha_t) \mathbf{1} m^\top,
    \qquad \bar\alpha_t = \prod_{i \le t} (1 - \beta_i),

so the closed form of the noised marginal is

.. math::

    q(x_t = 1 \mid x_0) = \bar\alpha_t x_0 + (1 - \bar\alpha_t) p,

and :math:`x_T` is (almost) independent of :math:`x_0`: Bernoulli(:math:`p`). With
:math:`p = 1/2` this is DIFUSCO's uniform-noise Bernoulli diffusion; here :math:`p` defaults to
the density of ones in the training labels (deployment indicators are sparse), the "marginal"
stationary distribution of Austin et al. (D3PM). The schedule is the cosine one,
:math:`\bar\alpha_t = f(t)/f(0)` with :math:`f(t) = \cos^2\big(\frac{t/T + 0.008}{1.008}
\frac{\pi}{2}\big)`.

The family is closed under composition: from step :math:`s` to :math:`t > s` the transition is
:math:`\alpha_{t|s} I + (1 - \alpha_{t|s}) \mathbf{1} m^\top` with :math:`\alpha_{t|s} =
\bar\alpha_t / \bar\alpha_s`, so sampling can skip steps (DIFUSCO's few-step inference). The
reverse step with the denoiser's estimate :math:`\hat p = p_\theta(x_0 = 1 \mid x_t)` is

.. math::

    p_\theta(x_s = k \mid x_t) \propto q(x_t \mid x_s = k)
        \big[\bar\alpha_s \hat p_k + (1 - \bar\alpha_s) m_k\big],

with :math:`\hat p_1 = \hat p`, :math:`\hat p_0 = 1 - \hat p` (Austin et al., eq. 4).

>>> d = BernoulliDiffusion(num_steps=1000, stationary=0.2)
>>> round(float(d.alpha_bar[0]), 4), round(float(d.alpha_bar[1000]), 4)
(1.0, 0.0)
>>> d.q_marginal(torch.tensor([0.0, 1.0]), torch.tensor([1000, 1000])).tolist()
[0.20000000298023224, 0.20000000298023224]
"""

from __future__ import annotations

import math

import torch

from edgelam.config import ConfigError

__all__ = ["BernoulliDiffusion", "cosine_alpha_bar"]


def cosine_alpha_bar(num_steps: int, offset: float = 0.008) -> torch.Tensor:
    r"""The cosine schedule :math:`\bar\alpha_t`, ``t = 0..T`` (float64, ``[T + 1]``).

    Args:
        num_steps: ``T``.
        offset: The small shift that keeps :math:`\beta_1` away from zero.

    Returns:
        :math:`\bar\alpha_t` for ``t = 0..T``, decreasing from 1 to 0.

    >>> a = cosine_alpha_bar(4)
    >>> bool((a[1:] < a[:-1]).all()), float(a[0]), float(a[-1]) < 1e-12
    (True, 1.0, True)
    """
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    a = f / f[0]
    a[-1] = 0.0  # exactly stationary at T (cos(pi/2)^2 is 1e-33, not 0, in floating point)
    return a


class BernoulliDiffusion:
    """Forward noising, closed-form marginals and reverse steps of the Bernoulli diffusion.

    Args:
        num_steps: Number of diffusion steps ``T`` (training draws ``t`` in ``1..T``).
        stationary: ``p``, the probability of a one under the stationary distribution.

    Raises:
        ConfigError: ``num_steps < 1`` or ``stationary`` outside (0, 1).
    """

    def __init__(self, num_steps: int = 1000, stationary: float = 0.5) -> None:
        if num_steps < 1:
            raise ConfigError(f"num_steps: must be >= 1, got {num_steps}")
        if not 0 < stationary < 1:
            raise ConfigError(f"stationary: must be in (0, 1), got {stationary}")
        self.num_steps = num_steps
        self.stationary = float(stationary)
        self.alpha_bar = cosine_alpha_bar(num_steps)

    def _alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """:math:`\\bar\\alpha_t` broadcast against ``like`` (``t`` indexes its leading dim)."""
        a = self.alpha_bar.to(like.device)[t.long()].to(like.dtype)
        return a.reshape(a.shape + (1,) * (like.dim() - a.dim()))

    def q_marginal(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:math:`q(x_t = 1 \\mid x_0)` in closed form.

        Args:
            x0: Clean bits (or probabilities of a one), float ``[B, ...]``.
            t: Steps in ``0..T``, int ``[B]``.

        Returns:
            Probability of a one at step ``t``, float, shape of ``x0``.
        """
        a = self._alpha_bar(t, x0)
        return a * x0 + (1 - a) * self.stationary

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw :math:`x_t \\sim q(x_t \\mid x_0)`.

        Shapes:
            x0: ``[B, ...]`` float in {0, 1}; t: ``[B]`` int; returns ``[B, ...]`` float in {0, 1}.
        """
        prob = self.q_marginal(x0, t)
        u = torch.rand(prob.shape, generator=generator, device=prob.device, dtype=prob.dtype)
        return (u < prob).to(x0.dtype)

    def posterior_prob(self, x_t: torch.Tensor, p0: torch.Tensor, t: int, s: int) -> torch.Tensor:
        """:math:`p_\\theta(x_s = 1 \\mid x_t)` for ``0 <= s < t`` given :math:`\\hat p`.

        Args:
            x_t: Current bits, float ``[...]`` in {0, 1}.
            p0: The denoiser's :math:`p_\\theta(x_0 = 1 \\mid x_t)`, float, shape of ``x_t``.
            t: Current step.
            s: Target step, ``0 <= s < t``.

        Returns:
            Probability that :math:`x_s = 1`, shape of ``x_t``. For ``s = 0`` it is ``p0``.

        Raises:
            ValueError: not ``0 <= s < t <= T``.
        """
        if not 0 <= s < t <= self.num_steps:
            raise ValueError(f"need 0 <= s < t <= {self.num_steps}, got s={s}, t={t}")
        a_s = float(self.alpha_bar[s])
        a_ts = float(self.alpha_bar[t] / self.alpha_bar[s]) if a_s > 0 else 0.0
        p = self.stationary
        # q(x_t | x_s = k) for k = 1 and k = 0
        like1 = a_ts * x_t + (1 - a_ts) * (p * x_t + (1 - p) * (1 - x_t))
        like0 = a_ts * (1 - x_t) + (1 - a_ts) * (p * x_t + (1 - p) * (1 - x_t))
        prior1 = a_s * p0 + (1 - a_s) * p
        prior0 = a_s * (1 - p0) + (1 - a_s) * (1 - p)
        w1, w0 = like1 * prior1, like0 * prior0
        return w1 / (w1 + w0).clamp_min(1e-30)

    def timesteps(self, steps: int) -> list[int]:
        """``steps + 1`` decreasing steps from ``T`` to 0, evenly spaced (skipping schedule).

        >>> BernoulliDiffusion(num_steps=1000).timesteps(4)
        [1000, 750, 500, 250, 0]
        """
        if not 1 <= steps <= self.num_steps:
            raise ConfigError(f"steps: must be in 1..{self.num_steps}, got {steps}")
        return [round(self.num_steps * (steps - i) / steps) for i in range(steps + 1)]
