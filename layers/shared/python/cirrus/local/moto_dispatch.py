"""Dispatch of JSON-protocol requests straight to moto's response classes (moto 5.2.5).

``BotocoreStubber.process_request`` matches each request URL against the URL patterns of
every moto service, builds a Werkzeug request with a full WSGI environ from it, and then
``BaseResponse.setup_class`` reads the environ back into the attributes that an action
uses. For a JSON-protocol POST to DynamoDB, SQS or EventBridge, this module sets the same
attributes of a new response object from the request that the front has already parsed, and
calls the object's ``call_action``. The attributes are computed as ``setup_class`` computes
them, including the query string that it parses from the JSON body and the URL whose host is
the client's Host header. The parameters are parsed as moto parses them, by
``cirrus.local.moto_json_parser``. The actions, their errors and their serialization stay
moto's own. Every request gets a new response object, as moto's DynamoDB and EventBridge
routes create one. moto's SQS route instead shares one object between all requests, which
concurrent requests on the front's threads would overwrite in each other.

Every other request goes through ``process_request``: a path other than ``/``, an empty or
compressed body, a content type other than AWS's JSON ones, or a missing ``X-Amz-Target`` or
``Host``. So does every request while moto's request recorder or IAM authorization is on.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import ParseResult, parse_qsl, urlparse

from botocore.awsrequest import AWSPreparedRequest
from botocore.compat import HTTPHeaders
from moto import settings
from moto.core import responses as core_responses
from moto.core.botocore_stubber import BotocoreStubber
from moto.core.common_types import TYPE_RESPONSE
from moto.core.parse import PROTOCOL_PARSERS, JSONParser
from moto.core.request import determine_request_protocol, normalize_request
from moto.core.responses import BaseResponse
from moto.core.utils import get_service_model, utcnow
from moto.dynamodb.responses import DynamoHandler
from moto.events.responses import EventsHandler
from moto.iam.models import mark_account_as_visited
from moto.moto_api import recorder
from moto.sqs.responses import SQSResponse
from moto.utilities.utils import get_partition
from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.http import http_date

from cirrus.local.moto_json_parser import parse_json_request

# The response class of each service that the front serves.
RESPONSE_CLASSES: Final[Mapping[str, Callable[[], BaseResponse]]] = {
    "dynamodb": DynamoHandler,
    "sqs": SQSResponse,
    "events": EventsHandler,
}
_JSON_CONTENT_TYPES: Final = frozenset({"application/x-amz-json-1.0", "application/x-amz-json-1.1"})
# The endpoint URL of a service and region with the path "/", which every route of the
# three services accepts.
_ROOT_URL: Final = re.compile(r"https://(dynamodb|sqs|events)\.[a-z0-9-]+\.amazonaws\.com/")
_EMPTY_FORM: Final[ImmutableMultiDict[str, str]] = ImmutableMultiDict()
# The URL moto builds for each (URL, Host header) pair, as process_request builds it. A
# client sends one Host header per endpoint, so the bound only guards against odd clients.
_RAW_URLS_MAX: Final = 256
_raw_urls: dict[tuple[str, str], tuple[str, ParseResult]] = {}
_stubber = BotocoreStubber()


class JsonRequest:
    """The attributes of moto's ``Request`` that the setup of a JSON-protocol action reads."""

    from_wsgi_server = False
    method = "POST"
    path = raw_path = "/"
    content_encoding = None
    form = values = files = _EMPTY_FORM

    def __init__(self, raw_url: str, headers: Headers, data: bytes, content_type: str) -> None:
        self.raw_url = raw_url
        self.headers = headers
        self.data = data
        self.content_type = content_type
        self.environ: dict[str, Any] = {}


def dispatch(url: str, header_items: list[tuple[str, str]], body: bytes) -> TYPE_RESPONSE | None:
    """Run a POST to ``url`` in moto and return its status, headers and body.

    ``url`` is the AWS endpoint URL of the request's service and region with the request
    path. Returns None when moto has no route for the URL, as ``process_request`` does.
    """
    headers = Headers([(name, value) for name, value in header_items])
    response = _dispatch_json(url, headers, body)
    if response is not None:
        return response
    return dispatch_through_moto(url, header_items, body)


def dispatch_through_moto(
    url: str, header_items: list[tuple[str, str]], body: bytes
) -> TYPE_RESPONSE | None:
    """Run a POST to ``url`` through moto's own dispatch, ``process_request``."""
    prepared_headers = HTTPHeaders()
    for name, value in header_items:
        prepared_headers[name] = value
    request = AWSPreparedRequest(
        method="POST", url=url, headers=prepared_headers, body=body, stream_output=False
    )
    return _stubber.process_request(request)


def _dispatch_json(url: str, headers: Headers, body: bytes) -> TYPE_RESPONSE | None:
    """Run the request on a new response object; None if it needs ``process_request``."""
    service = _service_of(url)
    content_type = headers.get("Content-Type", "")
    host = headers.get("Host")
    if (
        service is None
        or not body
        or host is None
        or content_type not in _JSON_CONTENT_TYPES
        or "X-Amz-Target" not in headers
        or "Content-Encoding" in headers
        or recorder._user_enabled
        or settings.INITIAL_NO_AUTH_ACTION_COUNT != math.inf
    ):
        return None
    text = body.decode("utf-8")
    # setup_class reads the query string of a JSON body as moto's server would read a form.
    # Only a body without a single name, such as "&", leaves it empty, and moto then puts
    # the request headers in its place: that case takes moto's own path.
    query = parse_qsl(text, keep_blank_values=True)
    if not query:
        return None
    raw_url, parsed_url = _raw_url(url, host, headers)
    response = RESPONSE_CLASSES[service]()
    request = JsonRequest(raw_url, headers, body, content_type)
    _set_up(response, request, parsed_url, text, OrderedDict((k, [v]) for k, v in query))
    return response.call_action()


def _service_of(url: str) -> str | None:
    match = _ROOT_URL.fullmatch(url)
    return match.group(1) if match else None


def _raw_url(url: str, host: str, headers: Headers) -> tuple[str, ParseResult]:
    """Return the URL that moto's request normalization builds, whose host is the client's."""
    known = _raw_urls.get((url, host))
    if known is None:
        prepared_headers = HTTPHeaders()
        prepared_headers["Host"] = host
        prepared_headers["Content-Type"] = headers.get("Content-Type", "")
        raw_url = normalize_request(
            AWSPreparedRequest("POST", url, prepared_headers, b"", False)
        ).raw_url
        known = (raw_url, urlparse(raw_url))
        if len(_raw_urls) < _RAW_URLS_MAX:
            _raw_urls[(url, host)] = known
    return known


def _parse_parameters(response: BaseResponse, request: JsonRequest) -> None:
    """Set ``response.params`` as ``BaseResponse.parse_parameters`` sets them."""
    service_model = get_service_model(response.boto3_service_name)
    operation_model = service_model.operation_model(response._get_action())
    protocol = determine_request_protocol(service_model, request.content_type)
    if PROTOCOL_PARSERS[protocol] is JSONParser and response.PROTOCOL_PARSER_MAP_TYPE is dict:
        response.params = parse_json_request(operation_model, request.data)
    else:
        response.parse_parameters(request)  # type: ignore[arg-type]


def _set_up(
    response: BaseResponse,
    request: JsonRequest,
    parsed_url: ParseResult,
    text: str,
    query: OrderedDict[str, list[str]],
) -> None:
    """Set the attributes that ``BaseResponse.setup_class`` sets for this request."""
    response.is_werkzeug_request = False
    response.normalized_request = request  # type: ignore[assignment]
    response.parsed_url = parsed_url
    response.form_data = request.form
    response.raw_body = request.data
    response.body = text

    try:
        querystring = core_responses._decode_dict(query)
    except UnicodeDecodeError:
        querystring = query
    response.uri = request.raw_url
    response.path = parsed_url.path
    response.raw_path = request.raw_path
    response.querystring = querystring
    response.data = querystring
    response.method = request.method

    response.region = response.get_region_from_url(request, request.raw_url)
    response.partition = get_partition(response.region)
    response.uri_match = {}
    response.headers = request.headers
    response.response_headers = {"server": "amazon.com", "date": http_date(utcnow())}

    if response.automated_parameter_parsing and response._get_action():
        _parse_parameters(response, request)

    response.access_key = response.get_access_key()
    response.current_account = response.get_current_account()
    mark_account_as_visited(
        account_id=response.current_account,
        access_key=response.access_key,
        service=response.service_name,  # type: ignore[arg-type]
        region=response.region,
    )
