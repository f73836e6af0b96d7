r"""Layers of the graph beamformers: bipartite message passing, beam heads, power projection.

All of them are permutation-equivariant in users and in antennas and take any ``K`` and ``M``
(see :mod:`edgelam.models.beamformers` for the model they make up).

Beam heads (``GraphBeamformerConfig.head``) turn the final edge features ``E [B, K, M, D]`` into
per-edge complex beam weights :math:`w_{m,k}`:

* ``"direct"``: :math:`w_{m,k} = o_{k,m}` (two reals per edge);
* ``"mrt-gated"``: :math:`w_{m,k} = a_{k,m} \hat h_{k,m}^* + b_{k,m}` with complex per-edge
  ``a, b``; starts at maximum-ratio transmission (``a = 1``, ``b = 0``);
* ``"dual"``: per-edge gates on beams of the optimal structure. By uplink-downlink duality,
  every sum-rate-optimal precoder (sum-power constraint) has beams
  :math:`w_k = \sqrt{p_k}\, u_k / \|u_k\|` with
  :math:`u_k = (I_M/\rho + \sum_j q_j \hat h_j^H \hat h_j)^{-1} \hat h_k^H`
  (Björnson, Bengtsson, Ottersten, IEEE SPM 2014), for some power fractions ``p`` and dual
  uplink powers ``q`` on the simplex (:math:`\rho`: effective SNR). A user-level readout of the
  graph features gives ``p`` and ``q`` (a softmax over users, so any ``K``), and the edge head
  then emits :math:`w_{m,k} = a_{k,m} [w_k]_m + b_{k,m}/\sqrt{KM}`. It starts at
  ``p = q = 1/K``, ``a = 1``, ``b = 0``: regularised zero forcing with equal beam powers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BeamHead", "BipartiteLayer", "PowerProjection", "aggregate", "dual_beams"]

HEADS = ("dual", "mrt-gated", "direct")


def aggregate(E: torch.Tensor, dim: int, how: str) -> torch.Tensor:
    """Symmetric aggregation of edge features over ``dim``: mean, max, or both concatenated.

    >>> aggregate(torch.tensor([[1.0], [3.0]]), 0, "mean+max").tolist()
    [2.0, 3.0]
    """
    parts = []
    if how in ("mean", "mean+max"):
        parts.append(E.mean(dim))
    if how in ("max", "mean+max"):
        parts.append(E.amax(dim))
    return torch.cat(parts, dim=-1)


class BipartiteLayer(nn.Module):
    r"""One message-passing layer over the complete user-antenna bipartite graph.

    .. math::

        E_{km} \leftarrow E_{km} + \mathrm{MLP}\big(\mathrm{LN}(E_{km}) W_e + u_k W_u + a_m W_a
        + g W_g\big),\quad u_k = \mathrm{agg}_{m'} E_{km'},\ a_m = \mathrm{agg}_{k'} E_{k'm},\
        g = \mathrm{agg}_{k',m'} E_{k'm'}

    (``LN`` applied before aggregating). The user and antenna messages are computed once per
    node and broadcast to its edges.

    Shapes:
        E: ``[B, K, M, D]`` -> ``[B, K, M, D]``.
    """

    def __init__(self, hidden: int, aggregation: str) -> None:
        super().__init__()
        pooled = hidden * (2 if aggregation == "mean+max" else 1)
        self.aggregation = aggregation
        self.norm = nn.LayerNorm(hidden)
        self.edge = nn.Linear(hidden, 2 * hidden)
        self.user = nn.Linear(pooled, 2 * hidden, bias=False)
        self.antenna = nn.Linear(pooled, 2 * hidden, bias=False)
        self.graph = nn.Linear(pooled, 2 * hidden, bias=False)
        self.out = nn.Linear(2 * hidden, hidden)

    def forward(self, E: torch.Tensor) -> torch.Tensor:
        x = self.norm(E)
        u = self.user(aggregate(x, 2, self.aggregation))[:, :, None]  # [B, K, 1, 2D]
        a = self.antenna(aggregate(x, 1, self.aggregation))[:, None]  # [B, 1, M, 2D]
        g = self.graph(aggregate(x.flatten(1, 2), 1, self.aggregation))[:, None, None]
        return E + self.out(nn.functional.gelu(self.edge(x) + u + a + g))


class PowerProjection(nn.Module):
    """Scale each precoder onto the sum-power constraint with equality: ``||W||_F^2 = P``.

    Using the full power is optimal for the sum rate (scaling ``W`` up never lowers an SINR).

    Shapes:
        W: ``[B, M, K]`` complex; power: scalar or ``[B]`` -> ``[B, M, K]``.

    >>> W = PowerProjection()(torch.ones(2, 3, 2, dtype=torch.complex64), 4.0)
    >>> [round(p, 5) for p in torch.linalg.vector_norm(W, dim=(1, 2)).square().tolist()]
    [4.0, 4.0]
    """

    def forward(self, W: torch.Tensor, power: float | torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(power, dtype=W.real.dtype, device=W.device).reshape(-1, 1, 1)
        norm = torch.linalg.vector_norm(W, dim=(1, 2), keepdim=True).clamp_min(1e-30)
        return W * (p.sqrt() / norm)


def dual_beams(
    h: torch.Tensor, uplink: torch.Tensor, downlink: torch.Tensor, inv_snr: torch.Tensor
) -> torch.Tensor:
    r"""Beams of the optimal structure for dual powers ``q`` and beam powers ``p``.

    :math:`U = (I_M/\rho + h^H Q h)^{-1} h^H = h^H (I_K/\rho + Q h h^H)^{-1}` (the ``K x K`` form
    is solved), columns normalised, then scaled by :math:`\sqrt{p_k}`.

    Args:
        h: channels (any scale; RMS-normalised ones in the beamformer).
        uplink: dual uplink powers ``q`` (fractions of the total).
        downlink: beam powers ``p`` (fractions of the total).
        inv_snr: :math:`1/\rho`, noise power over transmit power and channel gain.

    Shapes:
        h: ``[B, K, M]`` complex; uplink, downlink: ``[B, K]``; inv_snr: ``[B]`` ->
        ``[B, M, K]`` complex with column norms :math:`\sqrt{p_k}`.

    >>> h = torch.eye(2, 3, dtype=torch.complex64)[None]   # orthogonal users: MRT is optimal
    >>> q = p = torch.full((1, 2), 0.5)
    >>> W = dual_beams(h, q, p, torch.ones(1))
    >>> torch.allclose(W.abs().square().sum(1), p), torch.allclose(W.abs()[0, 2], torch.zeros(2))
    (True, True)
    """
    K = h.shape[1]
    gram = h @ h.mH  # [B, K, K]
    eye = torch.eye(K, dtype=h.dtype, device=h.device)
    system = inv_snr.to(h.dtype)[:, None, None] * eye + uplink.to(h.dtype)[:, :, None] * gram
    U = h.mH @ torch.linalg.inv(system)  # [B, M, K]
    norms = torch.linalg.vector_norm(U, dim=1, keepdim=True).clamp_min(1e-30)
    return U / norms * downlink.sqrt().to(h.dtype)[:, None, :]


class BeamHead(nn.Module):
    """Final graph features to per-edge complex beam weights (see the module docstring).

    Args:
        hidden: edge feature width ``D``.
        aggregation: how user features are pooled from their edges (``"dual"`` only).
        kind: ``"dual"``, ``"mrt-gated"`` or ``"direct"``.

    Shapes:
        E: ``[B, K, M, D]``; basis: ``[B, K, M]`` complex (RMS 1); inv_snr: ``[B]`` ->
        ``[B, M, K]`` complex (not power-normalised).
    """

    def __init__(self, hidden: int, aggregation: str, kind: str) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head: {kind!r} is not one of {list(HEADS)}")
        self.kind, self.aggregation = kind, aggregation
        outputs = 2 if kind == "direct" else 4
        self.edge = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, outputs)
        )
        if kind != "direct":  # start at the structured beams: gate a = 1, offset b = 0
            with torch.no_grad():
                self.edge[-1].weight.mul_(0.1)
                self.edge[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        if kind == "dual":
            pooled = hidden * (2 if aggregation == "mean+max" else 1)
            self.user = nn.Sequential(
                nn.LayerNorm(pooled), nn.Linear(pooled, hidden), nn.GELU(), nn.Linear(hidden, 2)
            )
            with torch.no_grad():  # start at q = p = 1/K
                self.user[-1].weight.mul_(0.1)
                self.user[-1].bias.zero_()

    def forward(self, E: torch.Tensor, basis: torch.Tensor, inv_snr: torch.Tensor) -> torch.Tensor:
        out = self.edge(E)
        if self.kind == "direct":
            return torch.complex(out[..., 0], out[..., 1]).transpose(1, 2).to(basis.dtype)
        gate = torch.complex(out[..., 0], out[..., 1]).to(basis.dtype)
        offset = torch.complex(out[..., 2], out[..., 3]).to(basis.dtype)
        if self.kind == "mrt-gated":
            return (gate * basis.conj() + offset).transpose(1, 2)
        logits = self.user(aggregate(E, 2, self.aggregation))  # [B, K, 2]
        uplink, downlink = logits.softmax(dim=1).unbind(-1)
        beams = dual_beams(basis, uplink, downlink, inv_snr).transpose(1, 2)  # [B, K, M]
        K, M = basis.shape[1:]
        return (gate * beams + offset / (K * M) ** 0.5).transpose(1, 2)
