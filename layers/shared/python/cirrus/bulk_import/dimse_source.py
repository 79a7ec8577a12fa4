"""A DICOM peer as the source of an import: C-FIND lists its studies, C-MOVE or C-GET sends them.

With C-MOVE the command runs a Storage SCP on 127.0.0.1 under its own AE title, which must be a
move destination of the peer, and requests that the peer move each study there (PS3.4 C.4.2).
With C-GET the instances come back on the association of the request (PS3.4 C.4.3), so the
peer needs no destination. Each C-STORE request is answered after the instance is stored.

The peer sends an instance in the transfer syntax of an accepted presentation context, and an
acceptor accepts one syntax per context. So that the peer can send each instance as it stores
it, C-GET first lists the SOP classes of the study (C-FIND at SERIES and then IMAGE level) and
proposes one context per SOP class and transfer syntax, within the 128 contexts of an
association (PS3.8 9.3.2.2). C-MOVE needs none of this: its Storage SCP accepts every syntax
that the archive stores.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Final, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from cirrus.bulk_import.outcome import Outcome, Result
from cirrus.bulk_import.sources import ImportStopped, SourceUnavailableError, Unit, UnitImport
from cirrus.bulk_import.study_filter import StudyFilter
from cirrus.config import validate_ae_title
from cirrus.errors import StoreUnavailableError
from cirrus.gateway.store import STORAGE_TRANSFER_SYNTAXES
from cirrus.local.moto_process import LOOPBACK

logger = logging.getLogger(__name__)

_SUCCESS: Final = 0x0000
_PENDING: Final = frozenset({0xFF00, 0xFF01})
_WARNING: Final = 0xB000
_MOVE_DESTINATION_UNKNOWN: Final = 0xA801
_OUT_OF_RESOURCES: Final = 0xA700
_DATA_SET_DOES_NOT_MATCH: Final = 0xA900
_CANNOT_UNDERSTAND: Final = 0xC000
# One association proposes at most 128 presentation contexts (PS3.8 9.3.2.2), and C-GET needs
# one for itself.
_MAX_STORAGE_CONTEXTS: Final = 127
# The transfer syntaxes that C-GET proposes for each SOP class, one context each. When the SOP
# classes times these exceed the limit, the syntaxes at the end are left out for some classes.
# The order is uncompressed first, then the syntaxes that archives store most (an estimate).
_PREFERRED_GET_SYNTAXES: Final = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    JPEGLSLossless,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    DeflatedExplicitVRLittleEndian,
)
GET_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    *_PREFERRED_GET_SYNTAXES,
    *(s for s in STORAGE_TRANSFER_SYNTAXES if s not in _PREFERRED_GET_SYNTAXES),
)
# When C-FIND at IMAGE level fails or finds no SOP class, C-GET proposes the storage SOP
# classes of pynetdicom's default list, each in one context of the uncompressed syntaxes.
_FALLBACK_GET_CLASSES: Final = tuple(
    str(context.abstract_syntax) for context in StoragePresentationContexts[:_MAX_STORAGE_CONTEXTS]
)
DEFAULT_PORT: Final = 11113
DEFAULT_CALLING_AE: Final = "CIRRUS-IMPORT"


@dataclass(frozen=True)
class Peer:
    """A DICOM peer: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(value: str) -> Peer:
    """Parse ``AE@HOST:PORT``; raise ``ValueError`` naming what is wrong."""
    ae_title, at, address = value.rpartition("@")
    if not at or not ae_title:
        raise ValueError(f"{value!r} is not AE@HOST:PORT: the AE title is missing")
    host, colon, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host:
        raise ValueError(f"{value!r} is not AE@HOST:PORT: the host or the port is missing")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not AE@HOST:PORT: port {port_text!r} is not 1 to 65535")
    return Peer(validate_ae_title(ae_title), host, int(port_text))


class DimseSource:
    """The studies of a DICOM peer that match ``study_filter``, moved or got one at a time."""

    def __init__(
        self,
        peer: Peer,
        study_filter: StudyFilter,
        calling_ae: str = DEFAULT_CALLING_AE,
        port: int = DEFAULT_PORT,
        use_get: bool = False,
        timeout: float = 600.0,
    ) -> None:
        self._peer = peer
        self._filter = study_filter
        self._calling_ae = calling_ae
        self._port = port
        self._use_get = use_get
        self._timeout = timeout
        self.description = f"DICOM peer {peer} ({'C-GET' if use_get else 'C-MOVE'})"
        self._lock = threading.Lock()
        self._studies: dict[str, _StudyReceipt] = {}
        self._stopping = threading.Event()
        self._server: Any = None

    def start(self) -> None:
        """Start the Storage SCP that receives moved studies; C-GET needs none.

        Raises ``SourceUnavailableError`` when the port cannot be bound.
        """
        if self._use_get:
            return
        ae = AE(ae_title=self._calling_ae)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, list(STORAGE_TRANSFER_SYNTAXES))
        ae.network_timeout = self._timeout
        # TODO: listen on an address other than 127.0.0.1, so a peer on another host can move
        # studies here; until then such a peer needs --get.
        try:
            self._server = ae.start_server(
                (LOOPBACK, self._port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._handle_store)],
            )
        except OSError as exc:
            raise SourceUnavailableError(
                f"the Storage SCP cannot listen on {LOOPBACK}:{self._port}: {exc.strerror}; "
                "give another --port"
            ) from exc
        logger.info(
            "import Storage SCP listening",
            extra={"ae_title": self._calling_ae, "port": self._port},
        )

    def _scu_ae(self, contexts: list[tuple[str, list[str]]]) -> AE:
        ae = AE(ae_title=self._calling_ae)
        ae.acse_timeout = 30
        ae.dimse_timeout = self._timeout
        ae.network_timeout = self._timeout
        if self._use_get:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            for sop_class, syntaxes in contexts:
                ae.add_requested_context(sop_class, syntaxes)
        else:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        return ae

    def _associate(
        self, contexts: list[tuple[str, list[str]]], handlers: list[Any] | None = None
    ) -> Association:
        roles: list[Any] = []
        if self._use_get:
            for sop_class in dict.fromkeys(sop_class for sop_class, _ in contexts):
                role = SCP_SCU_RoleSelectionNegotiation()
                role.sop_class_uid = UID(sop_class)
                role.scu_role = False
                role.scp_role = True
                roles.append(role)
        assoc = self._scu_ae(contexts).associate(
            self._peer.host,
            self._peer.port,
            ae_title=self._peer.ae_title,
            ext_neg=roles or None,
            evt_handlers=handlers or [],
        )
        if not assoc.is_established:
            failure = _association_failure(assoc, self._peer)
            raise SourceUnavailableError(
                f"association with {self._peer} failed: {failure}; check the peer's AE title, "
                f"address and that it accepts {self._calling_ae} as calling AE title"
            )
        return assoc

    def _find_association(self) -> Association:
        finder = AE(ae_title=self._calling_ae)
        finder.acse_timeout = 30
        finder.dimse_timeout = self._timeout
        finder.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = finder.associate(self._peer.host, self._peer.port, ae_title=self._peer.ae_title)
        if not assoc.is_established:
            failure = _association_failure(assoc, self._peer)
            raise SourceUnavailableError(f"C-FIND association with {self._peer} failed: {failure}")
        return assoc

    def _find(self, assoc: Association, identifier: Dataset) -> Iterator[Dataset]:
        """Yield the matches of a C-FIND; raise ``SourceUnavailableError`` when it fails."""
        responses = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
        for status, match in responses:
            code = int(status.get("Status", -1)) if status else -1
            if code in _PENDING and match is not None:
                yield match
            elif code == -1:
                # pynetdicom yields an empty status when the peer aborts or times out.
                raise SourceUnavailableError(
                    f"C-FIND at {self._peer} got no response; check that the peer accepts "
                    f"{self._calling_ae} as calling AE title for C-FIND"
                )
            elif code != _SUCCESS:
                raise SourceUnavailableError(
                    f"C-FIND at {self._peer} failed with status 0x{code:04X}"
                )

    def units(self) -> Iterator[Unit]:
        studies: dict[str, int | None] = {}
        assoc = self._find_association()
        try:
            for match in self._find(assoc, self._filter.find_identifier()):
                uid = str(match.get("StudyInstanceUID", ""))
                if uid:
                    studies[uid] = _count(match.get("NumberOfStudyRelatedInstances"))
        finally:
            assoc.release()
        for uid in sorted(studies):
            yield Unit(uid, studies[uid], tracks_instances=True)

    def study_sop_classes(self, study: str) -> list[str]:
        """Return the SOP classes of the instances of ``study``, by C-FIND at IMAGE level.

        Returns an empty list when the query fails or its matches have no SOP Class UID.
        """
        assoc = self._find_association()
        classes: dict[str, None] = {}
        try:
            series = Dataset()
            series.QueryRetrieveLevel = "SERIES"
            series.StudyInstanceUID = study
            series.SeriesInstanceUID = ""
            series_uids = [
                str(match.SeriesInstanceUID)
                for match in self._find(assoc, series)
                if match.get("SeriesInstanceUID")
            ]
            for series_uid in series_uids:
                image = Dataset()
                image.QueryRetrieveLevel = "IMAGE"
                image.StudyInstanceUID = study
                image.SeriesInstanceUID = series_uid
                image.SOPInstanceUID = ""
                image.SOPClassUID = ""
                for match in self._find(assoc, image):
                    if match.get("SOPClassUID"):
                        classes.setdefault(str(match.SOPClassUID), None)
        except SourceUnavailableError as exc:
            logger.warning(
                "C-FIND of the SOP classes of a study failed",
                extra={"study_instance_uid": study, "error": str(exc)},
            )
            return []
        finally:
            if assoc.is_established:
                assoc.release()
        return list(classes)

    def order(self, key: str) -> Hashable:
        return key

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        receipt = _StudyReceipt(target)
        with self._lock:
            self._studies[unit.key] = receipt
        try:
            self._retrieve(unit.key, receipt)
        finally:
            with self._lock:
                self._studies.pop(unit.key, None)
        if receipt.error is not None:
            raise receipt.error

    def _retrieve(self, study: str, receipt: _StudyReceipt) -> None:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study
        handlers = [(evt.EVT_C_STORE, self._handle_store)] if self._use_get else None
        contexts = get_contexts(self.study_sop_classes(study)) if self._use_get else []
        assoc = self._associate(contexts, handlers)
        final: Dataset | None = None
        try:
            if self._use_get:
                responses = assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet)
            else:
                responses = assoc.send_c_move(
                    ds, self._calling_ae, StudyRootQueryRetrieveInformationModelMove
                )
            for status, _identifier in responses:
                if self._stopping.is_set() or receipt.error is not None:
                    assoc.abort()
                    break
                final = status
        finally:
            if assoc.is_established:
                assoc.release()
        if self._stopping.is_set() and receipt.error is None:
            raise ImportStopped
        self._check_final(study, final, receipt)

    def _check_final(self, study: str, status: Dataset | None, receipt: _StudyReceipt) -> None:
        verb = "C-GET" if self._use_get else "C-MOVE"
        if status is None or "Status" not in status:
            receipt.target.failed(study, f"{verb} ended without a response from the peer")
            return
        code = int(status.Status)
        if code == _MOVE_DESTINATION_UNKNOWN:
            raise SourceUnavailableError(
                f"{self._peer} does not know {self._calling_ae} as a move destination; add it "
                f"to the peer's configuration with host {LOOPBACK} and port {self._port}"
            )
        failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        if code == _SUCCESS or (code == _WARNING and failed <= receipt.rejected):
            return
        detail = f"{verb} of the study ended with status 0x{code:04X}"
        if failed > receipt.rejected:
            detail += f", {failed - receipt.rejected} sub-operations failed at the peer"
        receipt.target.failed(study, detail)

    def _handle_store(self, event: Event) -> int:
        """Import the instance of a C-STORE request; return the status once it is stored."""
        request = cast(C_STORE, event.request)
        sop_instance = str(request.AffectedSOPInstanceUID)
        try:
            study = str(event.dataset.get("StudyInstanceUID", ""))
        except Exception:  # noqa: BLE001 - a data set that cannot be decoded is rejected
            study = ""
        with self._lock:
            receipt = self._studies.get(study)
        if receipt is None:
            logger.warning(
                "instance of a study that was not requested rejected",
                extra={"sop_instance_uid": sop_instance},
            )
            return _DATA_SET_DOES_NOT_MATCH
        if self._stopping.is_set():
            return _OUT_OF_RESOURCES
        try:
            outcome = receipt.target.data(event.encoded_dataset(), sop_instance)
        except StoreUnavailableError as exc:
            receipt.error = exc
            return _OUT_OF_RESOURCES
        except ImportStopped:
            return _OUT_OF_RESOURCES
        status = _status_of(outcome)
        if status != _SUCCESS:
            with self._lock:
                receipt.rejected += 1
        return status

    def stop(self) -> None:
        """Make studies in flight stop at their next instance."""
        self._stopping.set()

    def close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@dataclass
class _StudyReceipt:
    """The instances of one study being received, and the first store error among them."""

    target: UnitImport
    rejected: int = 0
    error: StoreUnavailableError | None = None


def get_contexts(sop_classes: list[str]) -> list[tuple[str, list[str]]]:
    """Return the storage contexts that C-GET proposes: (SOP class, [one transfer syntax]).

    Each SOP class gets a context per syntax of ``GET_TRANSFER_SYNTAXES`` in turn, so the
    contexts left out beyond 127 are those of the syntaxes at the end of that list. Without SOP
    classes, the storage classes of pynetdicom's default list get one context each of both
    uncompressed syntaxes, in which the peer decompresses what it stores compressed (or fails).
    """
    if not sop_classes:
        uncompressed = [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)]
        return [(sop_class, uncompressed) for sop_class in _FALLBACK_GET_CLASSES]
    contexts = [
        (sop_class, [str(syntax)]) for syntax in GET_TRANSFER_SYNTAXES for sop_class in sop_classes
    ]
    # NOTE: past 127 SOP classes, the instances of the classes left out cannot be sent.
    return contexts[:_MAX_STORAGE_CONTEXTS]


def _association_failure(assoc: Association, peer: Peer) -> str:
    """Describe why an association with ``peer`` was not established."""
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        reason = primitive.reason_str if primitive is not None else "no reason given"
        return f"rejected by the peer: {reason}"
    # pynetdicom keeps no cause of a failed connection, so a second attempt finds it.
    try:
        with socket.create_connection((peer.host, peer.port), timeout=10):
            pass
    except OSError as exc:
        return f"cannot connect to {peer.host} port {peer.port}: {exc.strerror or exc}"
    return "the peer aborted the association or sent no response in time"


def _status_of(outcome: Outcome) -> int:
    if outcome.result in (Result.STORED, Result.REPLACED, Result.DUPLICATE):
        return _SUCCESS
    if outcome.reason.startswith(("data set could not be parsed", "not a valid DICOM")):
        return _CANNOT_UNDERSTAND
    return _DATA_SET_DOES_NOT_MATCH


def _count(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
