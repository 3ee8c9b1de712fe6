"""Every command the README and docs/ show: held to a checked list (a new one fails here until it
says how it is tested), each in one of the two documented forms, and run as typed here or by the
test the list names. The README's own commands run here as typed, offline, on tiny images; the
docs' ``seesr upscale`` examples run as typed with ``--dry-run`` added (flags, inputs, outputs and
the plan: all but the network's work), in the activated ``.venv`` as the README says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from seesr.cli.upscale import FALLBACK_NOTICE

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

RUN = "run here as typed"
DRY = "run here as typed, with --dry-run added"
FORMS = ("./start_seesr.sh ", "seesr ", "source .venv/bin/activate", "python -m benchmarks", "accelerate launch ",
         "nice -n 10 ./start_seesr.sh ", "GRADIO_ROOT_PATH=/seesr ./start_seesr.sh ", "cog ", "kubectl ", "sbatch ")  # fmt: skip
"""The two ways to run (the script; ``seesr``, ``python -m`` and ``accelerate`` in the activated
venv), with a variable or ``nice`` in front of the first; and the serving tools' own commands
(Cog, Kubernetes, Slurm)."""

CHECKED = {
    # README.md
    "./start_seesr.sh upscale photo.jpg": RUN,
    "./start_seesr.sh upscale photo.jpg --dry-run": RUN,
    "./start_seesr.sh upscale photos/": RUN,
    "./start_seesr.sh help": RUN,
    "source .venv/bin/activate": RUN,
    "seesr upscale photo.jpg --dry-run": RUN,
    "seesr weights list": RUN,
    "./start_seesr.sh ui": "tests/test_ui_browser.py::test_a_person_upscales_with_seesr_then_realesrgan_and_downloads",
    "./start_seesr.sh test": "tests/test_start_script.py::test_the_test_command_runs_the_slow_tests_unless_told_not_to",
    './start_seesr.sh test -m "not slow"':
        "tests/test_start_script.py::test_the_test_command_runs_the_slow_tests_unless_told_not_to",
    # docs/cli.md
    'seesr upscale photos/ "more/*.jpg" -o out/ --preset quality --seed 1': DRY,
    'seesr upscale photo.png --model seesr --sampler ddim --guidance-scale 7 --positive-prompt "sharp, detailed"': DRY,
    "seesr upscale big.png -o big_x4.png --scale 4 --dry-run": RUN,
    "seesr upscale big.png --offload --process-size 0 --conditioning-scale 0.8": DRY,
    "seesr upscale photo.png -o out.png --engine realesrgan --compare": DRY,
    "seesr upscale anime.png -n realesrgan-x4plus-anime -t 64 --tile-pad 10 -s 2": DRY,
    "seesr upscale photo.png --model 4x_MyFavourite.safetensors": DRY,
    "seesr upscale photos/ -o out/ --ext webp --quality 90 --suffix _x4": DRY,
    "seesr upscale photos/ -o out/ --json > results.jsonl": DRY,
    "seesr upscale photos/ -r -o out/": DRY,
    "seesr upscale photo.jpg -o photo_wide.jpg --width 2000": DRY,
    "seesr upscale scan.tif -o out/ --ext auto": DRY,
    "seesr upscale photo.jpg -o out/ --num-samples 4 --seed 7": DRY,
    "seesr upscale photo.jpg -o clean.png --strip-metadata": DRY,
    "seesr weights download | verify | list [GROUP|FILE ...]": "not a command: the three sub-commands in one line "
    "(tests/test_output_commands.py::test_weights_list_table, tests/test_weights.py)",
    "seesr --version": RUN,
    "accelerate launch --multi_gpu --num_processes 2 -m seesr.cli upscale photos/ -o out/":
        "tests/test_cli.py::test_two_processes_split_the_work (two CPU processes; --multi_gpu needs GPUs)",
    # docs/serving.md
    "cog run -i image=@photo.jpg": "not run: needs Docker and cog; the server Cog runs in the image: tests/test_cog.py",
    "cog run -i image=@photo.jpg -i preset=quality -i num_samples=2 -i seed=7 --setup-timeout 3600":
        "not run: needs Docker and cog; the same inputs: tests/test_cog.py",
    "cog serve -p 5000": "not run: needs Docker and cog; its HTTP server (python -m cog.server.http): tests/test_cog.py",
    "cog push r8.im/YOUR-NAME/seesr --separate-weights": "not run: needs Docker, cog and a Replicate account",
    "./start_seesr.sh predict photo.jpg": "tests/test_predict_command.py::test_predict_as_typed_writes_a_png",
    "./start_seesr.sh predict photo.jpg scale=2 model=seesr output_format=webp":
        "tests/test_predict_command.py::test_predict_with_options",
    "./start_seesr.sh predict photo.jpg --overwrite":
        "tests/test_predict_command.py::test_predict_overwrite_replaces_an_earlier_result",
    "GRADIO_ROOT_PATH=/seesr ./start_seesr.sh ui --port 7860":
        "tests/test_serving.py::test_the_page_behind_a_proxy_serves_itself_under_its_path",
    "seesr upscale photos/ -o out/ --shard 0/3": DRY,
    "kubectl apply -f deploy/kubernetes/indexed-job.yaml":
        "tests/test_shards.py::test_the_kubernetes_manifest_is_an_indexed_job_of_n_shards (no cluster here)",
    "sbatch --array=0-7 deploy/slurm/array.sh photos/ out/ --preset quality":
        "tests/test_shards.py::test_the_slurm_script_runs_one_array_task (no Slurm here)",
    "accelerate launch --multi_gpu --num_processes 4 -m seesr.cli upscale photos/ -o out/ --shard auto/8":
        "tests/test_shards.py::test_accelerate_splits_a_shard_between_its_processes (CPU processes)",
    # docs/evaluation.md
    "./start_seesr.sh evaluate out/ hr/ --lr lr/ --crop-border 4 --csv scores.csv":
        "tests/test_evaluate.py::test_start_script_evaluate_as_the_readme_types_it",
    "./start_seesr.sh evaluate out/ hr/ --json": "tests/test_evaluate.py::test_start_script_evaluate_as_the_readme_types_it",
    "seesr evaluate out/ hr/ --metrics paper": "tests/test_evaluate.py (the paper set, metric by metric)",
    "seesr evaluate --run realesrgan-x4plus,balanced,quality lr/ hr/": "tests/test_evaluate.py (--run rows)",
    "nice -n 10 ./start_seesr.sh evaluate --run realesrgan-x4plus,realesrgan-x4plus-anime,realesr-animevideov3-x4,"
    "bicubic ../shared/data/realsr/lr ../shared/data/realsr/hr --color-fix none":
        "not run: how the table was measured (100 RealSR pairs, 24 minutes); tests/test_evaluate.py runs --run",
    "nice -n 10 ./start_seesr.sh evaluate --run realesrgan-x4plus ../shared/data/realsr/lr ../shared/data/realsr/hr":
        "not run: how the table was measured (17 minutes); tests/test_evaluate.py runs --run",
    # docs/speed.md
    "./start_seesr.sh benchmark --sizes 128 --steps 2 --warmup 1 --repeats 2 --naive --json bench.json":
        "tests/test_start_script.py::test_benchmark_smoke_writes_its_record (--smoke on the tiny weights)",
    "python -m benchmarks.report bench.json [other.json]": "tests/test_benchmark_smoke.py (the report)",
    "python -m benchmarks.candidates profile unet vae": "tests/test_benchmark_smoke.py (candidates profile)",
    "python -m benchmarks.candidates attention": "tests/test_attention.py (the kernel against SDPA)",
    "python -m benchmarks roofline --record bench.json":
        "tests/test_roofline.py::test_command_prints_and_records_the_bounds",
    "python -m benchmarks.gpu --tiny-weights tiny_weights --json gpu.json":
        "tests/test_gpu_script.py::test_gpu_script_dry_run_writes_one_complete_record",
    # docs/training.md
    "./start_seesr.sh python -c \"import sys, pathlib; sys.path.insert(0, 'tests'); import conftest; "
    "conftest.lay_out_tiny_weights(conftest.TINY, pathlib.Path('tiny_weights'))\"": RUN,
    "./start_seesr.sh train photos/ -o run --validate-every 100":
        "tests/test_training.py::test_start_script_train_then_upscale_with_its_output (2 steps, tiny weights)",
    "./start_seesr.sh upscale photo.png -o photo_x4.png --weights run":
        "tests/test_training.py::test_start_script_train_then_upscale_with_its_output",
    "./start_seesr.sh train photos/ -o run --resume latest": "tests/test_training.py (resume: bit-identical to an "
    "uninterrupted run)",
    "./start_seesr.sh train photos/ -o run --max-steps 20 --weights tiny_weights --validate-every 10 --checkpoint-every "
    "10": "tests/test_training.py::test_start_script_train_then_upscale_with_its_output (2 steps, small crops)",
    "accelerate launch --multi_gpu --num_processes 2 -m seesr.cli train photos/ -o run --mixed-precision bf16":
        "tests/test_training.py (two CPU processes under accelerate launch; --multi_gpu needs GPUs)",
    "./start_seesr.sh train photos/ -o run_seesr --model seesr": "tests/test_training.py (--model seesr, resumed)",
    "./start_seesr.sh upscale photo.png --model seesr --weights run_seesr": "tests/test_training.py (--model seesr)",
    "./start_seesr.sh train photos/ -o run_base --model seesr --from-base": "tests/test_training.py (--from-base)",
    # docs/web-page.md
    "./start_seesr.sh ui --port 8080 --weights weights/ --device cpu":
        "tests/test_ui_browser.py (the server as typed, on a free port)",
}
"""Each documented command: run here (:data:`RUN`, :data:`DRY`), or where it is tested, or why not."""


def documented_commands(text: str) -> list[str]:
    """The commands of a page's ``bash`` blocks: continuation lines joined, comments left out."""
    commands = []
    for block in re.findall(r"^\s*```bash\n(.*?)^\s*```", text, re.S | re.M):
        line = ""
        for raw in block.splitlines():
            raw = raw.strip()
            if raw.endswith("\\"):
                line += raw[:-1].rstrip() + " "
                continue
            command = re.split(r"\s+#\s", line + raw)[0].strip()
            line = ""
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def every_documented() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for command in documented_commands(page.read_text()):
            found.setdefault(command, []).append(str(page.relative_to(REPO)))
    return found


def test_every_documented_command_is_checked():
    documented = every_documented()
    assert set(documented) - set(CHECKED) == set(), "documented but not in CHECKED: say how it is tested"
    assert set(CHECKED) - set(documented) == set(), "in CHECKED but no longer documented"


def test_every_command_is_in_one_of_the_two_forms():
    assert [c for c in every_documented() if not c.startswith(FORMS)] == []


def test_every_named_test_exists():
    for command, how in CHECKED.items():
        for file, name in re.findall(r"(tests/\w+\.py)::(\w+)", how):
            assert re.search(rf"^def {name}\(", (REPO / file).read_text(), re.M), (command, file, name)
        for file in re.findall(r"tests/\w+\.py", how):
            assert (REPO / file).is_file(), (command, file)


def test_every_readme_start_seesr_command_is_run():
    """The README's ``./start_seesr.sh`` commands are run as typed here or by a named test."""
    readme = documented_commands((REPO / "README.md").read_text())
    assert readme and all(CHECKED[c] in (RUN, DRY) or "::" in CHECKED[c] for c in readme if "start_seesr" in c)


# ----------------------------------------------------------------------------- running them


@pytest.fixture
def desk(tiny, tmp_path) -> Path:
    """A folder as a new user has it: photo.jpg, photo.png, big.png, anime.png, scan.tif, photos/
    (two images and a sub-folder with one), more/ (one JPEG) and a model file, all tiny; a link to
    the checkout's ``.venv``."""
    with Image.open(tiny / "inputs" / "pipeline_lr_crop.png") as image:
        small = image.convert("RGB").crop((0, 0, 16, 12))
    small.save(tmp_path / "photo.jpg", quality=95)
    for name in ("photo.png", "big.png", "anime.png"):
        small.save(tmp_path / name)
    (tmp_path / "photos").mkdir()
    (tmp_path / "more").mkdir()
    small.save(tmp_path / "photos" / "a.png")
    small.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "photos" / "b.png")
    small.save(tmp_path / "more" / "c.jpg", quality=95)
    (tmp_path / "photos" / "sub").mkdir()
    small.save(tmp_path / "photos" / "sub" / "d.png")
    small.save(tmp_path / "scan.tif")
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "4x_MyFavourite.safetensors"))
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    return tmp_path


def typed(command: str, cwd: Path, weights: Path, **env: str) -> subprocess.CompletedProcess:
    """``command`` as a user types it in ``cwd`` (the checkout's script for ``./start_seesr.sh``),
    offline, with ``weights`` as the weights folder."""
    command = command.replace("./start_seesr.sh", shlex.quote(str(REPO / "start_seesr.sh")), 1)
    if not command.startswith(("source ", str(REPO))):
        command = f"source .venv/bin/activate && {command}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "HF_"))}
    environment = {**clean, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "SEESR_WEIGHTS": str(weights),
                   "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_readme_first_commands_offline(desk):
    """Quick start offline and without weights: the fallback, said once, naming what was tried; the
    dry run plans exactly that; a folder goes to upscaled/."""
    empty = desk / "weights"
    done = typed("./start_seesr.sh upscale photo.jpg", desk, empty)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(desk / "photo_seesr.png").size == (64, 48)
    assert done.stdout.startswith("photo_seesr.png: 64x48, engine realesrgan (realesrgan-x4plus), "
                                  "fallback (why: said above)")  # fmt: skip
    assert done.stderr.count(f"{FALLBACK_NOTICE}SeeSR weights are missing: 20 files") == 1
    assert "no download was tried: HF_HUB_OFFLINE is set" in done.stderr and "Traceback" not in done.stderr

    plan = typed("./start_seesr.sh upscale photo.jpg --dry-run", desk, empty)
    assert plan.returncode == 0 and "engine realesrgan, model realesrgan-x4plus" in plan.stdout, plan.stderr
    assert "no download was tried: HF_HUB_OFFLINE is set" in plan.stderr

    folder = typed("./start_seesr.sh upscale photos/", desk, empty)
    assert folder.returncode == 0, folder.stderr[-2000:]
    assert sorted(p.name for p in (desk / "upscaled").glob("*.png")) == ["a.png", "b.png"]
    assert folder.stderr.count("fallback to Real-ESRGAN") == 1 and folder.stdout.count("(why: said above)") == 2


@pytest.mark.slow
def test_the_readme_commands_with_the_tiny_weights(desk, tiny_weights_dir):
    """With weights there: the dry run plans SeeSR in both forms; help, list and --version."""
    for command in ("./start_seesr.sh upscale photo.jpg --dry-run", "source .venv/bin/activate && "
                    "seesr upscale photo.jpg --dry-run"):  # fmt: skip
        plan = typed(command, desk, tiny_weights_dir)
        assert plan.returncode == 0, plan.stderr[-2000:]
        assert plan.stdout.startswith("photo.jpg -> photo_seesr.png (64x48): engine seesr, model seesr-turbo")
    helped = typed("./start_seesr.sh help", desk, tiny_weights_dir)
    assert helped.returncode == 0 and helped.stderr == ""
    listed = [line.split()[0] for line in helped.stdout.split("seesr commands")[1].splitlines()[1:] if line.strip()]
    assert listed == ["upscale", "weights", "train", "evaluate", "ui"]
    weights = typed("seesr weights list", desk, tiny_weights_dir)
    assert weights.returncode == 0 and weights.stdout.startswith("file ") and "DAPE.pth" in weights.stdout
    version = typed("seesr --version", desk, tiny_weights_dir)
    assert version.returncode == 0 and re.fullmatch(r"seesr \S+\n", version.stdout)


@pytest.mark.slow
def test_the_tiny_weights_recipe_as_typed(desk):
    """docs/training.md's first command, from a folder holding the checkout's tests/: the tiny
    weights in ./tiny_weights, a weights folder seesr finds complete."""
    recipe = next(c for c, how in CHECKED.items() if how == RUN and "lay_out_tiny_weights" in c)
    (desk / "tests").symlink_to(REPO / "tests")
    done = typed(recipe, desk, desk / "none")
    assert done.returncode == 0, done.stderr[-2000:]
    listed = typed("seesr weights list seesr sd-turbo ram", desk, desk / "tiny_weights")
    assert listed.returncode == 0 and "missing" not in listed.stdout.split("\n\n")[0], listed.stdout


@pytest.mark.slow
def test_the_docs_upscale_examples_plan_as_typed(desk, tiny_weights_dir):
    """Every ``seesr upscale`` example of docs/cli.md, as typed plus --dry-run: exit 0, one planned
    line per input, what it names (engine, model, scale) as the flags say."""
    examples = [c for c, how in CHECKED.items() if how == DRY]
    assert len(examples) == 14
    with Image.open(desk / "photo.jpg") as small:  # --width 2000 needs a photo of 250 px or more (scale 8 at most)
        small.resize((320, 240)).save(desk / "photo.jpg", quality=95)
    for command in examples:
        shell = command.replace(" > ", " --dry-run > ", 1) if " > " in command else f"{command} --dry-run"
        done = typed(shell, desk, tiny_weights_dir)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, command
        out = (desk / "results.jsonl").read_text() if " > " in command else done.stdout
        assert out.strip(), command
    anime = typed("seesr upscale anime.png -n realesrgan-x4plus-anime -t 64 --tile-pad 10 -s 2 --dry-run", desk,
                  tiny_weights_dir)  # fmt: skip
    assert "(32x24): engine realesrgan, model realesrgan-x4plus-anime" in anime.stdout
    mine = typed("seesr upscale photo.png --model 4x_MyFavourite.safetensors --dry-run", desk, tiny_weights_dir)
    assert "engine realesrgan" in mine.stdout and "4x_MyFavourite.safetensors" in mine.stdout
