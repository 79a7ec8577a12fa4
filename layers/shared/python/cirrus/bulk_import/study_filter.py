"""The studies that a remote import takes: by Study Instance UID, study date and Patient ID."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class StudyFilter:
    """Matching keys of a study-level query; empty fields match every study."""

    study_uids: tuple[str, ...] = field(default_factory=tuple)
    since: date | None = None
    until: date | None = None
    patient_id: str | None = None

    @property
    def study_date(self) -> str:
        """Return the StudyDate range matching value (PS3.4 C.2.2.2.5), or "" for any date."""
        if self.since is None and self.until is None:
            return ""
        start = self.since.strftime("%Y%m%d") if self.since else ""
        end = self.until.strftime("%Y%m%d") if self.until else ""
        return f"{start}-{end}"

    def qido_searches(self) -> list[dict[str, str]]:
        """Return the QIDO-RS search parameters: one search per Study Instance UID, or one."""
        common: dict[str, str] = {}
        if self.study_date:
            common["StudyDate"] = self.study_date
        if self.patient_id:
            common["PatientID"] = self.patient_id
        if not self.study_uids:
            return [common]
        return [{**common, "StudyInstanceUID": uid} for uid in self.study_uids]

    def find_identifier(self) -> Dataset:
        """Return the C-FIND identifier of a Study Root query at the STUDY level."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        # A list of UIDs matches any of them (PS3.4 C.2.2.2.2).
        ds.StudyInstanceUID = list(self.study_uids) if self.study_uids else ""
        ds.StudyDate = self.study_date
        ds.PatientID = self.patient_id or ""
        ds.NumberOfStudyRelatedInstances = ""
        return ds
