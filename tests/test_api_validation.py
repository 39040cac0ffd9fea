"""The Python API is as strict as the CLI: every bad input is one SimParamsError naming the parameter, before work.

Covers simulate_grid / simulate / make_params / param_grid / SimConfig / policy tables, a test that runs each of
the CLI's per-value checks through the API, and a property test over random parameter values.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sim_helpers import mixed_table, tiny
from test_sweep import spec_for, traces_dir  # noqa: F401 - the fixture

from prada_jax import sim
from prada_jax.sim import policies, registry
from prada_jax.sim.params import SimParamsError
from prada_jax.traces import pack_traces

TRACE = tiny(num_problems=6, seed=11)
PACKED = pack_traces(TRACE)
TABLE = mixed_table(TRACE, seed=11)
CONFIG = sim.SimConfig(num_slots=40, warmup_slots=5, max_users=4, max_servers=3, drain_slots=40, max_candidates=4)
BASE = sim.make_params(arrival_rate=0.3, server_capacity=2)
GRID = sim.param_grid(BASE, bandwidth_bps=[1e6, 4e7])


def _nan_field(name):
    values = np.asarray(getattr(TABLE, name)).copy()
    values[np.asarray(TRACE.step_mask)] = np.nan
    return dataclasses.replace(TABLE, **{name: values})


@pytest.mark.parametrize("field", ["advantage", "server_seconds", "nominate_prob"])
def test_a_table_with_nan_is_refused_naming_the_field(field):
    with pytest.raises(SimParamsError, match=rf"PolicyTable\.{field} has \d+ non-finite"):
        sim.simulate_grid(PACKED, _nan_field(field), GRID, CONFIG, 2, 0)


def test_table_ranges_and_padding_are_checked_as_the_table_loader_does():
    secs = np.asarray(TABLE.server_seconds).copy()
    secs[0, 0] = 0.0
    with pytest.raises(SimParamsError, match="server_seconds must be > 0 on every real step"):
        sim.simulate_grid(PACKED, dataclasses.replace(TABLE, server_seconds=secs), GRID, CONFIG, 2, 0)
    adv = np.asarray(TABLE.advantage).copy()
    adv[~np.asarray(TRACE.step_mask)] = 1.0
    with pytest.raises(SimParamsError, match="advantage must be 0 on padding"):
        sim.simulate(PACKED, dataclasses.replace(TABLE, advantage=adv), sim.make_params(server_capacity=2), CONFIG,
                     jax.random.PRNGKey(0))
    with pytest.raises(SimParamsError, match=r"nominate_prob must lie in \[0, 1\]"):
        sim.simulate_grid(PACKED, dataclasses.replace(TABLE, nominate_prob=np.asarray(TABLE.nominate_prob) * 3),
                          GRID, CONFIG, 2, 0)
    with pytest.raises(SimParamsError, match="real floating-point"):
        sim.simulate_grid(PACKED, dataclasses.replace(TABLE, advantage=np.zeros(TRACE.step_mask.shape, np.int32)),
                          GRID, CONFIG, 2, 0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(server_capacity=2.7), r"server_capacity must be an integer, got 2\.7"),
    (dict(server_capacity=[1, 2.5]), r"server_capacity must be an integer, got 2\.5"),
    (dict(server_capacity=True), "server_capacity must be a number"),
    (dict(bandwidth_bps=["a", "b"]), r"SimParams\.bandwidth_bps must be a number.*'a'"),
    (dict(bandwidth_bps="fast"), r"SimParams\.bandwidth_bps must be a number"),
    (dict(bandwidth_bps=[[1e6, 2e6]]), r"bandwidth_bps must be a scalar or a 1-D grid"),
    (dict(bandwidth_bps=[]), r"bandwidth_bps is empty"),
    (dict(beta=float("nan")), r"SimParams\.beta must be finite"),
    (dict(flops_llm=float("inf")), r"SimParams\.flops_llm must be finite"),
    (dict(flops_llm=1e39), r"flops_llm=1e\+39 overflows float32"),
    (dict(bandwidth_bps=1e-50), r"bandwidth_bps must be > 0.*in float32"),
    (dict(beta=-1.5e-52), r"SimParams\.beta must be >= 0, got -1\.5e-52"),  # -0.0 in float32: refused as given
    (dict(beta=[2.0, -1e-60]), r"SimParams\.beta must be >= 0"),
    (dict(server_compute_efficiency=1.5), r"server_compute_efficiency must be in \(0, 1\]"),
    (dict(prefix_cache=2), "prefix_cache must be True or False"),
])
def test_make_params_names_the_parameter(kwargs, match):
    with pytest.raises(SimParamsError, match=match):
        sim.make_params(**kwargs)


@pytest.mark.parametrize("axes,match", [
    (dict(bandwidth_bps=[]), r"SimParams\.bandwidth_bps is empty"),
    (dict(bandwidth_bps=["a", "b"]), r"SimParams\.bandwidth_bps must be a number"),
    (dict(bandwidth_bps=4e7), r"param_grid: bandwidth_bps must be a 1-D list"),
    (dict(server_capacity=[1, 2.7]), "server_capacity must be an integer"),
    (dict(nonsense=[1.0]), "unknown SimParams fields"),
])
def test_param_grid_names_the_parameter(axes, match):
    with pytest.raises(SimParamsError, match=match):
        sim.param_grid(**axes)


@pytest.mark.parametrize("episodes,seed,match", [
    (0, 0, "episodes must be >= 1, got 0"),
    (-3, 0, "episodes must be >= 1, got -3"),
    (2.0, 0, "episodes must be an integer"),
    (True, 0, "episodes must be an integer"),
    (2, -1, r"seed: .*got -1"),
    (2, 2**32, r"seed: .*got 4294967296"),
    (2, 1.5, "seed must be an integer"),
])
def test_episodes_and_seed_are_checked(episodes, seed, match):
    with pytest.raises(SimParamsError, match=match):
        sim.simulate_grid(PACKED, TABLE, GRID, CONFIG, episodes, seed)
    with pytest.raises(SimParamsError, match=match):
        sim.episode_keys(episodes, seed)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, -1e-3, True, "0.001"])
def test_slot_seconds_must_be_finite_and_positive(value):
    with pytest.raises(SimParamsError, match="SimConfig.slot_seconds must be a finite number > 0"):
        sim.SimConfig(slot_seconds=value)


@pytest.mark.parametrize("rate", [1e9, 1e12, 1e30, 5000.0])
def test_absurd_arrival_rates_are_refused_before_scipy_or_memory(rate):
    with pytest.raises(SimParamsError, match=r"SimParams\.arrival_rate .* is absurd: its Poisson cap A_max"):
        sim.simulate_grid(PACKED, TABLE, sim.param_grid(BASE, arrival_rate=[rate]), CONFIG, 2, 0)


def test_a_point_that_cannot_fit_in_memory_is_refused_naming_episodes():
    with pytest.raises(SimParamsError, match=r"simulate_grid: episodes=1000000000 needs about .* TB .* available"):
        sim.simulate_grid(PACKED, TABLE, GRID, CONFIG, 10**9, 0)


def test_memory_limit_override_is_honoured(monkeypatch):
    monkeypatch.setenv("PRADA_MEMORY_LIMIT_BYTES", "1000")
    with pytest.raises(SimParamsError, match=r"episodes=2 needs about .* more than the 1000 B available"):
        sim.simulate_grid(PACKED, TABLE, GRID, CONFIG, 2, 0)


def test_simulate_needs_scalar_params_and_simulate_grid_a_grid():
    with pytest.raises(SimParamsError, match="leading grid axis"):
        sim.simulate_grid(PACKED, TABLE, sim.make_params(server_capacity=2), CONFIG, 2, 0)
    with pytest.raises(SimParamsError, match="scalar params"):
        sim.simulate(PACKED, TABLE, GRID, CONFIG, jax.random.PRNGKey(0))


@pytest.mark.parametrize("name,bad,rule", [("beta", -1.0, ">= 0"), ("arrival_rate", -1e-3, ">= 0")])
def test_registry_and_validate_params_share_one_rule_for_beta_and_arrival_rate(traces_dir, name, bad, rule):
    """One source, the registry's check, whichever door the value comes through: the simulator's rule, beta >= 0
    (0 = accuracy only, which Stage 2 handles) and arrival_rate >= 0 (0: nothing arrives, every per-task metric
    n/a)."""
    from prada_jax import sweep

    assert registry.get_param(name).check(bad) == f"must be {rule}"
    with pytest.raises(sweep.SweepConfigError, match=rf"--{name}: {name} must be {rule}"):
        spec_for(traces_dir, params={name: bad})
    with pytest.raises(SimParamsError, match=rf"SimParams\.{name} must be {rule}"):
        sim.make_params(**{name: bad})
    built = dataclasses.replace(sim.make_params(), **{name: np.float32(bad)})  # around make_params
    with pytest.raises(SimParamsError, match=rf"SimParams\.{name} must be {rule}"):
        sim.validate_params(built, CONFIG)
    assert float(getattr(sim.make_params(**{name: 0.0}), name)) == 0.0 and spec_for(traces_dir, params={name: 0.0})


# ---- every per-value check of the CLI, run through the API ----

def _bad_values(param):
    """Values the CLI's check for `param` refuses (from the registered rule itself)."""
    values = [float("nan"), float("inf")]
    if param.kind is int:
        values.append(param.default + 0.5)
    for candidate in (0.0, -1.0, 1.5, 1e-60):
        if param.check is not None and param.check(candidate if param.kind is float else int(candidate)):
            values.append(candidate)
    return values


CLI_CASES = [(name, value) for name, param in registry.PARAMS.items() for value in _bad_values(param)]


@pytest.mark.parametrize("name,value", CLI_CASES, ids=[f"{n}={v!r}" for n, v in CLI_CASES])
def test_every_value_the_cli_refuses_the_api_refuses(traces_dir, name, value):
    from prada_jax import sweep

    with pytest.raises(sweep.SweepConfigError, match=rf"--{name}"):
        spec_for(traces_dir, params={name: value})
    with pytest.raises(SimParamsError, match=rf"SimParams\.{name}"):
        sim.make_params(**{name: value})
    with pytest.raises(SimParamsError, match=rf"SimParams\.{name}"):
        sim.param_grid(**{name: [registry.get_param(name).default, value]})


@pytest.mark.parametrize("flags,api", [
    (dict(episodes=0), lambda: sim.simulate_grid(PACKED, TABLE, GRID, CONFIG, 0, 0)),
    (dict(seed=-1), lambda: sim.simulate_grid(PACKED, TABLE, GRID, CONFIG, 2, -1)),
    (dict(seed=2**32), lambda: sim.simulate_grid(PACKED, TABLE, GRID, CONFIG, 2, 2**32)),
    (dict(slot_ms=float("inf")), lambda: sim.SimConfig(slot_seconds=float("inf"))),
    (dict(slot_ms=0.0), lambda: sim.SimConfig(slot_seconds=0.0)),
    (dict(max_users=0), lambda: sim.SimConfig(max_users=0)),
    (dict(warmup_ms=2000), lambda: sim.SimConfig(num_slots=2000, warmup_slots=2000)),
    (dict(latency_model="nope"), lambda: sim.SimConfig(latency_model="nope")),
    (dict(params={"arrival_rate": 1e9}), lambda: sim.simulate_grid(PACKED, TABLE, sim.param_grid(BASE, arrival_rate=[1e9]),
                                                                   CONFIG, 2, 0)),
    (dict(sweep_param="bandwidth_bps", sweep_values=[]), lambda: sim.param_grid(bandwidth_bps=[])),
])
def test_the_cli_checks_beyond_the_registry_have_api_twins(traces_dir, flags, api):
    from prada_jax import sweep

    with pytest.raises(sweep.SweepConfigError):
        spec_for(traces_dir, **flags)
    with pytest.raises(SimParamsError):
        api()


# ---- property: random parameter values through the public API ----

# A fixed A_max: one compile serves every example (rates up to 1.5 per slot fit it; larger ones are refused).
PROPERTY_CONFIG = sim.SimConfig(num_slots=20, warmup_slots=2, max_users=3, max_servers=3, drain_slots=20,
                                max_candidates=2, max_arrivals_per_slot=14, tq_iterations=1)
_FINITE = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bandwidth=st.one_of(st.floats(1e3, 1e9), _FINITE), capacity=st.one_of(st.integers(-2, 5), st.floats(-1, 4)),
       rate=st.one_of(st.floats(0.0, 1.5), _FINITE), beta=st.one_of(st.floats(0, 50), _FINITE),
       episodes=st.sampled_from([-1, 0, 2]), seed=st.one_of(st.integers(0, 2**32 - 1), st.integers(-5, 2**33)))
@example(bandwidth=4e7, capacity=2, rate=0.3, beta=10.0, episodes=2, seed=0)  # one that runs, always
def test_random_api_inputs_give_one_named_error_or_consistent_results(bandwidth, capacity, rate, beta, episodes, seed):
    try:
        params = sim.make_params(bandwidth_bps=bandwidth, server_capacity=capacity, arrival_rate=rate, beta=beta)
        grid = sim.stack_params([params])
        metrics = sim.simulate_grid(PACKED, TABLE, grid, PROPERTY_CONFIG, episodes, seed)
    except SimParamsError as err:
        message = str(err)
        assert "\n" not in message
        assert any(word in message for word in ("bandwidth_bps", "server_capacity", "arrival_rate", "beta",
                                                "episodes", "seed", "max_servers")), message
        return
    m = jax.device_get(metrics)
    for name in m.__dataclass_fields__:
        assert np.all(np.isfinite(np.asarray(getattr(m, name), np.float64))), name
    np.testing.assert_array_equal(np.asarray(m.arrived), np.asarray(m.completed) + np.asarray(m.unfinished)
                                  + np.asarray(m.dropped))
    assert math.isfinite(bandwidth) and capacity >= 1 and rate >= 0 and beta >= 0 and episodes >= 1
    assert 0 <= seed < 2**32


@pytest.mark.parametrize("rate", [1e9, 1e12, 1e30])
def test_the_sweep_refuses_absurd_arrival_rates_as_a_flag_error(traces_dir, rate):
    from prada_jax import sweep

    with pytest.raises(sweep.SweepConfigError, match=r"^--arrival_rate: arrival_rate=.* is absurd: its Poisson cap"):
        spec_for(traces_dir, params={"arrival_rate": rate})
    with pytest.raises(sweep.SweepConfigError, match=r"^--sweep_values: arrival_rate=.* is absurd"):
        spec_for(traces_dir, sweep_param="arrival_rate", sweep_values=[0.5, rate])


def test_the_sweep_refuses_a_billion_episodes_before_run_json(traces_dir, tmp_path):
    from prada_jax import sweep

    out = tmp_path / "out"
    with pytest.raises(sweep.SweepConfigError, match=r"^--episodes: one point \(--episodes=1000000000 x 3 grid "
                                                     r"values\) needs about .* TB"):
        sweep.run_sweep(spec_for(traces_dir, policies=["all_slm"], episodes=10**9), str(out))
    assert not out.exists()


@pytest.mark.parametrize("build,match", [
    (lambda: policies.router_table(TRACE, 1.5), r"router_table: llm_fraction must lie in \[0, 1\], got 1\.5"),
    (lambda: policies.prm_threshold_table(TRACE, float("nan")), "prm_threshold_table: threshold must lie in"),
    (lambda: policies.random_table(TRACE, -0.1), r"random_table: prob must lie in \[0, 1\]"),
    (lambda: policies.router_table(TRACE, "half"), "llm_fraction must be a number"),
])
def test_table_builders_check_their_fraction_as_the_cli_does(traces_dir, build, match):
    from prada_jax import sweep

    with pytest.raises(sweep.SweepConfigError, match="--router_llm_fraction: must lie in"):
        spec_for(traces_dir, router_llm_fraction=1.5)
    with pytest.raises(SimParamsError, match=match):
        build()


def test_check_inputs_is_the_entry_points_check():
    """The one check other entry points (an environment API) call: the same errors as simulate_grid's."""
    config = sim.check_inputs(PACKED, TABLE, GRID, CONFIG)
    assert config.max_arrivals_per_slot is not None
    with pytest.raises(SimParamsError, match=r"PolicyTable\.advantage has \d+ non-finite"):
        sim.check_inputs(PACKED, _nan_field("advantage"), GRID, CONFIG)
    with pytest.raises(SimParamsError, match="episodes must be >= 1"):
        sim.check_episodes_and_seed(0, 0)
