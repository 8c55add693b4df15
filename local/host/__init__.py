"""Reflex's local Functions host: runs a v2 function app's triggers offline, on the real host's contracts.

Azure Functions Core Tools cannot be installed here, so this thin host indexes `function_app` once and
delivers Event Grid webhooks, `Microsoft.Storage.BlobCreated` for new Azurite blobs (polled, with receipts,
Event Grid's retries and dead letter), NCRONTAB timers and admin "run now" calls to the same decorated
functions. Run it with
`python -m local.host`; never imported in Azure.
"""
