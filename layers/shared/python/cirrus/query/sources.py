"""Candidate records for a search, read with DynamoDB Queries on key conditions.

A ``KeyQuery`` is one Query: a partition of the table or of a secondary index, with an optional
condition on its sort key. A search that needs several partitions (the shards of ``by-level``,
or one ``by-modality`` partition per requested modality) merges their results by sort key, so
the candidates come in one total order that is the same on every request. That order is what
makes ``offset`` pages partition the result exactly.

Every partition is read lazily, page by page. The pages of a merged search hold an even share
of the items it needs, so it reads little more than it returns. The first pages of all its
partitions are read in parallel.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Final

from cirrus.index.models import IndexRecord

# The largest Query page this module requests. DynamoDB also stops a page at 1 MB.
MAX_PAGE_SIZE: Final = 1000

# The range attribute of each index, by the name of the model's index attribute.
RANGE_ATTRIBUTES: Final = {
    None: "sk",
    "by_level": "level_sk",
    "by_patient": "patient_sk",
    "by_accession": "accession_sk",
    "by_name": "name_sk",
    "by_modality": "modality_sk",
}

Condition = Callable[[Any], Any]


@dataclass(frozen=True)
class KeyQuery:
    """One DynamoDB Query: an index (None for the table), a partition and a sort key condition.

    ``condition`` builds the pynamodb condition from the index's sort key attribute.
    """

    index: str | None
    hash_key: str
    condition: Condition | None = None

    @property
    def range_attribute(self) -> str:
        return RANGE_ATTRIBUTES[self.index]

    def run(self, model: type[IndexRecord], page_size: int) -> Iterator[IndexRecord]:
        range_key = getattr(model, self.range_attribute)
        condition = self.condition(range_key) if self.condition is not None else None
        target: Any = model if self.index is None else getattr(model, self.index)
        results: Iterator[IndexRecord] = target.query(
            self.hash_key, range_key_condition=condition, page_size=page_size
        )
        return results


def page_size_for(needed: int, partitions: int) -> int:
    """Return the Query page size that reads about ``needed`` items over all partitions.

    One partition gets exactly what is needed, several an even share each. A partition that
    runs short reads one more page of the same size, so a search over ``n`` partitions reads
    about ``needed + n * share / 2`` items.
    """
    share = math.ceil(needed / max(1, partitions))
    return max(1, min(MAX_PAGE_SIZE, share))


def merged(model: type[IndexRecord], queries: list[KeyQuery], needed: int) -> Iterator[IndexRecord]:
    """Yield the records of several Queries on one index, merged in sort key order.

    A record that several Queries return is yielded once. The markers of one study under two
    modalities are two records, which ``distinct_studies`` turns into one study.
    """
    if not queries:
        return iter(())
    page_size = page_size_for(needed, len(queries))
    if len(queries) == 1:
        return queries[0].run(model, page_size)
    attribute = queries[0].range_attribute
    streams = _primed([query.run(model, page_size) for query in queries])
    ordered = heapq.merge(*streams, key=lambda record: getattr(record, attribute))
    return _without_repeats(ordered)


def _primed(streams: list[Iterator[IndexRecord]]) -> list[Iterator[IndexRecord]]:
    """Read the first page of every stream in parallel; botocore clients are thread-safe."""
    with ThreadPoolExecutor(max_workers=min(len(streams), 16)) as pool:
        heads = list(pool.map(lambda stream: next(stream, None), streams))
    return [
        chain([head], stream) if head is not None else iter(())
        for head, stream in zip(heads, streams, strict=True)
    ]


def _without_repeats(records: Iterable[IndexRecord]) -> Iterator[IndexRecord]:
    previous: tuple[str, str] | None = None
    for record in records:
        key = (record.pk, record.sk)
        if key != previous:
            yield record
        previous = key


def distinct_studies(markers: Iterable[IndexRecord]) -> Iterator[IndexRecord]:
    """Yield the first ``by-modality`` marker of each study, in the markers' order.

    A marker carries the study's attributes, counts and sets, so it replaces a read of the
    study record. A study listed under several requested modalities has a marker in each partition.
    """
    seen: set[str] = set()
    for marker in markers:
        if marker.pk not in seen:
            seen.add(marker.pk)
            yield marker


@dataclass
class ReadCap:
    """A limit on the records a search without a usable index may read.

    ``reached`` is set once the limit has cut the candidates short.
    """

    limit: int
    reached: bool = False

    def apply(self, records: Iterator[IndexRecord]) -> Iterator[IndexRecord]:
        count = 0
        for record in islice(records, self.limit):
            count += 1
            yield record
        if count == self.limit and next(records, None) is not None:
            self.reached = True
