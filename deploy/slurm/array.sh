#!/usr/bin/env bash
# One folder upscaled by a Slurm job array, no coordinator: task K of N does the inputs whose path
# hashes to K (`seesr upscale --shard auto`: K from SLURM_ARRAY_TASK_ID, counted from
# SLURM_ARRAY_TASK_MIN, N from SLURM_ARRAY_TASK_COUNT), so every image is done once; a task run
# again redoes only its unfinished files (its resume records are its own, under OUT/.seesr-batch/).
#
#   sbatch --array=0-7 deploy/slurm/array.sh photos/ out/ [seesr upscale flags ...]
#
# `seesr` must be on the PATH of the job (sbatch passes the submitting shell's environment: activate
# the virtual environment seesr is installed in first), and the weights in weights/ or $SEESR_WEIGHTS.
#SBATCH --job-name=seesr-upscale
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=seesr-upscale-%A_%a.log
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: sbatch --array=0-N deploy/slurm/array.sh IN_DIR OUT_DIR [seesr upscale flags ...]" >&2
    exit 2
fi
input=$1 output=$2
shift 2
exec seesr upscale "$input" -o "$output" --shard auto "$@"
