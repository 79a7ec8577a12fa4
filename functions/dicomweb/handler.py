"""The DICOMweb Lambda: STOW-RS, WADO-RS and QIDO-RS behind an API Gateway REST API.

Events are never logged, because query strings and paths carry patient data. Services are
built from the environment on the first invocation and reused while the container lives.

Without numpy and the codecs (the function's layers leave them out to keep the cold start
short), a request that needs pixel work is forwarded whole to the pixel function named by
``CIRRUS_PIXEL_FUNCTION``, which runs this handler with the codecs (``cirrus.dicomweb.forwarding``).

The integration is buffered, so every result must fit Lambda's 6 MB payload. A larger 200
response is staged in S3 and replaced by a 303 to it (``cirrus.dicomweb.delivery``), and
``handle`` raises ``PayloadLimitError`` for any result that still does not fit. So a test
that exercises a route through ``handle`` fails where the route would fail on AWS.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from cirrus.access import AccessPolicy
from cirrus.config import DEFAULT_DEPLOYMENT, ENV, Settings
from cirrus.dicom.transcode import CodecsUnavailable
from cirrus.dicomweb.app import DicomwebServices, build_app, resolve, with_response_headers
from cirrus.dicomweb.bundles import MetadataBundles
from cirrus.dicomweb.delivery import ResponseStager, check_payload
from cirrus.dicomweb.forwarding import PixelForwarder, error_response
from cirrus.index.deletion import IndexDeleter
from cirrus.lambda_metrics import measured_request
from cirrus.services import Services

SERVICE_NAME = "cirrus-dicomweb"

# The libraries whose AWS calls X-Ray traces. Without this list the X-Ray SDK's patch_all
# (aws-xray-sdk 2.15.0) would also patch sqlite3, which this function never uses, and so
# import it at each cold start.
TRACED_MODULES: Final = ("botocore", "pynamodb")

logger = Logger(service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME, patch_modules=TRACED_MODULES)

_Entry = tuple[object, DicomwebServices, APIGatewayRestResolver, APIGatewayRestResolver]
_apps: dict[int, _Entry] = {}
_apps_lock = threading.Lock()


def dicomweb_services(services: Services) -> DicomwebServices:
    """Return the DICOMweb view of a deployment's services and its access rules.

    Without an access document the view is open: every caller has every action on the
    default site. Raises ``AccessConfigError`` when the access document is invalid.
    """
    access = access_policy(services.settings)
    return DicomwebServices(
        store=services.store,
        reader=services.index_reader,
        qido=services.qido,
        site=services.settings.default_site,
        claims=services.claims,
        cors_origins=services.settings.cors_origins,
        bundles=MetadataBundles(services.index_model, services.store),
        deleter=IndexDeleter(services.index_model, services.change_feed),
        audit=services.audit,
        transfers=services.transfers,
        pixels=(
            PixelForwarder(services.clients.lambda_, services.settings.pixel_function)
            if services.settings.pixel_function
            else None
        ),
        access=access,
        events=services.events,
        changes=services.change_reader,
    )


def access_policy(settings: Settings) -> AccessPolicy | None:
    """Return the access rules of ``settings``, or None when they name no access document.

    ``access_document`` (the JSON text that the CDK stack sets) takes precedence over
    ``access_file``.
    """
    if settings.access_document:
        return AccessPolicy.from_json(settings.access_document, source=ENV["access_document"])
    if settings.access_file:
        return AccessPolicy.load(Path(settings.access_file))
    return None


def handle(
    event: dict[str, Any], context: Any, services: Services | DicomwebServices
) -> dict[str, Any]:
    """Resolve one API Gateway REST proxy event with ``services`` into the proxy response.

    The local stack calls this with its own services. The resolver built for each services
    object is kept for the next event. Raises ``PayloadLimitError`` for a response that Lambda
    would reject, which the staging of large responses should make impossible. Every response,
    errors and redirects included, gets the headers of ``with_response_headers``.
    """
    return with_response_headers(_handle(event, context, services))


def _handle(
    event: dict[str, Any], context: Any, services: Services | DicomwebServices
) -> dict[str, Any]:
    view, app, head_app = _app_for(services)
    try:
        if event.get("httpMethod") == "HEAD":
            # HEAD is GET without the body (RFC 9110 9.3.2); the headers stay as GET sets them.
            # The HEAD resolver has no transfer store, so nothing is staged only to be dropped.
            # NOTE: so HEAD of a large resource gets 200, where GET gets a 303.
            response = resolve(head_app, {**event, "httpMethod": "GET"}, context)
            return _without_body(response.result)
        resolved = resolve(app, event, context)
    except CodecsUnavailable as exc:
        if view.pixels is None:
            logger.error("no pixel function is configured", extra={"reason": str(exc)})
            return error_response(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "internal error: this deployment cannot decode or encode pixel data",
            )
        # The pixel function staged a large body and checked the payload itself.
        return view.pixels.forward(event)
    result = resolved.result
    if view.transfers is not None:
        # Staged under the first site the request used, or the default site if it used none.
        stager = ResponseStager(view.transfers, resolved.site or view.site)
        result = stager.deliver(result)
    check_payload(result)
    return result


def _without_body(response: dict[str, Any]) -> dict[str, Any]:
    """Drop the body of a GET proxy response, with a Content-Length of the body dropped.

    RFC 9110 8.6 lets a HEAD response give the Content-Length that the GET would send.
    NOTE: the local adapter sends this value, but it is not verified that API Gateway keeps it.
    """
    body = response.get("body") or ""
    size = len(base64.b64decode(body)) if response.get("isBase64Encoded") else len(body.encode())
    multi = {
        name: values
        for name, values in (response.get("multiValueHeaders") or {}).items()
        if name.lower() != "content-length"
    }
    headers = {
        name: value
        for name, value in (response.get("headers") or {}).items()
        if name.lower() != "content-length"
    }
    # RFC 9110 8.6: no Content-Length in a 204, and none needed in a 304.
    if int(response.get("statusCode", 200)) not in (204, 304):
        multi["Content-Length"] = [str(size)]
    return {
        **response,
        "headers": headers,
        "multiValueHeaders": multi,
        "body": "",
        "isBase64Encoded": False,
    }


@cache
def _lambda_services() -> DicomwebServices:
    copy_config_to_registered_loggers(source_logger=logger, include={"cirrus"})
    view = dicomweb_services(Services(Settings.from_env()))
    if view.access is None:
        logger.warning(
            "no access document is configured (CIRRUS_ACCESS_JSON or CIRRUS_ACCESS_FILE): "
            "every caller that API Gateway admits has every action on the default site",
            extra={"site": view.site},
        )
    return view


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    services = _lambda_services()
    deployment = os.environ.get(ENV["deployment"], DEFAULT_DEPLOYMENT)
    return measured_request(event, deployment, lambda: handle(event, context, services))


def _app_for(
    services: Services | DicomwebServices,
) -> tuple[DicomwebServices, APIGatewayRestResolver, APIGatewayRestResolver]:
    """Return the DICOMweb view of ``services``, its resolver and its resolver for HEAD."""
    # Keyed by identity with a reference kept, because Services is not hashable.
    with _apps_lock:
        entry = _apps.get(id(services))
        if entry is None:
            view = (
                services if isinstance(services, DicomwebServices) else dicomweb_services(services)
            )
            head_view = dataclasses.replace(view, transfers=None)
            entry = (services, view, build_app(view), build_app(head_view))
            _apps[id(services)] = entry
        return entry[1], entry[2], entry[3]
