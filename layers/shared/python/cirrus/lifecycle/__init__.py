"""Tiering and retention rules, legal holds and archive statistics."""

from enum import StrEnum


class GroupBy(StrEnum):
    """The grouping of ``cirrus stats``: per site, per Modality or per StudyDate."""

    SITE = "site"
    MODALITY = "modality"
    DAY = "day"
