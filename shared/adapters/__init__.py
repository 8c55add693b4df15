"""Adapters to the outside world, behind the ports the flows use: Azure ML (`azureml`, the only importer of
azure.ai.ml) and the app's Blob Storage (`storage`)."""
