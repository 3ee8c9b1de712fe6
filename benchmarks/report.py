"""Reading pipeline-benchmark records: fits, speed-ups, latent differences, the printed table.

    python -m benchmarks.report bench.json [other.json]

prints a record written by ``python -m benchmarks.pipeline --json``; with a second record,
the speed-up of the second over the first, refused when the two come from different machines
(CPU model and flags, GPU): numbers from two machines are never compared as one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from benchmarks.common import SCALE, fmt_bytes, machine_line, same_machine

TIME_TARGET = 0.33
"""Our default path's end-to-end time over the official float32 pipeline's (issue 16)."""
MEMORY_TARGET = 0.5
"""Our default path's peak RSS over the official pipeline's."""
PARITY_TARGET = 1.0
"""Our float32 parity path's time over the official's: no slower."""


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least-squares line y = slope * x + intercept (slope None with fewer than two distinct x)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return {"slope": None, "intercept": None, "r2": None}
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def fits(runs: list[dict]) -> list[dict]:
    """Per step count (or preset): end-to-end time (median and min) and each stage's median vs
    output megapixels."""
    result = []
    groups = list(dict.fromkeys((r.get("preset"), r["steps"]) for r in runs))
    for preset, steps in groups:
        chosen = sorted((r for r in runs if (r.get("preset"), r["steps"]) == (preset, steps)),
                        key=lambda r: r["output_megapixels"])  # fmt: skip
        xs = [r["output_megapixels"] for r in chosen]
        median = linear_fit(xs, [r["stages"]["end_to_end"]["median"] for r in chosen])
        minimum = linear_fit(xs, [r["stages"]["end_to_end"]["min"] for r in chosen])
        per_stage = {}
        for name in chosen[0]["stages"]:
            fit = linear_fit(xs, [r["stages"][name]["median"] for r in chosen])
            per_stage[name] = {"slope_s_per_mp": fit["slope"], "intercept_s": fit["intercept"]}
        result.append({
            "steps": steps,
            "preset": preset,
            "x": "output_megapixels",
            "points": [[x, r["stages"]["end_to_end"]["median"]] for x, r in zip(xs, chosen)],
            "slope_s_per_mp": median["slope"],
            "intercept_s": median["intercept"],
            "r2": median["r2"],
            "min_slope_s_per_mp": minimum["slope"],
            "min_intercept_s": minimum["intercept"],
            "stages": per_stage,
        })  # fmt: skip
    return result


def compare(test: dict, reference: dict) -> list[dict]:
    """Speed-up of ``test`` over ``reference`` per (size, steps): ratios of medians and of minima,
    end to end and per stage (reference time / test time: above 1 means ``test`` is faster)."""
    rows = []
    baseline = {(r["lr_size"], r["steps"]): r for r in reference["runs"]}
    for run in test["runs"]:
        ref = baseline.get((run["lr_size"], run["steps"]))
        if ref is None:
            continue
        ours, theirs = run["stages"]["end_to_end"], ref["stages"]["end_to_end"]
        per_stage = {name: ref["stages"][name]["median"] / run["stages"][name]["median"]
                     for name in run["stages"] if name in ref["stages"] and run["stages"][name]["median"] > 0}  # fmt: skip
        rows.append({
            "lr_size": run["lr_size"],
            "output_size": run["output_size"],
            "steps": run["steps"],
            "reference_median_s": theirs["median"],
            "test_median_s": ours["median"],
            "speedup_median": theirs["median"] / ours["median"],
            "speedup_min": theirs["min"] / ours["min"],
            "reference_peak_bytes": ref["peak_memory"]["peak_bytes"],
            "test_peak_bytes": run["peak_memory"]["peak_bytes"],
            "stage_speedups_median": per_stage,
        })  # fmt: skip
    return rows


def latent_differences(test: dict, reference: dict, tiles: dict[str, tuple[int, int]] | None = None) -> list[dict]:
    """Max / mean absolute difference of the final latents of two paths (same seed and input).
    ``tiles``: (test, reference) latent tile counts per key; with different tilings the difference
    is not only numerical."""
    rows = []
    for key in sorted(set(test) & set(reference), key=lambda k: tuple(int(p) for p in k.split("_"))):
        lr_size, steps = (int(p) for p in key.split("_"))
        diff = (test[key] - reference[key]).abs()
        rows.append({"lr_size": lr_size, "steps": steps, "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                     "reference_mean_abs": float(reference[key].abs().mean())})  # fmt: skip
        if tiles and key in tiles:
            rows[-1].update(latent_tiles=list(tiles[key]), same_tiling=tiles[key][0] == tiles[key][1])
    return rows


def official_ratios(record: dict) -> list[dict]:
    """Our paths against the official pipeline measured in the same run (``record["official"]``):
    end-to-end time (median) and process peak RSS ratios, with the issue's targets."""
    official = record["official"]
    rows = []
    targets = {"default": (TIME_TARGET, MEMORY_TARGET), "naive": (PARITY_TARGET, None)}
    for name, (time_target, memory_target) in targets.items():
        result = record["variants"].get(name)
        if result is None:
            continue
        run = next((r for r in result["runs"] if r["lr_size"] == official["lr_size"] and r["steps"] == official["steps"]), None)
        if run is None:
            continue
        time_ratio = run["stages"]["end_to_end"]["median"] / official["end_to_end_s"]["median"]
        memory_ratio = result["process_peak_rss_bytes"] / official["process_peak_rss_bytes"]
        rows.append({
            "path": name, "lr_size": run["lr_size"], "steps": run["steps"],
            "ours_s": run["stages"]["end_to_end"]["median"], "official_s": official["end_to_end_s"]["median"],
            "time_ratio": time_ratio, "time_target": time_target, "time_ok": time_ratio <= time_target,
            "ours_peak_bytes": result["process_peak_rss_bytes"], "official_peak_bytes": official["process_peak_rss_bytes"],
            "memory_ratio": memory_ratio, "memory_target": memory_target,
            "memory_ok": None if memory_target is None else memory_ratio <= memory_target,
        })  # fmt: skip
    return rows


def print_report(record: dict, out=None) -> None:
    out = out or sys.stdout
    print(f"\n{machine_line(record['machine'])}, torch {record['versions']['torch']}", file=out)
    for name, result in record["variants"].items():
        print(f"\n== {result['description']}  (built in {result['build_s']:.0f} s, weights "
              f"{fmt_bytes(result['weights_bytes'])}, process peak RSS {fmt_bytes(result.get('process_peak_rss_bytes'))}; "
              f"attention {result['attention_processors']['unet']})", file=out)  # fmt: skip
        for run in result["runs"]:
            stages = run["stages"]
            what = f"preset {run['preset']}, " if run.get("preset") else ""
            print(f"  {run['lr_size']}->{run['output_size']} {what}steps {run['steps']}  [{run['plan_description']}; "
                  f"{run['latent_tiles']} latent tile(s)]  peak {fmt_bytes(run['peak_memory']['peak_bytes'])} "
                  f"(working {fmt_bytes(run['peak_memory']['working_bytes'])})", file=out)  # fmt: skip
            if run["peak_memory"].get("stage_peak_bytes"):
                print("    peak RSS by stage: " + ", ".join(f"{name} {fmt_bytes(n)}" for name, n in
                                                       run["peak_memory"]["stage_peak_bytes"].items()), file=out)  # fmt: skip
            print("    " + "  ".join(f"{k:>10s}" for k in ("stage", "min s", "median s")), file=out)
            for stage, stats in stages.items():
                print(f"    {stage:>10s}  {stats['min']:10.3f}  {stats['median']:10.3f}", file=out)
        for fit in result["fits"]:
            if fit["slope_s_per_mp"] is not None:
                what = f"preset {fit['preset']}, " if fit.get("preset") else ""
                print(f"  fit ({what}steps {fit['steps']}): end-to-end median = {fit['slope_s_per_mp']:.2f} s/MP x output MP "
                      f"+ {fit['intercept_s']:.2f} s  (r2 {fit['r2']:.3f}; on minima {fit['min_slope_s_per_mp']:.2f} "
                      f"s/MP + {fit['min_intercept_s']:.2f} s)", file=out)  # fmt: skip
    if record.get("comparisons"):
        print(file=out)
    for comparison in record.get("comparisons", []):
        test, ref = comparison["test"], comparison["reference"]
        for row in comparison["rows"]:
            print(f"speed-up {ref} -> {test}, {row['lr_size']}->{row['output_size']} steps {row['steps']}: "
                  f"{row['reference_median_s']:.2f} s / {row['test_median_s']:.2f} s = x{row['speedup_median']:.2f} "
                  f"(minima x{row['speedup_min']:.2f}); peak {fmt_bytes(row['reference_peak_bytes'])} -> "
                  f"{fmt_bytes(row['test_peak_bytes'])}", file=out)  # fmt: skip
    for name, rows in record.get("latent_difference", {}).items():
        for row in rows:
            print(f"final latents {name} vs naive float32, {row['lr_size']}->{row['lr_size'] * SCALE} steps "
                  f"{row['steps']}: max |d| {row['max_abs']:.4f}, mean |d| {row['mean_abs']:.4f} "
                  f"(mean |latent| {row['reference_mean_abs']:.3f})"
                  f"{'' if row.get('same_tiling', True) else ' [different tilings: not only numerics]'}", file=out)  # fmt: skip
    if record.get("official"):
        print(f"\nofficial SeeSR-Turbo float32 (same run): {record['official']['end_to_end_s']['median']:.2f} s end to end, "
              f"process peak RSS {fmt_bytes(record['official']['process_peak_rss_bytes'])}", file=out)  # fmt: skip
    for row in record.get("official_ratios", []):
        memory = "" if row["memory_target"] is None else (
            f"; peak RSS {fmt_bytes(row['ours_peak_bytes'])} / {fmt_bytes(row['official_peak_bytes'])} = "
            f"{row['memory_ratio']:.2f}x (target <= {row['memory_target']}: {'met' if row['memory_ok'] else 'NOT met'})")
        print(f"ours ({row['path']}) vs official, {row['lr_size']}->{row['lr_size'] * SCALE} steps {row['steps']}: "
              f"time {row['ours_s']:.2f} s / {row['official_s']:.2f} s = {row['time_ratio']:.2f}x (target <= "
              f"{row['time_target']}: {'met' if row['time_ok'] else 'NOT met'}){memory}", file=out)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("record", type=Path, help="a record written by python -m benchmarks.pipeline --json")
    parser.add_argument("other", type=Path, nargs="?", help="a second record: its speed-up over the first")
    args = parser.parse_args(argv)
    first = json.loads(args.record.read_text())
    print_report(first)
    if args.other is None:
        return 0
    second = json.loads(args.other.read_text())
    if not same_machine(first["machine"], second["machine"]):
        print(f"not compared: {args.record} ran on {machine_line(first['machine'])}; {args.other} on "
              f"{machine_line(second['machine'])}", file=sys.stderr)  # fmt: skip
        return 2
    print(file=sys.stdout)
    for name in first["variants"].keys() & second["variants"].keys():
        for row in compare(second["variants"][name], first["variants"][name]):
            print(f"{name}, {row['lr_size']}->{row['output_size']} steps {row['steps']}: {args.record.name} "
                  f"{row['reference_median_s']:.2f} s -> {args.other.name} {row['test_median_s']:.2f} s = "
                  f"x{row['speedup_median']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
