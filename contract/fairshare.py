"""Which chunk goes out next: weighted fair share across tenants, priority within a tenant, per-tenant quotas.

Pure: no ledger, no broker. `contract/scheduling.py` reads the backlog, asks `FairShare.choose` for picks and
dispatches them; the tests drive it with synthetic backlogs.

Fair share is stride scheduling (weighted fair queueing by virtual time), an equivalent of weighted deficit round
robin that needs no quantum: every tenant has a `pass` (virtual time); the next chunk goes to the eligible tenant
with the lowest pass, and a chunk of n items adds n / weight to it. Two tenants that stay backlogged are served in
proportion to their weights: after any choice their passes differ by at most one chunk's n / weight, so the
items each got, S_i = w_i * pass_i (+ at most one chunk), keep S_a / S_b within c * (1/w_a + 1/w_b) items of
w_a / w_b, for a chunk size c, however long they run. A tenant that had no backlog (new, or idle) starts at the
lowest pass of the tenants still backlogged, so it is served at once but cannot claim credit for the time it
was away. Within a tenant: the job of the highest priority first (interactive > normal > bulk), then the oldest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

PRIORITIES = ("interactive", "normal", "bulk")  # highest first; producer/options.py declares the option
DEFAULT_PRIORITY = "normal"
_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class TenantShare:
    """A tenant as the scheduler weighs it: weight, items it has queued or running, and its quota (None: none)."""

    tenant: int
    weight: int = 1
    in_flight: int = 0
    max_in_flight: int | None = None


@dataclass(frozen=True)
class JobBacklog:
    """A job with pending items to dispatch (not paused, nor its tenant)."""

    job: int
    tenant: int
    priority: str = DEFAULT_PRIORITY


@dataclass(frozen=True)
class Pick:
    """`items` items of `job` (the taker read them) for `tenant`'s account."""

    job: int
    tenant: int
    items: int


@dataclass
class FairShare:
    """The scheduler's memory for one model queue: each tenant's pass. Lost when the scheduler moves to another
    process; the new holder starts every tenant at the same pass, which is fair from then on."""

    passes: dict[int, float] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)  # tenants that had a backlog at the last choice
    served: dict[int, int] = field(default_factory=dict)  # tenant -> the sequence number of its latest pick
    _picks: int = 0

    def choose(
        self,
        tenants: Mapping[int, TenantShare],
        jobs: Iterable[JobBacklog],
        *,
        chunks: int,
        chunk_size: int,
        take: Callable[[int, int], int],
    ) -> list[Pick]:
        """Up to `chunks` picks of at most `chunk_size` items. `take(job, n)` dispatches up to n of the job's
        pending items and says how many it found (0: the job has no more ready now; it is not asked again)."""
        queues = _by_tenant(jobs)
        self._join(queues)
        in_flight = {t: tenants[t].in_flight if t in tenants else 0 for t in queues}
        picks: list[Pick] = []
        while len(picks) < chunks:
            tenant = self._next(queues, tenants, in_flight)
            if tenant is None:
                break
            share = tenants.get(tenant, TenantShare(tenant))
            room = chunk_size if share.max_in_flight is None else share.max_in_flight - in_flight[tenant]
            job = queues[tenant][0]
            got = take(job.job, min(chunk_size, room))
            if got <= 0:
                queues[tenant].pop(0)
                continue
            picks.append(Pick(job.job, tenant, got))
            self._picks += 1
            self.served[tenant] = self._picks
            in_flight[tenant] += got
            self.passes[tenant] += got / max(1, share.weight)
        return picks

    def refund(self, tenant: int, items: int, weight: int) -> None:
        """Take back the charge for `items` that a pick counted on and the ledger did not have (the scheduler plans
        a pass's picks from the jobs' counters, then reads them all in one query)."""
        if tenant in self.passes and items > 0:
            self.passes[tenant] -= items / max(1, weight)

    def _join(self, queues: Mapping[int, list[JobBacklog]]) -> None:
        """Tenants that (re)gained a backlog start at the lowest pass among those that kept one."""
        kept = [self.passes[t] for t in queues if t in self.active and t in self.passes]
        # Nobody kept one: all start level (at the highest of their old passes), none with credit for the pause.
        floor = min(kept) if kept else max((self.passes.get(t, 0.0) for t in queues), default=0.0)
        for tenant in queues:
            if tenant not in self.active or tenant not in self.passes:
                self.passes[tenant] = max(self.passes.get(tenant, floor), floor)
        self.active = set(queues)

    def _next(
        self, queues: Mapping[int, list[JobBacklog]], tenants: Mapping[int, TenantShare], in_flight: Mapping[int, int]
    ) -> int | None:
        """The eligible tenant with the lowest pass (ties: the one served least recently, a newcomer first):
        it has a job left and quota room."""
        best: tuple[float, int, int] | None = None
        for tenant, queue in queues.items():
            quota = tenants[tenant].max_in_flight if tenant in tenants else None
            if not queue or (quota is not None and in_flight[tenant] >= quota):
                continue
            key = (self.passes[tenant], self.served.get(tenant, -1), tenant)
            if best is None or key < best:
                best = key
        return None if best is None else best[2]


def _by_tenant(jobs: Iterable[JobBacklog]) -> dict[int, list[JobBacklog]]:
    """Each tenant's jobs in the order they are served: priority, then the oldest (lowest id) first."""
    queues: dict[int, list[JobBacklog]] = {}
    for job in jobs:
        queues.setdefault(job.tenant, []).append(job)
    for queue in queues.values():
        queue.sort(key=lambda j: (_RANK.get(j.priority, _RANK[DEFAULT_PRIORITY]), j.job))
    return queues
