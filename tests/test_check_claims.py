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


def _eval(slm, llm, pi, c_slm, c_llm, c_pi, rsd):
    point = lambda acc, c: {"accuracy": acc / 100, "compute_ms_per_task": c}
    return {"single_user": {"all_slm": point(slm, c_slm), "all_llm": point(llm, c_llm), "pi_theta": point(pi, c_pi),
                            "rsd": [point(a, c) for a, c in rsd]}}


def test_fig4_rules(cc):
    good = {"gsm8k": _eval(85, 95, 92, 3, 22, 6, [(91.5, 7), (93, 12)]),
            "gaokao2023en": _eval(66, 70, 69, 6, 70, 12, [(67, 14), (69.5, 40)]),
            "mmlu_stem": _eval(59, 73, 70, 5, 36, 14, [(62, 15), (70, 30)])}
    verdicts = {c["id"]: c["verdict"] for c in cc.claims_fig4(good)}
    assert len(verdicts) == 9 and set(verdicts.values()) == {"reproduced"}, verdicts
    bad = {"gsm8k": _eval(85, 95, 92, 3, 22, 6, [(86, 9.4)]),  # RSD far below at the nearest compute
           "gaokao2023en": _eval(66, 70, 66.3, 6, 70, 12, [(67, 11)]),  # tiny gain; an RSD point dominates
           "mmlu_stem": _eval(59, 73, 70, 5, 36, 20, [(62, 15)])}  # 56 % of All-LLM's compute: not "a fraction"
    verdicts = {c["id"]: c["verdict"] for c in cc.claims_fig4(bad)}
    assert verdicts["F4-vs-rsd-gsm8k"] == "missed" and verdicts["F4-vs-rsd-gaokao2023en"] == "missed"
    assert verdicts["F4-beats-slm-gaokao2023en"] == "missed" and verdicts["F4-closer-to-llm-gaokao2023en"] == "missed"
    assert verdicts["F4-beats-slm-mmlu_stem"] == "missed" and verdicts["F4-closer-to-llm-mmlu_stem"] == "missed"
    assert verdicts["F4-beats-slm-gsm8k"] == "reproduced"


def test_read_evals_names_a_bad_file(cc, tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "eval.json").write_text("{}")
    with pytest.raises(ValueError, match="gsm8k/eval.json: not a training evaluation"):
        cc.read_evals(str(tmp_path))
    with pytest.raises(ValueError, match="no <dataset>/eval.json"):
        cc.read_evals(str(tmp_path / "empty"))
