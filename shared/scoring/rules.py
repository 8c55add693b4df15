"""Pure rules of batch scoring: names, paths and sizing of one scoring job, decided from the batch and model only.

Why pure and deterministic: a batch is delivered as many blob events, each possibly several times, and the
tracker retries every minute. Every name the scoring job gets is a function of (batch, manifest, model), so
any number of deliveries and retries address the same job, and Azure ML's idempotent `invoke_batch` by job
name turns them into one job. The output folder contains the job name, so it is never one a previous job
wrote (Azure ML refuses to overwrite an output), yet it is stable for retries of the same job.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

from shared.batches.paths import manifest_digest

__all__ = ["deployment_name", "instance_count", "output_path", "scoring_job_name"]

_SAFE = re.compile(r"[^a-z0-9-]+")
MAX_SIZED_INSTANCES = 10


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def scoring_job_name(batch_id: str, files: Mapping[str, Mapping[str, Any]], model_ref: str) -> str:
    """`reflex-score-<hash>` of batch, frozen manifest and model: lower case, as Azure ML needs."""
    return f"reflex-score-{_digest(f'{batch_id}|{manifest_digest(files)}|{model_ref}', 24)}"


def deployment_name(model_ref: str) -> str:
    """Batch deployment of a model version: `v<version>` readable when safe, always 3-32 chars, letter first.

    Examples:
        >>> deployment_name("reflex-model:7")
        'reflex-v7'
    """
    version = model_ref.rpartition(":")[2].lower()
    safe = _SAFE.sub("-", version).strip("-")
    if safe and safe == version and len(safe) <= 23:
        return f"reflex-v{safe}"
    return f"reflex-v{safe[:14].strip('-')}-{_digest(model_ref, 8)}".replace("--", "-")


def output_path(datastore: str, dataset: str, batch: str, job: str) -> str:
    """Unique per job (the job name is in it), never reused across batches or models."""
    return f"azureml://datastores/{datastore}/paths/scoring/{dataset}/{batch}/{job}/"


def instance_count(files: int, *, configured: int, mini_batch_size: int, max_concurrency: int) -> int:
    """Instances for a batch: the configured count, or enough that each runs about one wave of mini-batches.

    Examples:
        >>> instance_count(100, configured=0, mini_batch_size=10, max_concurrency=2)
        5
        >>> instance_count(3, configured=0, mini_batch_size=10, max_concurrency=2)
        1
    """
    if configured:
        return configured
    waves = math.ceil(max(files, 1) / (mini_batch_size * max_concurrency))
    return max(1, min(MAX_SIZED_INSTANCES, waves))
