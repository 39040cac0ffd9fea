"""Check the paper's section-5 claims (Table 2 and the bullets under Figs 4-8) against sweep results.

    python -m experiments.check_claims --table2=results/paper_table2 \
        --capacity=results/paper_capacity --bandwidth=results/paper_bandwidth \
        --fig4=results/fit/ckpt_beta5 [--out=results/claims.json]

--fig4 is a Stage-1 checkpoint folder: the single-user evaluation that training stores in
<dir>/<dataset>/eval.json (held-out problems: All-SLM, All-LLM, pi_theta, the RSD threshold sweep).

Each argument is the --out_dir of a finished `prada-sweep` run (paper_table2.cfg, paper_capacity.cfg,
paper_bandwidth.cfg; any may be omitted). Prints a markdown table (claim, the paper's number or shape, ours,
verdict) and writes it as JSON. The verdict rules are the `claim_*` functions below (tested in
tests/test_check_claims.py); "reproduced" means the stated rule holds, "missed" that it does not.
"""

from __future__ import annotations

import json
import math
import os
import sys

from absl import app, flags

from prada_jax import paper
from prada_jax.paper import PAPER_TABLE2
from prada_jax.sweep.store import read_results

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags, defined only when it runs as a command: importing the claim rules (the tests do)
    must not add global absl flags that clash with other modules' (`--out` is also bench's)."""
    flags.DEFINE_string("table2", None, "--out_dir of the Table-2 sweep (paper_table2.cfg).")
    flags.DEFINE_string("capacity", None, "--out_dir of the server-capacity sweep (paper_capacity.cfg).")
    flags.DEFINE_string("bandwidth", None, "--out_dir of the bandwidth sweep (paper_bandwidth.cfg).")
    flags.DEFINE_string("fig4", None, "Checkpoint folder whose <dataset>/eval.json hold the single-user "
                        "evaluation (Fig. 4), e.g. results/fit/ckpt_beta5 (the fitted beta) or checkpoints.")
    flags.DEFINE_string("out", None, "Write the claims as JSON here.")

DATASETS = ("gsm8k", "gaokao2023en", "mmlu_stem")


def _claim(cid, text, paper, ours, ok):
    return dict(id=cid, claim=text, paper=paper, ours=ours, verdict="reproduced" if ok else "missed")


def _val(rows, dataset, policy, metric, x=None):
    for r in rows:
        if r["dataset"] == dataset and r["policy"] == policy and (x is None or r["sweep_value"] == x):
            v = r[f"{metric}_mean"]
            return 100.0 * v if metric == "accuracy" else v
    raise KeyError((dataset, policy, metric, x))


def _curve(rows, policy, metric, dataset="gsm8k"):
    pts = sorted((r["sweep_value"], r[f"{metric}_mean"] * (100.0 if metric == "accuracy" else 1.0))
                 for r in rows if r["dataset"] == dataset and r["policy"] == policy)
    return [p[0] for p in pts], [p[1] for p in pts]


def _f(x, d=2):
    return f"{x:.{d}f}"


def claims_table2(rows) -> list[dict]:
    out = []
    for d in DATASETS:
        slm, pi, pr = (_val(rows, d, p, "accuracy") for p in ("all_slm", "pi_only", "prada"))
        p_slm, p_pi, p_pr = (PAPER_TABLE2["accuracy"][d][p] for p in ("all_slm", "pi_only", "prada"))
        kept, p_kept = (pr - slm) / (pi - slm) if pi != slm else float("nan"), (p_pr - p_slm) / (p_pi - p_slm)
        out.append(_claim(f"T2-retain-{d}", f"{d}: PRADA retains most (>= 50 %) of pi_theta's accuracy gain over All-SLM",
                          f"{p_kept:.0%} ({p_slm}/{p_pr}/{p_pi})", f"{kept:.0%} ({_f(slm,1)}/{_f(pr,1)}/{_f(pi,1)})",
                          pr > slm and kept >= 0.5))
    for d in DATASETS:
        pi, pr, slm = (_val(rows, d, p, "processing_ms") for p in ("pi_only", "prada", "all_slm"))
        ppi, ppr, pslm = (PAPER_TABLE2["processing_ms"][d][p] for p in ("pi_only", "prada", "all_slm"))
        red, pred = 1 - pr / pi, 1 - ppr / ppi
        out.append(_claim(f"T2-proc-{d}", f"{d}: PRADA cuts processing delay vs pi_theta (paper's reduction +-35 %)",
                          f"{ppi} -> {ppr} ms (-{pred:.0%})", f"{_f(pi)} -> {_f(pr)} ms (-{red:.0%})",
                          pr < pi and abs(red - pred) <= 0.35 * pred))
        out.append(_claim(f"T2-moderate-{d}", f"{d}: PRADA processing only moderately above All-SLM (ratio <= 2.5)",
                          f"x{ppr / pslm:.2f}", f"x{pr / slm:.2f}", pr / slm <= 2.5))
    for d in DATASETS:
        c, q = _val(rows, d, "prada", "communication_ms"), _val(rows, d, "prada", "queuing_ms")
        pc, pq = PAPER_TABLE2["communication_ms"][d]["prada"], PAPER_TABLE2["queuing_ms"][d]["prada"]
        proc = _val(rows, d, "prada", "processing_ms")
        out.append(_claim(f"T2-comm-small-{d}", f"{d}: communication delay very small, not the dominant delay "
                          "(<= 1 ms and < 20 % of processing)", f"{pc} ms", f"{_f(c)} ms", c <= 1.0 and c < 0.2 * proc))
        out.append(_claim(f"T2-queue-gt-comm-{d}", f"{d}: queuing delay larger than communication delay",
                          f"{pq} > {pc} ms", f"{_f(q)} vs {_f(c)} ms", q > c))
    return out


def claims_capacity(rows) -> list[dict]:
    out = []
    m, acc = _curve(rows, "prada", "accuracy")
    a = dict(zip(m, acc))
    m_hi = max(m)
    out.append(_claim("F5-gain-3-9", "PRADA accuracy: substantial gain from M=3 to M=9 (> 1 point)",
                      "rises, then flat", f"{_f(a[3],1)} -> {_f(a[9],1)}", a[9] - a[3] > 1.0))
    out.append(_claim("F5-saturate", f"PRADA accuracy saturates beyond M~9 (|acc(M={m_hi:g}) - acc(9)| < 1 point)",
                      "flat beyond 9", f"{_f(a[9],1)} -> {_f(a[m_hi],1)}", abs(a[m_hi] - a[9]) < 1.0))
    _, acc_rs = _curve(rows, "random_scheduler", "accuracy")
    rs = dict(zip(m, acc_rs))
    small = [x for x in m if x <= 3]
    out.append(_claim("F5-rs-small-M", "random scheduler slightly above PRADA in accuracy at small M (M <= 3)",
                      "RS > PRADA at small M", ", ".join(f"M={x:g}: {_f(rs[x],1)} vs {_f(a[x],1)}" for x in small),
                      all(rs[x] > a[x] for x in small)))
    out.append(_claim("F5-rs-large-M", "... and below PRADA at large M (advantage disappears)",
                      "RS < PRADA at large M", f"M={m_hi:g}: {_f(rs[m_hi],1)} vs {_f(a[m_hi],1)}", rs[m_hi] < a[m_hi]))
    _, q = _curve(rows, "prada", "queuing_ms")
    qd = dict(zip(m, q))
    out.append(_claim("F6-queue-to-zero", "PRADA queuing delay falls with M and approaches 0 (< 0.3 ms, < 10 % of M=1)",
                      "-> 0", f"{_f(q[0])} (M={m[0]:g}) -> {_f(q[-1])} ms", q[-1] < 0.3 and q[-1] < 0.1 * q[0]))
    for metric in ("processing_ms", "communication_ms"):
        _, y = _curve(rows, "prada", metric)
        out.append(_claim(f"F6-{metric.split('_')[0]}-rises", f"PRADA {metric.split('_')[0]} delay increases with M",
                          "rises", f"{_f(y[0])} (M={m[0]:g}) -> {_f(y[-1])} ms", y[-1] > y[0]))
    _, q_rp = _curve(rows, "random_policy", "queuing_ms")
    rp = dict(zip(m, q_rp))
    m_small = min(m)
    out.append(_claim("F6-rp-queue-small-M", "random policy: large queuing delay at small M (> 3x PRADA's, falls with M)",
                      "large at small M", f"M={m_small:g}: {_f(rp[m_small])} vs PRADA {_f(qd[m_small])} ms; "
                      f"M={m_hi:g}: {_f(rp[m_hi])} ms", rp[m_small] > 3 * qd[m_small] and rp[m_hi] < rp[m_small]))
    _, q_rs = _curve(rows, "random_scheduler", "queuing_ms")
    out.append(_claim("F6-rs-queue-high", "random scheduler: consistently high queuing (> 3x PRADA's at every M >= 9)",
                      "high at all M", f"{_f(min(q_rs))}..{_f(max(q_rs))} ms (PRADA at M={m_hi:g}: {_f(qd[m_hi])})",
                      all(y > 3 * qd[x] for x, y in zip(m, q_rs) if x >= 9)))
    return out


def claims_bandwidth(rows) -> list[dict]:
    out = []
    b, acc = _curve(rows, "prada", "accuracy")
    gains = [(acc[i + 1] - acc[i], b[i], b[i + 1]) for i in range(len(b) - 1)]
    # The steepest rise per decade of B.
    import math

    steep = max(gains, key=lambda g: g[0] / math.log10(g[2] / g[1]))
    out.append(_claim("F8-threshold", "PRADA accuracy: most pronounced gain between 1e6 and 1e7 bit/s",
                      "1e6..1e7", f"steepest {steep[1]:.0e}..{steep[2]:.0e} (+{_f(steep[0],1)} pts)",
                      steep[1] >= 1e6 and steep[2] <= 1e7))
    a = dict(zip(b, acc))
    b_hi = max(b)
    out.append(_claim("F8-saturate", "PRADA accuracy saturates beyond the threshold (|acc(max B) - acc(4e7)| < 1 point)",
                      "flat", f"{_f(a[4e7],1)} -> {_f(a[b_hi],1)}", abs(a[b_hi] - a[4e7]) < 1.0))
    _, c = _curve(rows, "prada", "communication_ms")
    cd = dict(zip(b, c))
    out.append(_claim("F7-comm-vanishes", "communication delay falls with B and is negligible at moderate B (>= 1e7: "
                      "< 10 % of its low-B value)", "-> ~0", f"{_f(c[0])} (B={b[0]:.0e}) -> {_f(cd[1e7])} (1e7) -> "
                      f"{_f(c[-1])} ms", cd[1e7] < 0.1 * max(c)))
    for metric in ("processing_ms", "queuing_ms"):
        _, y = _curve(rows, "prada", metric)
        out.append(_claim(f"F7-{metric.split('_')[0]}-rises", f"PRADA {metric.split('_')[0]} delay rises from low B, then stabilises",
                          "rises, flat", f"{_f(y[0])} -> {_f(dict(zip(b, y))[4e7])} (4e7) -> {_f(y[-1])} ms", y[-1] > y[0]))
    b0 = min(b)
    rs_acc, pr_acc = _val(rows, "gsm8k", "random_scheduler", "accuracy", b0), a[b0]
    rs_e2e, pr_e2e = (_val(rows, "gsm8k", p, "end_to_end_ms", b0) for p in ("random_scheduler", "prada"))
    out.append(_claim("F8-rs-low-B", "random scheduler: higher accuracy than PRADA at very small B, at a higher delay",
                      "higher acc., much higher delay", f"B={b0:.0e}: acc {_f(rs_acc,1)} vs {_f(pr_acc,1)}, "
                      f"delay {_f(rs_e2e,1)} vs {_f(pr_e2e,1)} ms", rs_acc > pr_acc and rs_e2e > pr_e2e))
    return out


FIG4_SUBSTANTIAL_POINTS = 1.0  # "substantially improves accuracy" over All-SLM
FIG4_FRACTION_OF_LLM = 0.5  # "only a fraction of the computation required by the all-LLM strategy"
FIG4_COMPARABLE_POINTS = 1.5  # gsm8k: "highly competitive, comparable accuracy-cost trade-offs"


def _rsd_nearest(rsd: list[dict], compute_ms: float) -> dict:
    """The RSD threshold point nearest to `compute_ms` in compute (by |log ratio|)."""
    return min(rsd, key=lambda p: abs(math.log(p["compute_ms_per_task"] / compute_ms)))


def claims_fig4(evals: dict) -> list[dict]:
    """Section 5.1.2's three bullets, per dataset, from single-user evaluations {dataset: eval.json dict}."""
    out = []
    for d in DATASETS:
        if d not in evals:
            continue
        su = evals[d]["single_user"]
        slm, llm, pi = (100.0 * su[k]["accuracy"] for k in ("all_slm", "all_llm", "pi_theta"))
        c_llm, c_pi = su["all_llm"]["compute_ms_per_task"], su["pi_theta"]["compute_ms_per_task"]
        frac = c_pi / c_llm
        out.append(_claim(
            f"F4-beats-slm-{d}", f"{d}: pi_theta improves accuracy over All-SLM (> {FIG4_SUBSTANTIAL_POINTS:g} point) at "
            f"< {FIG4_FRACTION_OF_LLM:.0%} of All-LLM's computation", "better trade-off",
            f"{_f(slm, 1)} -> {_f(pi, 1)} % at {frac:.0%} of All-LLM",
            pi - slm > FIG4_SUBSTANTIAL_POINTS and frac < FIG4_FRACTION_OF_LLM))
        share = (pi - slm) / (llm - slm) if llm > slm else 0.0
        out.append(_claim(
            f"F4-closer-to-llm-{d}", f"{d}: pi_theta's accuracy is closer to All-LLM than to All-SLM, compute far below "
            "All-LLM", "closer to LLM", f"{share:.0%} of the SLM-LLM gap ({_f(slm, 1)}/{_f(pi, 1)}/{_f(llm, 1)}) at "
            f"{frac:.0%} of All-LLM", share > 0.5 and frac < FIG4_FRACTION_OF_LLM))
        rsd = su.get("rsd") or []
        if not rsd:
            continue
        near = _rsd_nearest(rsd, c_pi)
        acc_near, c_near = 100.0 * near["accuracy"], near["compute_ms_per_task"]
        dominated = any(100.0 * p["accuracy"] >= pi and p["compute_ms_per_task"] <= c_pi for p in rsd)
        if d == "gsm8k":
            ok = abs(acc_near - pi) <= FIG4_COMPARABLE_POINTS and 1 / 1.5 <= c_near / c_pi <= 1.5
            text, paper = (f"gsm8k: pi_theta and RSD comparable (the RSD point nearest in compute within "
                           f"{FIG4_COMPARABLE_POINTS:g} points and 1.5x compute)", "comparable")
        else:
            ok = not dominated and pi > acc_near
            text, paper = (f"{d}: pi_theta better than RSD (no RSD point as accurate at no more compute; more "
                           "accurate than the RSD point nearest in compute)", "pi_theta better")
        ours = f"pi_theta {_f(pi, 1)} % at {_f(c_pi)} ms; nearest RSD {_f(acc_near, 1)} % at {_f(c_near)} ms"
        out.append(_claim(f"F4-vs-rsd-{d}", text, paper, ours, ok))
    return out


def read_evals(ckpt_dir: str) -> dict:
    """{dataset: eval.json} for the Table-2 datasets present under `ckpt_dir` (a one-line error names a bad file)."""
    evals = {}
    for d in DATASETS:
        path = os.path.join(ckpt_dir, d, "eval.json")
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    evals[d] = json.load(handle)
                evals[d]["single_user"]["pi_theta"]["compute_ms_per_task"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: not a training evaluation ({exc!r})") from exc
    if not evals:
        raise ValueError(f"--fig4={ckpt_dir}: no <dataset>/eval.json for any of {DATASETS}")
    return evals


def table2_comparison(rows) -> list[dict]:
    """The paper's 24 Table-2 numbers next to ours (prada_jax.paper.tolerance decides `within`)."""
    out = []
    for x in paper.comparison(rows):
        tol = paper.tolerance(x["metric"], x["paper"])
        out.append(dict(x, ours=round(x["ours"], 2), residual=round((x["ours"] - x["paper"]) / tol, 2)))
    return out


def to_markdown(claims) -> str:
    lines = ["| id | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c['id']} | {c['claim']} | {c['paper']} | {c['ours']} | {c['verdict']} |" for c in claims]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    claims = []
    if FLAGS.table2:
        table = table2_comparison(read_results(FLAGS.table2)[1])
        print("| dataset | policy | metric | paper | ours | (ours-paper)/tol | within |\n|---|---|---|---|---|---|---|")
        for x in table:
            print(f"| {x['dataset']} | {x['policy']} | {x['metric']} | {x['paper']} | {x['ours']} | {x['residual']:+.2f} | "
                  f"{'yes' if x['within'] else 'no'} |")
        print(f"\n{sum(x['within'] for x in table)} of {len(table)} Table-2 numbers within tolerance\n")
    if FLAGS.fig4:
        try:
            claims += claims_fig4(read_evals(FLAGS.fig4))
        except ValueError as exc:
            sys.exit(f"check_claims: {exc}")
    for path, fn in ((FLAGS.table2, claims_table2), (FLAGS.capacity, claims_capacity), (FLAGS.bandwidth, claims_bandwidth)):
        if path:
            claims += fn(read_results(path)[1])
    print(to_markdown(claims))
    n = sum(c["verdict"] == "reproduced" for c in claims)
    print(f"{n} of {len(claims)} claims reproduced")
    if FLAGS.out:
        os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
        with open(FLAGS.out, "w", encoding="utf-8") as handle:
            json.dump(claims, handle, indent=1)


if __name__ == "__main__":
    define_flags()
    sys.exit(app.run(main))
