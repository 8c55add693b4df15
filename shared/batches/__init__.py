"""The batch and training service the reactions share: where a blob belongs, the arrival record of a batch,
admission of training jobs, accepted formats, MLTable files and streaming row readers."""
