"""Container entry point of the DICOM gateway: ``python -m gateway.main``.

It reads ``cirrus.config.Settings`` from the environment variables in ``cirrus.config.ENV``
(``CIRRUS_BUCKET``, ``CIRRUS_TABLE`` and ``CIRRUS_KMS_KEY_ID`` are required) and these:

- ``CIRRUS_DICOM_HOST``: address the DICOM listener binds, default ``0.0.0.0``;
- ``CIRRUS_DICOM_PORT``: TCP port of the DICOM listener, default 11112;
- ``CIRRUS_AE_TITLE``: AE title of the gateway, default ``CIRRUS``, unless the AE configuration
  names one;
- ``CIRRUS_AE_CONFIG``: path of the AE configuration (``cirrus.gateway.aeconfig``), required:
  it lists the calling AE titles of each site and the C-MOVE destinations;
- ``CIRRUS_TLS_CERTIFICATE`` and ``CIRRUS_TLS_KEY``: paths of the PEM server certificate and
  its unencrypted private key. With both set, a second listener serves DICOM TLS;
- ``CIRRUS_TLS_PORT``: TCP port of the TLS listener, default 2762;
- ``CIRRUS_TLS_CA``: path of the PEM CA certificates that client certificates must chain to;
  without it the TLS listener does not ask for client certificates;
- ``CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE``: ``true`` to reject TLS clients without a valid
  certificate (mutual TLS), default ``false``; needs ``CIRRUS_TLS_CA``;
- ``CIRRUS_HEALTH_PORT``: TCP port of the HTTP health check (``GET /health``) on
  ``CIRRUS_DICOM_HOST``, default 8081;
- ``CIRRUS_MAX_ASSOCIATIONS``, ``CIRRUS_MAX_INSTANCE_BYTES``, ``CIRRUS_SPOOL_BYTES``,
  ``CIRRUS_ASSOCIATION_SPOOL_BYTES`` and ``CIRRUS_SPOOL_DIR``: the limits in
  ``cirrus.gateway.limits``, defaults 25 associations, 2 GiB per instance, 8 GiB of spool
  in the system's temporary folder, and per association the spooled bytes of one instance;
- ``CIRRUS_ACSE_TIMEOUT_SECONDS`` and ``CIRRUS_NETWORK_TIMEOUT_SECONDS``: the time-outs in
  ``cirrus.gateway.limits``, defaults 10 s for an association request and 60 s of silence
  in an association;
- ``CIRRUS_METRICS_NAMESPACE``: CloudWatch namespace of the gateway's EMF metrics, default
  ``Cirrus``; ``CIRRUS_METRICS_INTERVAL``: seconds between two flushes, default 60;
- ``CIRRUS_GATEWAY_WORKERS``: number of gateway processes that share the ports
  (``cirrus.gateway.workers``), default the number of CPUs available to the process.

Logs and metrics go to standard output as one JSON object per line. The gateway runs until
SIGTERM or SIGINT, then drains for up to 20 s. The exit status is 2 when the configuration
is invalid.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from cirrus.config import DEFAULT_AE_TITLE, Settings, validate_ae_title
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.health import DEFAULT_HEALTH_PORT
from cirrus.gateway.limits import GatewayLimits
from cirrus.gateway.metrics import DEFAULT_INTERVAL_SECONDS, DEFAULT_NAMESPACE, GatewayMetrics
from cirrus.gateway.tls import DEFAULT_TLS_PORT, TLSConfig
from cirrus.gateway.workers import read_worker_count

# In AWS the task runs in a private subnet behind the load balancer, so the listener binds
# every interface of the container.
DEFAULT_HOST: Final = "0.0.0.0"  # noqa: S104
DEFAULT_PORT: Final = 11112

EXIT_INVALID_CONFIGURATION: Final = 2

logger = logging.getLogger("gateway")


def read_port(
    environ: Mapping[str, str], name: str = "CIRRUS_DICOM_PORT", default: int = DEFAULT_PORT
) -> int:
    """Return the variable ``name`` as a TCP port number, or raise ``ValueError``."""
    value = environ.get(name, str(default))
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 65535:
        raise ValueError(f"{name} {value!r} is invalid; use a TCP port from 1 to 65535")
    return int(value)


def read_tls(environ: Mapping[str, str]) -> TLSConfig | None:
    """Return the TLS listener's configuration, None without one, or raise ``ValueError``.

    The certificate, key and CA files are loaded here, so that an unusable one stops the
    gateway before it listens.
    """
    certificate = environ.get("CIRRUS_TLS_CERTIFICATE", "")
    private_key = environ.get("CIRRUS_TLS_KEY", "")
    if not certificate and not private_key:
        return None
    if not certificate or not private_key:
        raise ValueError("set both CIRRUS_TLS_CERTIFICATE and CIRRUS_TLS_KEY, or neither")
    required = environ.get("CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE", "false").strip().lower()
    if required not in ("true", "false"):
        raise ValueError(
            f"CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE {required!r} is invalid; use true or false"
        )
    ca_file = environ.get("CIRRUS_TLS_CA", "")
    tls = TLSConfig(
        certificate=Path(certificate),
        private_key=Path(private_key),
        port=read_port(environ, "CIRRUS_TLS_PORT", DEFAULT_TLS_PORT),
        ca_file=Path(ca_file) if ca_file else None,
        require_client_certificate=required == "true",
    )
    tls.server_context()
    return tls


def read_metrics(environ: Mapping[str, str], deployment: str) -> GatewayMetrics:
    """Return the metrics that ``CIRRUS_METRICS_*`` configure, or raise ``ValueError``."""
    namespace = environ.get("CIRRUS_METRICS_NAMESPACE", DEFAULT_NAMESPACE).strip()
    if not namespace:
        raise ValueError("CIRRUS_METRICS_NAMESPACE is empty; give a CloudWatch namespace")
    value = environ.get("CIRRUS_METRICS_INTERVAL", str(DEFAULT_INTERVAL_SECONDS))
    try:
        interval = float(value)
    except ValueError:
        interval = 0.0
    if not 1.0 <= interval <= 3600.0:
        raise ValueError(f"CIRRUS_METRICS_INTERVAL {value!r} is invalid; give 1 to 3600 seconds")
    return GatewayMetrics(namespace, {"Deployment": deployment}, interval)


def read_ae_title(environ: Mapping[str, str]) -> str:
    """Return ``CIRRUS_AE_TITLE`` without surrounding spaces, or raise ``ValueError``."""
    value = environ.get("CIRRUS_AE_TITLE", DEFAULT_AE_TITLE)
    try:
        return validate_ae_title(value)
    except ValueError as exc:
        raise ValueError(f"CIRRUS_AE_TITLE: {exc}") from exc


def read_ae_config(environ: Mapping[str, str], ae_title: str, site: str) -> AEConfig:
    """Load the AE configuration file that ``CIRRUS_AE_CONFIG`` names, or raise ``ValueError``."""
    path = environ.get("CIRRUS_AE_CONFIG")
    if not path:
        raise ValueError("CIRRUS_AE_CONFIG is not set; give the path of the AE configuration")
    return AEConfig.load(Path(path), ae_title=ae_title, default_site=site)


def configure_logging() -> None:
    """Send every log record to standard output as JSON, with its ``extra`` keys."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LambdaPowertoolsFormatter(service="cirrus-gateway"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare_worker() -> dict[str, Any]:
    """Set up a gateway worker process: its logging and its metrics, which do not pickle."""
    configure_logging()
    # NOTE: each worker flushes its own EMF lines with the same dimensions, so CloudWatch
    # receives one value per worker and interval for each metric.
    settings = Settings.from_env()
    return {"metrics": read_metrics(os.environ, settings.deployment)}


def main() -> int:
    """Read the configuration and serve the gateway until it is stopped."""
    configure_logging()
    try:
        settings = Settings.from_env()
        host = os.environ.get("CIRRUS_DICOM_HOST", DEFAULT_HOST)
        port = read_port(os.environ)
        ae_title = read_ae_title(os.environ)
        config = read_ae_config(os.environ, ae_title, settings.default_site)
        tls = read_tls(os.environ)
        health_port = read_port(os.environ, "CIRRUS_HEALTH_PORT", DEFAULT_HEALTH_PORT)
        limits = GatewayLimits.from_env(os.environ)
        metrics = read_metrics(os.environ, settings.deployment)
        workers = read_worker_count(os.environ)
    except ValueError as exc:
        logger.error("gateway configuration is invalid", extra={"error": str(exc)})
        return EXIT_INVALID_CONFIGURATION

    # Imported after the configuration is read, so an invalid one exits before pynetdicom loads.
    from cirrus.gateway.server import run_gateway
    from cirrus.gateway.workers import WorkerSpec, run_workers

    logger.info(
        "gateway starting",
        extra={
            "host": host,
            "port": port,
            "tls_port": tls.port if tls is not None else None,
            "health_port": health_port,
            "max_associations": limits.max_associations,
            "max_instance_bytes": limits.max_instance_bytes,
            "spool_bytes": limits.spool_bytes,
            "association_spool_bytes": limits.association_spool_limit,
            "acse_timeout_seconds": limits.acse_timeout_seconds,
            "network_timeout_seconds": limits.network_timeout_seconds,
            "ae_title": config.ae_title,
            "deployment": settings.deployment,
            "sites": sorted(config.sites),
            "workers": workers,
        },
    )
    if workers > 1:
        options = {"limits": limits, "health_address": (host, health_port)}
        spec = WorkerSpec(
            settings, config, host, port, tls, prepare=prepare_worker, options=options
        )
        return run_workers(spec, workers)
    run_gateway(
        settings,
        config,
        host,
        port,
        tls,
        limits=limits,
        metrics=metrics,
        health_address=(host, health_port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
