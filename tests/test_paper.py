"""prada_jax.paper: the paper's Table 2, the tolerance rule and the comparison a Table-2 sweep prints."""

from types import SimpleNamespace

from prada_jax import paper


def _spec(**overrides):
    params = dict(server_capacity=9, bandwidth_bps=4e7, arrival_rate=3.0, beta=10.0, snr_db=20.0,
                  snr_threshold_db=0.0, path_loss_exponent=3.5)
    params.update(overrides)
    return SimpleNamespace(sweep_param="none", slot_ms=1.0, latency_model="flops", params=params)


def _rows(shift=0.0):
    """Rows equal to the paper's numbers (accuracy as a fraction, as in results.json), delays shifted by `shift`."""
    rows = []
    for d in paper.DATASETS:
        for p in paper.POLICIES:
            row = dict(dataset=d, policy=p)
            for metric, by_d in paper.PAPER_TABLE2.items():
                v = by_d[d][p]
                v = 0.0 if v is None else v
                row[f"{metric}_mean"] = v / 100.0 if metric == "accuracy" else v + shift
            rows.append(row)
    return rows


def test_tolerance_rule():
    assert paper.NUM_TARGETS == 24
    assert paper.within("accuracy", 85.2, 87.2) and not paper.within("accuracy", 85.2, 87.3)
    assert paper.tolerance("processing_ms", 10.0) == 3.5 and paper.tolerance("communication_ms", 0.4) == 0.3


def test_comparison_text_counts_and_names_the_fitted_preset():
    text = paper.comparison_text(_spec(), _rows())
    assert "24 of 24 of the paper's numbers within tolerance" in text
    assert f"--flagfile={paper.FITTED_PRESET}" in text and "beta = 10" in text
    # A 1 ms shift moves the small delays (comm, queue, small proc) outside tolerance: they are marked with "!".
    shifted = paper.comparison_text(_spec(), _rows(shift=1.0))
    assert " !" in shifted and "24 of 24" not in shifted


def test_comparison_text_only_at_the_table3_point():
    assert paper.comparison_text(_spec(server_capacity=3), _rows()) == ""
    assert paper.comparison_text(SimpleNamespace(**{**vars(_spec()), "sweep_param": "beta"}), _rows()) == ""
    assert paper.comparison_text(_spec(), []) == ""
