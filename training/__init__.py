"""GRPO training from the assessment graph's own trajectories (TRL): rewards, rollout bridge, entry point. Not part of the runtime core; nothing imports it."""
