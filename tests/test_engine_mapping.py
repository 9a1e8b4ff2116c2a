"""Payload mapping wired into the engine: per-provider shapes, mapping errors, fix + force retry."""
from __future__ import annotations

import pytest

from dispatchsim.engine import ConfigError

from support import Receiver

ACT = {"channel": "SALESMAN", "commerceExternalId": "COM-001", "commerceName": "Farmacia Central",
       "activityDetails": {"assignedOperatorExternalId": "OP-042"}}

CRM = {"fields": {"task": {"ref": "id", "customer": "commerceExternalId"},
                  "channel": {"from": "channel", "map": {"SALESMAN": "sales"}}}}
ERP = {"fields": {"externalId": "id", "operator": {"from": "activityDetails.assignedOperatorExternalId",
                                                     "required": True}},
       "wrap": "array"}


async def test_two_providers_on_one_channel_receive_two_shapes(engine, setup_config):
    async with Receiver(engine.clock.now) as crm, Receiver(engine.clock.now) as erp:
        await setup_config(crm.url, provider="crm", mapping=CRM)
        await setup_config(erp.url, provider="erp", mapping=ERP)
        act = await engine.create_activity("acme", ACT)
        await engine.run_until_idle()
        assert crm.posts()[0].body == {"task": {"ref": act["id"], "customer": "COM-001"}, "channel": "sales"}
        assert erp.posts()[0].body == [{"externalId": act["id"], "operator": "OP-042"}]


async def test_invalid_mapping_is_refused_at_config_time(engine):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ConfigError, match="mapping: .*uper"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h",
                                mapping={"fields": {"x": {"from": "id", "fn": "uper"}}})
    assert await engine.store.configs() == []


async def test_mapping_warnings_are_returned(engine):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    view = await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h",
                                   mapping={"fields": {"x": "commerceNme"}})
    assert view["warnings"] and "commerceNme" in view["warnings"][0]


async def test_unmappable_payload_fails_without_retry_then_force_retry_after_fix(engine, receiver, setup_config):
    cfg = await setup_config(receiver.url, mapping=ERP)
    await engine.create_activity("acme", {"channel": "SALESMAN"})  # no operator: required value missing
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    assert d.status == "FAILED" and d.failed_reason == "mapping_error"
    assert "operator" in d.last_error and "required" in d.last_error
    [a] = await engine.attempts(d.id)
    assert a.outcome == "MAPPING_ERROR"
    assert receiver.posts() == []  # nothing was sent, nothing retried
    fixed = {"fields": {"externalId": "id", "operator": {"from": "activityDetails.assignedOperatorExternalId",
                                                           "default": "UNASSIGNED"}}, "wrap": "array"}
    await engine.edit_config(cfg["id"], mapping=fixed)
    await engine.force_retry(d.id)
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    assert d.status == "DISPATCHED" and d.config_version == 2
    assert receiver.posts()[0].body[0]["operator"] == "UNASSIGNED"
