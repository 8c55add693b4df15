"""The small core every reaction stands on: running a reaction (outcomes, dead letters, pause), deps and the
platform factory, errors, log, settings, control, events (every type consumed or published), state, ledger and the
platform protocol. Imports nothing above it (held by import-linter, see pyproject.toml)."""
