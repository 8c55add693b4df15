"""Operators' command line for Reflex (`python -m reflex`); local/ops tooling, not deployed with the app."""
