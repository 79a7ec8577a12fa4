"""The DICOMweb API: STOW-RS, WADO-RS, QIDO-RS and DELETE routes on API Gateway REST events.

Route functions read the request from the event, call one domain function and build the
response. Errors are translated once, by ``cirrus.dicomweb.errors``. Each request is
authorized and audited by ``cirrus.dicomweb.guard``, and uses only the sites that its
``/sites/{site}`` prefix and the caller's grants allow (``cirrus.dicomweb.scope``):

- QIDO-RS searches every site where the caller may query and merges the matches;
- WADO-RS answers from the first site, in the order of the caller's grants, whose index has
  the study, series or instance, so a Study Instance UID in two sites is retrieved from the
  site listed first, and from the other with its ``/sites/{site}`` prefix;
- STOW-RS stores into the caller's one store site, or the site its prefix names;
- DELETE deletes from the first site that has the resource, as a retrieve would read it.

The modules of STOW-RS, uploads, frames, rendered resources and DELETE are imported inside
their routes, so a cold start whose first request needs none of them does not load them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from cirrus.access import AccessPolicy
from cirrus.audit import AuditLog
from cirrus.dicom.transcode import CodecsUnavailable
from cirrus.dicomweb.bundles import MetadataBundles, entity_tag, representation_etag
from cirrus.dicomweb.changes import add_change_routes
from cirrus.dicomweb.delivery import (
    MAX_BUFFERED_BODY,
    see_other_headers,
    see_other_note,
    stage_parts,
)
from cirrus.dicomweb.errors import (
    error_response,
    json_error,
    retry_after_headers,
    unexpected_error_response,
)
from cirrus.dicomweb.forwarding import PixelForwarder
from cirrus.dicomweb.guard import (
    STATE_KEY,
    RequestState,
    guard,
    query_key_names,
    request_actor,
    request_state,
    studies_of_matches,
    studies_of_path,
    studies_of_refs,
    studies_of_stored,
)
from cirrus.dicomweb.scope import SITE_PREFIX, first_site_with, split_site_prefix
from cirrus.dicomweb.wado import (
    DICOM_JSON_MEDIA_TYPE,
    DICOM_MEDIA_TYPE,
    Representation,
    build_instances,
    plan_instances,
    require_dicom_json,
    retrieve_bulkdata,
    retrieve_metadata,
)
from cirrus.errors import (
    CirrusError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    StoreUnavailableError,
)
from cirrus.events.feed import ChangeReader
from cirrus.events.publisher import NoPublisher, Publisher
from cirrus.events.rejections import stow_rejections
from cirrus.index.claims import InstanceClaims
from cirrus.index.deletion import IndexDeleter
from cirrus.index.reader import IndexReader
from cirrus.storage.objects import ObjectStore
from cirrus.storage.transfers import TransferStore

if TYPE_CHECKING:
    from cirrus.dicomweb.rendered import RenderOptions

_BULKDATA: Final = "/bulkdata/"
# Methods of the collection resources; DELETE applies only to a study, series or instance.
_SERVED_METHODS: Final = ("GET", "HEAD", "POST")
_INSTANCE: Final = "/studies/<study>/series/<series>/instances/<instance>"
# Request headers a browser may send cross-origin: those of PS3.18 8.4 that are not
# CORS-safelisted, and the SigV4 headers of a signed request.
CORS_ALLOW_HEADERS: Final = (
    "Accept",
    "Accept-Charset",
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-Modified-Since",
    "If-None-Match",
    "If-Range",
    "If-Unmodified-Since",
    "Range",
    "X-Amz-Content-Sha256",
    "X-Amz-Date",
    "X-Amz-Security-Token",
)
# Response headers a page may read; Content-Type and Content-Length are safelisted already.
CORS_EXPOSE_HEADERS: Final = (
    "Accept-Ranges",
    "Content-Location",
    "Content-Range",
    "ETag",
    "Location",
    "Retry-After",
    "Warning",
)
CORS_MAX_AGE_SECONDS: Final = 600
# Every response may carry patient data, so no cache may keep it unless a route sets its own
# Cache-Control. Metadata routes send "private, no-cache", so a browser revalidates by ETag.
DEFAULT_CACHE_CONTROL: Final = "no-store"
# The resolver keeps the current event in a class attribute shared by every instance, so a
# threaded server must resolve one event at a time. Lambda sends one event at a time anyway.
_RESOLVE_LOCK: Final = threading.Lock()


@dataclass(frozen=True)
class DicomwebServices:
    """The adapters of one DICOMweb API, its default site and its access rules.

    ``qido`` has ``search(site=, level=, params=, study=, series=, base_url=)`` returning an
    object with ``matches`` (DICOM JSON) and ``warnings`` (text), and for a caller with
    several sites ``search_sites(sites=, ...)`` (``cirrus.query.qido.QidoService``).
    ``access`` None is open: every caller has every action on ``site``.
    """

    store: ObjectStore
    reader: IndexReader
    qido: Any
    site: str
    claims: InstanceClaims | None = None
    cors_origins: tuple[str, ...] = ()
    # Without it, series and study metadata are built from the instance records per request.
    bundles: MetadataBundles | None = None
    # Without both, DELETE returns 405.
    deleter: IndexDeleter | None = None
    audit: AuditLog | None = None
    # Without it, responses too large for Lambda fail and POST /uploads returns 503.
    transfers: TransferStore | None = None
    # Where requests go that need pixel codecs this process lacks (see forwarding.py).
    pixels: PixelForwarder | None = None
    access: AccessPolicy | None = None
    # Where stores, rejections and deletes are announced; None sends no events.
    events: Publisher | None = None
    # The change feed that GET /changes reads; without it that route returns 404.
    changes: ChangeReader | None = None

    @property
    def policy(self) -> AccessPolicy:
        return self.access if self.access is not None else AccessPolicy.open_to(self.site)


@dataclass(frozen=True)
class Resolved:
    """The proxy response to one event, and the first site the request used, if any."""

    result: dict[str, Any]
    site: str | None


def build_app(services: DicomwebServices) -> APIGatewayRestResolver:
    """Build the resolver with every DICOMweb route bound to ``services``."""
    app = APIGatewayRestResolver(cors=cors_config(services.cors_origins))
    app.use([guard(services.policy, services.audit, services.pixels is not None)])
    _add_error_handlers(app)
    _add_stow_routes(app, services)
    _add_wado_routes(app, services)
    _add_qido_routes(app, services)
    _add_delete_routes(app, services)
    add_change_routes(app, services.changes)
    return app


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """Return the CORS settings for ``origins``, or None to allow no cross-origin calls.

    The preflight response lists every method of a route (powertools collects them) and the
    request headers in ``CORS_ALLOW_HEADERS``. Responses, errors included, expose the headers
    in ``CORS_EXPOSE_HEADERS`` to the page.
    """
    if not origins:
        return None
    return CORSConfig(
        allow_origin=origins[0],
        extra_origins=list(origins[1:]),
        allow_headers=list(CORS_ALLOW_HEADERS),
        expose_headers=list(CORS_EXPOSE_HEADERS),
        max_age=CORS_MAX_AGE_SECONDS,
    )


def resolve(app: APIGatewayRestResolver, event: dict[str, Any], context: Any) -> Resolved:
    """Resolve one proxy event with ``app``. Several threads may call this at once.

    A ``/sites/{site}`` prefix of the path is removed before routing and kept in the
    request's state, which the routes and the guard read.
    """
    requested_site, path = split_site_prefix(str(event.get("path") or "/"))
    if requested_site is not None:
        event = {**event, "path": path}
    state = RequestState(requested_site)
    with _RESOLVE_LOCK:
        # The resolver clears its context after each event.
        app.context[STATE_KEY] = state
        result = app.resolve(event, context)
    return Resolved(result, state.served_site)


def with_response_headers(result: dict[str, Any]) -> dict[str, Any]:
    """Return the proxy response ``result`` with the headers that every response carries.

    ``X-Content-Type-Options: nosniff`` replaces any value, and Cache-Control is set to
    ``DEFAULT_CACHE_CONTROL`` unless the response has one. Header names match in any case.
    """
    headers = dict(result.get("headers") or {})
    multi = dict(result.get("multiValueHeaders") or {})
    names = {name.lower() for name in [*headers, *multi]}
    for name in [*headers, *multi]:
        if name.lower() == "x-content-type-options":
            headers.pop(name, None)
            multi.pop(name, None)
    multi["X-Content-Type-Options"] = ["nosniff"]
    if "cache-control" not in names:
        multi["Cache-Control"] = [DEFAULT_CACHE_CONTROL]
    return {**result, "headers": headers, "multiValueHeaders": multi}


def base_url(event: APIGatewayProxyEvent) -> str:
    """Return the URL under which the API was called: scheme, host and stage.

    The scheme is X-Forwarded-Proto (https when absent). A port is added from
    X-Forwarded-Port when the Host value has none and the port is not the scheme's default.
    """
    headers = event.headers
    scheme = headers.get("X-Forwarded-Proto") or "https"
    host = headers.get("Host") or event.request_context.domain_name
    if not host:
        raise InvalidRequestError("request has no Host header; the client must send one")
    port = headers.get("X-Forwarded-Port")
    default_port = {"http": "80", "https": "443"}.get(scheme)
    if port and port != default_port and not _has_port(host):
        host = f"{host}:{port}"
    stage = event.request_context.stage
    return f"{scheme}://{host}/{stage}" if stage else f"{scheme}://{host}"


def request_base_url(app: APIGatewayRestResolver) -> str:
    """Return the base URL of the request being resolved, with its ``/sites/{site}`` prefix.

    URLs built on it (RetrieveURL, BulkDataURI, Location) then name the request's site.
    """
    url = base_url(app.current_event)
    site = request_state(app).requested_site
    return f"{url}{SITE_PREFIX}{site}" if site is not None else url


def request_body(event: APIGatewayProxyEvent) -> bytes:
    """Return the request body as bytes, decoding base64 when ``isBase64Encoded`` is set."""
    body = event.body
    if not body:
        return b""
    if not event.is_base64_encoded:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise InvalidRequestError("request body is marked base64 but is not base64") from exc


def query_params(event: APIGatewayProxyEvent) -> dict[str, list[str]]:
    """Return every query parameter with all its values, as API Gateway decoded them."""
    multi = event.multi_value_query_string_parameters
    if multi:
        return {name: list(values) for name, values in multi.items()}
    return {name: [value] for name, value in event.query_string_parameters.items()}


def warning_headers(event: APIGatewayProxyEvent, warnings: list[str]) -> dict[str, list[str]]:
    """Return one Warning header field (RFC 7234 5.5) per text, with code 299."""
    if not warnings:
        return {}
    agent = _header_safe(event.headers.get("Host") or "cirrus")
    values = []
    for text in warnings:
        escaped = _header_safe(text).replace("\\", "\\\\").replace('"', '\\"')
        values.append(f'299 {agent}: "{escaped}"')
    return {"Warning": values}


def _add_error_handlers(app: APIGatewayRestResolver) -> None:
    def route_not_found(exc: RouteNotFoundError) -> Response[str]:
        event = app.current_event
        if event.http_method not in _SERVED_METHODS:
            return json_error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"method {event.http_method} is not supported; use GET or HEAD, and POST to store",
                headers={"Allow": ", ".join(_SERVED_METHODS)},
            )
        return json_error(
            HTTPStatus.NOT_FOUND, f"no DICOMweb resource for {event.http_method} {event.path}"
        )

    def unexpected(exc: Exception) -> Response[str]:
        return unexpected_error_response(exc, app.current_event.request_context.request_id)

    def missing_codecs(exc: CodecsUnavailable) -> Response[str]:
        # Out of the resolver, to the handler, which forwards the request (forwarding.py).
        raise exc

    # Registered by call, because the decorators of the resolver are not annotated.
    app.exception_handler(CirrusError)(error_response)
    app.not_found(route_not_found)
    app.exception_handler(CodecsUnavailable)(missing_codecs)
    app.exception_handler(Exception)(unexpected)


def _add_stow_routes(app: APIGatewayRestResolver, services: DicomwebServices) -> None:
    def store(study: str | None, content_type: str | None, body: bytes) -> Response[str]:
        from cirrus.dicomweb.stow import instance_parts, response_media_type, store_instances

        event, state = app.current_event, request_state(app)
        site = state.store_site()
        state.use(site)
        response_type = response_media_type(event.headers.get("Accept"))
        parts = instance_parts(content_type, body)
        del body
        outcome = store_instances(
            services.store, site, parts, request_base_url(app), study, services.claims
        )
        state.use(site, studies_of_stored(outcome.stored))
        if services.events is not None and outcome.failures:
            services.events.publish(stow_rejections(site, outcome.failures))
        headers: dict[str, str | list[str]] = {}
        headers.update(warning_headers(event, outcome.warnings))
        if outcome.status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers.update(retry_after_headers())
        return Response(
            status_code=int(outcome.status),
            content_type=response_type,
            body=outcome.render(response_type),
            headers=headers,
        )

    @app.post("/studies")
    def _store_studies() -> Response[str]:
        event = app.current_event
        return store(None, event.headers.get("Content-Type"), request_body(event))

    @app.post("/studies/<study>")
    def _store_study(study: str) -> Response[str]:
        event = app.current_event
        return store(unquote(study), event.headers.get("Content-Type"), request_body(event))

    # Bodies too large for API Gateway and Lambda go to S3 first (cirrus.dicomweb.uploads).
    def transfers() -> TransferStore:
        if services.transfers is None:
            raise StoreUnavailableError("uploads are not available on this server")
        return services.transfers

    @app.post("/uploads")
    def _new_upload() -> Response[str]:
        from cirrus.dicomweb.uploads import create_upload

        state = request_state(app)
        # Nothing is stored yet; the store request that follows is audited.
        state.record_success = False
        ticket = create_upload(transfers(), state.store_site())
        location = f"{request_base_url(app)}/uploads/{ticket.upload_id}"
        body = ticket.as_json(location)
        return _json(body, HTTPStatus.CREATED, {"Location": location, "Cache-Control": "no-store"})

    def store_upload(upload_id: str, study: str | None) -> Response[str]:
        from cirrus.dicomweb.uploads import discard_upload, read_upload

        event, upload_id = app.current_event, unquote(upload_id)
        site = request_state(app).store_site()
        requested_type = event.headers.get("Content-Type")
        content_type, body = read_upload(transfers(), site, upload_id, requested_type)
        response = store(study, content_type, body)
        if response.status_code != HTTPStatus.SERVICE_UNAVAILABLE:
            discard_upload(transfers(), site, upload_id)
        return response

    @app.post("/uploads/<upload_id>/studies")
    def _store_upload(upload_id: str) -> Response[str]:
        return store_upload(upload_id, None)

    @app.post("/uploads/<upload_id>/studies/<study>")
    def _store_upload_study(upload_id: str, study: str) -> Response[str]:
        return store_upload(upload_id, unquote(study))


def _add_wado_routes(app: APIGatewayRestResolver, services: DicomwebServices) -> None:
    store, reader = services.store, services.reader

    def locate(study: str, series: str | None = None, sop: str | None = None) -> str:
        """Return the site to retrieve from: the first granted one that has the resource."""
        state = request_state(app)
        site = first_site_with(state.sites(), reader.contains, study, series, sop)
        state.use(site)
        return site

    def instances(study: str, series: str | None = None, sop: str | None = None) -> Response[Any]:
        site = locate(study, series, sop)
        accept = app.current_event.headers.get("Accept")
        plan = plan_instances(reader, site, study, series, sop, accept)
        request_state(app).use(site, studies_of_refs(ref for ref, _ in plan.items))
        if services.transfers is not None and plan.stored_size > MAX_BUFFERED_BODY:
            # Encoded part by part into S3, so the body is never held whole (delivery.py).
            parts = plan.parts(store)
            url, size = stage_parts(services.transfers, site, parts, DICOM_MEDIA_TYPE)
            return Response(
                status_code=int(HTTPStatus.SEE_OTHER),
                body=see_other_note(url, size),
                headers=see_other_headers(url),
            )
        return _binary(build_instances(store, plan))

    def metadata(study: str, series: str | None = None, sop: str | None = None) -> Response[str]:
        event = app.current_event
        site = locate(study, series, sop)
        items = retrieve_metadata(
            reader, site, request_base_url(app), study, series, sop, event.headers.get("Accept")
        )
        request_state(app).use(site, studies_of_path(study, series, sop))
        body = json.dumps(items, separators=(",", ":"))
        # A strong validator of the exact body, so a viewer can revalidate cached metadata.
        etag = f'"{hashlib.sha256(body.encode()).hexdigest()[:32]}"'
        cached = _entity_tags(event.headers.get("If-None-Match"))
        if etag in cached or "*" in cached:
            # RFC 9110 15.4.5: a 304 sends the Cache-Control that a 200 would send.
            return Response(
                status_code=int(HTTPStatus.NOT_MODIFIED),
                headers={"ETag": etag, "Cache-Control": "private, no-cache"},
            )
        return Response(
            status_code=int(HTTPStatus.OK),
            content_type=DICOM_JSON_MEDIA_TYPE,
            body=body,
            headers={"ETag": etag, "Cache-Control": "private, no-cache"},
            compress=True,
        )

    def bundled_metadata(study: str, series: str | None = None) -> Response[Any]:
        """Serve series or study metadata from its stored bundle, as gzip when accepted."""
        bundles = services.bundles
        if bundles is None:
            return metadata(study, series)
        event = app.current_event
        require_dicom_json(event.headers.get("Accept"))
        site = locate(study, series)
        request_state(app).use(site, studies_of_path(study, series))
        url = request_base_url(app)
        gzip_coded = _accepts_gzip(event.headers.get("Accept-Encoding"))
        cached = _entity_tags(event.headers.get("If-None-Match"))
        headers: dict[str, str | list[str]] = {
            "Cache-Control": "private, no-cache",
            "Vary": "Accept-Encoding",
        }
        tag = bundles.record_tag(site, study, series)
        # A matching validator gets its 304 from the index record alone, without reading S3.
        if tag is not None:
            etag = representation_etag(entity_tag(tag, url), gzip_coded)
            if etag in cached or "*" in cached:
                return Response(int(HTTPStatus.NOT_MODIFIED), headers={**headers, "ETag": etag})
        bundle = bundles.fetch(site, study, series, url, tag)
        headers["ETag"] = bundle.etag(gzip_coded)
        if headers["ETag"] in cached or "*" in cached:
            return Response(int(HTTPStatus.NOT_MODIFIED), headers=headers)
        if gzip_coded:
            headers["Content-Encoding"] = "gzip"
            body = bundle.gzip_body
        else:
            body = bundle.body()
        return Response(
            int(HTTPStatus.OK), content_type=DICOM_JSON_MEDIA_TYPE, body=body, headers=headers
        )

    @app.get("/studies/<study>")
    def _study(study: str) -> Response[Any]:
        return instances(unquote(study))

    @app.get("/studies/<study>/series/<series>")
    def _series(study: str, series: str) -> Response[Any]:
        return instances(unquote(study), unquote(series))

    @app.get(_INSTANCE)
    def _instance(study: str, series: str, instance: str) -> Response[Any]:
        return instances(unquote(study), unquote(series), unquote(instance))

    @app.get("/studies/<study>/metadata")
    def _study_metadata(study: str) -> Response[Any]:
        return bundled_metadata(unquote(study))

    @app.get("/studies/<study>/series/<series>/metadata")
    def _series_metadata(study: str, series: str) -> Response[Any]:
        return bundled_metadata(unquote(study), unquote(series))

    @app.get(f"{_INSTANCE}/metadata", compress=True)
    def _instance_metadata(study: str, series: str, instance: str) -> Response[str]:
        return metadata(unquote(study), unquote(series), unquote(instance))

    def located_instance(
        study: str, series: str, instance: str
    ) -> tuple[str, tuple[str, str, str]]:
        """Return the site of an instance path and its decoded UIDs, noting them as touched."""
        uids = (unquote(study), unquote(series), unquote(instance))
        site = locate(*uids)
        request_state(app).use(site, studies_of_path(*uids))
        return site, uids

    @app.get(f"{_INSTANCE}/frames/<frames>")
    def _frames(study: str, series: str, instance: str, frames: str) -> Response[bytes]:
        from cirrus.dicomweb.frames import retrieve_frames

        site, uids = located_instance(study, series, instance)
        accept = app.current_event.headers.get("Accept")
        return _binary(retrieve_frames(store, reader, site, uids, unquote(frames), accept))

    def rendered(
        site: str, uids: tuple[str, str, str], frame: int, options: RenderOptions | None = None
    ) -> Response[bytes]:
        from cirrus.dicomweb.rendered import parse_render_options, render_instance

        event = app.current_event
        if options is None:
            options = parse_render_options(query_params(event))
        accept = event.headers.get("Accept")
        return _binary(render_instance(store, reader, site, uids, frame, options, accept))

    @app.get(f"{_INSTANCE}/rendered")
    def _rendered(study: str, series: str, instance: str) -> Response[bytes]:
        return rendered(*located_instance(study, series, instance), 1)

    @app.get(f"{_INSTANCE}/frames/<frames>/rendered")
    def _frame_rendered(study: str, series: str, instance: str, frames: str) -> Response[bytes]:
        from cirrus.dicomweb.frames import parse_frame_list
        from cirrus.dicomweb.rendered import parse_render_options, render_frames

        site, uids = located_instance(study, series, instance)
        numbers = parse_frame_list(unquote(frames))
        event = app.current_event
        options = parse_render_options(query_params(event))
        accept = event.headers.get("Accept")
        return _binary(render_frames(store, reader, site, uids, numbers, options, accept))

    def rendered_group(study: str, series: str | None = None) -> Response[Any]:
        from cirrus.dicomweb.rendered import parse_render_options
        from cirrus.dicomweb.rendered_group import StagedRendering, render_group

        event = app.current_event
        site = locate(study, series)
        request_state(app).use(site, studies_of_path(study, series))
        options = parse_render_options(query_params(event))
        accept = event.headers.get("Accept")
        url = request_base_url(app)
        result = render_group(
            store, reader, site, url, study, series, options, accept, MAX_BUFFERED_BODY
        )
        if not isinstance(result, StagedRendering):
            return _binary(result)
        if services.transfers is None:
            raise PayloadTooLargeError(
                f"the rendered images exceed the {MAX_BUFFERED_BODY}-byte limit of one "
                "response; request the instances' rendered resources one at a time"
            )
        # Encoded part by part into S3, as for large instance retrieves (delivery.py).
        staged, size = stage_parts(services.transfers, site, result.parts, result.media_type)
        return Response(
            status_code=int(HTTPStatus.SEE_OTHER),
            body=see_other_note(staged, size),
            headers=see_other_headers(staged),
        )

    @app.get("/studies/<study>/rendered")
    def _study_rendered(study: str) -> Response[Any]:
        return rendered_group(unquote(study))

    @app.get("/studies/<study>/series/<series>/rendered")
    def _series_rendered(study: str, series: str) -> Response[Any]:
        return rendered_group(unquote(study), unquote(series))

    @app.get(f"{_INSTANCE}/thumbnail")
    def _thumbnail(study: str, series: str, instance: str) -> Response[bytes]:
        from cirrus.dicomweb.rendered import parse_thumbnail_options

        options = parse_thumbnail_options(query_params(app.current_event))
        return rendered(*located_instance(study, series, instance), 1, options)

    @app.get("/studies/<study>/series/<series>/thumbnail")
    def _series_thumbnail(study: str, series: str) -> Response[bytes]:
        from cirrus.dicomweb.rendered import parse_thumbnail_options

        options = parse_thumbnail_options(query_params(app.current_event))
        study, series = unquote(study), unquote(series)
        site = locate(study, series)
        refs = reader.instances(site, study, series)
        middle = refs[len(refs) // 2]
        request_state(app).use(site, studies_of_refs([middle]))
        return rendered(site, (middle.study, middle.series, middle.sop), 1, options)

    # A bulk data path has slashes (00880200/0/7FE00010), which a route parameter cannot
    # contain, so the rule matches any depth and the path is read from the request path.
    @app.get(f"{_INSTANCE}/bulkdata/<first>(?:/[^/]+)*")
    def _bulkdata(study: str, series: str, instance: str, first: str) -> Response[bytes]:
        event = app.current_event
        path = unquote(event.path.split(_BULKDATA, 1)[1])
        site, uids = located_instance(study, series, instance)
        accept = event.headers.get("Accept")
        byte_range = event.headers.get("Range")
        representation = retrieve_bulkdata(store, reader, site, uids, path, accept, byte_range)
        response = _binary(representation)
        if representation.content_range is not None:
            response.status_code = int(HTTPStatus.PARTIAL_CONTENT)
            # The part carries the same header. This one lets a client read the range without
            # parsing the body, although the bytes it names are those of the part.
            response.headers["Content-Range"] = representation.content_range
        return response


def _add_qido_routes(app: APIGatewayRestResolver, services: DicomwebServices) -> None:
    def search(level: str, study: str | None = None, series: str | None = None) -> Response[str]:
        event, state = app.current_event, request_state(app)
        params = query_params(event)
        state.query_keys = query_key_names(params, study, series)
        sites = state.sites()
        require_dicom_json(event.headers.get("Accept"))
        scope = {"level": level, "params": params, "study": study, "series": series}
        if len(sites) == 1:
            result = services.qido.search(site=sites[0], base_url=request_base_url(app), **scope)
            match_sites = [sites[0]] * len(result.matches)
        else:
            # Several sites, or none when the prefix names a site the caller may not query.
            result = services.qido.search_sites(
                sites=sites, base_url=request_base_url(app), **scope
            )
            match_sites = result.sites
        for site in sites:
            matches = [m for m, s in zip(result.matches, match_sites, strict=True) if s == site]
            state.use(site, studies_of_matches(matches, study, series))
        headers: dict[str, str | list[str]] = {}
        headers.update(warning_headers(event, list(result.warnings)))
        if not result.matches:
            # PS3.18 8.3.4.4.1 requires 204 No Content when nothing matches. The change
            # proposal CP-2473 would make it 200 with an empty array.
            return Response(status_code=int(HTTPStatus.NO_CONTENT), headers=headers)
        return _json(result.matches, HTTPStatus.OK, headers)

    @app.get("/studies")
    def _studies() -> Response[str]:
        return search("STUDY")

    @app.get("/series")
    def _all_series() -> Response[str]:
        return search("SERIES")

    @app.get("/instances")
    def _all_instances() -> Response[str]:
        return search("INSTANCE")

    @app.get("/studies/<study>/series")
    def _study_series(study: str) -> Response[str]:
        return search("SERIES", unquote(study))

    @app.get("/studies/<study>/instances")
    def _study_instances(study: str) -> Response[str]:
        return search("INSTANCE", unquote(study))

    @app.get("/studies/<study>/series/<series>/instances")
    def _series_instances(study: str, series: str) -> Response[str]:
        return search("INSTANCE", unquote(study), unquote(series))


def _add_delete_routes(app: APIGatewayRestResolver, services: DicomwebServices) -> None:
    def delete(study: str, series: str | None = None, sop: str | None = None) -> Response[str]:
        from cirrus.dicomweb.delete import DeleteTarget, delete_resource

        event, state = app.current_event, request_state(app)
        if services.deleter is None or services.audit is None:
            return json_error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "DELETE is not enabled on this server",
                headers={"Allow": ", ".join(_SERVED_METHODS)},
            )
        request_id = event.request_context.request_id or ""
        sites = state.sites()
        # The first site that has the resource, in the order of the grants, as a retrieve
        # reads it. delete_resource raises NotFoundError before it writes or deletes anything.
        for site in sites:
            target = DeleteTarget(site, study, series, sop)
            try:
                delete_resource(
                    services.store,
                    services.deleter,
                    services.audit,
                    services.events if services.events is not None else NoPublisher(),
                    target,
                    request_actor(event),
                    request_id,
                )
            except NotFoundError:
                if len(sites) == 1:
                    state.use(site)
                    raise
                continue
            except Exception:
                state.use(site)
                raise
            state.use(site, studies_of_path(study, series, sop))
            # The deletion record, written before anything was deleted, audits the success.
            state.record_success = False
            return Response(status_code=int(HTTPStatus.NO_CONTENT), body="")
        unknown = DeleteTarget(services.site, study, series, sop)
        raise NotFoundError(f"{unknown.describe()} not found")

    @app.delete("/studies/<study>")
    def _delete_study(study: str) -> Response[str]:
        return delete(unquote(study))

    @app.delete("/studies/<study>/series/<series>")
    def _delete_series(study: str, series: str) -> Response[str]:
        return delete(unquote(study), unquote(series))

    @app.delete(_INSTANCE)
    def _delete_instance(study: str, series: str, instance: str) -> Response[str]:
        return delete(unquote(study), unquote(series), unquote(instance))


def _accepts_gzip(header: str | None) -> bool:
    """Tell whether an Accept-Encoding value (RFC 9110 12.5.3) gives gzip a non-zero weight."""
    if not header:
        return False
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    weight = weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0)))
    return weight > 0


def _entity_tags(header: str | None) -> set[str]:
    """Return the entity tags of an If-None-Match value; "*" matches any (RFC 9110 13.1.2)."""
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _json(
    content: Any,
    status: HTTPStatus = HTTPStatus.OK,
    headers: dict[str, str | list[str]] | None = None,
) -> Response[str]:
    return Response(
        status_code=int(status),
        content_type=DICOM_JSON_MEDIA_TYPE,
        body=json.dumps(content, separators=(",", ":")),
        headers=headers,
    )


def _binary(representation: Representation) -> Response[bytes]:
    return Response(
        status_code=int(HTTPStatus.OK),
        content_type=representation.content_type,
        body=representation.body,
    )


def _header_safe(text: str) -> str:
    """Replace each character that is not printable ASCII with '?'.

    Warning texts can quote values read from a received data set, and a CR or LF there would
    end the header field.
    """
    return "".join(char if " " <= char <= "~" else "?" for char in text)


def _has_port(host: str) -> bool:
    # An IPv6 literal is bracketed ("[::1]:8080"), so only a colon after "]" starts a port.
    return ":" in host.rsplit("]", 1)[-1]
