"""How a simulated edge node serves stage work: first-come-first-served or processor sharing.

Both servers offer one SimPy process step, ``yield from server.serve(work)``, that returns when
``work`` seconds of the node's full speed have been spent on the job, and both count the node's
busy time inside a measurement window. They differ in who gets the accelerator:

* :class:`FCFSServer` -- one job at a time in arrival order (``simpy.Resource``, capacity 1);
  the M/G/1 queue of ``mg1_latency_s`` in :func:`~edgelam.inference.deployment.evaluate`.
* :class:`SharingServer` -- the accelerator is time-sliced equally among all jobs present
  (egalitarian processor sharing); the M/G/1-PS queue of the analytical objective, where a job
  of work :math:`\\tau` stays :math:`\\tau / (1 - \\rho)` on average whatever the work
  distribution.

>>> import simpy
>>> env = simpy.Environment()
>>> ps = SharingServer(env, window=(0.0, 10.0))
>>> done = {}
>>> def job(name, work):
...     yield from ps.serve(work)
...     done[name] = env.now
>>> _ = env.process(job("a", 1.0)), env.process(job("b", 3.0))
>>> env.run()
>>> done  # both at half speed until a is done at 2; b alone for its last 2 s
{'a': 2.0, 'b': 4.0}
>>> ps.busy
4.0
"""

from __future__ import annotations

from collections.abc import Generator

import simpy

__all__ = ["DISCIPLINES", "FCFSServer", "SharingServer", "make_server"]

DISCIPLINES = ("fcfs", "ps")
"""Service disciplines: first-come-first-served, processor sharing."""


class FCFSServer:
    """One job at a time, in order of arrival (ties: order of the ``serve`` calls).

    Args:
        env: The simulation environment.
        window: ``(start, end)`` of the interval whose busy time :attr:`busy` counts.
    """

    def __init__(self, env: simpy.Environment, window: tuple[float, float]):
        self.env = env
        self.resource = simpy.Resource(env, capacity=1)
        self.window = window
        self.busy = 0.0

    def serve(self, work: float) -> Generator[simpy.Event, None, None]:
        """Queue, then hold the server for ``work`` seconds."""
        with self.resource.request() as grant:
            yield grant
            start = self.env.now
            yield self.env.timeout(work)
        lo, hi = self.window
        self.busy += max(0.0, min(self.env.now, hi) - max(start, lo))


class SharingServer:
    """Egalitarian processor sharing: with ``k`` jobs present each advances at rate ``1/k``.

    Completions are scheduled as timeouts tagged with a generation number; an arrival or a
    departure starts a new generation, so earlier timeouts fire as no-ops (SimPy cannot cancel
    a scheduled event).

    Args:
        env: The simulation environment.
        window: ``(start, end)`` of the interval whose busy time :attr:`busy` counts.
    """

    def __init__(self, env: simpy.Environment, window: tuple[float, float]):
        self.env = env
        self.window = window
        self.busy = 0.0
        self.remaining: dict[simpy.Event, float] = {}  # job -> work left, seconds at full speed
        self.last = 0.0
        self.generation = 0

    def serve(self, work: float) -> Generator[simpy.Event, None, None]:
        """Join the jobs in service; return once ``work`` is done."""
        self._advance()
        done = self.env.event()
        self.remaining[done] = work
        self._schedule()
        yield done

    def _advance(self) -> None:
        """Spend the time since the last change on the jobs present."""
        now = self.env.now
        if self.remaining:
            share = (now - self.last) / len(self.remaining)
            for job in self.remaining:
                self.remaining[job] -= share
            lo, hi = self.window
            self.busy += max(0.0, min(now, hi) - max(self.last, lo))
        self.last = now

    def _schedule(self) -> None:
        self.generation += 1
        if self.remaining:
            job = min(self.remaining, key=self.remaining.__getitem__)
            delay = max(0.0, self.remaining[job]) * len(self.remaining)
            timeout = self.env.timeout(delay, value=(self.generation, job))
            timeout.callbacks.append(self._complete)

    def _complete(self, event: simpy.Event) -> None:
        generation, job = event.value
        if generation != self.generation:
            return  # superseded by a later arrival or departure
        self._advance()
        del self.remaining[job]
        job.succeed()
        self._schedule()


def make_server(
    discipline: str, env: simpy.Environment, window: tuple[float, float]
) -> FCFSServer | SharingServer:
    """A server of ``discipline`` (one of :data:`DISCIPLINES`).

    Raises:
        ValueError: an unknown discipline.
    """
    if discipline == "fcfs":
        return FCFSServer(env, window)
    if discipline == "ps":
        return SharingServer(env, window)
    raise ValueError(f"discipline: {discipline!r} is not one of {list(DISCIPLINES)}")
