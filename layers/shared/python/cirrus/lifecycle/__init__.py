"""Tiering and retention rules, legal holds and archive statistics."""

from enum import StrEnum


class GroupBy(StrEnum):
    """What ``cirrus stats`` counts per: each site, each Modality or each StudyDate."""

    SITE = "site"
    MODALITY = "modality"
    DAY = "day"
