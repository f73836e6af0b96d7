"""Looped tensor parallelism: shard the ONE shared block over K devices; run a training step.

:func:`shard` applies the split to a built :class:`~edgelam.training.looped_tp.model.LoopedLAM`
(the model code knows nothing of it). Device ``k`` gets a :class:`DeviceSlice`: its attention
heads (rows of Q/K/V, the matching columns of the output projection), its FFN columns (rows of
the up-projection, columns of the down-projection) and its embedding columns (columns ``E_k``
of ``input -> E``, the matching columns of ``E -> d``). The edge server keeps a
:class:`ServerPart`: the biases of the row-parallel projections, positions, layer norms and the
head. A device stores one slice of one block, reused at every loop iteration.

Where each op runs (per loop iteration; ``S`` = sum over devices, formed at the server):

============================  =========  ===========================================
op                            where      sent
============================  =========  ===========================================
``a = LN1(x)``                server     ``a`` down to every device ``[B, T, d]``
Q/K/V of its heads, softmax   device k   --
(per head), ``att_k W_o,k``                ``z_k`` up ``[B, T, d]`` (partial sum)
``x += S z_k + b_o``          server     --
``a2 = LN2(x)``               server     ``a2`` down ``[B, T, d]``
up-projection of its          device k   --
columns, GELU, down-partial                ``y_k`` up ``[B, T, d]`` (partial sum)
``x += S y_k + b_down``       server     --
============================  =========  ===========================================

Embedding (once per step): device k computes ``(inputs W_in,k + b_in,k) W_out,k`` and sends the
``[B, T, d]`` partial up; the server adds ``b_out`` and the positions. Raw inputs are only ever
multiplied by split weights on the devices. The head, ``LN_f`` and the loss run at the server;
device 0 sends it the labels of the masked entries once per step.

**Nonlinearities.** Softmax is per head, so it stays on the device holding the head. GELU is
elementwise on the up-projection's columns: the FFN output is
``sum_k GELU(a W_up,k + b_up,k) W_down,k``, which is exactly ``GELU(a W_up + b_up) W_down``
split by columns -- so device k applies GELU to its own columns. Sending the up-projection
outputs to the server for GELU and back would be the same arithmetic for ``2 B T f_k`` more
values on each link per loop, forward and backward; the layer norms, the only nonlinearities
that mix columns, run at the server.

**Backward** mirrors the forward: the server sends ``dL/dS`` (the same tensor for every
device, since ``S`` is a sum) down, device k back-propagates through its slice, accumulates its
weight gradients and sends ``dL/da`` (a ``[B, T, d]`` partial sum) up; the embedding stage sends
nothing up. :class:`LoopedTP` runs this protocol against a
:class:`~edgelam.training.looped_tp.runtime.TPLink` (one process, or one process per role).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgelam.training.looped_tp.costs import Partition
from edgelam.training.looped_tp.model import LoopedLAM, LoopedLAMConfig, attention_heads, task_loss

__all__ = ["DeviceSlice", "LoopedTP", "ServerPart", "SavedTensorMeter", "shard", "unshard"]

# slice parameter -> (dense parameter, axis it is cut along, what indexes the cut)
_SLICE_OF = {
    "embed_out_weight": ("embed_out.weight", 1, "embed"),
    "q_weight": ("block.q_proj.weight", 0, "heads"),
    "q_bias": ("block.q_proj.bias", 0, "heads"),
    "k_weight": ("block.k_proj.weight", 0, "heads"),
    "k_bias": ("block.k_proj.bias", 0, "heads"),
    "v_weight": ("block.v_proj.weight", 0, "heads"),
    "v_bias": ("block.v_proj.bias", 0, "heads"),
    "o_weight": ("block.o_proj.weight", 1, "heads"),
    "up_weight": ("block.up.weight", 0, "ffn"),
    "up_bias": ("block.up.bias", 0, "ffn"),
    "down_weight": ("block.down.weight", 1, "ffn"),
}
_CSI_EMBED = {
    "embed_in_weight": ("embed_in.weight", 0, "embed"),  # Linear [E, 4F]: rows
    "embed_in_bias": ("embed_in.bias", 0, "embed"),
}
_MLM_EMBED = {"embed_in_weight": ("embed_in.weight", 1, "embed")}  # Embedding [V, E]: columns
_SERVER_OF = {
    "embed_out_bias": "embed_out.bias",
    "pos": "pos",
    "ln1.weight": "block.ln1.weight",
    "ln1.bias": "block.ln1.bias",
    "o_bias": "block.o_proj.bias",
    "ln2.weight": "block.ln2.weight",
    "ln2.bias": "block.ln2.bias",
    "down_bias": "block.down.bias",
    "ln_f.weight": "ln_f.weight",
    "ln_f.bias": "ln_f.bias",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
}


def _slice_map(cfg: LoopedLAMConfig) -> dict[str, tuple[str, int, str]]:
    return {**(_CSI_EMBED if cfg.task == "csi" else _MLM_EMBED), **_SLICE_OF}


def _index(cfg: LoopedLAMConfig, partition: Partition, k: int, kind: str) -> slice:
    if kind == "heads":
        lo, hi = partition.head_range(k)
        return slice(lo * cfg.head_dim, hi * cfg.head_dim)
    lo, hi = partition.ffn_range(k) if kind == "ffn" else partition.embed_range(k)
    return slice(lo, hi)


class DeviceSlice(nn.Module):
    """Device ``k``'s share of the model: its heads, FFN columns and embedding columns.

    Parameters are copies (own storage) of the dense model's slices; names and cuts in
    ``_SLICE_OF``. ``num_heads`` is ``h_k``.

    Shapes:
        embed: csi features ``[B, T, 4F]`` / mlm ids ``[B, T]`` -> partial ``[B, T, d]``.
        attention, ffn: ``[B, T, d]`` -> partial ``[B, T, d]``.
    """

    def __init__(self, model: LoopedLAM, partition: Partition, k: int) -> None:
        super().__init__()
        cfg = model.cfg
        self.task, self.num_heads = cfg.task, partition.heads[k]
        dense = dict(model.named_parameters())
        for name, (src, axis, kind) in _slice_map(cfg).items():
            cut = [slice(None)] * dense[src].ndim
            cut[axis] = _index(cfg, partition, k, kind)
            setattr(self, name, nn.Parameter(dense[src].detach()[tuple(cut)].clone()))

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.task == "csi":
            e = F.linear(inputs, self.embed_in_weight, self.embed_in_bias)
        else:
            e = F.embedding(inputs, self.embed_in_weight)
        return F.linear(e, self.embed_out_weight)

    def attention(self, a: torch.Tensor) -> torch.Tensor:
        q = F.linear(a, self.q_weight, self.q_bias)
        k = F.linear(a, self.k_weight, self.k_bias)
        v = F.linear(a, self.v_weight, self.v_bias)
        return F.linear(attention_heads(q, k, v, self.num_heads), self.o_weight)

    def ffn(self, a: torch.Tensor) -> torch.Tensor:
        return F.linear(F.gelu(F.linear(a, self.up_weight, self.up_bias)), self.down_weight)


class ServerPart(nn.Module):
    """The edge server's share: merges partial sums, layer norms, residuals, head and loss.

    Shapes:
        every ``S`` / ``x``: ``[B, T, d]``; outputs: ``[B, T, out]``.
    """

    def __init__(self, model: LoopedLAM) -> None:
        super().__init__()
        self.cfg = model.cfg
        blk = model.block
        self.embed_out_bias = nn.Parameter(model.embed_out.bias.detach().clone())
        self.pos = nn.Parameter(model.pos.detach().clone())
        self.o_bias = nn.Parameter(blk.o_proj.bias.detach().clone())
        self.down_bias = nn.Parameter(blk.down.bias.detach().clone())
        self.ln1, self.ln2 = copy.deepcopy(blk.ln1), copy.deepcopy(blk.ln2)
        self.ln_f, self.head = copy.deepcopy(model.ln_f), copy.deepcopy(model.head)

    def after_embed(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x = S + b_out + pos``; returns ``(x, LN1(x))``."""
        x = s + self.embed_out_bias + self.pos
        return x, self.ln1(x)

    def after_attention(
        self, x: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x + S + b_o``; returns ``(x, LN2(x))``."""
        x = x + s + self.o_bias
        return x, self.ln2(x)

    def after_ffn(
        self, x: torch.Tensor, s: torch.Tensor, last: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x + S + b_down``; returns ``(x, LN1(x))``, or ``(x, head(LN_f(x)))`` if ``last``."""
        x = x + s + self.down_bias
        return x, (self.head(self.ln_f(x)) if last else self.ln1(x))


def shard(model: LoopedLAM, partition: Partition) -> tuple[ServerPart, list[DeviceSlice]]:
    """Split a built model: ``(server part, [slice of device k for k in 0..K-1])``.

    Raises:
        ValueError: the partition does not cover the model's heads, FFN or embedding columns.
    """
    partition.check(model.cfg)
    return ServerPart(model), [
        DeviceSlice(model, partition, k) for k in range(partition.num_devices)
    ]


def unshard(
    cfg: LoopedLAMConfig,
    server: Mapping[str, torch.Tensor],
    devices: list[Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Reassemble dense-model tensors (named as in ``LoopedLAM.state_dict``) from the parts.

    Works for parameters and for their gradients alike (pass ``{name: p.grad}``).

    Args:
        cfg: the model's config.
        server: the server part's tensors by name.
        devices: each device slice's tensors by name, in device order.
    """
    out = {dense: server[name] for name, dense in _SERVER_OF.items()}
    for name, (dense, axis, _) in _slice_map(cfg).items():
        out[dense] = torch.cat([d[name] for d in devices], dim=axis)
    return out


class SavedTensorMeter:
    """Bytes of the tensors autograd saves for backward inside :meth:`track` (activations).

    Parameters (storages of ``exclude``) are not counted; a storage saved twice counts once,
    by its full size (like :func:`edgelam.network.activation_bytes`).
    """

    def __init__(self, exclude: nn.Module) -> None:
        self._params = {p.untyped_storage().data_ptr() for p in exclude.parameters()}
        self.storages: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self._params:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def track(self) -> Any:
        """Context manager: count what is saved inside it."""
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


@dataclass
class _Stage:
    """One step of the tape: a device stage or a server segment."""

    kind: str  # "embed", "attention", "ffn" (devices) or "server"
    leaves: dict[int, torch.Tensor] = field(default_factory=dict)  # device inputs a_k
    parts: dict[int, torch.Tensor] = field(default_factory=dict)  # device outputs z_k
    inputs: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)  # server (x, S)
    outputs: tuple[torch.Tensor, ...] = ()  # server (x, a) or (loss,)


class LoopedTP:
    """The looped tensor-parallel training step, written once against a ``TPLink``.

    Args:
        cfg: the model config (loops ``L``, width ``d``, task).
        link: moves tensors between the server and the devices; says which roles this
            process runs.
        server: the server part (on the process owning the server, else None).
        slices: ``{k: DeviceSlice}`` for the devices this process runs.
        measure: record the activation bytes each role saves (``activation_bytes``).
    """

    def __init__(self, cfg: LoopedLAMConfig, link: Any, server: ServerPart | None,
                 slices: Mapping[int, DeviceSlice], measure: bool = True) -> None:  # fmt: skip
        self.cfg, self.link, self.server, self.slices = cfg, link, server, dict(slices)
        self.measure = measure
        self.activation_bytes: dict[str, int] = {}

    def _meters(self) -> dict[str, SavedTensorMeter]:
        roles = {f"device{k}": s for k, s in self.slices.items()}
        if self.server is not None:
            roles["server"] = self.server
        return {r: SavedTensorMeter(m) for r, m in roles.items()}

    def step(self, inputs: torch.Tensor | None, labels: torch.Tensor | None,
             mask: torch.Tensor, backward: bool = True) -> torch.Tensor | None:  # fmt: skip
        """Forward (and backward) of one batch; returns the loss on the server, else None.

        Gradients accumulate into the parts' ``.grad``; the optimiser step is the caller's.

        Args:
            inputs: the batch's input tokens (on processes running devices; csi features
                ``[B, T, 4F]`` or mlm ids ``[B, T]``).
            labels: ``targets[mask]`` on the process running device 0 (sent to the server).
            mask: the masked entries (every process; derived from the seed, no data in it).
            backward: also run the backward pass.
        """
        link, server, L = self.link, self.server, self.cfg.loops
        shape = (mask.shape[0], self.cfg.seq_len, self.cfg.d_model)
        meters = self._meters() if self.measure and backward else {}
        grad = torch.enable_grad() if backward else torch.no_grad()
        with grad:
            labels = link.send_labels(labels)
            tape = [self._devices("embed", {k: inputs for k in self.slices}, meters)]
            s = link.reduce(tape[-1].parts, shape, "embed")
            x = a = None
            if server is not None:
                s = s.requires_grad_(backward)
                with _track(meters, "server"):
                    x, a = server.after_embed(s)
                tape.append(_Stage("server", inputs=(None, s), outputs=(x, a)))
            for loop in range(L):
                for kind in ("attention", "ffn"):
                    received = link.broadcast(a, shape, f"{kind}_input")
                    leaves = {k: t.requires_grad_(backward) for k, t in received.items()}
                    tape.append(self._devices(kind, leaves, meters))
                    s = link.reduce(tape[-1].parts, shape, f"{kind}_output")
                    if server is None:
                        continue
                    x_in, s = x.detach().requires_grad_(backward), s.requires_grad_(backward)
                    with _track(meters, "server"):
                        if kind == "attention":
                            x, a = server.after_attention(x_in, s)
                        else:
                            x, a = server.after_ffn(x_in, s, last=loop == L - 1)
                    tape.append(_Stage("server", inputs=(x_in, s), outputs=(x, a)))
            loss = None
            if server is not None:
                with _track(meters, "server"):
                    loss = task_loss(self.cfg, a, mask, labels)
                tape[-1].outputs = (loss,)
        self.activation_bytes = {r: m.bytes for r, m in meters.items()}
        if backward:
            self._backward(tape, shape)
        return None if loss is None else loss.detach()

    def _devices(self, kind: str, leaves: dict[int, torch.Tensor],
                 meters: dict[str, SavedTensorMeter]) -> _Stage:  # fmt: skip
        parts = {}
        for k, part in self.slices.items():
            with _track(meters, f"device{k}"):
                parts[k] = getattr(part, kind)(leaves[k])
        return _Stage(kind, leaves=leaves if kind != "embed" else {}, parts=parts)

    def _backward(self, tape: list[_Stage], shape: tuple[int, ...]) -> None:
        link = self.link
        grad_x = grad_a = grad_s = None  # server: dL/dx, dL/da of the segment being undone
        for stage in reversed(tape):
            if stage.kind == "server":
                outs = stage.outputs
                grads = (None,) if len(outs) == 1 else (grad_x, grad_a)
                torch.autograd.backward(list(outs), list(grads))
                x_in, s = stage.inputs
                grad_x = None if x_in is None else x_in.grad
                grad_s = s.grad
                continue
            received = link.broadcast(grad_s, shape, f"{stage.kind}_output_grad")
            for k, part in stage.parts.items():
                torch.autograd.backward(part, received[k])
            if stage.kind != "embed":
                grads = {k: leaf.grad for k, leaf in stage.leaves.items()}
                grad_a = link.reduce(grads, shape, f"{stage.kind}_input_grad")


def _track(meters: dict[str, SavedTensorMeter], role: str) -> Any:
    meter = meters.get(role)
    return meter.track() if meter is not None else _Null()


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
