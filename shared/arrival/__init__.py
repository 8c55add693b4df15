"""The data-arrival reaction: BlobCreated events -> one arrival record per batch -> one training job."""
