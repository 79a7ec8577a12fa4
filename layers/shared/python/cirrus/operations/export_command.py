"""The ``cirrus export`` and ``cirrus deidentify`` commands behind their command-line options.

Exit status: 0 when every instance was written or sent, 1 when some failed, 2 when the command
could not run (no stack, study not found, destination unusable, peer unreachable), 130 on Ctrl-C.

TODO: exports and de-identified copies write no audit record, because the audit trail records
DICOMweb and DIMSE requests only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cirrus.deid import DateHandling, Deidentifier, ProfileOptions
from cirrus.deid.deidentifier import MIN_KEY_BYTES
from cirrus.errors import StoreUnavailableError
from cirrus.operations.export import FAILED, ExportError, InstanceResult, export_file_set
from cirrus.operations.forward import ForwardSettings, Peer, forward_study
from cirrus.operations.report import Output
from cirrus.operations.target import Target
from cirrus.storage.objects import ObjectStore


class CommandError(Exception):
    """A command that cannot run, with the reason; the exit status is 2."""


@dataclass(frozen=True)
class DeidOptions:
    """The de-identification flags of the command line."""

    retain_uids: bool = False
    retain_dates: bool = False
    shift_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    key_file: Path | None = None

    def given(self) -> bool:
        """Tell whether any de-identification flag was given."""
        return any(
            (
                self.retain_uids,
                self.retain_dates,
                self.shift_dates,
                self.retain_patient_characteristics,
                self.retain_device_identity,
                self.key_file is not None,
            )
        )

    def deidentifier(self) -> Deidentifier:
        """Return the de-identifier these flags describe, or raise ``CommandError``."""
        if self.retain_dates and self.shift_dates:
            raise CommandError("--retain-dates and --shift-dates exclude each other; give one")
        dates = DateHandling.REMOVE
        if self.retain_dates:
            dates = DateHandling.RETAIN
        elif self.shift_dates:
            dates = DateHandling.SHIFT
        options = ProfileOptions(
            retain_uids=self.retain_uids,
            dates=dates,
            retain_patient_characteristics=self.retain_patient_characteristics,
            retain_device_identity=self.retain_device_identity,
        )
        if self.key_file is None:
            return Deidentifier(options)
        return Deidentifier(options, read_key(self.key_file))


def read_key(path: Path) -> bytes:
    """Return the key in ``path``: its bytes without surrounding whitespace."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise CommandError(f"key file {path} cannot be read: {exc.strerror}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise CommandError(
            f"key file {path} contains {len(key)} bytes; use at least {MIN_KEY_BYTES}, such as the "
            "output of `openssl rand -hex 32`"
        )
    return key


def run_export(
    target: Target,
    output: Output,
    site: str,
    study_uid: str,
    to_path: Path | None,
    peer_text: str | None,
    deidentifier: Deidentifier | None,
    forward_settings: ForwardSettings,
) -> int:
    """Export the study to ``to_path`` or send it to the peer; return the exit status."""
    if (to_path is None) == (peer_text is None):
        raise CommandError("give one of --to PATH and --to-dimse AE@HOST:PORT")
    report = _reporter(output)
    store = target.services.store
    if to_path is not None:
        title = f"export of {study_uid} to {to_path}"
        with output.progress(title):
            counts = _guarded(
                lambda: export_file_set(store, site, study_uid, to_path, deidentifier, report)
            )
    else:
        try:
            peer = Peer.parse(str(peer_text))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        title = f"export of {study_uid} to {peer}"
        with output.progress(title):
            counts = _guarded(
                lambda: forward_study(
                    store, site, study_uid, peer, deidentifier, forward_settings, report
                )
            )
    output.summary(title, list(counts), counts, deidentified=deidentifier is not None)
    return 1 if counts.get(FAILED) else 0


def run_deidentify(
    target: Target,
    store: ObjectStore,
    output: Output,
    source_site: str,
    target_site: str,
    study_uid: str,
    deidentifier: Deidentifier,
) -> int:
    """Store de-identified copies of the study in ``target_site``; return the exit status."""
    from cirrus.operations.deidentify import deidentify_study

    title = f"de-identified copy of {study_uid} from {source_site} to {target_site}"
    with output.progress(title):
        counts = _guarded(
            lambda: deidentify_study(
                store,
                target.services.claims,
                source_site,
                target_site,
                study_uid,
                deidentifier,
                _reporter(output),
            )
        )
    output.summary(title, list(counts), counts)
    return 1 if counts.get(FAILED) else 0


def _reporter(output: Output) -> Callable[[InstanceResult], None]:
    def report(result: InstanceResult) -> None:
        output.line(result.to_json(), result.result, result.object_key, result.detail)
        output.advance()

    return report


def _guarded(run: Callable[[], dict[str, int]]) -> dict[str, int]:
    try:
        return run()
    except (ExportError, StoreUnavailableError) as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        # Writing the File-set or a temporary file failed: a full disk, or no permission.
        raise CommandError(f"writing failed: {exc}") from exc
