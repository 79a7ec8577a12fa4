"""A workaround for C-STORE responses that pynetdicom 3.0.4 drops on associations it requested.

pynetdicom 3.0.4 pauses an association's reactor in ``send_c_store`` by waiting for a flag that
can still be set from the reactor's previous pause. Under CPU load the reactor then takes the
C-STORE response off the DIMSE queue, logs "Received unexpected C-STORE service message" and
drops it, and ``send_c_store`` waits for the DIMSE time-out. The gateway's associations to
C-MOVE destinations and the forwarding of ``cirrus export --to-dimse`` both send C-STOREs this
way.
"""

from __future__ import annotations

import logging

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import DimseServiceType

logger = logging.getLogger(__name__)


def return_responses_to_sender(assoc: Association) -> None:
    """Make the reactor thread of ``assoc`` put back the DIMSE responses that it takes.

    Use it only on an association that expects no requests from the peer, as one that only
    sends C-STOREs: every response the reactor takes goes back on the queue, where the waiting
    ``send_c_store`` gets it.
    """
    serve = assoc._serve_request

    def serve_or_return(msg: DimseServiceType, context_id: int) -> None:
        if msg.is_valid_response:
            logger.debug("response returned to the sender", extra={"context_id": context_id})
            assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_return  # type: ignore[method-assign]
