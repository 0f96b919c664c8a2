"""An estimate (not a measurement) of one 9x9 Sudoku epoch of SATNet on an H100/H200-class GPU.

No GPU was lent when the CUDA kernel (gridlearn/implicit/satnet_kernels_cuda.py) was
written, so this states its time from a model of the work: FLOPs, memory traffic, launches,
and, what binds, the latency of the sequential sweep in one thread block. Every assumption
is a named number below; the output lists them with the result. Replace it with
`benchmarks/bench_satnet.py --device cuda` numbers when a GPU is lent.

    .venv/bin/python benchmarks/estimate_satnet_gpu.py   # writes benchmarks/results/satnet_gpu_estimate.{json,md}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gridlearn.implicit import satnet_kernels_cuda as kc
from gridlearn.implicit.satnet_mixing import default_rank

OUT = Path(__file__).resolve().parent / "results"

# the paper's 9x9 setup
N_VIS, M, AUX, BATCH, PUZZLES, TEST = 729, 600, 300, 40, 9000, 1000
GIVEN_CELLS = 36  # gridlearn's generator, 26-40 givens
FWD_SWEEPS = 32  # measured on CPU (benchmarks/results/satnet.json: 32.2 at init)
CG_ITERS = 55  # measured at epoch 3 of the study at damping 0.05 (47-55); 22 at init

# device (H100 SXM / H200: 132 SMs); clock and latencies from the public microbenchmark
# literature (Luo et al. 2024, "Benchmarking and dissecting the Nvidia Hopper GPU
# architecture"); rounded against us
SMS, CLOCK_HZ = 132, 1.75e9
FP32_TFLOPS = 60.0  # non-tensor FP32 (67 peak)
GEMM_EFF = 0.3  # cuBLAS strided-batched SGEMM at these shapes (600 x 1030 x 46, 40 of them)
L1_LAT, SMEM_LAT, L2_LAT, BARRIER = 40, 30, 260, 60  # cycles
L2_STORE_B_PER_CLK_SM = 64  # write-through stores from one SM into L2
LAUNCH_S = 8e-6  # one small torch kernel launch + its run, on a busy stream


def estimate() -> dict:
    k = default_rank(N_VIS + 1 + AUX)
    threads, rows_smem = kc.launch_shape(k, M, 4)
    G = threads // k
    unknowns = (N_VIS - GIVEN_CELLS * 9) + AUX
    steps = unknowns * FWD_SWEEPS  # variable updates per element, forward
    rows_per_thread = math.ceil(M / G)
    # critical path of one variable update in one block (cycles)
    cyc = {
        "b: G partial sums + x_j from global": G * 4 + SMEM_LAT + L2_LAT,
        "c: ||g|| over k in shared (serial)": k * SMEM_LAT,
        "d: W update fused with next product (rows per thread, L1/shared latency bound)": rows_per_thread * L1_LAT,
        "3 barriers": 3 * BARRIER,
    }
    # W rows outside shared memory are stored through to L2 every update
    store_bytes = (M - rows_smem) * k * 4
    cyc_store = store_bytes / L2_STORE_B_PER_CLK_SM
    per_var = max(sum(cyc.values()), cyc_store)
    fwd_s = steps * per_var / CLOCK_HZ  # blocks run side by side, 40 of 132 SMs
    # forward FLOPs and traffic (for the bounds)
    fwd_flop = BATCH * steps * 4 * M * k
    fwd_flop_s = fwd_flop / (FP32_TFLOPS * 1e12 * min(BATCH, SMS) / SMS)
    # backward: CG, per iteration 2 batched GEMMs + ~14 small elementwise kernels
    cg_flop = BATCH * 4 * M * (N_VIS + 1 + AUX) * k
    cg_iter_s = cg_flop / (FP32_TFLOPS * 1e12 * GEMM_EFF) + 16 * LAUNCH_S
    bwd_s = CG_ITERS * cg_iter_s
    other_s = 60 * LAUNCH_S  # init vectors, W = S V, outputs, dS, Adam: ~60 launches a batch
    batch_s = fwd_s + bwd_s + other_s
    batches = math.ceil(PUZZLES / BATCH)
    eval_s = math.ceil(TEST / BATCH) * (fwd_s + other_s)
    epoch_s = batches * batch_s + eval_s
    return {
        "what": "ESTIMATE (no GPU measured): one 9x9 SATNet epoch, 9,000 puzzles, batch 40, on an H100/H200",
        "layer": {"n": N_VIS, "m": M, "aux": AUX, "k": k, "unknowns_per_puzzle": unknowns,
                  "forward_sweeps": FWD_SWEEPS, "backward_cg_iterations": CG_ITERS},
        "launch": {"threads_per_block": threads, "groups_G": G, "rows_of_W_in_shared": rows_smem,
                   "blocks": BATCH, "kernel_launches_per_forward": 1},
        "assumptions": {"sms": SMS, "clock_hz": CLOCK_HZ, "fp32_tflops": FP32_TFLOPS, "gemm_efficiency": GEMM_EFF,
                        "latency_cycles": {"l1": L1_LAT, "shared": SMEM_LAT, "l2": L2_LAT, "barrier": BARRIER},
                        "l2_store_bytes_per_clock_per_sm": L2_STORE_B_PER_CLK_SM, "small_launch_s": LAUNCH_S},
        "per_variable_cycles": {**cyc, "L2 write-through of W rows outside shared memory": cyc_store,
                                "taken (max of the two)": per_var},
        "forward_s_per_batch": fwd_s,
        "forward_flop_bound_s_per_batch": fwd_flop_s,
        "backward_s_per_batch": bwd_s,
        "batch_s": batch_s,
        "epoch_s": epoch_s,
        "epoch_s_if_3x_slower": 3 * epoch_s,
        "target_epoch_s": 300,
    }


def main() -> None:
    est = estimate()
    OUT.mkdir(exist_ok=True)
    (OUT / "satnet_gpu_estimate.json").write_text(json.dumps(est, indent=1))
    lines = [f"# {est['what']}", "",
             f"- layer: {est['layer']}", f"- launch: {est['launch']}", "- per variable update, cycles:"]
    lines += [f"  - {k}: {v:.0f}" for k, v in est["per_variable_cycles"].items()]
    lines += [f"- forward per batch: {est['forward_s_per_batch'] * 1e3:.1f} ms "
              f"(FLOP bound {est['forward_flop_bound_s_per_batch'] * 1e3:.2f} ms: latency binds)",
              f"- backward (CG) per batch: {est['backward_s_per_batch'] * 1e3:.1f} ms",
              f"- batch: {est['batch_s'] * 1e3:.1f} ms; **epoch: {est['epoch_s']:.0f} s** "
              f"({est['epoch_s_if_3x_slower']:.0f} s if 3x slower; target 300 s)",
              f"- assumptions: {est['assumptions']}"]
    (OUT / "satnet_gpu_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
