"""CORS of the DICOMweb API: no cross-origin access unless origins are configured."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cirrus.config import Settings
from cirrus.services import Services
from functions.dicomweb.handler import dicomweb_services, handle

ORIGIN = "https://viewer.example.org"


def _event(method: str, path: str, origin: str | None, **headers: str) -> dict[str, Any]:
    all_headers = {"Host": "127.0.0.1:8080", **headers}
    if origin is not None:
        all_headers["Origin"] = origin
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {"stage": "dicomweb", "requestId": "r-1", "path": f"/dicomweb{path}"},
        "body": None,
        "isBase64Encoded": False,
    }


def _header(response: dict[str, Any], name: str) -> str | None:
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return ",".join(values)
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


@pytest.fixture
def services(settings: Settings) -> Services:
    configured = dataclasses.replace(settings, cors_origins=(ORIGIN,))
    return Services(configured)


def test_preflight_allowed_origin(services: Services) -> None:
    view = dicomweb_services(services)
    response = handle(
        _event("OPTIONS", "/studies", ORIGIN, **{"Access-Control-Request-Method": "GET"}),
        None,
        view,
    )
    assert response["statusCode"] == 204
    assert _header(response, "Access-Control-Allow-Origin") == ORIGIN
    assert "Authorization" in (_header(response, "Access-Control-Allow-Headers") or "")


def test_error_carries_cors_headers(services: Services) -> None:
    view = dicomweb_services(services)
    response = handle(_event("GET", "/studies/1.2.3/metadata", ORIGIN), None, view)
    assert response["statusCode"] == 404
    assert _header(response, "Access-Control-Allow-Origin") == ORIGIN
    assert "Warning" in (_header(response, "Access-Control-Expose-Headers") or "")


def test_other_origin_not_allowed(services: Services) -> None:
    view = dicomweb_services(services)
    response = handle(_event("GET", "/studies/1.2.3/metadata", "https://evil.example"), None, view)
    assert _header(response, "Access-Control-Allow-Origin") is None


def test_no_origins_no_cors(settings: Settings) -> None:
    view = dicomweb_services(Services(settings))
    response = handle(_event("GET", "/studies/1.2.3/metadata", ORIGIN), None, view)
    assert _header(response, "Access-Control-Allow-Origin") is None


def test_settings_origins_from_env() -> None:
    env = {
        "CIRRUS_BUCKET": "b",
        "CIRRUS_TABLE": "t",
        "CIRRUS_KMS_KEY_ID": "k",
        "CIRRUS_CORS_ORIGINS": f"{ORIGIN}, http://127.0.0.1:3000",
    }
    settings = Settings.from_env(env)
    assert settings.cors_origins == (ORIGIN, "http://127.0.0.1:3000")
    assert Settings.from_env(settings.to_env()).cors_origins == settings.cors_origins
    with pytest.raises(ValueError, match="CORS origin 'viewer' is invalid"):
        Settings.from_env({**env, "CIRRUS_CORS_ORIGINS": "viewer"})
