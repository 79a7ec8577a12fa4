"""Resource names and runtime settings, shared by the CDK app, the local stack and the tests.

The CDK stack passes every setting to the Lambda functions and the gateway task as the
environment variables named in ``ENV``. The local stack builds the same ``Settings`` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

DEFAULT_DEPLOYMENT: Final = "cirrus"
DEFAULT_SITE: Final = "default"
DEFAULT_AE_TITLE: Final = "CIRRUS"

# Elements whose base64 form would exceed this many bytes are served as BulkDataURI.
BULK_DATA_THRESHOLD: Final = 1024

# The ingest queue hands a message to the dead-letter queue after this many receives.
INGEST_MAX_RECEIVES: Final = 3

# Seconds without a new instance after which a study counts as stable (StudyStable event).
DEFAULT_STABLE_AFTER_SECONDS: Final = 120

# PS3.5 6.2: an AE title has at most 16 characters of the default character repertoire,
# without backslash or control characters. Leading and trailing spaces are not significant.
MAX_AE_TITLE_LENGTH: Final = 16


def validate_ae_title(value: str) -> str:
    """Return ``value`` without surrounding spaces if it is a valid AE title, else raise."""
    title = value.strip(" ")
    valid = (
        0 < len(title) <= MAX_AE_TITLE_LENGTH
        and title.isascii()
        and title.isprintable()
        and "\\" not in title
    )
    if not valid:
        raise ValueError(
            f"AE title {value!r} is invalid; use 1 to {MAX_AE_TITLE_LENGTH} printable ASCII "
            "characters without backslash"
        )
    return title


ENV: Final = {
    "deployment": "CIRRUS_DEPLOYMENT",
    "bucket": "CIRRUS_BUCKET",
    "table": "CIRRUS_TABLE",
    "ingest_queue": "CIRRUS_INGEST_QUEUE",
    "dead_letter_queue": "CIRRUS_DEAD_LETTER_QUEUE",
    "kms_key_id": "CIRRUS_KMS_KEY_ID",
    "default_site": "CIRRUS_DEFAULT_SITE",
    "endpoint_url": "CIRRUS_AWS_ENDPOINT_URL",
    "json_endpoint_url": "CIRRUS_AWS_JSON_ENDPOINT_URL",
    "cors_origins": "CIRRUS_CORS_ORIGINS",
    "pixel_function": "CIRRUS_PIXEL_FUNCTION",
    "audit_table": "CIRRUS_AUDIT_TABLE",
    "access_file": "CIRRUS_ACCESS_FILE",
    "access_document": "CIRRUS_ACCESS_JSON",
    "changes_table": "CIRRUS_CHANGES_TABLE",
    "event_bus": "CIRRUS_EVENT_BUS",
    "stable_queue": "CIRRUS_STABLE_QUEUE",
    "stable_after_seconds": "CIRRUS_STABLE_AFTER_SECONDS",
    "region": "AWS_REGION",
}


@dataclass(frozen=True)
class ResourceNames:
    """Names of the AWS resources of one deployment, derived from the deployment name."""

    deployment: str = DEFAULT_DEPLOYMENT

    def __post_init__(self) -> None:
        value = self.deployment
        allowed = all(c.islower() or c.isdigit() or c == "-" for c in value)
        if not value or not value.isascii() or not allowed:
            raise ValueError(
                f"deployment name {value!r} is invalid; use lowercase letters, digits and '-'"
            )

    @property
    def bucket(self) -> str:
        """Archive bucket. In AWS the stack appends the account and region for uniqueness."""
        return f"{self.deployment}-archive"

    @property
    def table(self) -> str:
        return f"{self.deployment}-index"

    @property
    def audit_table(self) -> str:
        return f"{self.deployment}-audit"

    @property
    def ingest_queue(self) -> str:
        return f"{self.deployment}-ingest"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.deployment}-ingest-dlq"

    @property
    def changes_table(self) -> str:
        return f"{self.deployment}-changes"

    @property
    def event_bus(self) -> str:
        return f"{self.deployment}-events"

    @property
    def stable_queue(self) -> str:
        return f"{self.deployment}-study-stable"

    @property
    def stable_dead_letter_queue(self) -> str:
        return f"{self.deployment}-study-stable-dlq"

    @property
    def kms_alias(self) -> str:
        return f"alias/{self.deployment}-data"


@dataclass(frozen=True)
class Settings:
    """Settings read once at start by every process: Lambda, gateway and local stack.

    A plain dataclass rather than a validation library's model: every Lambda imports this
    module at cold start, and the fields need only the checks in ``__post_init__``. Change a
    field with ``dataclasses.replace``, which checks the new value too.
    """

    bucket: str
    table: str
    ingest_queue: str
    dead_letter_queue: str
    # KMS key id, ARN or alias used for SSE-KMS.
    kms_key_id: str
    deployment: str = DEFAULT_DEPLOYMENT
    default_site: str = DEFAULT_SITE
    region: str = "us-east-1"
    # AWS endpoint override; the local stack sets its moto server.
    endpoint_url: str | None = None
    # Endpoint override for DynamoDB, SQS and EventBridge, which use AWS's JSON protocol;
    # unset, ``endpoint_url``. The local stack sets moto's lean front (cirrus.local.moto_front).
    json_endpoint_url: str | None = None
    # Origins whose browser pages may call DICOMweb; none by default. A comma-separated
    # string, as the environment gives it, is split.
    cors_origins: tuple[str, ...] = ()
    # The Lambda function that the DICOMweb function hands requests needing pixel codecs to
    # (see cirrus.dicomweb.forwarding); unset where the process has the codecs itself.
    pixel_function: str | None = None
    # The append-only table of audit records (see cirrus.audit); unset, no audit is written.
    audit_table: str | None = None
    # The JSON document of principals and the sites and actions each may use (cirrus.access).
    access_file: str | None = None
    # The same document as JSON text, which the CDK stack sets; it wins over ``access_file``.
    access_document: str | None = None
    # The per-site change feed (cirrus.events.feed); unset, no feed is written.
    changes_table: str | None = None
    # The EventBridge bus of Cirrus events (cirrus.events.publisher); unset, none are sent.
    event_bus: str | None = None
    # The SQS queue of delayed StudyStable checks (cirrus.events.stable); unset, none are sent.
    stable_queue: str | None = None
    # Seconds without a new instance of a study before its StudyStable event.
    stable_after_seconds: int = DEFAULT_STABLE_AFTER_SECONDS

    def __post_init__(self) -> None:
        for name in ("bucket", "table", "ingest_queue", "dead_letter_queue", "kms_key_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"setting {name} must be a non-empty string")
        ResourceNames(self.deployment)
        from cirrus.storage.keys import validate_site

        object.__setattr__(self, "default_site", validate_site(self.default_site))
        origins = self.cors_origins
        if isinstance(origins, str):
            origins = tuple(origin.strip() for origin in origins.split(",") if origin.strip())
        origins = tuple(origins)
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} is invalid; give a scheme and host")
        object.__setattr__(self, "cors_origins", origins)
        stable_after = int(self.stable_after_seconds)
        if stable_after < 1:
            raise ValueError(f"stable_after_seconds {stable_after} is invalid; give 1 or more")
        object.__setattr__(self, "stable_after_seconds", stable_after)

    @property
    def json_endpoint(self) -> str | None:
        """The endpoint override of DynamoDB, SQS and EventBridge clients, if any."""
        return self.json_endpoint_url or self.endpoint_url

    @classmethod
    def for_names(cls, names: ResourceNames, **overrides: Any) -> Settings:
        """Build settings whose resource names are the defaults of ``names``."""
        values: dict[str, Any] = {
            "deployment": names.deployment,
            "bucket": names.bucket,
            "table": names.table,
            "ingest_queue": names.ingest_queue,
            "dead_letter_queue": names.dead_letter_queue,
            "kms_key_id": names.kms_alias,
            "audit_table": names.audit_table,
            "changes_table": names.changes_table,
            "event_bus": names.event_bus,
            "stable_queue": names.stable_queue,
        }
        values.update(overrides)
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"unknown settings {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment variables named in ``ENV``."""
        environ = os.environ if environ is None else environ
        values = {field: environ[var] for field, var in ENV.items() if var in environ}
        missing = [ENV[f] for f in ("bucket", "table", "kms_key_id") if f not in values]
        if missing:
            raise ValueError(f"missing environment variables {', '.join(missing)}")
        names = ResourceNames(deployment=values.get("deployment", DEFAULT_DEPLOYMENT))
        return cls.for_names(names, **values)

    def to_env(self) -> dict[str, str]:
        """Return the environment that makes ``from_env`` rebuild these settings."""
        dumped: dict[str, Any] = asdict(self)
        dumped["cors_origins"] = ",".join(self.cors_origins) or None
        return {var: str(dumped[field]) for field, var in ENV.items() if dumped[field] is not None}
