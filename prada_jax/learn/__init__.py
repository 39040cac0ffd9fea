"""Stage-1 learning: Flax networks, the trace-driven MDP, PPO, auxiliary regressors, checkpoints, policy tables
and the single-user evaluation (paper sections 4.1, 4.2.5, 5.1). See docs/learning.md."""
