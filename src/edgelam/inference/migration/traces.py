r"""Seeded mobility traces: where each user is in every slot, and which edge server serves it.

Three scenarios, each a :class:`Trace` of ``T`` slots (``slot_s`` seconds each, 1 s by default)
for ``K`` users and ``N`` edge servers, with the backhaul graph joining the servers:

* :func:`highway_trace` -- vehicles at 80-130 km/h on a ring road (a closed motorway loop, so a
  trace can run for any number of slots with a fixed set of servers), both carriageways, one
  roadside server every 0.5-1 km (drawn), backhaul links between neighbouring servers (a ring).
  Each vehicle's speed is a random walk (standard deviation 0.5 m/s per slot) kept inside the
  speed range.
* :func:`train_trace` -- passengers of high-speed trains at 300-350 km/h (one cruising speed per
  train) shuttling along a straight line between two terminals (the train turns back at the
  ends), trackside servers every 1-2 km, backhaul along the line. Passengers sit anywhere in the
  200 m train, so they move as a group and hand over together.
* :func:`waypoint_trace` -- the random waypoint model in a square area: each user walks straight
  to a uniform random waypoint at a uniform random speed (1-15 m/s), pauses 0-30 s, repeats;
  servers at the centres of a ``g x g`` grid of cells, backhaul between grid neighbours.

The serving (access) server of a user is the nearest one (:meth:`Trace.serving`): each server's
coverage area is its Voronoi cell. Positions are metres in a plane.

>>> tr = highway_trace(users=3, slots=50, seed=1)
>>> tr.positions.shape, tr.servers.shape[1]
((50, 3, 2), 2)
>>> bool(((tr.speed_mps >= 80 / 3.6) & (tr.speed_mps <= 130 / 3.6)).all())
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgelam.config import ConfigError

__all__ = [
    "TRACES",
    "Trace",
    "TraceError",
    "highway_trace",
    "make_trace",
    "train_trace",
    "waypoint_trace",
]

KMH = 1 / 3.6  # m/s per km/h


class TraceError(ConfigError):
    """Invalid trace parameters; the message names the parameter and the allowed values."""


@dataclass(frozen=True)
class Trace:
    """User positions per slot and the edge servers.

    Attributes:
        name: Scenario (``highway``, ``train``, ``waypoint``).
        slot_s: Slot length in seconds.
        positions: User positions, metres, ``float64 [T, K, 2]``.
        speed_mps: Each user's speed during slot ``t`` (from ``t`` to ``t + 1``), m/s,
            ``float64 [T, K]``.
        servers: Edge server positions, metres, ``float64 [N, 2]``.
        links: Backhaul links as pairs of server indices ``(a, b)`` with ``a < b``.
        info: The generator's parameters (recorded in run configs).
    """

    name: str
    slot_s: float
    positions: np.ndarray
    speed_mps: np.ndarray
    servers: np.ndarray
    links: tuple[tuple[int, int], ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slots(self) -> int:
        return self.positions.shape[0]

    @property
    def num_users(self) -> int:
        return self.positions.shape[1]

    @property
    def num_servers(self) -> int:
        return self.servers.shape[0]

    def distances(self) -> np.ndarray:
        """User-to-server ground distances in metres, ``[T, K, N]``."""
        return np.linalg.norm(self.positions[:, :, None, :] - self.servers[None, None], axis=-1)

    def serving(self) -> np.ndarray:
        """The serving (nearest) server of each user in each slot, ``int64 [T, K]``."""
        return self.distances().argmin(axis=-1)

    def handovers(self) -> np.ndarray:
        """Number of serving-server changes of each user over the trace, ``int64 [K]``."""
        s = self.serving()
        return (s[1:] != s[:-1]).sum(axis=0)


def _check(users: int, slots: int, slot_s: float, num_servers: int, minimum: int = 2) -> None:
    if users < 1:
        raise TraceError(f"users: must be >= 1, got {users}")
    if slots < 1:
        raise TraceError(f"slots: must be >= 1, got {slots}")
    if not (slot_s > 0 and math.isfinite(slot_s)):
        raise TraceError(f"slot_s: must be > 0, got {slot_s}")
    if num_servers < minimum:
        raise TraceError(f"num_servers: must be >= {minimum}, got {num_servers}")


def _check_range(name: str, lo_hi: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if not 0 < lo <= hi:
        raise TraceError(f"{name}: need 0 < low <= high, got {lo_hi}")
    return lo, hi


def highway_trace(
    users: int,
    slots: int,
    seed: int,
    *,
    slot_s: float = 1.0,
    num_servers: int = 8,
    spacing_m: tuple[float, float] = (500.0, 1000.0),
    speed_kmh: tuple[float, float] = (80.0, 130.0),
    roadside_m: float = 30.0,
) -> Trace:
    """Vehicles on a ring motorway with roadside edge servers.

    The road is a circle of circumference ``L`` = the sum of the ``num_servers`` drawn server
    spacings; server ``n`` stands ``roadside_m`` outside the road at arc length ``s_n``. Vehicle
    ``k`` starts at a uniform arc position with a uniform direction (clockwise or not) and speed;
    its speed then follows a random walk (std 0.5 m/s per slot) clipped to ``speed_kmh``.

    Args:
        users: Number of vehicles ``K``.
        slots: Number of slots ``T``.
        seed: Seed of every draw.
        slot_s: Slot length, s.
        num_servers: Number of roadside servers ``N`` (>= 3: the backhaul is a ring).
        spacing_m: Range of the distance between consecutive servers along the road, m.
        speed_kmh: Range of vehicle speeds, km/h.
        roadside_m: Server distance from the road, m.

    Returns:
        The trace (``info`` holds ``road_length_m``).

    Raises:
        TraceError: a parameter out of range.
    """
    _check(users, slots, slot_s, num_servers, minimum=3)
    lo_s, hi_s = _check_range("spacing_m", spacing_m)
    lo_v, hi_v = _check_range("speed_kmh", speed_kmh)
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(lo_s, hi_s, size=num_servers)
    length = float(gaps.sum())
    radius = length / (2 * math.pi)
    arc = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
    angle = arc / radius
    servers = (radius + roadside_m) * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    s = rng.uniform(0, length, size=users)
    direction = rng.choice([-1.0, 1.0], size=users)
    v = rng.uniform(lo_v * KMH, hi_v * KMH, size=users)
    pos = np.empty((slots, users, 2))
    speed = np.empty((slots, users))
    for t in range(slots):
        a = s / radius
        pos[t] = radius * np.stack([np.cos(a), np.sin(a)], axis=-1)
        speed[t] = v
        s = np.mod(s + direction * v * slot_s, length)
        v = np.clip(v + rng.normal(0.0, 0.5, size=users), lo_v * KMH, hi_v * KMH)
    links = tuple(sorted((min(n, (n + 1) % num_servers), max(n, (n + 1) % num_servers))
                         for n in range(num_servers)))  # fmt: skip
    info = {"road_length_m": length, "spacing_m": list(spacing_m), "speed_kmh": list(speed_kmh),
            "roadside_m": roadside_m}  # fmt: skip
    return Trace("highway", slot_s, pos, speed, servers, links, info)


def _fold(s: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect unbounded arc positions into ``[0, length]``; returns (position, direction sign)."""
    m = np.mod(s, 2 * length)
    back = m > length
    return np.where(back, 2 * length - m, m), np.where(back, -1.0, 1.0)


def train_trace(
    users: int,
    slots: int,
    seed: int,
    *,
    slot_s: float = 1.0,
    num_servers: int = 10,
    spacing_m: tuple[float, float] = (1000.0, 2000.0),
    speed_kmh: tuple[float, float] = (300.0, 350.0),
    trains: int = 1,
    train_length_m: float = 200.0,
    trackside_m: float = 50.0,
) -> Trace:
    """Passengers of high-speed trains shuttling along a straight line.

    Servers stand ``trackside_m`` beside a straight track at drawn spacings; the track runs from
    the first to the last server. Each train has one cruising speed drawn from ``speed_kmh`` and
    a uniform start; it turns back at the terminals (no dwell). Passengers are assigned to
    trains round-robin and sit at a uniform offset in ``[0, train_length_m]`` behind the head.

    Args:
        users: Number of passengers ``K``.
        slots: Number of slots ``T``.
        seed: Seed of every draw.
        slot_s: Slot length, s.
        num_servers: Number of trackside servers ``N``.
        spacing_m: Range of the distance between consecutive servers, m.
        speed_kmh: Range of train speeds, km/h.
        trains: Number of trains.
        train_length_m: Train length, m.
        trackside_m: Server distance from the track, m.

    Returns:
        The trace (``info`` holds ``line_length_m`` and each user's ``train``).

    Raises:
        TraceError: a parameter out of range.
    """
    _check(users, slots, slot_s, num_servers)
    lo_s, hi_s = _check_range("spacing_m", spacing_m)
    lo_v, hi_v = _check_range("speed_kmh", speed_kmh)
    if trains < 1:
        raise TraceError(f"trains: must be >= 1, got {trains}")
    rng = np.random.default_rng(seed)
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(lo_s, hi_s, size=num_servers - 1))])
    length = float(xs[-1])
    if train_length_m >= length:
        raise TraceError(f"train_length_m: {train_length_m} m must be shorter than the line "
                         f"({length:.0f} m)")  # fmt: skip
    servers = np.stack([xs, np.full(num_servers, trackside_m)], axis=-1)
    v_train = rng.uniform(lo_v * KMH, hi_v * KMH, size=trains)
    s0 = rng.uniform(0, 2 * length, size=trains)  # unfolded: covers both directions
    which = np.arange(users) % trains
    offset = rng.uniform(0, train_length_m, size=users)
    t = np.arange(slots)[:, None] * slot_s
    head = s0[which][None, :] + v_train[which][None, :] * t  # [T, K], unfolded arc position
    x, _ = _fold(head - offset[None, :], length)
    pos = np.stack([x, np.zeros_like(x)], axis=-1)
    speed = np.broadcast_to(v_train[which][None, :], (slots, users)).copy()
    links = tuple((n, n + 1) for n in range(num_servers - 1))
    info = {"line_length_m": length, "spacing_m": list(spacing_m), "speed_kmh": list(speed_kmh),
            "trains": trains, "train_length_m": train_length_m, "train": which.tolist(),
            "trackside_m": trackside_m}  # fmt: skip
    return Trace("train", slot_s, pos, speed, servers, links, info)


def waypoint_trace(
    users: int,
    slots: int,
    seed: int,
    *,
    slot_s: float = 1.0,
    grid: int = 3,
    area_m: float = 2000.0,
    speed_mps: tuple[float, float] = (1.0, 15.0),
    pause_s: tuple[float, float] = (0.0, 30.0),
) -> Trace:
    """Random waypoint users in a square with servers on a grid.

    Args:
        users: Number of users ``K``.
        slots: Number of slots ``T``.
        seed: Seed of every draw.
        slot_s: Slot length, s.
        grid: Servers per side; ``N = grid**2`` servers at the cell centres.
        area_m: Side of the square area, m.
        speed_mps: Range of walking/driving speeds, m/s (one drawn per leg).
        pause_s: Range of the pause at each waypoint, s.

    Returns:
        The trace; ``speed_mps`` is the leg's speed while moving and 0 while paused.

    Raises:
        TraceError: a parameter out of range.
    """
    _check(users, slots, slot_s, grid * grid)
    lo_v, hi_v = _check_range("speed_mps", speed_mps)
    if not 0 <= pause_s[0] <= pause_s[1]:
        raise TraceError(f"pause_s: need 0 <= low <= high, got {pause_s}")
    if not area_m > 0:
        raise TraceError(f"area_m: must be > 0, got {area_m}")
    rng = np.random.default_rng(seed)
    c = (np.arange(grid) + 0.5) * area_m / grid
    servers = np.stack(np.meshgrid(c, c, indexing="xy"), axis=-1).reshape(-1, 2)
    pos = np.empty((slots, users, 2))
    speed = np.zeros((slots, users))
    p = rng.uniform(0, area_m, size=(users, 2))
    goal = rng.uniform(0, area_m, size=(users, 2))
    v = rng.uniform(lo_v, hi_v, size=users)
    pause = np.zeros(users)
    for t in range(slots):
        pos[t] = p
        for k in range(users):
            left = slot_s  # seconds of this slot still to spend
            moved = 0.0
            while left > 1e-12:
                if pause[k] > 0:
                    wait = min(pause[k], left)
                    pause[k] -= wait
                    left -= wait
                    if pause[k] <= 1e-12:  # pause over: next leg
                        pause[k] = 0.0
                        goal[k] = rng.uniform(0, area_m, size=2)
                        v[k] = rng.uniform(lo_v, hi_v)
                    continue
                gap = float(np.linalg.norm(goal[k] - p[k]))
                step = v[k] * left
                if step < gap:
                    p[k] = p[k] + (goal[k] - p[k]) * (step / gap)
                    moved += step
                    left = 0.0
                else:
                    p[k] = goal[k].copy()
                    moved += gap
                    left -= gap / v[k]
                    pause[k] = rng.uniform(*pause_s)
                    if pause[k] <= 0:
                        goal[k] = rng.uniform(0, area_m, size=2)
                        v[k] = rng.uniform(lo_v, hi_v)
            speed[t, k] = moved / slot_s
    links = []
    for i in range(grid):
        for j in range(grid):
            n = i * grid + j
            if j + 1 < grid:
                links.append((n, n + 1))
            if i + 1 < grid:
                links.append((n, n + grid))
    info = {"grid": grid, "area_m": area_m, "speed_mps": list(speed_mps),
            "pause_s": list(pause_s)}  # fmt: skip
    return Trace("waypoint", slot_s, pos, speed, servers, tuple(sorted(links)), info)


TRACES = {"highway": highway_trace, "train": train_trace, "waypoint": waypoint_trace}
"""Scenario name -> trace generator."""


def make_trace(name: str, users: int, slots: int, seed: int, **kwargs: Any) -> Trace:
    """The trace of scenario ``name`` (see :data:`TRACES`) with its default parameters.

    Args:
        name: ``highway``, ``train`` or ``waypoint``.
        users: Number of users.
        slots: Number of slots.
        seed: Seed of every draw.
        **kwargs: Scenario parameters (see each generator).

    Returns:
        The trace.

    Raises:
        TraceError: unknown scenario or invalid parameters.

    >>> make_trace("train", 2, 5, 0).num_servers
    10
    """
    if name not in TRACES:
        raise TraceError(f"trace: {name!r} is not one of {sorted(TRACES)}")
    return TRACES[name](users, slots, seed, **kwargs)
