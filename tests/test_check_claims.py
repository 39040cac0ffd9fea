"""The claim rules of experiments/check_claims.py on synthetic sweep rows (no simulation)."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("check_claims", ROOT / "experiments" / "check_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(dataset, policy, x, acc, proc, comm, queue):
    return {"dataset": dataset, "policy": policy, "sweep_value": x, "accuracy_mean": acc / 100, "processing_ms_mean": proc,
            "communication_ms_mean": comm, "queuing_ms_mean": queue, "end_to_end_ms_mean": proc + comm + queue}


def test_table2_paper_numbers_reproduce_themselves(cc):
    t = cc.PAPER_TABLE2
    rows = [_row(d, p, None, t["accuracy"][d][p], t["processing_ms"][d][p], t["communication_ms"][d][p] or 0.0,
                 t["queuing_ms"][d][p] or 0.0) for d in cc.DATASETS for p in ("all_slm", "pi_only", "prada")]
    claims = cc.claims_table2(rows)
    assert claims and all(c["verdict"] == "reproduced" for c in claims), [c for c in claims if c["verdict"] != "reproduced"]


def test_capacity_shapes(cc):
    ms = [1, 3, 9, 20]
    rows = []
    for m in ms:
        rows.append(_row("gsm8k", "prada", m, {1: 86, 3: 87, 9: 90, 20: 90.2}[m], 4 + m / 10, 0.1 + m / 100, 5 / m ** 2))
        rows.append(_row("gsm8k", "random_scheduler", m, {1: 87, 3: 88, 9: 89, 20: 88}[m], 5, 0.2, 3.0))
        rows.append(_row("gsm8k", "random_policy", m, 86, 6, 0.3, 50 / m))
    verdicts = {c["id"]: c["verdict"] for c in cc.claims_capacity(rows)}
    assert set(verdicts.values()) == {"reproduced"}, verdicts
    rows = [dict(r, queuing_ms_mean=2.0) if r["policy"] == "prada" else r for r in rows]  # queue never vanishes
    assert {c["id"]: c["verdict"] for c in cc.claims_capacity(rows)}["F6-queue-to-zero"] == "missed"


def test_bandwidth_threshold_location(cc):
    bs = [1e5, 1e6, 1e7, 4e7, 1e9]
    acc = {1e5: 85, 1e6: 86, 1e7: 90, 4e7: 90.3, 1e9: 90.4}
    rows = [_row("gsm8k", "prada", b, acc[b], 4 + (b > 1e6), 50 / (b / 1e5), 0.5 + (b > 1e6)) for b in bs]
    rows += [_row("gsm8k", "random_scheduler", b, 87, 6, 500 / (b / 1e5), 20) for b in bs]
    verdicts = {c["id"]: c["verdict"] for c in cc.claims_bandwidth(rows)}
    assert set(verdicts.values()) == {"reproduced"}, verdicts
    acc[1e5], acc[1e6] = 80, 88  # the steepest rise moves below 1e6
    rows = [dict(r, accuracy_mean=acc[r["sweep_value"]] / 100) if r["policy"] == "prada" else r for r in rows]
    assert {c["id"]: c["verdict"] for c in cc.claims_bandwidth(rows)}["F8-threshold"] == "missed"
