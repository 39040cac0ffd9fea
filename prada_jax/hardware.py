"""Hardware presets for the roofline latency model (prada_jax/latency.py), with their public sources.

A device is two peaks (dense 16-bit matrix FLOP/s and DRAM/HBM bandwidth), the efficiencies at which
LLM inference reaches them, and a fixed overhead per forward pass (kernel launches, framework dispatch).
Efficiencies default to 1 (the pure roofline bound); experiments/fit_latency.py fits them to a measured
table. Every preset is registered once, by name, in HARDWARE_PRESETS.
"""

from __future__ import annotations

from flax import struct


@struct.dataclass
class Hardware:
    """One accelerator: peaks, achieved fractions of them, and a per-forward-pass overhead (traced leaves)."""

    peak_flops: float  # dense 16-bit (bf16/fp16) matrix FLOP/s
    memory_bandwidth: float  # bytes/s
    compute_efficiency: float = 1.0  # achieved / peak FLOP/s
    bandwidth_efficiency: float = 1.0  # achieved / peak bytes/s
    overhead_seconds: float = 0.0  # fixed cost of one forward pass (launch + dispatch)
    name: str = struct.field(pytree_node=False, default="custom")

    @property
    def effective_flops(self):
        return self.peak_flops * self.compute_efficiency

    @property
    def effective_bandwidth(self):
        return self.memory_bandwidth * self.bandwidth_efficiency

    @property
    def ridge_flops_per_byte(self):
        """Arithmetic intensity above which work is compute-bound (effective rates)."""
        return self.effective_flops / self.effective_bandwidth


# Public figures. Dense (no 2:4 sparsity) 16-bit tensor-core rates; vendors print the sparse rate, twice these.
HARDWARE_PRESETS: dict[str, Hardware] = {
    # NVIDIA H100 Tensor Core GPU datasheet, SXM5 column: BF16 1,979 TFLOPS with sparsity -> 989 dense;
    # HBM3 3.35 TB/s. Confirmed against glennklockwood.com/garden/processors/h100 (BF16 matrix 989.4).
    "h100-sxm": Hardware(peak_flops=989e12, memory_bandwidth=3.35e12, name="h100-sxm"),
    # NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM column: BF16 312 TFLOPS dense (624 sparse);
    # HBM2e 2,039 GB/s.
    "a100-80gb-sxm": Hardware(peak_flops=312e12, memory_bandwidth=2.039e12, name="a100-80gb-sxm"),
    # NVIDIA L4 Tensor Core GPU datasheet: BF16 242 TFLOPS with sparsity -> 121 dense; GDDR6 300 GB/s.
    "l4": Hardware(peak_flops=121e12, memory_bandwidth=300e9, name="l4"),
    # NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (64GB module): 256-bit LPDDR5 204.8 GB/s; GPU
    # 2048 CUDA cores and 64 tensor cores, 170 sparse INT8 TOPS -> 85 dense INT8 -> 42.5 dense FP16 TFLOPS
    # (Ampere tensor cores: FP16 at half the INT8 rate). Derived from the brief's INT8 figure; the brief
    # prints no FP16 tensor number. The DLAs are not counted.
    "jetson-agx-orin-64gb": Hardware(peak_flops=42.5e12, memory_bandwidth=204.8e9, name="jetson-agx-orin-64gb"),
    # Phone SoC class, Snapdragon 8 Gen 3 (Qualcomm product brief): LPDDR5X up to 4800 MHz on a 64-bit bus
    # -> 9600 MT/s x 8 bytes = 76.8 GB/s. APPROXIMATE compute: Qualcomm publishes no FP16 FLOP/s for the
    # Adreno 750 GPU or the Hexagon NPU; 5.6 TFLOPS is twice the ~2.8 TFLOPS FP32 third-party estimate
    # for the Adreno 750 and could not be confirmed from a vendor sheet. Decode (what an SLM mostly does)
    # is bandwidth-bound on this class, so the bandwidth figure dominates.
    "phone-snapdragon-8gen3": Hardware(peak_flops=5.6e12, memory_bandwidth=76.8e9, name="phone-snapdragon-8gen3"),
    # NVIDIA Jetson Orin Nano Super Developer Kit (JetPack 6.2 "Super" mode, 8GB module): LPDDR5 102 GB/s;
    # GPU 1024 CUDA cores / 32 tensor cores, 67 sparse INT8 TOPS -> 33.5 dense INT8 -> 16.75 dense FP16 TFLOPS
    # (derived as for the AGX Orin). The 102 GB/s and 67 TOPS were read on third-party pages quoting NVIDIA's
    # announcement, not on the vendor sheet itself.
    "jetson-orin-nano-super-8gb": Hardware(peak_flops=16.75e12, memory_bandwidth=102e9,
                                           name="jetson-orin-nano-super-8gb"),
}

SERVER_PRESETS = ("h100-sxm", "a100-80gb-sxm", "l4")
EDGE_PRESETS = ("jetson-agx-orin-64gb", "jetson-orin-nano-super-8gb", "phone-snapdragon-8gen3")


def hardware_preset(name: str) -> Hardware:
    """The registered preset `name`; a one-line error naming the known presets otherwise."""
    if name not in HARDWARE_PRESETS:
        raise ValueError(f"prada_jax/hardware.py: unknown hardware preset {name!r}; known: {sorted(HARDWARE_PRESETS)}")
    return HARDWARE_PRESETS[name]
