"""De-identification of DICOM instances: PS3.15 Annex E, the Basic Application Level
Confidentiality Profile and the options that Cirrus offers."""

from cirrus.deid.deidentifier import DeidentificationError, Deidentifier
from cirrus.deid.profile import DateHandling, ProfileOptions

__all__ = ["DateHandling", "DeidentificationError", "Deidentifier", "ProfileOptions"]
