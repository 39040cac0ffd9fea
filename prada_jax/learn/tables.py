"""Per-(problem, step) policy tables from the trained networks, and their .npz files.

Features, tokens and probabilities are fixed per (problem, step), so pi_theta(1|x), A_omega(x, 1) and D_psi
(server seconds of the reference context) are evaluated once into [N, K] tables that the simulator gathers.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C
from prada_jax.learn import aux, ppo
from prada_jax.learn import mdp as M
from prada_jax.sim.policies import PolicyTable

TABLE_FIELDS = ("nominate_prob", "advantage", "server_seconds")
# Learned pi(1|x) is stored within [eps, 1 - eps]: greedy Stage 1 is unchanged, eq. 33 stays invertible.
POLICY_PROB_EPS = 1e-3


class TableError(ValueError):
    """Missing or malformed policy-table file; the message names the path."""


@struct.dataclass
class LearnedModels:
    """Everything `policy_table` needs: network parameters, feature standardisation and static configs."""

    policy: Any
    value: Any
    advantage: aux.AuxModel
    delay: aux.AuxModel
    feature_mean: jax.Array  # [F]
    feature_std: jax.Array  # [F]
    beta: jax.Array  # the trade-off weight the policy was trained for
    ppo_config: ppo.PPOConfig = struct.field(pytree_node=False, default=ppo.PPOConfig())
    aux_config: aux.AuxConfig = struct.field(pytree_node=False, default=aux.AuxConfig())


def policy_table(trace, models: LearnedModels, flops_llm=C.FLOPS_LLM) -> PolicyTable:
    """[N, K] tables of pi_theta(1|x), A_omega(x, 1) and D_psi seconds (0 on padding steps)."""
    return _policy_table(M.as_packed(trace), models, flops_llm)


@jax.jit
def _policy_table(packed, models: LearnedModels, flops_llm) -> PolicyTable:
    mdp = M.make_mdp(packed, stats=(models.feature_mean, models.feature_std), flops_llm=flops_llm)
    mask = mdp.step_mask
    # pi(1|x) is stored inside [eps, 1 - eps] (as for deterministic tables) so that eq. 33 stays invertible where
    # the policy is certain in float32; A_omega(x, 1) = pi(0|x) g_omega(x), so eq. 33 returns g_omega exactly.
    prob = jnp.clip(ppo.server_prob(models.ppo_config, models.policy, mdp.obs),
                    POLICY_PROB_EPS, 1.0 - POLICY_PROB_EPS)
    adv = (1.0 - prob) * aux.predict_advantage(models.aux_config, models.advantage, mdp.obs)
    secs = aux.predict_server_seconds(models.aux_config, models.delay, M.reference_context(packed))
    z = lambda x: jnp.where(mask, x, 0.0).astype(jnp.float32)  # noqa: E731
    return PolicyTable(nominate_prob=z(prob), advantage=z(adv), server_seconds=z(secs))


def save_table(path: str, table: PolicyTable) -> str:
    """Write the three [N, K] arrays to `path` (.npz)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **{f: np.asarray(getattr(table, f), np.float32) for f in TABLE_FIELDS})
    return path


def load_table(path: str, shape: tuple[int, int] | None = None) -> PolicyTable:
    """Read a table written by `save_table`; TableError naming `path` if missing, incomplete or mis-shaped."""
    if not os.path.exists(path):
        raise TableError(f"{path}: policy table file not found")
    with np.load(path, allow_pickle=False) as data:
        missing = [f for f in TABLE_FIELDS if f not in data.files]
        if missing:
            raise TableError(f"{path}: missing fields {missing}")
        arrays = {f: data[f] for f in TABLE_FIELDS}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise TableError(f"{path}: fields must share one [N, K] shape, got { {f: a.shape for f, a in arrays.items()} }")
    if shape is not None and next(iter(shapes)) != tuple(shape):
        raise TableError(f"{path}: table shape {next(iter(shapes))} does not match the trace shape {tuple(shape)}")
    return PolicyTable(**{f: jnp.asarray(a) for f, a in arrays.items()})
