"""The reduction of an even sum's partials on the cluster, and how its blocks are paced.

A partial is a plain JSON-able dict, ``{"sum": int, "even_count": int, "count": int,
"bytes": int}``; ``combine`` adds any number of them up. ``ReductionTree`` puts a
``combine`` task over every FAN_IN partials as soon as they are submitted, so that
partials never pile up on the workers and the result is one task at the top. A
``Pacing`` says how many blocks a job keeps in flight and at what priority.
"""

from dataclasses import dataclass
from typing import Protocol

import distributed
from distributed import Client, Future

FIELDS = ("sum", "even_count", "count", "bytes")
# combine() tasks take this many partials each: a tree of depth log8(blocks).
FAN_IN = 8
# Dask runs ready tasks of higher priority first: a combine frees its partials, so it
# goes ahead of blocks (image tasks, at IMAGE_PRIORITY in compute.image, go ahead of both).
BLOCK_PRIORITY = 0
COMBINE_PRIORITY = 1


def combine(partials: list[dict]) -> dict:
    """Add partials up (associative and commutative; the empty list gives zeros)."""
    return {field: sum(partial[field] for partial in partials) for field in FIELDS}


class ReductionTree:
    """The combine tasks over a job's partials, submitted as the partials are.

    Every FAN_IN futures of a level go under one combine task of the next level as soon
    as they are in, so the tree (and its task keys, ``{key_prefix}-reduce-{level}-{j}``)
    is the same whether the partials came all at once or a few at a time."""

    def __init__(self, client: Client, key_prefix: str):
        self.client = client
        self.key_prefix = key_prefix
        # levels[n]: futures of tree level n (0: the partials) not yet under a combine task
        self._levels: list[list[Future]] = [[]]
        self._combined: list[int] = [0]  # combine tasks submitted per level

    def add(self, partial: Future) -> None:
        """One more partial (a block's future), in the job's order."""
        self._add(0, partial)

    def total(self) -> Future:
        """The future of the result, once every partial is added: the tree's last combine tasks.

        Level by level, the partial group left over is combined into the next level, until
        a level holds the one node that a single combine made: the result."""
        level = 0
        while not (level > 0 and self._combined[level - 1] == 1):
            if self._levels[level] or self._combined[level] == 0:  # (an empty file: combine([]))
                self._combine(level)
            level += 1
        return self._levels[level][0]

    def pending(self) -> list[Future]:
        """The futures not yet under a combine task: cancelling them (and the blocks in
        flight) cancels every task of the sum still to run."""
        return [future for level in self._levels for future in level]

    def _add(self, level: int, future: Future) -> None:
        self._levels[level].append(future)
        if len(self._levels[level]) == FAN_IN:
            self._combine(level)

    def _combine(self, level: int) -> None:
        """Put the futures waiting at ``level`` under one combine task of the next level."""
        group, self._levels[level] = self._levels[level], []
        if level + 1 == len(self._levels):
            self._levels.append([])
            self._combined.append(0)
        node = self.client.submit(
            combine,
            group,
            key=f"{self.key_prefix}-reduce-{level}-{self._combined[level]}",
            priority=COMBINE_PRIORITY,
        )
        self._combined[level] += 1
        self._add(level + 1, node)


class Pacing(Protocol):
    """How a BlockSum submits its blocks: how many in flight, at what priority."""

    def window(self) -> int:
        """How many blocks to keep in flight now."""
        ...

    def priority(self) -> float:
        """The Dask priority of the next block (higher runs first)."""
        ...

    def done(self, priorities: list[float]) -> None:
        """Blocks submitted at these priorities finished."""
        ...


@dataclass
class AllAtOnce:
    """Every block at once, at BLOCK_PRIORITY: a job alone on its cluster (notebooks)."""

    blocks: int

    def window(self) -> int:
        return self.blocks

    def priority(self) -> float:
        return BLOCK_PRIORITY

    def done(self, priorities: list[float]) -> None:
        pass


def first_completed(futures: set[Future]) -> set[Future]:
    """Some of ``futures`` that are done, waiting for the first (``distributed.wait``)."""
    return set(distributed.wait(futures, return_when="FIRST_COMPLETED").done)
