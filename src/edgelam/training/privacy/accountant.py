"""The stateful privacy accountant: one per data holder (in split FedFT, one per device).

The training loop calls :meth:`PrivacyAccountant.step` explicitly, once per step in which the
holder's data is used, with the noise multiplier and sampling of that step; epsilon at any
delta is read with :meth:`PrivacyAccountant.get_epsilon`. The math lives in
:mod:`edgelam.training.privacy.analysis`; this class only composes.

>>> acc = PrivacyAccountant()
>>> acc.step(noise_multiplier=1.0, sample_rate=0.01, count=1000)
>>> round(acc.get_epsilon(1e-5), 4), acc.steps
(2.1014, 1000)
>>> again = PrivacyAccountant()
>>> again.load_state_dict(acc.state_dict())
>>> again.get_epsilon(1e-5) == acc.get_epsilon(1e-5)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from dp_accounting.pld import pld_privacy_accountant

from edgelam.config import ConfigError
from edgelam.training.privacy.analysis import (
    DEFAULT_ORDERS,
    ROW_ORDERS,
    AccountantKind,
    Relation,
    Sampling,
    check_parameters,
    epsilon_from_rdp,
    gaussian_event,
    rdp_curve,
)

__all__ = ["PrivacyAccountant"]


class PrivacyAccountant:
    """Composes subsampled Gaussian steps; RDP (default) or PLD.

    Args:
        accountant: ``rdp`` (any event of :func:`~edgelam.training.privacy.analysis.rdp_curve`)
            or ``pld`` (Poisson sampling with add/remove adjacency only).
        relation: the adjacency every step is analysed under: ``add_remove`` (a noisy sum,
            DP-SGD) or ``replace_one`` (the dataset size is public; needed for fixed-size
            sampling and for per-sample releases, as in split FedFT).
        orders: RDP orders (default: dp-accounting's for add/remove, the cheaper
            :data:`~edgelam.training.privacy.analysis.ROW_ORDERS` for replace-one).

    Raises:
        ConfigError: an unknown accountant or relation, or PLD with replace-one.
    """

    def __init__(
        self,
        accountant: AccountantKind = "rdp",
        relation: Relation = "add_remove",
        orders: tuple[float, ...] | None = None,
    ) -> None:
        if accountant not in ("rdp", "pld"):
            raise ConfigError(f"accountant: {accountant!r} is not one of ['rdp', 'pld']")
        if relation not in ("add_remove", "replace_one"):
            raise ConfigError(f"relation: {relation!r} is not one of ['add_remove', 'replace_one']")
        if accountant == "pld" and relation != "add_remove":
            raise ConfigError(
                "accountant: 'pld' supports add/remove adjacency (Poisson sampling) only; "
                "use 'rdp' for replace-one"
            )
        self.accountant, self.relation = accountant, relation
        default = DEFAULT_ORDERS if relation == "add_remove" else ROW_ORDERS
        self.orders = tuple(float(a) for a in (orders or default))
        self.history: list[list[Any]] = []
        """``[noise_multiplier, sample_rate, sampling, count, dataset_size]`` per run of equal
        steps, in order."""
        self._reset()

    def _reset(self) -> None:
        self.history = []
        self._rdp = np.zeros(len(self.orders))
        self._pld = pld_privacy_accountant.PLDAccountant() if self.accountant == "pld" else None

    @property
    def steps(self) -> int:
        """Number of steps composed so far."""
        return sum(entry[3] for entry in self.history)

    def step(
        self,
        noise_multiplier: float,
        sample_rate: float,
        sampling: Sampling = "poisson",
        count: int = 1,
        dataset_size: int | None = None,
    ) -> None:
        """Compose ``count`` steps of the subsampled Gaussian mechanism.

        Args:
            noise_multiplier: noise std / sensitivity under :attr:`relation` (0: no noise,
                epsilon becomes infinite).
            sample_rate: ``q`` (Poisson inclusion probability, or ``m / n``).
            sampling: ``poisson`` or ``fixed`` (without replacement; replace-one only).
            count: number of identical steps.
            dataset_size: ``n``; needed by ``fixed`` and by ``poisson`` under replace-one.

        Raises:
            ConfigError: invalid values or an event this accountant cannot compose.
        """
        check_parameters(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=count)
        if self._pld is not None:
            if sampling != "poisson":
                raise ConfigError("sampling: the PLD accountant supports 'poisson' only")
            if noise_multiplier > 0:
                self._pld.compose(gaussian_event(noise_multiplier, sample_rate), int(count))
            else:
                self._rdp[:] = np.inf  # marks the ledger as non-private
        else:
            curve = rdp_curve(noise_multiplier, sample_rate, sampling=sampling,
                              relation=self.relation, dataset_size=dataset_size,
                              orders=self.orders)  # fmt: skip
            self._rdp = self._rdp + int(count) * curve
        entry = [float(noise_multiplier), float(sample_rate), sampling, int(count), dataset_size]
        if self.history and self.history[-1][:3] + self.history[-1][4:] == entry[:3] + entry[4:]:
            self.history[-1][3] += int(count)
        else:
            self.history.append(entry)

    def get_epsilon(self, delta: float) -> float:
        """Epsilon of everything composed so far, at ``delta`` (0 before any step)."""
        check_parameters(delta=delta)
        if not self.history:
            return 0.0
        if self._pld is not None:
            return math.inf if np.isinf(self._rdp).any() else float(self._pld.get_epsilon(delta))
        return epsilon_from_rdp(self.orders, self._rdp, delta)[0]

    @property
    def rdp(self) -> np.ndarray:
        """The composed RDP curve ``[len(orders)]`` (RDP accountant)."""
        return self._rdp.copy()

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: kind, relation, orders, history and (RDP) the composed curve."""
        return {
            "accountant": self.accountant,
            "relation": self.relation,
            "orders": list(self.orders),
            "history": [list(entry) for entry in self.history],
            "rdp": [float(r) for r in self._rdp],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (PLD: the history is composed again).

        Raises:
            ConfigError: the state belongs to another kind of accountant.
        """
        mine = (self.accountant, self.relation, list(self.orders))
        theirs = (state["accountant"], state["relation"], list(state["orders"]))
        if mine != theirs:
            raise ConfigError(f"accountant state: saved as {theirs[:2]}, loading into {mine[:2]}")
        self._reset()
        if self._pld is not None:
            for sigma, q, sampling, count, n in state["history"]:
                self.step(sigma, q, sampling, count, n)
        self.history = [list(entry) for entry in state["history"]]
        self._rdp = np.array(state["rdp"], dtype=np.float64)
