"""Adapters to the outside world: Azure ML (the only importer of azure.ai.ml) and the app's Blob Storage."""
