"""The batch-scoring reaction: a complete batch in the scoring container -> one batch endpoint job."""
