"""What the diffusion denoiser sees of an instance: node, microservice and pair tokens.

Every feature is a ratio or a logarithm of physical quantities, so that instances of any size
(and any total load) map to numbers of the same scale; nothing depends on node order or on how
many nodes there are, which is what lets a model trained on 6-12 nodes run on 50.

* node tokens ``[N, NODE_FEATURES]``: log compute, log memory, compute and memory relative to the
  instance mean, request rate and work (FLOP/s) originating at the node relative to the mean,
  local work over the node's own compute, the node's degree, mean delay and mean 1 MB transfer
  time to the other nodes (log ms, and relative to the instance mean);
* microservice tokens ``[S, SERVICE_FEATURES]``: whether any demand needs it, log memory, memory
  relative to the mean node, its demanded work as a share of all compute and over the fastest
  node, the share of requests using it, user input and output bytes per request (log), kind
  one-hot;
* pair features ``[S, N, PAIR_FEATURES]``: whether ``s`` fits in ``n`` 's memory, memory share,
  the demand for ``s`` originating at ``n`` (rate relative to the mean class rate per node, and
  its work over ``n`` 's compute), ``s`` 's total work over ``n`` 's compute (how many such
  nodes it would fill) and the log of its per-request service time on ``n``;
* node-pair features ``[N, N, EDGE_FEATURES]``: path delay and 1 MB transfer time (log ms), a
  direct-link flag, and the identity; they bias the node attention (graph structure).

>>> from edgelam.inference.instance import generate_instance
>>> f = instance_features(generate_instance(6, seed=0))
>>> tuple(f.node.shape), tuple(f.service.shape), tuple(f.pair.shape), tuple(f.edge.shape)
((6, 11), (16, 13), (16, 6, 6), (6, 6, 4))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgelam.inference.catalog import KINDS
from edgelam.inference.instance import Instance

__all__ = [
    "EDGE_FEATURES",
    "NODE_FEATURES",
    "PAIR_FEATURES",
    "SERVICE_FEATURES",
    "InstanceFeatures",
    "collate_features",
    "instance_features",
    "needed_services",
]

NODE_FEATURES = 11
SERVICE_FEATURES = 8 + len(KINDS)
PAIR_FEATURES = 6
EDGE_FEATURES = 4


@dataclass
class InstanceFeatures:
    """The denoiser's conditioning tensors for a batch (or one instance without the batch dim).

    Shapes:
        node: ``[B, N, NODE_FEATURES]``; service: ``[B, S, SERVICE_FEATURES]``;
        pair: ``[B, S, N, PAIR_FEATURES]``; edge: ``[B, N, N, EDGE_FEATURES]``;
        node_mask: ``[B, N]`` bool (False: padding); service_mask: ``[B, S]`` bool.
    """

    node: torch.Tensor
    service: torch.Tensor
    pair: torch.Tensor
    edge: torch.Tensor
    node_mask: torch.Tensor
    service_mask: torch.Tensor

    def expand(self, batch: int) -> InstanceFeatures:
        """One instance's features (no batch dim) repeated ``batch`` times (views, no copy)."""
        return InstanceFeatures(
            *(
                t.unsqueeze(0).expand(batch, *t.shape)
                for t in (self.node, self.service, self.pair, self.edge)
            ),
            self.node_mask.unsqueeze(0).expand(batch, -1),
            self.service_mask.unsqueeze(0).expand(batch, -1),
        )

    def permute_nodes(self, perm: torch.Tensor) -> InstanceFeatures:
        """The same instance with nodes reordered: new node ``i`` is old node ``perm[i]``."""
        return InstanceFeatures(
            self.node[..., perm, :],
            self.service,
            self.pair[..., perm, :],
            self.edge[..., perm, :, :][..., perm, :],
            self.node_mask[..., perm],
            self.service_mask,
        )


def needed_services(inst: Instance) -> np.ndarray:
    """Bool ``[S]`` (catalog order): the microservices some demand's flow uses."""
    used = {s for d in inst.demands for s in inst.catalog.flows[d.flow].services()}
    return np.array([s in used for s in inst.catalog.services])


def _log(x: np.ndarray | float) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0))


def instance_features(inst: Instance) -> InstanceFeatures:
    """The conditioning tensors of one instance (float32, no batch dimension).

    Args:
        inst: The deployment instance.

    Returns:
        Features with shapes ``[N, F]``, ``[S, F]``, ``[S, N, F]``, ``[N, N, F]`` and all-True masks.
    """
    cat = inst.catalog
    services = list(cat.services)
    index = {s: i for i, s in enumerate(services)}
    n_nodes, n_services = len(inst.nodes), len(services)
    flops = np.array([x.flops for x in inst.nodes])
    memory = np.array([x.memory_mb for x in inst.nodes])
    total_rate = sum(d.rate for d in inst.demands)
    mean_class_rate = total_rate / n_nodes
    # demand per (service, origin node): request rate and work (FLOP/s)
    rate_sn = np.zeros((n_services, n_nodes))
    work_sn = np.zeros((n_services, n_nodes))
    gflops_per_request = np.zeros(n_services)  # rate-weighted mean over the requests using s
    in_bytes = np.zeros(n_services)
    out_bytes = np.zeros(n_services)
    node_rate = np.zeros(n_nodes)
    node_work = np.zeros(n_nodes)
    for d in inst.demands:
        flow = cat.flows[d.flow]
        node_rate[d.node] += d.rate
        for s in flow.services():
            rate_sn[index[s], d.node] += d.rate
        for st in flow.stages:
            i = index[st.service]
            g = cat.stage_gflops(d.flow, st.id)
            work_sn[i, d.node] += d.rate * g * 1e9
            node_work[d.node] += d.rate * g * 1e9
            gflops_per_request[i] += d.rate * g
            in_bytes[i] += d.rate * st.user_input_bytes
            out_bytes[i] += d.rate * cat.stage_output_bytes(d.flow, st.id)
    rate_s = rate_sn.sum(1)
    work_s = work_sn.sum(1)
    safe_rate = np.maximum(rate_s, 1e-12)
    gflops_per_request /= safe_rate
    in_bytes /= safe_rate
    out_bytes /= safe_rate
    needed = rate_s > 0

    transfer = inst.path_delay + 8e6 * inst.path_sec_per_bit  # 1 MB, seconds
    off = ~np.eye(n_nodes, dtype=bool)
    mean_delay = (inst.path_delay * off).sum(1) / max(n_nodes - 1, 1)
    mean_transfer = (transfer * off).sum(1) / max(n_nodes - 1, 1)
    degree = np.zeros(n_nodes)
    direct = np.zeros((n_nodes, n_nodes))
    for link in inst.links:
        degree[link.a] += 1
        degree[link.b] += 1
        direct[link.a, link.b] = direct[link.b, link.a] = 1.0

    node = np.stack(
        [
            np.log10(flops / 1e13),
            np.log10(memory / 1e4),
            flops / flops.mean(),
            memory / memory.mean(),
            node_rate / mean_class_rate,
            node_work / max(node_work.mean(), 1e-12),
            node_work / flops,
            degree / 4.0,
            _log(mean_delay * 1e3),
            _log(mean_transfer * 1e3),
            mean_transfer / max(mean_transfer.mean(), 1e-12),
        ],
        axis=-1,
    )
    mem_s = np.array([cat.services[s].memory_mb for s in services])
    kinds = np.zeros((n_services, len(KINDS)))
    for i, s in enumerate(services):
        kinds[i, KINDS.index(cat.services[s].kind)] = 1.0
    service = np.concatenate(
        [
            np.stack(
                [
                    needed.astype(float),
                    np.log10(mem_s / 1e3),
                    mem_s / memory.mean(),
                    work_s / flops.sum() * n_nodes,
                    work_s / flops.max(),
                    rate_s / total_rate,
                    _log(in_bytes / 1e5),
                    _log(out_bytes / 1e5),
                ],
                axis=-1,
            ),
            kinds,
        ],
        axis=-1,
    )
    pair = np.stack(
        [
            (mem_s[:, None] <= memory[None, :]).astype(float),
            np.minimum(mem_s[:, None] / memory[None, :], 2.0),
            rate_sn / mean_class_rate,
            work_sn / flops[None, :],
            work_s[:, None] / flops[None, :],
            np.log10(np.maximum(gflops_per_request[:, None] * 1e9 / flops[None, :], 1e-6)),
        ],
        axis=-1,
    )
    edge = np.stack(
        [_log(inst.path_delay * 1e3), _log(transfer * 1e3), direct, np.eye(n_nodes)], axis=-1
    )
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return InstanceFeatures(
        as_t(node),
        as_t(service),
        as_t(pair),
        as_t(edge),
        torch.ones(n_nodes, dtype=torch.bool),
        torch.ones(n_services, dtype=torch.bool),
    )


def collate_features(items: list[InstanceFeatures]) -> InstanceFeatures:
    """Stack single-instance features into a batch, zero-padding nodes and services.

    Shapes:
        Returns tensors ``[B, N_max, ...]`` / ``[B, S_max, ...]`` with masks marking real entries.
    """
    n_max = max(f.node.shape[0] for f in items)
    s_max = max(f.service.shape[0] for f in items)
    b = len(items)
    out = InstanceFeatures(
        torch.zeros(b, n_max, NODE_FEATURES),
        torch.zeros(b, s_max, SERVICE_FEATURES),
        torch.zeros(b, s_max, n_max, PAIR_FEATURES),
        torch.zeros(b, n_max, n_max, EDGE_FEATURES),
        torch.zeros(b, n_max, dtype=torch.bool),
        torch.zeros(b, s_max, dtype=torch.bool),
    )
    for i, f in enumerate(items):
        n, s = f.node.shape[0], f.service.shape[0]
        out.node[i, :n] = f.node
        out.service[i, :s] = f.service
        out.pair[i, :s, :n] = f.pair
        out.edge[i, :n, :n] = f.edge
        out.node_mask[i, :n] = True
        out.service_mask[i, :s] = True
    return out
