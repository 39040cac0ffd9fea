"""The learned Stage-2 scheduler: a permutation-equivariant policy over the candidate table, and its registration.

`CandidatePolicy` (DeepSets): every valid row is embedded by a shared MLP, the embeddings are mean-pooled over the
valid rows, and each row's three logits (local / queue / immediate) come from its own embedding, the pool and the
slot's global features. Permuting the rows permutes the logits (tests check it). The logits are a residual over
Theorem 2: `prior_scale` x Theorem 2's one-hot decision (a feature) plus the network's output, whose last layer
starts at zero, so the untrained policy acts like Theorem 2 and training learns where to deviate. The critic reads
the pool and the global features.

The registered scheduler `learned` (prada_jax.sim.schedulers) acts greedily (argmax per row) with the shipped
weights (checkpoints/learned_scheduler/weights.npz) and the feasibility projection of the candidate table
(prada_jax.sim.candidate_table). The environment trains this network (prada_jax.env.ppo); prada_jax.env.policy is
this module under the environment's name.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from prada_jax import data_paths
from prada_jax.sim import candidate_table as T
from prada_jax.sim.slot_view import scatter

HIDDEN = 64
PRIOR_SCALE = 4.0
WEIGHTS_FILE = os.path.join("learned_scheduler", "weights.npz")  # under the checkpoints folder


def masked_mean(x, valid):
    """Mean of x [..., C, H] over the rows where valid [..., C] (0 when there are none)."""
    w = valid[..., None].astype(x.dtype)
    return jnp.sum(x * w, axis=-2) / jnp.maximum(jnp.sum(w, axis=-2), 1.0)


class CandidatePolicy(nn.Module):
    hidden: int = HIDDEN
    prior_scale: float = PRIOR_SCALE

    @nn.compact
    def __call__(self, obs):
        """obs [..., C, NUM_FEATURES] -> (logits [..., C, 3], value [...])."""
        valid = obs[..., T.VALID_COLUMN] > 0.5
        glob = obs[..., 0, len(T.ROW_FEATURES):]
        h = nn.relu(nn.Dense(self.hidden, name="embed_0")(obs))
        h = nn.relu(nn.Dense(self.hidden, name="embed_1")(h))
        pooled = masked_mean(h, valid)
        ctx = jnp.concatenate([pooled, glob], axis=-1)
        z = jnp.concatenate([h, jnp.broadcast_to(ctx[..., None, :], h.shape[:-1] + ctx.shape[-1:])], axis=-1)
        z = nn.relu(nn.Dense(self.hidden, name="head_0")(z))
        delta = nn.Dense(T.NUM_DECISIONS, name="head_out", kernel_init=nn.initializers.zeros)(z)
        logits = self.prior_scale * obs[..., list(T.T2_COLUMNS)] + delta
        v = nn.relu(nn.Dense(self.hidden, name="value_0")(ctx))
        value = nn.Dense(1, name="value_out")(v)[..., 0]
        return logits, value


def greedy_action(params, obs):
    """Argmax decision per row."""
    logits, _ = CandidatePolicy().apply({"params": params}, obs)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


# --- weights on disk (a flat npz: "layer/kernel" -> array) ------------------------------------------------------


def flatten_params(params) -> dict:
    flat = {}
    for layer, leaves in params.items():
        for name, value in leaves.items():
            flat[f"{layer}/{name}"] = np.asarray(value, np.float32)
    return flat


def unflatten_params(flat) -> dict:
    params: dict = {}
    for key, value in flat.items():
        layer, name = key.split("/")
        params.setdefault(layer, {})[name] = np.asarray(value, np.float32)  # numpy: safe to cache across traces
    return params


def save_weights(path: str, params) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **flatten_params(params))


def weights_path(ckpt_dir: str = "checkpoints") -> str:
    return os.path.join(data_paths.resolve_data_dir(ckpt_dir, "checkpoints"), WEIGHTS_FILE)


def load_weights(path: str | None = None) -> dict:
    """The weights at `path`, else at $PRADA_LEARNED_SCHEDULER, else the shipped ones, as Flax params
    (FileNotFoundError names the file)."""
    return _load(os.path.abspath(path or os.environ.get("PRADA_LEARNED_SCHEDULER") or weights_path()))


@functools.lru_cache(maxsize=8)
def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"learned scheduler weights not found: {path} (train them with "
                                "python -m prada_jax.env.ppo)")
    with np.load(path, allow_pickle=False) as data:
        return unflatten_params({k: data[k] for k in data.files})


def decide_learned(view, config):
    """The registered `learned` scheduler: greedy policy over the candidate table, then the projection."""
    table = T.candidate_table(view, config, view.params.arrival_rate)
    action = greedy_action(load_weights(), table.obs)
    decision_c, bandwidth_c = T.project(view, table, action)
    return scatter(view, table.cands, decision_c, bandwidth_c)
