"""SigV4 verification for the local stack, as API Gateway's IAM authorization does it.

In AWS, API Gateway checks the signature of every DICOMweb request and passes the signer's
identity to the function (``requestContext.identity``). The local HTTP adapter does the same
with the credentials of a local JSON file, so the handler receives the same event in both::

    {
      "credentials": {
        "AKIALOCALNORTH000001": {
          "secret": "a secret of at least 16 characters",
          "principal": "arn:aws:iam::111122223333:role/north-modality"
        }
      }
    }

Each access key id maps to its secret access key and to the principal it signs as. The access
document (``cirrus.access``) gives the grants of that principal. The canonical request, the
string to sign and the signature are computed by botocore's ``SigV4Auth``, for the service
``execute-api`` and the stack's region. A request passes only when:

- its Authorization header is ``AWS4-HMAC-SHA256`` with a credential scope of a known access
  key, the date of X-Amz-Date, the stack's region, ``execute-api`` and ``aws4_request``;
- its SignedHeaders include ``host`` and ``x-amz-date`` and are the headers botocore signs;
- X-Amz-Date is at most ``MAX_CLOCK_SKEW_SECONDS`` away from this machine's clock;
- an X-Amz-Content-Sha256 header, if sent, is the SHA-256 of the body, because botocore
  signs that value in place of the body;
- the signature matches.

NOTE: query-string signing (presigned URLs with X-Amz-Signature) is not accepted, although
API Gateway accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cirrus.access import AccessConfigError, AccessPolicy, parse_principal
from cirrus.audit import Actor, AuditAction, AuditEvent, AuditLog, AuditOutcome
from cirrus.dicomweb.scope import request_action, split_site_prefix
from cirrus.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

SERVICE: Final = "execute-api"
ALGORITHM: Final = "AWS4-HMAC-SHA256"
# API Gateway rejects a signed request whose date is more than 5 minutes off its clock.
MAX_CLOCK_SKEW_SECONDS: Final = 300
AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
_REQUIRED_SIGNED_HEADERS: Final = ("host", "x-amz-date")
_ACCESS_KEY: Final = re.compile(r"[A-Z0-9]{16,128}")
_MIN_SECRET_LENGTH: Final = 16
# One message for an unknown access key and for a wrong secret, so that a caller cannot learn
# which key ids exist. The audit record and the log tell the two apart by ``reason``.
SIGNATURE_REJECTED: Final = (
    "the signature does not match the request, or its access key is unknown; "
    "check the key id and secret, and sign the request again"
)
# Computes the expected signature for an unknown key, so that it takes the same steps as a
# known one. It is random per process, and a request with an unknown key is rejected anyway.
_UNKNOWN_KEY_SECRET: Final = secrets.token_urlsafe(32)
_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


class CredentialsConfigError(ValueError):
    """The local credentials file is not valid JSON or breaks one of its rules."""


class SignatureError(Exception):
    """A request is unsigned, or its signature, date, scope or body hash does not verify.

    The message states what failed and how the client can fix it, and never names the access
    key id. ``reason`` is a fixed phrase without request values, for audit records and logs.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LocalCredential:
    """One access key of the local credentials file."""

    access_key: str
    # Kept out of the repr, so that it reaches no log or traceback.
    secret_key: str = field(repr=False)
    principal: str


@dataclass(frozen=True)
class VerifiedCaller:
    """The signer of a verified request: its access key and the principal it signs as."""

    access_key: str
    principal: str


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request that a SigV4 signature covers, as the client sent them.

    ``path`` is still percent-encoded and ``query`` is the raw query string, without '?'.
    """

    method: str
    scheme: str
    path: str
    query: str
    headers: Mapping[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def load_credentials(path: Path) -> dict[str, LocalCredential]:
    """Read a local credentials file. Raises ``CredentialsConfigError`` when it is invalid."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CredentialsConfigError(f"credentials file {path} is unreadable: {exc}") from exc
    try:
        return parse_credentials(document)
    except CredentialsConfigError as exc:
        raise CredentialsConfigError(f"credentials file {path} is invalid: {exc}") from exc


def parse_credentials(document: object) -> dict[str, LocalCredential]:
    """Check a parsed credentials document and return its credentials by access key id."""
    if not isinstance(document, dict) or set(document) != {"credentials"}:
        raise CredentialsConfigError('the document must be an object with only "credentials"')
    entries = document["credentials"]
    if not isinstance(entries, dict) or not entries:
        raise CredentialsConfigError('"credentials" must be a non-empty object of access key ids')
    parsed = {}
    for access_key, entry in entries.items():
        if not _ACCESS_KEY.fullmatch(access_key):
            raise CredentialsConfigError(
                f"access key id {access_key!r} is invalid; use 16 to 128 uppercase letters "
                "and digits"
            )
        if not isinstance(entry, dict) or set(entry) != {"secret", "principal"}:
            raise CredentialsConfigError(
                f'access key {access_key}: give exactly "secret" and "principal"'
            )
        secret = entry["secret"]
        if not isinstance(secret, str) or len(secret) < _MIN_SECRET_LENGTH:
            raise CredentialsConfigError(
                f"access key {access_key}: the secret must be a string of at least "
                f"{_MIN_SECRET_LENGTH} characters"
            )
        try:
            parse_principal(entry["principal"])
        except AccessConfigError as exc:
            raise CredentialsConfigError(f"access key {access_key}: {exc}") from exc
        # The event carries the principal as written; the DICOMweb app matches it.
        parsed[access_key] = LocalCredential(access_key, secret, entry["principal"])
    return parsed


class SigV4Verifier:
    """Verifies SigV4-signed requests against local credentials, for one region."""

    def __init__(
        self,
        credentials: Mapping[str, LocalCredential],
        region: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = dict(credentials)
        self.region = region
        self._clock = clock

    def verify(self, request: SignedRequest) -> VerifiedCaller:
        """Return the signer of ``request``, or raise ``SignatureError`` saying why not."""
        authorization = request.header("authorization")
        if not authorization:
            raise SignatureError(
                "the request is not signed; sign it with SigV4 for execute-api", "unsigned"
            )
        match = _AUTHORIZATION.fullmatch(authorization.strip())
        if match is None:
            raise SignatureError(
                f"the Authorization header is not a {ALGORITHM} signature with Credential, "
                "SignedHeaders and Signature",
                "malformed Authorization header",
            )

        access_key, credential = self._credential(match["credential"])
        amz_date = self._checked_date(request, match["credential"])
        signed = match["signed"].split(";")
        missing = [name for name in _REQUIRED_SIGNED_HEADERS if name not in signed]
        if missing:
            raise SignatureError(
                f"the signed headers must include {', '.join(missing)}", "required header unsigned"
            )
        absent = [name for name in signed if request.header(name) is None]
        if absent:
            raise SignatureError(
                f"the signed headers {', '.join(absent)} are missing from the request",
                "signed header missing",
            )
        self._check_payload_hash(request)

        secret = _UNKNOWN_KEY_SECRET if credential is None else credential.secret_key
        signer = SigV4Auth(Credentials(access_key, secret), SERVICE, self.region)
        prepared = _botocore_request(request, signed, amz_date)
        headers_to_sign = signer.headers_to_sign(prepared)
        if signer.signed_headers(headers_to_sign) != match["signed"]:
            raise SignatureError(
                "SignedHeaders does not match the request: a header it names is missing, or "
                "is one that botocore never signs, such as user-agent or connection",
                "signed headers mismatch",
            )

        canonical = signer.canonical_request(prepared)
        expected = signer.signature(signer.string_to_sign(prepared, canonical), prepared)
        matches = hmac.compare_digest(expected, match["signature"])
        if credential is None:
            raise SignatureError(SIGNATURE_REJECTED, "unknown access key")
        if not matches:
            raise SignatureError(SIGNATURE_REJECTED, "signature mismatch")
        return VerifiedCaller(credential.access_key, credential.principal)

    def _credential(self, scope_text: str) -> tuple[str, LocalCredential | None]:
        """Return the access key of a Credential value and its credential, None if unknown.

        The scope is checked but not its date. An unknown key is rejected only where the
        signature is compared, so that it fails the same checks as a known key with a wrong
        secret and gets the same message.
        """
        parts = scope_text.split("/")
        if len(parts) != 5:
            raise SignatureError(
                "the credential scope must be KEY/DATE/REGION/SERVICE/aws4_request",
                "malformed credential scope",
            )
        access_key, _, region, service, terminator = parts
        if (region, service, terminator) != (self.region, SERVICE, "aws4_request"):
            raise SignatureError(
                f"the credential scope must be for region {self.region}, service {SERVICE} "
                "and aws4_request",
                "wrong credential scope",
            )
        return access_key, self._credentials.get(access_key)

    def _checked_date(self, request: SignedRequest, scope_text: str) -> str:
        """Return X-Amz-Date if it is well formed, matches the scope and is near the clock."""
        amz_date = request.header("x-amz-date")
        if amz_date is None:
            raise SignatureError("the request has no X-Amz-Date header", "no request date")
        try:
            signed_at = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError as exc:
            raise SignatureError(
                "X-Amz-Date is not of the form YYYYMMDDTHHMMSSZ", "malformed request date"
            ) from exc
        if scope_text.split("/")[1] != amz_date[:8]:
            raise SignatureError(
                "the credential scope date is not the date of X-Amz-Date",
                "wrong credential scope",
            )
        skew = abs(self._clock() - signed_at.timestamp())
        if skew > MAX_CLOCK_SKEW_SECONDS:
            raise SignatureError(
                f"X-Amz-Date is {int(skew)} s away from the server's clock; at most "
                f"{MAX_CLOCK_SKEW_SECONDS} s are accepted",
                "request date out of range",
            )
        return amz_date

    @staticmethod
    def _check_payload_hash(request: SignedRequest) -> None:
        declared = request.header("x-amz-content-sha256")
        if declared is None:
            return  # botocore hashes the body itself into the canonical request
        if declared != hashlib.sha256(request.body).hexdigest():
            raise SignatureError(
                "X-Amz-Content-Sha256 is not the SHA-256 of the body; send the hex digest of "
                "the body, which is signed",
                "payload hash mismatch",
            )


def _botocore_request(request: SignedRequest, signed: list[str], amz_date: str) -> AWSRequest:
    """Rebuild the request botocore would have signed: only the signed headers, same URL.

    The query is passed as decoded pairs, so botocore encodes each name and value as SigV4
    defines (RFC 3986, sorted), whatever escaping the client sent. A '+' is a space, as API
    Gateway decodes it.
    """
    host = request.header("host") or ""
    prepared = AWSRequest(
        method=request.method,
        url=f"{request.scheme}://{host}{request.path}",
        data=request.body,
        params=parse_qsl(request.query, keep_blank_values=True),
    )
    for name in signed:
        for value in request.headers.get(name, []):
            # HTTPHeaders adds a field on each assignment, so repeated fields stay apart.
            prepared.headers[name] = value
    prepared.context["timestamp"] = amz_date
    return prepared


@dataclass(frozen=True)
class LocalAuthentication:
    """The signature check of the local HTTP adapter and the audit log of its rejections."""

    verifier: SigV4Verifier
    audit: AuditLog | None = None

    def record_rejection(
        self, error: SignatureError, method: str, path: str, source_ip: str | None, user_agent: str
    ) -> None:
        """Log a rejected request and write its failed-authorization audit record.

        ``path`` is the path under the stage. A method that needs no DICOMweb action (PUT,
        PATCH) is logged only. A failure to write the record is logged, and the request is
        rejected all the same.
        """
        logger.warning(
            "request signature rejected",
            extra={"reason": error.reason, "method": method, "source_ip": source_ip},
        )
        action = request_action(method, split_site_prefix(path)[1])
        if self.audit is None or action is None:
            return
        event = AuditEvent(
            action=AuditAction(action.value),
            outcome=AuditOutcome.MINOR_FAILURE,
            actor=Actor(principal=None, source_ip=source_ip, user_agent=user_agent or None),
            site=None,
            request_id=str(uuid.uuid4()),
            transport="DICOMweb",
            detail=f"authentication failed: {error.reason}",
        )
        try:
            self.audit.record(event)
        except StoreUnavailableError as exc:
            logger.error(
                "audit record of a rejected request not written",
                extra={"error": type(exc).__name__, "reason": error.reason},
            )


def closed_credentials(
    access_file: Path | None, credentials_file: Path | None
) -> dict[str, LocalCredential] | None:
    """Return the credentials of a local stack closed by an access document, or None if open.

    Reads and checks both files, so that an invalid one stops the start. Raises
    ``ValueError`` (``AccessConfigError`` or ``CredentialsConfigError``) naming the file and
    the error.
    """
    if access_file is None:
        if credentials_file is not None:
            raise CredentialsConfigError(
                "credentials are given without an access document; give --access too"
            )
        return None
    if credentials_file is None:
        raise CredentialsConfigError(
            "an access document needs local credentials to sign with; give --credentials too"
        )
    AccessPolicy.load(access_file)
    return load_credentials(credentials_file)


def identity_of(caller: VerifiedCaller, source_ip: str | None, user_agent: str) -> dict[str, Any]:
    """Return ``requestContext.identity`` as API Gateway sets it for an IAM-signed request."""
    account = caller.principal.split(":")[4] if caller.principal.count(":") >= 5 else None
    return {
        "sourceIp": source_ip,
        "userAgent": user_agent,
        "userArn": caller.principal,
        "accessKey": caller.access_key,
        "accountId": account,
        "caller": caller.access_key,
    }
