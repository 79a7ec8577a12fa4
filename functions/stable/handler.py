"""The StudyStable Lambda: runs the delayed checks of the stable queue (``cirrus.events.stable``).

A check that fails on DynamoDB or SQS is reported as a batch item failure, so SQS delivers it
again and, after the queue's receive limit, keeps it in the dead-letter queue. A message that
is not a check is logged and dropped, because no retry can make it one.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from cirrus.config import Settings
from cirrus.events.stable import StableCheck, StableChecker
from cirrus.events.tables import bind_arrival_model
from cirrus.services import Services

logger = Logger(service="cirrus-stable")


@cache
def _lambda_services() -> Services:
    copy_config_to_registered_loggers(source_logger=logger, include={"cirrus"})
    return Services(Settings.from_env())


def checker_for(services: Services) -> StableChecker:
    """Return the checker of ``services``; raise ``ValueError`` without its table or queue."""
    arrivals = bind_arrival_model(services.settings)
    queue = services.stable_queue
    if arrivals is None or queue is None:
        raise ValueError("StudyStable needs CIRRUS_CHANGES_TABLE and CIRRUS_STABLE_QUEUE")
    return StableChecker(
        arrivals,
        services.index_model,
        queue,
        services.events,
        services.settings.stable_after_seconds,
    )


def handle(event: dict[str, Any], context: Any, checker: StableChecker) -> dict[str, Any]:
    """Run the checks of one SQS batch; return the partial batch response."""

    def record_handler(record: SQSRecord) -> None:
        try:
            check = StableCheck.from_body(record.body)
        except ValueError as exc:
            logger.warning(
                "stable queue message dropped", extra={"reason": str(exc), "id": record.message_id}
            )
            return
        stable = checker.check(check)
        if stable is not None:
            logger.info("study stable", extra={"site": check.site, "study": check.study})

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event, record_handler, processor, context))


@cache
def _lambda_checker() -> StableChecker:
    return checker_for(_lambda_services())


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context, _lambda_checker())
