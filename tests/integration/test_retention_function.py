"""The retention Lambda handler, invoked as Lambda does, on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from cirrus.config import Settings
from cirrus.index.models import STUDY, get_record, study_pk
from cirrus.local.http import LocalContext
from cirrus.services import Services
from functions.retention import handler as retention_handler
from tests.integration.dicomweb_stack import Stack, running_stack
from tests.integration.test_lifecycle import ct_study, store


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


@pytest.fixture
def lambda_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    rules = {"rules": [{"site": settings.default_site, "modality": "CT", "retain_years": 5}]}
    monkeypatch.setenv(retention_handler.RULES_VARIABLE, json.dumps(rules))
    retention_handler._lambda_services.cache_clear()
    yield
    retention_handler._lambda_services.cache_clear()


def test_handler_deletes_expired_study(stack: Stack, lambda_environment: None) -> None:
    old, recent = ct_study("20150101"), ct_study("20250101")
    store(stack, old, recent)

    counts = retention_handler.lambda_handler({}, LocalContext(aws_request_id="retention-1"))

    assert counts == {"deleted": 1}
    services = Services(stack.services.settings)
    for datasets, kept in ((old, False), (recent, True)):
        pk = study_pk(stack.site, datasets[0].StudyInstanceUID)
        record = get_record(services.index_model, pk, STUDY, consistent_read=True)
        assert (record is not None) is kept
    assert len(stack.instance_keys()) == len(recent)


def test_handler_rejects_invalid_rules(
    lambda_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(retention_handler.RULES_VARIABLE, '{"rules": [{"site": "Bad"}]}')
    with pytest.raises(ValueError, match="CIRRUS_LIFECYCLE_RULES"):
        retention_handler.lambda_handler({}, LocalContext(aws_request_id="retention-2"))
