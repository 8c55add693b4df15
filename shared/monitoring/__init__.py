"""The monitoring timers: health (failures Azure ML never announces), data drift and scheduled retraining. Their
records' types are in records.py."""
