"""The events of one ingest batch: InstanceStored, InstanceRejected and the study arrivals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cirrus.events.model import CirrusEvent, instance_stored
from cirrus.events.publisher import Publisher
from cirrus.events.rejections import ingest_rejection
from cirrus.events.stable import ArrivalTracker
from cirrus.index.attributes import first_value
from cirrus.index.writer import IndexOutcome
from cirrus.ingest import ObjectEvent, PreparedObject
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

_SOP_CLASS_UID = "00080016"
_MODALITY = "00080060"
_CHANGED = (IndexOutcome.CREATED, IndexOutcome.UPDATED)


@dataclass
class BatchAnnouncer:
    """Collects the events of one batch; ``send`` publishes them once the batch is indexed."""

    publisher: Publisher
    arrivals: ArrivalTracker | None = None
    events: list[CirrusEvent] = field(default_factory=list)
    studies: dict[tuple[str, str], int] = field(default_factory=dict)

    def indexed(
        self, obj: ObjectEvent, outcome: IndexOutcome, prepared: PreparedObject | None
    ) -> None:
        """Note an indexed object; a new or replaced instance gets InstanceStored."""
        if outcome not in _CHANGED:
            return
        size: int | None
        if prepared is not None:
            key, metadata, size = prepared.obj.key, prepared.metadata, prepared.obj.size
        else:
            key, metadata, size = InstanceKey.parse(obj.key), {}, obj.size
        sop_class = first_value(metadata, _SOP_CLASS_UID)
        modality = first_value(metadata, _MODALITY)
        self.events.append(
            instance_stored(
                key,
                str(sop_class) if sop_class else None,
                str(modality) if modality else None,
                size,
                outcome.value,
            )
        )
        study = (key.site, key.study)
        self.studies[study] = self.studies.get(study, 0) + 1

    def rejected(self, obj: ObjectEvent, reason: str) -> None:
        self.events.append(ingest_rejection(obj.key, reason))

    def send(self) -> None:
        """Record the arrivals and publish the events; never raises."""
        if self.arrivals is not None:
            for (site, study), count in self.studies.items():
                try:
                    self.arrivals.arrived(site, study, count)
                except Exception:
                    # The batch is indexed already, and a retry of it would not record this.
                    logger.exception("study arrival not recorded", extra={"study": study})
        if self.events:
            self.publisher.publish(self.events)
        self.events = []
        self.studies = {}
