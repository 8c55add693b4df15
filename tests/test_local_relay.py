"""The MLflow webhook relay: signature check and payload -> Azure ML ModelRegistered (captured payload shape
from mlflow 3.17's `model_version.created` delivery, see local/mlflow_relay.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from local import mlflow_relay

PAYLOAD = {"entity": "model_version", "action": "created", "timestamp": "2026-11-21T23:43:30.044155+00:00",
           "data": {"name": "m1", "version": "1", "source": "runs:/202cad0bf28d407a887980417f4897ca/model",
                    "run_id": "202cad0bf28d407a887980417f4897ca", "tags": {"a": "b", "reflex.property.auc": "0.9"},
                    "description": None}}


def _signed(secret: str, body: bytes) -> dict[str, str]:
    signed = b"d-1.1795304610." + body
    sig = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return {"X-MLflow-Delivery-Id": "d-1", "X-MLflow-Timestamp": "1795304610", "X-MLflow-Signature": f"v1,{sig}"}


def test_signature_is_verified() -> None:
    body = json.dumps(PAYLOAD).encode()
    assert mlflow_relay.verify("s", _signed("s", body), body)
    assert not mlflow_relay.verify("other", _signed("s", body), body)
    assert not mlflow_relay.verify("s", _signed("s", body), body + b" ")
    assert not mlflow_relay.verify("s", {}, body)


def test_created_version_becomes_model_registered() -> None:
    event = mlflow_relay.to_event(PAYLOAD)
    assert event is not None and event["eventType"] == "Microsoft.MachineLearningServices.ModelRegistered"
    assert event["subject"] == "models/m1:1"
    assert event["data"] == {"modelName": "m1", "modelVersion": "1", "modelTags": {"a": "b"},
                             "modelProperties": {"auc": "0.9"}}


def test_reflex_own_versions_and_other_events_are_skipped() -> None:
    own = {**PAYLOAD, "data": {**PAYLOAD["data"], "tags": {"reflex.managed": "true"}}}
    assert mlflow_relay.to_event(own) is None
    assert mlflow_relay.to_event({"entity": "model_version_tag", "action": "set", "data": {}}) is None
