"""Archive statistics: studies, series, instances and bytes per site, modality or day.

The counts are read from the index with Queries on the ``by-level`` shards of each site, never
with a Scan. The 16 study shards give each study's StudyDate, because their sort key starts
with it. The 16 instance shards give each instance's study, series, size and modality. That
reads one index item per study and per instance, so a site of a million instances costs about
a million item reads (an estimate from the item count, not a measurement).

The day of a study is its StudyDate (0008,0020), not the day it was archived, because the
index keeps no archive date. A study without a StudyDate counts under the day ``none``, and
``--since`` leaves it out. With ``--by modality``, a study or series with instances of two
modalities counts once under each, and an instance without Modality counts under ``none``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException

from cirrus.errors import StoreUnavailableError
from cirrus.index.models import INSTANCE, STUDY, IndexRecord, level_pks
from cirrus.lifecycle import GroupBy

NONE: Final = "none"
_INSTANCE_ATTRIBUTES: Final = ["pk", "sk", "level_pk", "level_sk", "size", "modalities"]
_STUDY_ATTRIBUTES: Final = ["pk", "sk", "level_pk", "level_sk"]


@dataclass
class Totals:
    """The counts of one group; studies and series are sets until ``counts`` is read."""

    studies: set[tuple[str, str]] = field(default_factory=set)
    series: set[tuple[str, str, str]] = field(default_factory=set)
    instances: int = 0
    bytes: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "studies": len(self.studies),
            "series": len(self.series),
            "instances": self.instances,
            "bytes": self.bytes,
        }


def format_day(study_date: str) -> str:
    """Return a StudyDate as YYYY-MM-DD, or ``none`` when it is not a valid date."""
    if len(study_date) != 8 or not study_date.isdigit():
        return NONE
    try:
        return date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:])).isoformat()
    except ValueError:
        return NONE


def study_dates(model: type[IndexRecord], site: str, since: date | None) -> dict[str, str]:
    """Return the StudyDate of every study of ``site``, of studies from ``since`` on if given."""
    dates = {}
    condition = model.level_sk >= since.strftime("%Y%m%d") if since is not None else None
    for pk in level_pks(site, STUDY):
        for record in _query(model, pk, condition, _STUDY_ATTRIBUTES):
            study_date, _, study = str(record.level_sk).partition("#")
            dates[study] = study_date
    return dates


def site_statistics(
    model: type[IndexRecord], site: str, group_by: GroupBy, since: date | None = None
) -> dict[str, dict[str, int]]:
    """Return the counts of ``site`` per group, in group order."""
    dates = study_dates(model, site, since)
    # NOTE: the study and series UIDs of each group stay in memory until the end, about 200
    # bytes per series (an estimate), so a site of millions of series needs hundreds of MB.
    groups: dict[str, Totals] = defaultdict(Totals)
    for pk in level_pks(site, INSTANCE):
        for record in _query(model, pk, None, _INSTANCE_ATTRIBUTES):
            study, series, _ = str(record.level_sk).split("#", 2)
            if study not in dates:
                continue
            if group_by is GroupBy.SITE:
                names = [site]
            elif group_by is GroupBy.DAY:
                names = [format_day(dates[study])]
            else:
                names = sorted(record.modalities or ()) or [NONE]
            for name in names:
                totals = groups[name]
                totals.studies.add((site, study))
                totals.series.add((site, study, series))
                totals.instances += 1
                totals.bytes += int(record.size or 0)
    return {name: groups[name].counts() for name in sorted(groups)}


def statistics(
    model: type[IndexRecord], sites: Iterable[str], group_by: GroupBy, since: date | None = None
) -> dict[str, dict[str, int]]:
    """Return the counts of ``sites`` per group; a modality or day sums over the sites."""
    merged: dict[str, dict[str, int]] = {}
    for site in sites:
        for name, counts in site_statistics(model, site, group_by, since).items():
            total = merged.setdefault(name, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
    return dict(sorted(merged.items()))


def _query(
    model: type[IndexRecord], pk: str, condition: object, attributes: list[str]
) -> Iterable[IndexRecord]:
    try:
        yield from model.by_level.query(
            pk,
            condition,  # type: ignore[arg-type]
            attributes_to_get=attributes,
        )
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"index query of {pk} failed: {exc}") from exc
