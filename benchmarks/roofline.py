"""The fastest this machine could run the pipeline without changing its numerics: each stage's
FLOPs over the matrix-multiply throughput the machine reaches in that stage's dtype.

    python -m benchmarks.roofline [--size 128] [--steps 2] [--record bench.json] [--json out.json]
    python -m benchmarks.roofline --smoke --weights DIR      # tiny weights, seconds (tests)

It counts every convolution, matrix product and attention of one pipeline call per stage (torch's
FLOP counter, plus the CPU flash-attention kernel it does not know), measures the best throughput
of large matrix products here in each dtype the stages run in (float32 for the tagger, as the
official code runs it), and prints the time each stage would take at that rate. That is a lower
bound: norms, activations and memory traffic are not counted, and no kernel here beats a large
square matrix product. With ``--record`` (a ``benchmarks.pipeline`` record from this
machine, ideally with ``--against-official``) it sets the measured stage times beside the bounds
and prints the smallest time ratio to the official pipeline this machine allows, and the share
of the peak the time target would need.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    SCALE, log, machine_info, machine_line, random_image, same_machine, timed, versions,
)  # fmt: skip
from benchmarks.pipeline import stage_hook
from benchmarks.report import TIME_TARGET
from seesr.errors import SeesrError
from seesr.engines.seesr.models import attention as _registers_the_attention_operator  # noqa: F401

STAGE_NETWORKS = {"tag": "tagger", "text": "text_encoder", "encode": "vae", "denoise": "unet", "decode": "vae"}
"""The network whose dtype each counted stage runs in."""
GEMM_SHAPES = ((2048, 2048, 2048), (4096, 320, 1280), (4096, 1280, 320))
"""(m, k, n) of the matrix products timed for the peak: square, and the UNet's widest linear layers."""
SMOKE_GEMM_SHAPES = ((256, 256, 256),)


def attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Multiply-adds x 2 of softmax(Q K^T) V for shapes (batch, heads, length, dim)."""
    batch, heads, q_len, dim = query
    k_len, v_dim = key[-2], value[-1]
    return 2 * batch * heads * q_len * k_len * (dim + v_dim)


ATTENTION_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops,
                      torch.ops.seesr.attention_avx512bf16: attention_flops}  # fmt: skip
"""Attention kernels torch's FLOP counter leaves out (it knows the CUDA ones), seesr's own included."""


class StageFlops:
    """A stage hook (``SeesrPipeline.stage_hook``) counting the FLOPs of each stage."""

    def __init__(self) -> None:
        self.flops: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        with FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as counter:
            yield
        self.flops[stage] = self.flops.get(stage, 0) + counter.get_total_flops()


def count_stage_flops(pipe, lr_size: int, steps: int, seed: int = 0) -> dict[str, int]:
    """FLOPs of each stage of one x4 call on a ``lr_size`` image, untiled up to the planner's tile."""
    counter = StageFlops()
    with torch.no_grad(), stage_hook(pipe, counter):
        pipe(random_image(lr_size, seed), scale=SCALE, num_inference_steps=steps, seed=seed, process_size=0)
    return counter.flops


def stage_dtypes(pipe) -> dict[str, torch.dtype]:
    """The dtype each counted stage computes in (its network's parameters)."""
    return {stage: next(getattr(pipe, network).parameters()).dtype for stage, network in STAGE_NETWORKS.items()}


def matmul_peak(dtype: torch.dtype, device: torch.device, shapes: Sequence[tuple[int, int, int]] = GEMM_SHAPES,
                repeats: int = 5) -> float:  # fmt: skip
    """The best FLOP/s of ``repeats`` matrix products of each shape in ``dtype`` on ``device``."""
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        best = max(best, 2 * m * k * n / timed(lambda: torch.matmul(a, b), device, 1, repeats)["min"])
    return best


@dataclass
class StageBound:
    stage: str
    dtype: str
    gflop: float
    peak_gflops: float
    bound_s: float
    measured_s: float | None = None

    @property
    def efficiency(self) -> float | None:
        """Share of the peak the measured time reached."""
        return self.bound_s / self.measured_s if self.measured_s else None


def stage_bounds(flops: dict[str, int], dtypes: dict[str, torch.dtype], peaks: dict[torch.dtype, float],
                 measured: dict[str, float] | None = None) -> list[StageBound]:  # fmt: skip
    """Each counted stage's time at its dtype's peak, with its measured time when known."""
    measured = measured or {}
    rows = []
    for stage, dtype in dtypes.items():
        gflop = flops.get(stage, 0) / 1e9
        peak = peaks[dtype] / 1e9
        rows.append(StageBound(stage, str(dtype).removeprefix("torch."), gflop, peak, gflop / peak, measured.get(stage)))
    return rows


def read_pipeline_record(path: Path) -> dict:
    """A ``benchmarks.pipeline`` record, or a one-line exit saying what ``path`` is instead."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read the record {path}: {error}") from None
    if not isinstance(record, dict) or record.get("benchmark") != "benchmarks.pipeline":
        raise SystemExit(f"{path} is not a record of `python -m benchmarks.pipeline --json`")
    return record


def record_times(record: dict, lr_size: int, steps: int) -> tuple[dict[str, float], float | None, float | None]:
    """From a pipeline benchmark record: the default path's median stage times and end-to-end time
    at ``lr_size`` and ``steps``, and the official pipeline's end-to-end time there (None if absent)."""
    runs = [r for r in record["variants"]["default"]["runs"] if r["lr_size"] == lr_size and r["steps"] == steps]
    if not runs:
        raise SystemExit(f"the record has no default-path run at {lr_size} px with {steps} steps")
    medians = {name: stats["median"] for name, stats in runs[0]["stages"].items()}
    official = record.get("official")
    official_s = None
    if official and official["lr_size"] == lr_size and official["steps"] == steps:
        official_s = official["end_to_end_s"]["median"]
    return medians, medians.get("end_to_end"), official_s


def summary(rows: list[StageBound], ours_s: float | None, official_s: float | None) -> dict:
    """Total bound, and against the official time: the smallest reachable ratio and the share of
    the peak that :data:`TIME_TARGET` would need throughout."""
    bound = sum(r.bound_s for r in rows)
    result: dict = {"bound_s": bound, "ours_s": ours_s, "official_s": official_s}
    if official_s:
        result.update(bound_ratio=bound / official_s, time_target=TIME_TARGET,
                      target_needs_efficiency=bound / (TIME_TARGET * official_s))  # fmt: skip
        if ours_s:
            result["ours_ratio"] = ours_s / official_s
    return result


def print_report(rows: list[StageBound], totals: dict) -> None:
    print(f"{'stage':>8} {'dtype':>9} {'GFLOP':>9} {'peak GFLOP/s':>13} {'bound s':>8} {'measured s':>11} {'of peak':>8}")
    for r in rows:
        measured = f"{r.measured_s:11.2f}" if r.measured_s else f"{'-':>11}"
        share = f"{r.efficiency:8.0%}" if r.efficiency else f"{'-':>8}"
        print(f"{r.stage:>8} {r.dtype:>9} {r.gflop:9.1f} {r.peak_gflops:13.0f} {r.bound_s:8.2f} {measured} {share}")
    ours = f"; measured end to end {totals['ours_s']:.2f} s" if totals.get("ours_s") else ""
    print(f"all stages at the peak: {totals['bound_s']:.2f} s{ours}")
    if totals.get("official_s"):
        print(f"official end to end {totals['official_s']:.2f} s: the smallest reachable time ratio is "
              f"{totals['bound_ratio']:.2f}x (measured {totals.get('ours_ratio', float('nan')):.2f}x); the "
              f"{TIME_TARGET}x target needs {totals['target_needs_efficiency']:.0%} of the peak in every counted "
              f"operation and nothing else costing time")  # fmt: skip


def build(args: argparse.Namespace, device: torch.device):
    from seesr.runtime.devices import default_dtype

    dtype = default_dtype(device.type)
    if args.weights:
        from seesr.engines.seesr.pipeline import SeesrPipeline
        from seesr.weights import WeightPaths

        return SeesrPipeline.from_pretrained(WeightPaths.from_dir(args.weights), device=device, torch_dtype=dtype)
    from benchmarks.fullsize import build_full_size_pipeline

    return build_full_size_pipeline(device, dtype)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roofline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--size", type=int, help="LR side (x4 output); default 128, 16 with --smoke")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--record", type=Path, help="a benchmarks.pipeline record of this machine")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--weights", type=Path, help="a weights folder instead of full-size random networks")
    parser.add_argument("--smoke", action="store_true", help="small matrix products for the peak (with --weights)")
    args = parser.parse_args(argv)
    if args.smoke and not args.weights:
        parser.error("--smoke needs --weights (the tiny fixtures)")
    size = args.size or (16 if args.smoke else 128)
    device = torch.device(args.device)
    machine = machine_info(args.device)
    measured, ours_s, official_s = {}, None, None
    if args.record:
        record = read_pipeline_record(args.record)
        if not same_machine(record["machine"], machine):
            raise SystemExit(f"{args.record} was measured on another machine ({machine_line(record['machine'])})")
        measured, ours_s, official_s = record_times(record, size, args.steps)

    log("building the pipeline")
    try:
        pipe = build(args, device)
    except SeesrError as error:  # e.g. --weights without the files: one line, no traceback
        raise SystemExit(str(error)) from None
    log(f"counting FLOPs of one {size}->{size * SCALE} call, {args.steps} steps")
    flops = count_stage_flops(pipe, size, args.steps)
    dtypes = stage_dtypes(pipe)
    shapes = SMOKE_GEMM_SHAPES if args.smoke else GEMM_SHAPES
    peaks = {dtype: matmul_peak(dtype, device, shapes) for dtype in set(dtypes.values())}
    rows = stage_bounds(flops, dtypes, peaks, measured)
    totals = summary(rows, ours_s, official_s)

    print(machine_line(machine))
    print_report(rows, totals)
    result = {"benchmark": "benchmarks.roofline", "machine": machine, "versions": versions(),
              "settings": {"size": size, "steps": args.steps, "device": args.device, "smoke": args.smoke,
                           "weights": str(args.weights) if args.weights else None,
                           "record": str(args.record) if args.record else None, "gemm_shapes": shapes},
              "peak_flops": {str(d).removeprefix("torch."): p for d, p in peaks.items()},
              "stages": [{**asdict(r), "efficiency": r.efficiency} for r in rows], **totals}  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
