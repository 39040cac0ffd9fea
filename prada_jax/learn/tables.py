"""Per-(problem, step) policy tables from the trained networks, and their .npz files.

Features, tokens and probabilities are fixed per (problem, step), so pi_theta(1|x), A_omega(x, 1) and D_psi
(server seconds of the reference context) are evaluated once into [N, K] tables that the simulator gathers.
"""

from __future__ import annotations

import json
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
from prada_jax.traces import file_sha256

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
    secs = aux.predict_server_seconds(models.aux_config, models.delay, M.reference_context(packed),
                                      packed.slm_step_tokens)
    z = lambda x: jnp.where(mask, x, 0.0).astype(jnp.float32)  # noqa: E731
    return PolicyTable(nominate_prob=z(prob), advantage=z(adv), server_seconds=z(secs))


def save_table(path: str, table: PolicyTable, trace_sha256: str | None = None, dataset: str | None = None,
               beta: float | None = None, latency_model: str = C.DEFAULT_LATENCY_MODEL) -> str:
    """Write the three [N, K] arrays to `path` (.npz) with the SHA-256 of the trace file they were made from
    (checked by `load_table`), the dataset name, the beta of the policy and (when not the default "flops") the
    latency model its costs and D_psi came from."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {"trace_sha256": trace_sha256, "dataset": dataset, "beta": None if beta is None else float(beta)}
    if latency_model != C.DEFAULT_LATENCY_MODEL:
        meta["latency_model"] = latency_model
    np.savez(path, **{f: np.asarray(getattr(table, f), np.float32) for f in TABLE_FIELDS},
             metadata=np.asarray(json.dumps(meta)))
    return path


def table_metadata(path: str) -> dict:
    """The metadata stored with a table ({} for a table written before tables carried it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "metadata" not in data.files:
                return {}
            return json.loads(str(data["metadata"]))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a table error
        raise TableError(f"{path}: unreadable policy table ({type(exc).__name__}: {exc})") from exc


def add_trace_hash(path: str, trace_path: str, dataset: str | None = None, beta: float | None = None) -> str:
    """Migration: store the hash of `trace_path` in an existing table (made from that trace) without changing it."""
    table = load_table(path)
    return save_table(path, table, trace_sha256=file_sha256(trace_path), dataset=dataset, beta=beta)


def load_table(path: str, shape: tuple[int, int] | None = None, trace=None, trace_path: str | None = None) -> PolicyTable:
    """Read a table written by `save_table` and check it; TableError naming `path` and the field otherwise.

    Always: the three fields exist, hold real floating-point values (an int, bool, complex or string array is
    refused, not cast), share one [N, K] shape (= `shape` if given) and are finite in float32; nominate_prob in
    [0, 1]. With `trace` (TraceData): server_seconds > 0 on real steps and all fields 0 on padding. With
    `trace_path`: the stored trace hash equals that file's (a table made for another trace is refused).
    """
    if not os.path.exists(path):
        raise TableError(f"{path}: policy table file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [f for f in TABLE_FIELDS if f not in data.files]
            if missing:
                raise TableError(f"{path}: missing fields {missing}")
            arrays = {f: np.asarray(data[f]) for f in TABLE_FIELDS}
    except TableError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated / not a zip / bad CRC
        raise TableError(f"{path}: unreadable policy table ({type(exc).__name__}: {exc})") from exc
    for f, a in arrays.items():  # real floats only: no strings, ints, bools or complex values (never cast silently)
        if not np.issubdtype(a.dtype, np.floating):
            raise TableError(f"{path}: field {f!r} must hold real floating-point values, got dtype {a.dtype}")
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise TableError(f"{path}: fields must share one [N, K] shape, got { {f: a.shape for f, a in arrays.items()} }")
    if shape is not None and next(iter(shapes)) != tuple(shape):
        raise TableError(f"{path}: table shape {next(iter(shapes))} does not match the trace shape {tuple(shape)}")
    for f, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise TableError(f"{path}: field {f!r} has {int(np.sum(~np.isfinite(a)))} non-finite values")
        with np.errstate(over="ignore"):
            narrowed = a.astype(np.float32)  # what the simulator reads: a float64 beyond float32's range is refused
        if not np.all(np.isfinite(narrowed)):
            raise TableError(f"{path}: field {f!r} has {int(np.sum(~np.isfinite(narrowed)))} values beyond the "
                             "float32 range")
        arrays[f] = narrowed
    p = arrays["nominate_prob"]
    if np.any((p < 0) | (p > 1)):
        raise TableError(f"{path}: field 'nominate_prob' must lie in [0, 1], got range [{p.min():g}, {p.max():g}]")
    if trace is not None:
        mask = np.asarray(trace.step_mask)
        if tuple(mask.shape) != next(iter(shapes)):
            raise TableError(f"{path}: table shape {next(iter(shapes))} does not match the trace shape {mask.shape}")
        secs = arrays["server_seconds"]
        if np.any(secs[mask] <= 0):
            raise TableError(f"{path}: field 'server_seconds' must be > 0 on every real step "
                             f"({int(np.sum(secs[mask] <= 0))} are not)")
        for f, a in arrays.items():
            if np.any(a[~mask] != 0):
                raise TableError(f"{path}: field {f!r} must be 0 on padding steps")
    if trace_path is not None:
        stored = table_metadata(path).get("trace_sha256")
        actual = file_sha256(trace_path)
        if stored is None:
            raise TableError(f"{path}: stores no trace hash, so it cannot be matched to {trace_path}; retrain it or "
                             "add the hash with prada_jax.learn.tables.add_trace_hash if it was made from that trace")
        if stored != actual:
            raise TableError(f"{path}: was made for another trace (sha256 {stored[:12]}...), not {trace_path} "
                             f"({actual[:12]}...); retrain it for this trace")
    return PolicyTable(**{f: jnp.asarray(a) for f, a in arrays.items()})


# ---------------------------------------------------------------------------------------------------------------
# Training records: <ckpt_dir>/<dataset>/eval.json and <ckpt_dir>/summary.json (written by prada-train)
# ---------------------------------------------------------------------------------------------------------------


class RecordError(ValueError):
    """Missing or malformed training record (eval.json, summary.json); the message names the path and the key."""


def read_json_object(path: str) -> dict:
    """The JSON object in file `path`; RecordError (one line naming `path`) when it is missing, not a file,
    unreadable, not JSON or not an object."""
    if not os.path.isfile(path):
        raise RecordError(f"{path}: " + ("not a file" if os.path.exists(path) else "not found"))
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: a JSON object expected, got {type(record).__name__}")
    return record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_point(path: str, where: str, point) -> None:
    """`point` ({'accuracy', 'tflop_per_task', ...}) has a finite numeric accuracy and cost."""
    import math

    for key in ("accuracy", "tflop_per_task"):
        value = point.get(key) if isinstance(point, dict) else None
        if not (_is_number(value) and math.isfinite(value)):
            raise RecordError(f"{path}: {where}.{key} must be a finite number, got {value!r}")


SINGLE_USER_METHODS = ("all_slm", "all_llm", "pi_theta", "random")


def read_eval_record(path: str, single_user: bool = False) -> dict:
    """The training record <ckpt_dir>/<dataset>/eval.json, checked; RecordError naming `path` and the key otherwise.

    Always: a JSON object with a finite numeric `beta` >= 0 and (if present) a string `latency_model`. With
    `single_user` (Figure 4): `single_user.{all_slm,all_llm,pi_theta,random}` and every `single_user.rsd[i]` and
    `frontier[i]` carry finite `accuracy` and `tflop_per_task`."""
    import math

    record = read_json_object(path)
    beta = record.get("beta")
    if not (_is_number(beta) and math.isfinite(beta) and beta >= 0):
        raise RecordError(f"{path}: 'beta' must be a finite number >= 0, got {beta!r}")
    if not isinstance(record.get("latency_model", ""), str):
        raise RecordError(f"{path}: 'latency_model' must be a string, got {record['latency_model']!r}")
    if single_user:
        su = record.get("single_user")
        if not isinstance(su, dict):
            raise RecordError(f"{path}: 'single_user' must be an object, got {type(su).__name__}")
        for method in SINGLE_USER_METHODS:
            _check_point(path, f"single_user.{method}", su.get(method))
        for key, points in (("single_user.rsd", su.get("rsd")), ("frontier", record.get("frontier", []))):
            if not isinstance(points, list):
                raise RecordError(f"{path}: '{key}' must be a list, got {type(points).__name__}")
            for i, point in enumerate(points):
                _check_point(path, f"{key}[{i}]", point)
    return record


def read_training_summary(path: str) -> dict:
    """<ckpt_dir>/summary.json ({} when absent), checked before a training run merges into it: a JSON object whose
    `results` (if present) maps each dataset to an object with a `checks` object. RecordError naming `path`."""
    if not os.path.lexists(path):
        return {}
    summary = read_json_object(path)
    results = summary.get("results", {})
    if not isinstance(results, dict):
        raise RecordError(f"{path}: 'results' must be an object (dataset -> record), got {type(results).__name__}")
    for dataset, record in results.items():
        if not (isinstance(record, dict) and isinstance(record.get("checks"), dict)):
            raise RecordError(f"{path}: results[{dataset!r}] must be an object with a 'checks' object")
    return summary
