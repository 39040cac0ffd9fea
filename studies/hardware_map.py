"""Where PRADA pays off across real hardware: edge devices x servers x uplink bandwidth on a latency model.

    python -m studies hardware_map                   # calibrated model, gsm8k, writes results/hardware_map/
    python -m studies hardware_map --figure_only     # redraw figures/hardware_map.png from map.json

For every (edge device, server) pairing of prada_jax/hardware.py:

1. **Stage 1, exactly.** The step times TS (the 1.5B SLM on the edge device) and TL (the 7B LLM alone on the
   server, full prefill) of every trace step under the latency model, on that pairing's hardware leaves. The
   Stage-1 reward (eq. 21) depends only on (problem, step, action), so its optimum is per step: offload iff
   PRM gain(LLM) - beta TL > PRM gain(SLM) - beta TS. Its offload fraction is what a perfect pi_theta learns
   (a PPO-trained pi_theta reaches it only up to its features; docs/learning.md, "Headroom"). No PPO training.
2. **The system, simulated.** PRADA with that Stage-1-optimal table (nominate where the optimum offloads; value gap
   r(x, 1) - r(x, 0), which equals Q(x, 1) - Q(x, 0) in this MDP; D_psi = the exact server time), All-SLM and
   All-LLM, over the uplink bandwidths, at --arrival_rate tasks/s with M = --server_capacity slots; utility =
   accuracy - beta x end-to-end seconds per task (the simulator's).

Results: results/hardware_map/map.json (every number) and figures/hardware_map.png.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags


def define_flags() -> None:
    """The command's flags, defined only when it runs as a command (importing `stage1` defines none)."""
    flags.DEFINE_string("dataset", "gsm8k", "Trace (traces/<name>.npz).")
    flags.DEFINE_string("trace_dir", "traces", "Directory of the trace files.")
    flags.DEFINE_string("latency_model", "calibrated", "Registered latency model.")
    flags.DEFINE_list("edges", ["jetson-agx-orin-64gb", "jetson-orin-nano-super-8gb", "phone-snapdragon-8gen3"],
                      "Edge presets (prada_jax/hardware.py).")
    flags.DEFINE_list("servers", ["h100-sxm", "a100-80gb-sxm", "l4"], "Server presets.")
    flags.DEFINE_list("bandwidths", ["1e5", "1e6", "1e7", "1e8", "1e9"], "Total uplink bandwidth B (bit/s).")
    flags.DEFINE_float("beta", 0.2, "beta (PRM units per second), Stage 1 and Stage 2.")
    flags.DEFINE_float("arrival_rate", 2.0, "Tasks per second.")
    flags.DEFINE_integer("server_capacity", 9, "M.")
    flags.DEFINE_integer("episodes", 8, "Episodes per point.")
    flags.DEFINE_integer("max_users", 64, "U.")
    flags.DEFINE_float("slot_ms", 20.0, "Slot length (ms).")
    flags.DEFINE_float("horizon_s", 60.0, "Arrival horizon (s).")
    flags.DEFINE_float("warmup_s", 6.0, "Warm-up (s).")
    flags.DEFINE_float("drain_s", 60.0, "Drain limit (s).")
    flags.DEFINE_integer("seed", 0, "Episode seed.")
    flags.DEFINE_bool("simulate", True, "Run part 2 (the simulator); False: Stage 1 only.")
    flags.DEFINE_bool("figure_only", False, "Only redraw the figure from --out_dir/map.json.")
    flags.DEFINE_string("out_dir", os.path.join("results", "hardware_map"), "Output folder.")
    flags.DEFINE_string("figure", os.path.join("figures", "hardware_map.png"), "Figure path.")
FLAGS = flags.FLAGS

SHORT = {"jetson-agx-orin-64gb": "Orin AGX", "jetson-orin-nano-super-8gb": "Orin Nano", "phone-snapdragon-8gen3":
         "phone (SD 8 Gen 3)", "h100-sxm": "H100", "a100-80gb-sxm": "A100", "l4": "L4"}


def stage1(packed, params, beta, latency_model):
    """Per-step TS, TL, the exact Stage-1 optimum and its single-user summary."""
    import jax.numpy as jnp

    from prada_jax.learn import evaluate
    from prada_jax.learn import mdp as M

    ts, tl = (np.asarray(x, np.float64) for x in M.reference_step_seconds(packed, latency_model=latency_model,
                                                                          params=params))
    mask = np.asarray(packed.step_mask, bool)
    g_slm = np.asarray(packed.prm_after_slm, np.float64) - np.asarray(packed.prm_context, np.float64)
    g_llm = np.asarray(packed.prm_after_llm, np.float64) - np.asarray(packed.prm_context, np.float64)
    gap = np.where(mask, (g_llm - beta * tl) - (g_slm - beta * ts), 0.0)
    opt = mask & (gap > 0)
    out = {"ts_mean_s": float(ts[mask].mean()), "tl_mean_s": float(tl[mask].mean()),
           "tl_faster_share": float(np.mean(tl[mask] < ts[mask])), "offload_fraction": float(opt[mask].mean())}
    for name, actions in (("all_slm", np.zeros_like(opt)), ("all_llm", mask), ("stage1_opt", opt)):
        acc = float(evaluate.expected_accuracy(packed, jnp.asarray(actions, jnp.int32)))
        secs = float(np.where(actions, tl, ts)[mask].sum() / mask.shape[0])
        out[name] = {"accuracy": acc, "compute_s_per_task": secs, "utility": acc - beta * secs}
    return out, ts, tl, gap, opt


def run(argv_flags) -> dict:
    import jax.numpy as jnp

    from prada_jax import data_paths, sim
    from prada_jax.sim import policies
    from prada_jax.sim.metrics import summarize_grid
    from prada_jax.sim.params import hardware_leaves
    from prada_jax.traces import load_trace, pack_traces

    f = argv_flags
    trace_dir = data_paths.resolve_data_dir(f.trace_dir, "traces")
    trace = load_trace(os.path.join(trace_dir, f"{f.dataset}.npz"))
    packed = pack_traces(trace)
    bandwidths = [float(b) for b in f.bandwidths]
    slot = f.slot_ms / 1e3
    config = dict(num_slots=int(round(f.horizon_s / slot)), warmup_slots=int(round(f.warmup_s / slot)),
                  drain_slots=int(round(f.drain_s / slot)), max_users=f.max_users,
                  max_servers=max(f.server_capacity, 1), slot_seconds=slot, latency_model=f.latency_model)
    base = dict(arrival_rate=f.arrival_rate * slot, server_capacity=f.server_capacity, beta=f.beta)
    mask = jnp.asarray(packed.step_mask)
    eps = policies.DETERMINISTIC_EPS
    record = {"dataset": f.dataset, "latency_model": f.latency_model, "beta": f.beta, "arrival_rate_per_s":
              f.arrival_rate, "server_capacity": f.server_capacity, "episodes": f.episodes, "bandwidths": bandwidths,
              "edges": f.edges, "servers": f.servers, "pairs": []}
    t0 = time.time()
    for edge in f.edges:
        for server in f.servers:
            hw = {**hardware_leaves("server", server), **hardware_leaves("edge", edge)}
            params = sim.make_params(**base, **hw)
            s1, ts, tl, gap, opt = stage1(packed, params, f.beta, f.latency_model)
            pair = {"edge": edge, "server": server, "stage1": s1}
            print(f"{edge:28s} {server:14s} TS {s1['ts_mean_s']:.3f} s  TL {s1['tl_mean_s']:.3f} s  "
                  f"Stage-1 offload {100 * s1['offload_fraction']:5.1f} %  ({time.time() - t0:.0f} s)", flush=True)
            if f.simulate:
                grid = sim.param_grid(params, bandwidth_bps=bandwidths)
                tl32 = jnp.where(mask, jnp.asarray(tl, jnp.float32), 0.0)
                tables = {
                    "all_slm": (policies.table_from_value_gap(jnp.zeros_like(tl32), jnp.zeros_like(tl32), tl32),
                                "prada"),
                    "all_llm": (policies.table_from_value_gap(jnp.where(mask, 1.0 - eps, 0.0),
                                                              jnp.where(mask, jnp.asarray(gap, jnp.float32), 0.0),
                                                              tl32), "fifo"),
                    "prada": (policies.table_from_value_gap(jnp.where(mask, jnp.where(jnp.asarray(opt), 1.0 - eps,
                                                                                       eps), 0.0),
                                                            jnp.where(mask, jnp.asarray(gap, jnp.float32), 0.0),
                                                            tl32), "prada"),
                }
                pair["sim"] = {}
                for name, (table, scheduler) in tables.items():
                    cfg = sim.SimConfig(scheduler=scheduler, **config)
                    m = sim.simulate_grid(packed, table, grid, cfg, f.episodes, f.seed)
                    rows = summarize_grid(m, [{"bandwidth_bps": b} for b in bandwidths])
                    keep = ("utility", "accuracy", "sojourn_ms", "end_to_end_ms", "queuing_ms", "communication_ms",
                            "offload_fraction", "dropped", "unfinished", "server_slot_occupancy")
                    pair["sim"][name] = [{"bandwidth_bps": r["bandwidth_bps"],
                                          **{f"{k}_{s}": r[f"{k}_{s}"] for k in keep for s in ("mean", "ci95")}}
                                         for r in rows]
                    print(f"    {name:8s} utility " + " ".join(f"{r['utility_mean']:+.3f}" for r in rows)
                          + f"  ({time.time() - t0:.0f} s)", flush=True)
            record["pairs"].append(pair)
    record["seconds"] = time.time() - t0
    return record


def draw(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, servers, bws = record["edges"], record["servers"], record["bandwidths"]
    pairs = {(p["edge"], p["server"]): p for p in record["pairs"]}
    has_sim = all("sim" in p for p in record["pairs"])
    fig, axes = plt.subplots(1, 2 if has_sim else 1, figsize=(14 if has_sim else 6, 4.8),
                             gridspec_kw={"width_ratios": [1, 1.9]} if has_sim else None, squeeze=False)
    ax = axes[0, 0]
    frac = np.array([[pairs[(e, s)]["stage1"]["offload_fraction"] for s in servers] for e in edges])
    im = ax.imshow(100 * frac, cmap="viridis", vmin=0, vmax=100)
    for i, e in enumerate(edges):
        for j, s in enumerate(servers):
            st = pairs[(e, s)]["stage1"]
            ax.text(j, i, f"{100 * st['offload_fraction']:.0f} %\nTS {st['ts_mean_s']:.2f} s\nTL {st['tl_mean_s']:.2f} s",
                    ha="center", va="center", fontsize=8, color="w" if frac[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(servers)), [SHORT.get(s, s) for s in servers])
    ax.set_yticks(range(len(edges)), [SHORT.get(e, e) for e in edges])
    ax.set_xlabel("server (7B LLM)")
    ax.set_ylabel("edge device (1.5B SLM)")
    ax.set_title(f"Stage 1: share of steps a perfect $\\pi_\\theta$ offloads\n(beta = {record['beta']}, "
                 f"{record['dataset']}, {record['latency_model']} latency)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="offloaded steps (%)")
    if has_sim:
        ax = axes[0, 1]
        labels, delta, text = [], [], []
        for e in edges:
            for s in servers:
                sim_ = pairs[(e, s)]["sim"]
                labels.append(f"{SHORT.get(e, e)} + {SHORT.get(s, s)}")
                row_d, row_t = [], []
                for k in range(len(bws)):
                    u = {n: sim_[n][k]["utility_mean"] for n in ("prada", "all_slm", "all_llm")}
                    best_base = max(("all_slm", "all_llm"), key=lambda n: u[n])
                    row_d.append(u["prada"] - u[best_base])
                    row_t.append(f"{u['prada']:+.2f}\n{100 * sim_['prada'][k]['offload_fraction_mean']:.0f}% | "
                                 f"{'S' if best_base == 'all_slm' else 'L'}")
                delta.append(row_d)
                text.append(row_t)
        delta = np.array(delta)
        lim = max(0.05, float(np.nanmax(np.abs(delta))))
        im = ax.imshow(delta, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for i in range(delta.shape[0]):
            for k in range(delta.shape[1]):
                ax.text(k, i, text[i][k], ha="center", va="center", fontsize=6.5)
        ax.set_xticks(range(len(bws)), [f"{b:.0e}" for b in bws])
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("uplink bandwidth B (bit/s)")
        ax.set_title(f"System: PRADA utility minus the better of All-SLM / All-LLM (colour)\ncell: PRADA utility, "
                     f"PRADA offload %, better baseline (S = All-SLM, L = All-LLM); "
                     f"{record['arrival_rate_per_s']:g} tasks/s, M = {record['server_capacity']}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, label="utility gain over the better baseline")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(record: dict) -> str:
    """One row per pairing: step times, the Stage-1 optimum's offload share, and per bandwidth PRADA's utility
    against All-SLM / All-LLM (mean ± 95 % CI) with PRADA's offload share."""
    bws = record["bandwidths"]
    head = ("| edge + server | TS (s) | TL (s) | Stage-1 offload | "
            + " | ".join(f"B = {b:.0e}: PRADA / All-SLM / All-LLM utility (PRADA offload)" for b in bws) + " |")
    lines = [head, "|" + "---|" * (4 + len(bws))]
    for p in record["pairs"]:
        st = p["stage1"]
        cells = [f"{SHORT.get(p['edge'], p['edge'])} + {SHORT.get(p['server'], p['server'])}",
                 f"{st['ts_mean_s']:.2f}", f"{st['tl_mean_s']:.2f}", f"{100 * st['offload_fraction']:.1f} %"]
        for k in range(len(bws)):
            if "sim" not in p:
                cells.append("–")
                continue
            sim_ = p["sim"]
            u = {n: sim_[n][k] for n in ("prada", "all_slm", "all_llm")}
            cells.append(f"{u['prada']['utility_mean']:+.2f} ± {u['prada']['utility_ci95']:.2f} / "
                         f"{u['all_slm']['utility_mean']:+.2f} / {u['all_llm']['utility_mean']:+.2f} "
                         f"({100 * u['prada']['offload_fraction_mean']:.0f} %)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    out = os.path.join(FLAGS.out_dir, "map.json")
    if FLAGS.figure_only:
        with open(out) as fh:
            record = json.load(fh)
    else:
        record = run(FLAGS)
        os.makedirs(FLAGS.out_dir, exist_ok=True)
        with open(out, "w") as fh:
            json.dump(record, fh, indent=1)
        print(f"wrote {out}")
    draw(record, FLAGS.figure)
    print(f"wrote {FLAGS.figure}")
    print(markdown(record))


if __name__ == "__main__":
    define_flags()
    app.run(main)
