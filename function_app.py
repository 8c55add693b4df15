"""The Functions app: creates the FunctionApp and registers one blueprint per reaction. Nothing else.

`BLOB_SUBSCRIPTIONS` (function -> container) tells the local host which functions get the storage account's
BlobCreated events; in Azure the infra's Event Grid subscriptions say the same.

Importing this module must stay cheap (the cold-start test and bench/cold_start.py hold it to that): the
blueprints import only azure.functions and Reflex's light shared modules; azure.ai.ml, MLflow, pandas and
scikit-learn load inside the code paths that need them.
"""

import azure.functions as func

from functions import BLOB_SUBSCRIPTIONS, blueprints

__all__ = ["BLOB_SUBSCRIPTIONS", "app"]

app = func.FunctionApp()
for bp in blueprints():
    app.register_functions(bp)
