"""The Functions app: creates the FunctionApp and registers one blueprint per reaction. Nothing else.

Importing this module must stay cheap (the cold-start test and bench/cold_start.py hold it to that): the
blueprints import only azure.functions and Reflex's light shared modules; azure.ai.ml, MLflow, pandas and
scikit-learn load inside the code paths that need them.
"""

import azure.functions as func

from functions import blueprints

app = func.FunctionApp()
for bp in blueprints():
    app.register_functions(bp)
