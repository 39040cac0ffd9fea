"""The candidate table and feasibility projection of the environment: those of the learned Stage-2 scheduler,
defined in prada_jax/sim/candidate_table.py (the simulator registers that scheduler, so they live below it) and
importable from here as before."""

from prada_jax.sim.candidate_table import (  # noqa: F401  (re-exported)
    CANDIDATE_LOAD_SCALE,
    GLOBAL_FEATURES,
    INFINITE_COST,
    NUM_DECISIONS,
    NUM_FEATURES,
    ROW_FEATURES,
    T2_COLUMNS,
    UTILITY_SCALE,
    VALID_COLUMN,
    CandidateTable,
    candidate_table,
    project,
    symlog,
    theorem2_action,
)
