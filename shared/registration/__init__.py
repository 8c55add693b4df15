"""The registration reaction: a finished training run -> a registered model if it beats the champion on
the same rows (the gate), or the reason why not; models registered outside Reflex are evaluated before any
rollout. Its records' types are in records.py."""
