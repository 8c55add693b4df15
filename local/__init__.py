"""Offline parts of Reflex: the embedded local stack, sample data and helpers for demos and tests."""
