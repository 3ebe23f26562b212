"""``rskd train`` / ``rskd eval`` through the real entry point on the detector smoke config: the run folder,
existing runs, --overwrite, --set, LR scaling, eval.json and one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from rskd_tutorial.recipes.registry import load_run_config
from rskd_tutorial.run_folder import scale_lr

from cli_helpers import config, error_line, rskd

SMOKE = config("detector", "detector_synthetic_retinanet")
RUN = Path("runs") / SMOKE.stem


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    """The smoke config trained once, from an empty folder (its scenes are written by the config)."""
    cwd = tmp_path_factory.mktemp("cli_train")
    proc = rskd("train", SMOKE, "--no-progress", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_run_folder_explains_itself(trained):
    cwd, proc = trained
    run = cwd / RUN
    assert {"config.yaml", "run.json", "metrics.jsonl", "checkpoint.pt", "final.pt"} <= {p.name for p in run.iterdir()}
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["recipe"] == "detector"
    # config.yaml: every default filled in, and it reruns as a config of its own
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["recipe"] == "detector" and resolved["train"]["warmup_factor"] == 0.001
    assert load_run_config(run / "config.yaml").config == load_run_config(SMOKE).config
    record = json.loads((run / "run.json").read_text())
    from rskd_tutorial import __version__
    assert record["rskd_tutorial"] == __version__ and record["git_commit"] and record["torch"] == torch.__version__
    session = record["sessions"][-1]
    assert session["status"] == "finished" and session["command"][:2] == ["rskd", "train"]
    assert set(record["metrics"]) >= {"mAP", "AP50"}
    epochs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in ln]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]
    assert (cwd / "data/synthetic/detector-optical-64/synth_manifest.json").is_file()


def test_tensorboard_hint_or_event_files(trained):
    cwd, proc = trained
    if importlib.util.find_spec("tensorboard") is None:
        assert "pip install 'rskd_tutorial[tb]'" in proc.stdout
    else:
        assert any((cwd / RUN / "tensorboard").iterdir())


def test_existing_run_is_one_line_exit_2(trained):
    cwd, _ = trained
    proc = rskd("train", SMOKE, cwd=cwd)
    line = error_line(proc)
    assert proc.returncode == 2 and "already holds a run" in line and "--resume" in line and "--overwrite" in line


def test_eval_writes_eval_json_with_split_and_count(trained):
    cwd, _ = trained
    proc = rskd("eval", SMOKE, RUN / "final.pt", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((cwd / RUN / "eval.json").read_text())
    assert (record["split"], record["images"], record["checkpoint"]) == ("val", 4, str(RUN / "final.pt"))
    assert record["metrics"] == json.loads(proc.stdout) and "AP50" in record["metrics"]
    assert "evaluate val" in proc.stderr        # the progress bar


def test_eval_of_a_truncated_checkpoint_names_the_file(trained):
    cwd, _ = trained
    bad = cwd / "truncated.pt"
    bad.write_bytes((cwd / RUN / "final.pt").read_bytes()[:4096])
    proc = rskd("eval", SMOKE, bad, cwd=cwd)
    assert proc.returncode == 2 and "truncated.pt: not a readable checkpoint" in error_line(proc)
    proc = rskd("eval", SMOKE, cwd / "absent.pt", cwd=cwd)
    assert proc.returncode == 2 and "absent.pt" in error_line(proc)


def test_overwrite_set_and_linear_lr_rule(trained):
    """--overwrite starts over; --set changes the run; lr scales from reference_batch 4 to batch 2."""
    cwd, _ = trained
    proc = rskd("train", SMOKE, "--overwrite", "--no-progress", "--set", "train.epochs=1", "--set",
                "train.batch_size=2", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train.lr 0.002 -> 0.001 by the linear rule" in proc.stdout
    resolved = yaml.safe_load((cwd / RUN / "config.yaml").read_text())
    assert (resolved["train"]["epochs"], resolved["train"]["lr"], resolved["train"]["batch_size"]) == (1, 0.001, 2)
    assert resolved["reference_batch"] == 2          # rerunning config.yaml keeps lr 0.001: not scaled twice
    rerun = load_run_config(cwd / RUN / "config.yaml")
    assert scale_lr(rerun.config, rerun.reference_batch, world_size=1)[0].train.lr == pytest.approx(0.001)
    record = json.loads((cwd / RUN / "run.json").read_text())
    assert len(record["sessions"]) == 1 and record["sessions"][0]["lr"]["applied"] is True
    assert record["sessions"][0]["lr"]["blocks"] == [{"key": "train", "config_lr": 0.002, "lr": 0.001, "total_batch": 2}]
    epochs = [json.loads(ln) for ln in (cwd / RUN / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1]      # the old run's records are gone
    assert not (cwd / RUN / "eval.json").exists()


def test_scale_lr_rule_and_opt_out():
    cfg = load_run_config(SMOKE).config
    scaled, how = scale_lr(cfg, 4, world_size=4)                  # 4 GPUs x 4 images against 4
    assert scaled.train.lr == pytest.approx(4 * cfg.train.lr) and how.applied and cfg.train.lr == 0.002
    kept, how = scale_lr(cfg, 4, world_size=4, enabled=False)
    assert kept.train.lr == cfg.train.lr and not how.applied and "--no-scale-lr" in how.describe()
    same, how = scale_lr(cfg, None, world_size=8)
    assert same is cfg and "no reference_batch" in how.describe()


def test_scale_lr_reaches_every_stage_of_a_two_stage_config():
    """FreqKD's stage_a.train and stage_b.train, both 4 images per GPU against the 4-GPU total of 16."""
    path = next(Path(SMOKE).parents[2].glob("freqkd/kaist/freqkd_kaist_vitb14_from_dinov2_vitb14.yaml"))
    loaded = load_run_config(path)
    assert loaded.reference_batch == 16
    scaled, how = scale_lr(loaded.config, loaded.reference_batch, world_size=1)
    assert sorted(k for k, *_ in how.blocks) == ["stage_a.train", "stage_b.train"]
    assert scaled.stage_a.train.lr == pytest.approx(loaded.config.stage_a.train.lr / 4)
    assert scaled.stage_b.train.lr == pytest.approx(loaded.config.stage_b.train.lr / 4)
    assert loaded.config.stage_a.train.lr == 5e-5            # the loaded config itself is unchanged


def test_non_finite_loss_is_one_line_exit_1(trained):
    cwd, _ = trained
    proc = rskd("train", SMOKE, "--out", "runs/nan", "--no-progress", "--set", "train.lr=1e30", "--set",
                "train.epochs=1", "--set", "train.grad_clip=null", cwd=cwd)
    assert proc.returncode == 1 and "non-finite loss at epoch 1" in error_line(proc)
    assert json.loads((cwd / "runs/nan/run.json").read_text())["sessions"][-1]["status"] == "failed: NonFiniteLossError"


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("keep me")
    proc = rskd("train", SMOKE, "--out", "notes", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 2 and "refusing to delete" in error_line(proc)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize("path", sorted(SMOKE.parents[2].rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_round_trips_through_its_resolved_yaml(path: Path, tmp_path: Path):
    """config.yaml (what rskd train writes) reads back into the same config, for every shipped config."""
    loaded = load_run_config(path)
    copy = tmp_path / "config.yaml"
    copy.write_text(yaml.safe_dump(loaded.resolved(), sort_keys=False))
    again = load_run_config(copy)
    assert (again.recipe.name, again.config, again.reference_batch, again.synthetic) == (
        loaded.recipe.name, loaded.config, loaded.reference_batch, loaded.synthetic)
