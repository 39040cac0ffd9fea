"""Trace-driven single-user MDP of Stage-1 training (paper section 4.1.2, eqs. 20-24).

State: (problem n, step k); observation: the trace feature vector features[n, k] (standardised), fixed per
(problem, step). Action a in {0: SLM, 1: LLM}. Episodes end at num_steps[n] (step_mask).

Reward (eq. 21): r = PRM(next context) - PRM(current context) - beta D(x, a).
D(x, 0) = TS, D(x, 1) = TL along the reference (all-SLM) context: query + earlier SLM steps; the SLM prefills the
query at k = 0 and has everything else cached; the server prefills the whole context (mode "full").

PRM of the actual path. The trace holds PRM scores along the reference path only. We transfer each step's
PRM gain to the path actually taken (additive transfer):
    PRM(x_{k+1}) = PRM(x_k) + prm_after_a[n, k] - prm_context[n, k],   PRM(x_0) = prm_context[n, 0].
So r_k = prm_after_{a_k}[n, k] - prm_context[n, k] - beta D_k, the return telescopes to eq. 20 exactly (eq. 22),
and on the all-SLM path of a consistent trace (prm_context[k+1] = prm_after_slm[k]) PRM(x_k) = prm_context[n, k].
(Using prm_after_{a_{k-1}}[n, k-1] as PRM(x_k) instead would cancel every step's gain against the next step's
baseline, leaving only the last action's gain in the return: see docs/learning.md.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C
from prada_jax import traces
from prada_jax.sim import latency_models
from prada_jax.sim.params import flops_params, make_params
from prada_jax.traces import PackedTraces, TraceData, pack_traces

SLM, LLM = 0, 1


@struct.dataclass
class StepMDP:
    """Per-(problem, step) arrays of the Stage-1 MDP; costs in seconds, PRM in [0, 1] units."""

    obs: jax.Array  # float32 [N, K, F] standardised features (0 on padding)
    step_mask: jax.Array  # bool [N, K]
    gain: jax.Array  # float32 [N, K, 2] prm_after_a - prm_context (0 on padding)
    cost: jax.Array  # float32 [N, K, 2] TS, TL seconds on the reference context (0 on padding)
    prm_start: jax.Array  # float32 [N] PRM(x_0) = prm_context[n, 0]

    @property
    def num_problems(self) -> int:
        return self.step_mask.shape[0]

    @property
    def max_steps(self) -> int:
        return self.step_mask.shape[1]


def as_packed(trace: TraceData | PackedTraces) -> PackedTraces:
    return pack_traces(trace) if isinstance(trace, TraceData) else trace


def reference_context(packed: PackedTraces) -> jax.Array:
    """int32 [N, K]: context tokens before step k on the all-SLM path (prada_jax.traces.reference_context)."""
    return traces.reference_context(packed.query_tokens, packed.slm_step_tokens, packed.step_mask)


def reference_step_seconds(packed: PackedTraces, flops_slm=C.FLOPS_SLM, flops_llm=C.FLOPS_LLM,
                           latency_model: str = C.DEFAULT_LATENCY_MODEL, params=None):
    """(TS, TL) [N, K] seconds on the reference context (latency_models.reference_step_seconds); TS includes the
    query prefill at k = 0. Latency model "flops": eqs. 14-18 with flops_slm / flops_llm. Another registered model
    (e.g. "roofline"): batch 1 on the default hardware (make_params(): C.DEFAULT_EDGE_HARDWARE for TS,
    C.DEFAULT_SERVER_HARDWARE for TL) or on the hardware leaves of `params` (a SimParams); flops_slm / flops_llm are
    then unused."""
    if latency_model == latency_models.FLOPS:
        params = flops_params(flops_slm, flops_llm)
    elif params is None:
        params = make_params()
    return latency_models.reference_step_seconds(packed.query_tokens, packed.slm_step_tokens,
                                                 packed.llm_step_tokens, packed.step_mask, params, latency_model)


def feature_stats(trace: TraceData | PackedTraces, problems=None):
    """Mean and std [F] of features over real steps (of the selected problems), std floored at 1e-6."""
    return _feature_stats(as_packed(trace), None if problems is None else jnp.asarray(problems))


@jax.jit
def _feature_stats(packed: PackedTraces, problems):
    mask = packed.step_mask if problems is None else packed.step_mask & jnp.asarray(problems)[:, None]
    w = mask[..., None].astype(jnp.float32)
    count = jnp.maximum(w.sum((0, 1)), 1.0)
    mean = (packed.features * w).sum((0, 1)) / count
    var = (((packed.features - mean) ** 2) * w).sum((0, 1)) / count
    return mean, jnp.maximum(jnp.sqrt(var), 1e-6)


def make_mdp(trace, stats=None, flops_slm=C.FLOPS_SLM, flops_llm=C.FLOPS_LLM,
             latency_model: str = C.DEFAULT_LATENCY_MODEL) -> StepMDP:
    """Build the MDP of a trace; `stats` = (mean, std) of the features (default: this trace's own); the step
    costs D(x, a) come from `latency_model` (reference_step_seconds)."""
    packed = as_packed(trace)
    mean, std = _feature_stats(packed, None) if stats is None else stats
    return _make_mdp(packed, mean, std, flops_slm, flops_llm, latency_model)


@functools.partial(jax.jit, static_argnames="latency_model")
def _make_mdp(packed: PackedTraces, mean, std, flops_slm, flops_llm, latency_model) -> StepMDP:
    mask = packed.step_mask
    obs = jnp.where(mask[..., None], (packed.features - mean) / std, 0.0)
    gain = jnp.stack([packed.prm_after_slm - packed.prm_context, packed.prm_after_llm - packed.prm_context], -1)
    ts, tl = reference_step_seconds(packed, flops_slm, flops_llm, latency_model)
    return StepMDP(
        obs=obs.astype(jnp.float32),
        step_mask=mask,
        gain=jnp.where(mask[..., None], gain, 0.0).astype(jnp.float32),
        cost=jnp.stack([ts, tl], -1).astype(jnp.float32),
        prm_start=packed.prm_context[:, 0].astype(jnp.float32),
    )


def _take(x, actions):
    return jnp.take_along_axis(x, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def rewards(mdp: StepMDP, actions, beta):
    """Eq. 21 for actions [N, K]: gain of the chosen model minus beta times its compute seconds (0 on padding)."""
    r = _take(mdp.gain, actions) - beta * _take(mdp.cost, actions)
    return jnp.where(mdp.step_mask, r, 0.0)


def reward_table(mdp: StepMDP, beta):
    """[N, K, 2] reward of each action at each (problem, step)."""
    return jnp.where(mdp.step_mask[..., None], mdp.gain - beta * mdp.cost, 0.0)


def path_prm(mdp: StepMDP, actions):
    """[N, K + 1] PRM score of the actual context before each step (and after the last), additive transfer."""
    gains = jnp.where(mdp.step_mask, _take(mdp.gain, actions), 0.0)
    return mdp.prm_start[:, None] + jnp.concatenate([jnp.zeros_like(gains[:, :1]), jnp.cumsum(gains, 1)], 1)


def coarse_return(mdp: StepMDP, actions, beta):
    """Eq. 20: PRM(final context) - PRM(x_0) - beta sum_t D(x_t, a_t), per problem [N]."""
    prm = path_prm(mdp, actions)
    spent = jnp.where(mdp.step_mask, _take(mdp.cost, actions), 0.0).sum(1)
    return prm[:, -1] - prm[:, 0] - beta * spent


def n_step_targets(rewards_nk, values_nk, step_mask, n: int = 3):
    """Eq. 23: G_k = r_k + ... + r_{k+n-1} + V(x_{k+n}), truncated at the episode end (0 on padding)."""
    num_k = rewards_nk.shape[1]
    r = jnp.where(step_mask, rewards_nk, 0.0)
    v = jnp.where(step_mask, values_nk, 0.0)
    r_pad = jnp.pad(r, ((0, 0), (0, n)))
    v_pad = jnp.pad(v, ((0, 0), (0, n)))
    g = sum(r_pad[:, j : j + num_k] for j in range(n)) + v_pad[:, n : n + num_k]
    return jnp.where(step_mask, g, 0.0)


def optimal_actions(mdp: StepMDP, beta):
    """The exact optimum of this MDP: rewards depend only on (n, k, a), so a_k = 1 iff r(x_k, 1) > r(x_k, 0)."""
    r = reward_table(mdp, beta)
    return jnp.where(mdp.step_mask, (r[..., 1] > r[..., 0]).astype(jnp.int32), 0)


def split_problems(num_problems: int, heldout_fraction: float, seed: int = 0) -> np.ndarray:
    """bool [N]: True for training problems; a fixed random `heldout_fraction` of problems is held out."""
    rng = np.random.default_rng(seed)
    heldout = rng.permutation(num_problems)[: int(round(heldout_fraction * num_problems))]
    train = np.ones(num_problems, bool)
    train[heldout] = False
    return train
