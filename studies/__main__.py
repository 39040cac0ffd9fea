"""Run one of the one-off studies listed in studies/README.md, from the repository root.

    python -m studies                                  # list the studies and their questions
    python -m studies slot_convergence --episodes=8    # run one; the flags after its name are its own
    python -m studies stage1_headroom --help
"""

from __future__ import annotations

import runpy
import sys

# name -> (module, the question it answers). The README gives each one's command and result.
STUDIES = {
    "slot_convergence": ("studies.slot_convergence",
                         "How do the delay columns change as the 1 ms slot shrinks (same system in seconds)?"),
    "stage1_headroom": ("studies.stage1_headroom",
                        "Is pi_theta as good as its features allow (against a ridge rule on the same features)?"),
    "queue_mechanism": ("studies.queue_mechanism",
                        "Why does PRADA's queuing delay not vanish with M at the fitted preset?"),
    "bandwidth_mechanism": ("studies.bandwidth_mechanism",
                            "Does the fitted low SNR move the Fig-8 accuracy step above 1e7 bit/s?"),
    "scheduler_study": ("studies.scheduler_study",
                        "What does an exact per-slot Stage 2 gain over the paper's Theorem-2 rule?"),
    "learned_scheduler_study": ("studies.learned_scheduler_study",
                                "Does a PPO-learned Stage 2 beat Theorem 2, at the paper's point or held-out ones?"),
    "env_throughput": ("studies.env_throughput",
                       "How fast is the learning environment against simulate_grid for the same work?"),
    "stage2_cost": ("studies.stage2_cost",
                    "How much of the slot's cost is Stage 2, i.e. what could any Stage-2 speed-up gain?"),
    "dpsi_error": ("studies.dpsi_error",
                   "How far off is D_psi under each latency model, with and without the step length as input?"),
    "latency_dpsi_mechanism": ("studies.latency_dpsi_mechanism",
                               "Does the learned D_psi explain PRADA's overload under the roofline latency model?"),
    "hardware_map": ("studies.hardware_map",
                     "Where does PRADA pay off across edge devices x servers x uplink bandwidth?"),
}


def listing() -> str:
    width = max(map(len, STUDIES))
    lines = ["usage: python -m studies <name> [its flags]   (details: studies/README.md)", ""]
    lines += [f"  {name.ljust(width)}  {question}" for name, (_, question) in STUDIES.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help", "list"):
        sys.stdout.write(listing())
        return 0
    name = argv[1]
    if name not in STUDIES:
        sys.stderr.write(f"unknown study {name!r}\n\n" + listing())
        return 2
    module = STUDIES[name][0]
    sys.argv = [module.replace(".", "/") + ".py"] + argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
