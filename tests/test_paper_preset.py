"""The paper_*.cfg presets: the fitted values of prada_jax/calibration/paper_fit.json on top of the shipped
table2/capacity/bandwidth.cfg (same datasets, policies, sweep, episodes, horizon), and a --ckpt_dir that the
sweep can train into when the fitted beta has no shipped table."""

import json
import math
import pathlib

import pytest
from absl import flags

from prada_jax import constants as C
from prada_jax.sweep.flags import CONFIG_DIR, define_flags, spec_from_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIT = json.loads((ROOT / "prada_jax" / "calibration" / "paper_fit.json").read_text())["fitted"]


def _spec(name):
    fv = flags.FlagValues()
    define_flags(fv)
    fv(["prog", f"--flagfile={CONFIG_DIR}/{name}"])
    return spec_from_flags(fv)


@pytest.mark.parametrize("preset,base", [("paper_table2.cfg", "table2.cfg"), ("paper_capacity.cfg", "capacity.cfg"),
                                         ("paper_bandwidth.cfg", "bandwidth.cfg")])
def test_preset_is_base_at_fitted_values(preset, base):
    p, b = _spec(preset), _spec(base)
    for field in ("datasets", "policies", "sweep_param", "sweep_values", "episodes", "horizon_ms", "warmup_ms"):
        assert getattr(p, field) == getattr(b, field), field
    for name in ("beta", "snr_db", "snr_threshold_db", "path_loss_exponent"):
        assert math.isclose(p.params[name], FIT[name]), name
    assert math.isclose(p.table_beta, FIT["beta"])
    for name in ("bandwidth_bps", "arrival_rate", "flops_llm", "flops_slm"):  # Table 3 / calibrated, not fitted
        assert p.params[name] == b.params[name], name
    if not math.isclose(FIT["beta"], C.DEFAULT_BETA):
        assert p.ckpt_dir == f"results/fit/ckpt_beta{FIT['beta']:g}"  # writable: trained on first use
