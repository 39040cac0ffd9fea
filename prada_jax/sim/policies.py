"""Per-(problem, step) policy tables read by the simulator (Stage 1 and Stage 2 inputs) and baseline builders.

Because features, tokens and probabilities are fixed per (problem, step), any policy can be evaluated once
into a table; the slot loop only gathers (design notes section 3). Builders accept a `TraceData` or a
`PackedTraces` (same field names).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C
from prada_jax import costs
from prada_jax.sim import latency_models
from prada_jax.sim.errors import SimParamsError
from prada_jax.sim.params import flops_params

# Tables of deterministic policies store pi(1|x) as 1 - eps / eps so that eq. 33 stays finite.
DETERMINISTIC_EPS = 0.01


@struct.dataclass
class PolicyTable:
    nominate_prob: jnp.ndarray  # [N, K] pi_theta(1|x)   (Stage 1)
    advantage: jnp.ndarray  # [N, K] A_omega(x, 1)   (Stage 2, eq. 33 with nominate_prob)
    server_seconds: jnp.ndarray  # [N, K] D_psi: predicted server compute time (s), reference context

    def value_gap(self):
        """Eq. 33: Q(x,1) - Q(x,0) per (problem, step)."""
        return costs.value_gap(self.advantage, self.nominate_prob)


def _fraction(name: str, value) -> float:
    """`value` as a float in [0, 1], or SimParamsError naming the argument (the CLI's --router_llm_fraction /
    --rsd_threshold rule)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SimParamsError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise SimParamsError(f"{name} must lie in [0, 1], got {value!r}")
    return number


def _mask(trace):
    k = jnp.asarray(trace.slm_step_tokens).shape[1]
    return jnp.arange(k)[None, :] < jnp.asarray(trace.num_steps)[:, None]


def flops_reference_server_seconds(trace, flops_llm=C.FLOPS_LLM):
    """D_psi target of the table builders: latency_models.reference_server_seconds under the paper's "flops" model
    (TL with full prefill of the all-SLM reference context)."""
    return latency_models.reference_server_seconds(trace, flops_params(flops_llm=flops_llm),
                                                   latency_models.FLOPS)


def prm_gain(trace):
    """PRM estimate of Q(x,1) - Q(x,0): score after the LLM step minus score after the SLM step."""
    gain = jnp.asarray(trace.prm_after_llm) - jnp.asarray(trace.prm_after_slm)
    return jnp.where(_mask(trace), gain, 0.0).astype(jnp.float32)


def table_from_value_gap(nominate_prob, value_gap, server_seconds) -> PolicyTable:
    """Build a table whose eq. 33 value gap equals `value_gap`: A(x,1) = gap * pi(0|x)."""
    nominate_prob = jnp.asarray(nominate_prob, jnp.float32)
    return PolicyTable(
        nominate_prob=nominate_prob,
        advantage=(jnp.asarray(value_gap, jnp.float32) * (1.0 - nominate_prob)).astype(jnp.float32),
        server_seconds=jnp.asarray(server_seconds, jnp.float32),
    )


def _constant(trace, prob, value_gap, flops_llm):
    mask = _mask(trace)
    nom = jnp.where(mask, prob, 0.0)
    gap = prm_gain(trace) if value_gap is None else jnp.broadcast_to(jnp.asarray(value_gap, jnp.float32), mask.shape)
    return table_from_value_gap(nom, gap, flops_reference_server_seconds(trace, flops_llm))


def all_slm_table(trace, flops_llm=C.FLOPS_LLM) -> PolicyTable:
    """All-SLM: never nominate."""
    return _constant(trace, 0.0, None, flops_llm)


def all_llm_table(trace, value_gap=None, flops_llm=C.FLOPS_LLM) -> PolicyTable:
    """All-LLM: nominate every step (pi = 1 - eps); value gap = PRM gain unless given."""
    return _constant(trace, 1.0 - DETERMINISTIC_EPS, value_gap, flops_llm)


def random_table(trace, prob=0.5, base: PolicyTable | None = None, flops_llm=C.FLOPS_LLM) -> PolicyTable:
    """Random Stage 1 policy: nominate with probability `prob` (use SimConfig.stage1_sampling=True).

    The Stage 2 value gap is kept from `base` (e.g. the learned table), or the PRM gain if None.
    """
    prob = _fraction("random_table: prob", prob)
    gap = prm_gain(trace) if base is None else base.value_gap()
    secs = flops_reference_server_seconds(trace, flops_llm) if base is None else base.server_seconds
    return table_from_value_gap(jnp.where(_mask(trace), prob, 0.0), gap, secs)


def prm_threshold_table(trace, threshold, flops_llm=C.FLOPS_LLM) -> PolicyTable:
    """Nominate the steps whose SLM output the PRM scores below `threshold` (RSD's rejection rule).

    nominate_prob is 1 - eps where the PRM rejects, eps elsewhere (>= 0.5 means 'reject' for scheduler rsd).
    """
    threshold = _fraction("prm_threshold_table: threshold", threshold)
    mask = _mask(trace)
    reject = mask & (jnp.asarray(trace.prm_after_slm) < threshold)
    nom = jnp.where(reject, 1.0 - DETERMINISTIC_EPS, jnp.where(mask, DETERMINISTIC_EPS, 0.0))
    return table_from_value_gap(nom, prm_gain(trace), flops_reference_server_seconds(trace, flops_llm))


def router_table(trace, llm_fraction=0.5, flops_llm=C.FLOPS_LLM) -> PolicyTable:
    """Task-level router (RouteLLM-style): the `llm_fraction` of problems with the largest mean PRM gain of
    the LLM over the SLM run every step on the LLM, the rest every step on the SLM."""
    llm_fraction = _fraction("router_table: llm_fraction", llm_fraction)
    mask = _mask(trace)
    gain = prm_gain(trace)
    score = jnp.sum(gain, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1)
    n = score.shape[0]
    n_llm = int(round(float(llm_fraction) * n))
    rank = jnp.argsort(jnp.argsort(-score, stable=True), stable=True)
    to_llm = rank < n_llm
    nom = jnp.where(mask, jnp.where(to_llm[:, None], 1.0 - DETERMINISTIC_EPS, DETERMINISTIC_EPS), 0.0)
    return table_from_value_gap(nom, gain, flops_reference_server_seconds(trace, flops_llm))


def nominated(table: PolicyTable, problem, step, uniform, sampling: bool):
    """Stage 1: greedy (pi > 0.5) or sampled (u < pi) nomination for users at (problem, step)."""
    prob = table.nominate_prob[problem, step]
    return (uniform < prob) if sampling else (prob > 0.5)


def check_table(table: PolicyTable, num_problems: int, max_steps: int, step_mask=None) -> None:
    """SimParamsError (a ValueError) naming the field unless the table is what a policy-table file must hold
    (prada_jax.learn.tables.load_table): every field [N, K] of real floats, finite in float32, nominate_prob in
    [0, 1]; with `step_mask` [N, K] also server_seconds > 0 on every real step and every field 0 on padding."""
    if not isinstance(table, PolicyTable):
        raise SimParamsError(f"table must be a PolicyTable, got {type(table).__name__}")
    arrays = {}
    for name in ("nominate_prob", "advantage", "server_seconds"):
        a = np.asarray(jax.device_get(getattr(table, name)))
        if tuple(a.shape) != (num_problems, max_steps):
            raise SimParamsError(f"PolicyTable.{name} has shape {tuple(a.shape)}, expected {(num_problems, max_steps)}")
        if not np.issubdtype(a.dtype, np.floating):
            raise SimParamsError(f"PolicyTable.{name} must hold real floating-point values, got dtype {a.dtype}")
        with np.errstate(over="ignore"):
            held = a.astype(np.float32)
        bad = ~np.isfinite(held)
        if bad.any():
            raise SimParamsError(f"PolicyTable.{name} has {int(bad.sum())} non-finite values (in float32) of "
                                 f"{a.size}; first at (problem, step) {tuple(int(i) for i in np.argwhere(bad)[0])}")
        arrays[name] = held
    p = arrays["nominate_prob"]
    if np.any((p < 0) | (p > 1)):
        raise SimParamsError(f"PolicyTable.nominate_prob must lie in [0, 1], got range [{p.min():g}, {p.max():g}]")
    if step_mask is not None:
        mask = np.asarray(jax.device_get(step_mask), bool)
        secs = arrays["server_seconds"]
        if np.any(secs[mask] <= 0):
            raise SimParamsError(f"PolicyTable.server_seconds must be > 0 on every real step "
                                 f"({int(np.sum(secs[mask] <= 0))} are not)")
        for name, a in arrays.items():
            if np.any(a[~mask] != 0):
                raise SimParamsError(f"PolicyTable.{name} must be 0 on padding steps (beyond the trace's num_steps)")
