"""Adapters: Reflex's side of each outside service (Azure ML in `azureml`), behind the ports the flows use."""
