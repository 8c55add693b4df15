"""The rollout reaction: a registered model -> a safe rollout on a managed online endpoint, advanced one
step per reconcile tick by a pure state machine (machine.py, whose `Rollout` is the rollout record), and the
rollout's own health check of its records (health.py), which the health timer runs."""
