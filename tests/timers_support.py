"""Helpers shared by the timer and batch scoring tests: blobs on Azurite as BlobCreated events, a champion."""

from __future__ import annotations

from typing import Any

from local.host.blobs import blob_created_event
from shared.core.platform import CHAMPION_TAG, REFLEX_TAG, ModelVersion, TrainingRequest
from testing.fake_platform import FakePlatform


def upload(container: Any, name: str, body: bytes) -> dict[str, Any]:
    """Write one blob and return the `Microsoft.Storage.BlobCreated` event for it, as the local host builds it
    (Microsoft's documented shape, from the blob's real properties)."""
    blob = container.get_blob_client(name)
    blob.upload_blob(body, overwrite=True)
    return blob_created_event(blob, blob.get_blob_properties())


def make_champion(platform: FakePlatform, *, model: str = "reflex-model", version: str = "1",
                  tags: dict[str, str] | None = None, job: str = "") -> ModelVersion:
    """A trained, registered and champion-tagged model version on the fake (job tags carry lineage)."""
    job = job or f"train-{model}-{version}"
    if ("train", "1") not in platform.data:
        platform.register_data(name="train", version="1", path="azureml://datastores/reflexdata/paths/x/1/", tags={})
    platform.submit_training(TrainingRequest(
        job_name=job, experiment_name="reflex", data_name="train", data_version="1", mode="command",
        task="classification", label_column="DEATH_EVENT", compute="cpu", environment="azureml:env:1",
        tags={REFLEX_TAG: "true", **(tags or {})}))
    platform.finish_job(job, "Completed")
    return platform.register_model(name=model, version=version, job_name=job, tags={CHAMPION_TAG: "true"})
