"""The rollout reaction: a registered model -> a safe rollout on a managed online endpoint, advanced one
step per reconcile tick by a pure state machine."""
