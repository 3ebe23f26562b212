"""The tutorial scale's foundations: split seeds, in-memory scenes, the teacher store and ``rskd teachers``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rskd_tutorial.data.synthetic import split_seeds, write_scenes
from rskd_tutorial.engine.store import (ShippedTeacherError, find_shipped, load_shipped, save_shipped,
                                        shipped_records)


def test_split_seeds_never_overlap_and_match_the_written_files(tmp_path):
    for kind in ("optical", "saliency"):
        seeds = split_seeds(kind, 0, 200, 50, 50)
        sets = [set(v) for v in seeds.values()]
        assert len(sets) == 3 and sum(map(len, sets)) == 300
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set(split_seeds("optical", 0, 1, 1, 1)) == {"train", "val", "test"}
    assert set(split_seeds("saliency", 0, 1, 1, 1)) == {"train", "test", "val"}
    root = write_scenes("optical", tmp_path / "o", n_train=3, n_val=2, n_test=2, size=48, seed=0, progress=False)
    seeds = split_seeds("optical", 0, 3, 2, 2)
    for split in ("train", "val", "test"):
        data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        assert [im["seed"] for im in data["images"]] == seeds[split]
    # the test split does not depend on how many train / val scenes were written
    other = write_scenes("optical", tmp_path / "p", n_train=0, n_val=0, n_test=2, size=48, seed=0, progress=False)
    a = json.loads((root / "annotations" / "instances_test.json").read_text())
    b = json.loads((other / "annotations" / "instances_test.json").read_text())
    assert a["annotations"] == b["annotations"]


def test_in_memory_dataset_gives_the_same_items_as_reading_files(tmp_path):
    from rskd_tutorial.data import CocoDetection

    root = write_scenes("sar", tmp_path / "s", n_train=3, n_val=1, size=40, seed=1, progress=False)
    disk, mem = CocoDetection(root, "train"), CocoDetection(root, "train", in_memory=True)
    assert all(t.dtype == torch.uint8 for t in mem._memory.values())
    for i in range(len(disk)):
        (x, tx), (y, ty) = disk[i], mem[i]
        assert torch.equal(x, y) and torch.equal(tx["boxes"], ty["boxes"])
    x = mem[0][0]
    x.zero_()                                   # a caller editing its item must not edit the store
    assert torch.equal(mem[0][0], disk[0][0])


def test_in_memory_datasets_of_one_split_share_the_decoded_images(tmp_path, monkeypatch):
    import os

    from rskd_tutorial.data import CocoDetection

    root = write_scenes("sar", tmp_path / "s", n_train=3, n_val=1, size=40, seed=2, progress=False)
    first = CocoDetection(root, "train", in_memory=True)
    reads = []
    monkeypatch.setattr(CocoDetection, "_read", lambda self, rel: reads.append(rel) or torch.zeros(3, 40, 40))
    again = CocoDetection(root, "train", in_memory=True)
    assert reads == [] and again._memory is first._memory          # nothing decoded twice
    assert torch.equal(again[0][0], first[0][0])
    CocoDetection(root, "val", in_memory=True)                     # another split is its own store
    assert len(reads) == 1
    ann = root / "annotations" / "instances_train.json"
    st = ann.stat()
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))   # a rewritten split is decoded anew
    CocoDetection(root, "train", in_memory=True)
    assert len(reads) == 1 + 3


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


def _record(name="tiny", key="tiny/ci-s0-abc"):
    return {"name": name, "task": "optical-detection", "architecture": "tiny", "profile": "ci", "config_key": key,
            "seed": 0, "steps": 1, "train_seconds": 0.1, "hardware": "cpu", "package_version": "0", "git_commit": "x",
            "metric": "AP50", "value": 1.0, "split": "test"}


def test_safetensors_round_trip_is_float16_exact_and_strict(tmp_path):
    torch.manual_seed(0)
    model = _Tiny()
    model.bn.running_mean.fill_(0.25)
    rec = save_shipped(model, _record(), tmp_path)
    assert rec["file"] == "tiny.safetensors.xz"
    assert (tmp_path / "ci" / "tiny.safetensors.xz").stat().st_size == rec["bytes"] and len(rec["sha256"]) == 64
    fresh = load_shipped(_Tiny(), rec, tmp_path)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        want = a.half().to(a.dtype) if a.is_floating_point() else a
        assert torch.equal(want, b), k                         # floats rounded to float16, the rest exact
        assert b.dtype == a.dtype
    assert fresh.bn.num_batches_tracked.dtype == torch.int64
    # strict: a model with another shape is refused, naming the key
    other = _Tiny()
    other.conv = nn.Conv2d(3, 5, 3)
    with pytest.raises(ShippedTeacherError, match="conv.weight"):
        load_shipped(other, rec, tmp_path)
    # the record is found by its config key (and by nothing else)
    assert find_shipped("tiny/ci-s0-abc", tmp_path)["name"] == "tiny"
    assert find_shipped("tiny/ci-s0-abd", tmp_path) is None
    assert [r["name"] for r in shipped_records("ci", tmp_path)] == ["tiny"]


def test_plain_safetensors_loads_and_a_broken_archive_names_the_teacher(tmp_path):
    import lzma

    from rskd_tutorial.engine.store import file_sha256

    torch.manual_seed(0)
    model = _Tiny()
    rec = save_shipped(model, _record(), tmp_path)
    packed = tmp_path / "ci" / rec["file"]
    plain = tmp_path / "ci" / "tiny.safetensors"
    plain.write_bytes(lzma.decompress(packed.read_bytes()))       # what `xz -d` gives
    old = dict(rec, file=plain.name, sha256=file_sha256(plain), bytes=plain.stat().st_size)
    fresh = load_shipped(_Tiny(), old, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(load_shipped(_Tiny(), rec, tmp_path).state_dict().values(),
                                                  fresh.state_dict().values()))
    assert rec["bytes"] < plain.stat().st_size                    # the archive is smaller than the plain file
    # re-shipping replaces the plain file by the archive
    save_shipped(model, _record(), tmp_path)
    assert not plain.exists() and packed.exists()
    # an archive that is not lzma (hash updated too): refused with the teacher's name, not a raw lzma error
    packed.write_bytes(b"not an archive")
    with pytest.raises(ShippedTeacherError, match="tiny.*not a readable"):
        load_shipped(_Tiny(), dict(rec, sha256=file_sha256(packed)), tmp_path)


def test_tampered_or_missing_file_is_refused(tmp_path):
    rec = save_shipped(_Tiny(), _record(), tmp_path)
    path = tmp_path / "ci" / rec["file"]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ShippedTeacherError, match="differs from its record"):
        load_shipped(_Tiny(), rec, tmp_path)
    path.unlink()
    with pytest.raises(ShippedTeacherError, match="missing"):
        load_shipped(_Tiny(), rec, tmp_path)


def test_train_or_load_takes_a_shipped_teacher_with_the_same_key(tmp_path, monkeypatch):
    from rskd_tutorial.engine.cache import SHIPPED_RECORD, train_or_load

    monkeypatch.setenv("RSKD_SHIPPED", str(tmp_path / "store"))
    monkeypatch.setenv("RSKD_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(1)
    trained = _Tiny()
    save_shipped(trained, _record(key="tiny/ci-s0-abc"))

    def must_not_train(run_dir):
        raise AssertionError("a shipped teacher must be loaded, not trained")

    model, run_dir, loaded = train_or_load(_Tiny(), "tiny/ci-s0-abc", must_not_train, verbose=False)
    assert loaded and (run_dir / SHIPPED_RECORD).is_file()
    assert torch.equal(model.conv.weight, trained.conv.weight.half().float())
    # another key (any setting changed) trains; shipped=False always trains
    calls = []
    with pytest.raises(RuntimeError, match="without writing"):
        train_or_load(_Tiny(), "tiny/ci-s0-xyz", calls.append, verbose=False)
    with pytest.raises(RuntimeError, match="without writing"):
        train_or_load(_Tiny(), "tiny/ci-s0-abc", calls.append, verbose=False, shipped=False)
    assert len(calls) == 2


def test_catalog_keys_are_the_chapters_keys(tmp_path, monkeypatch):
    """A teacher's record must carry the key the chapter computes, or the chapter would train it again."""
    monkeypatch.setenv("RSKD_CACHE", str(tmp_path))
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.detection import detector_setup
    from rskd_tutorial.recipes.teachers import catalog

    profile = get_profile("ci")
    entries = {e.name: e for e in catalog(profile)}
    assert {"optical-retinanet", "optical-faster_rcnn", "sar-faster_rcnn", "saliency-teacher"} <= set(entries)
    s = entries["optical-retinanet"].setup(profile, False)
    assert s.key == detector_setup(profile, "retinanet", "optical", 0, role="teacher").key
    assert s.key != detector_setup(profile, "retinanet", "optical", 0, role="student").key


def test_shipped_cpu_records_are_complete_and_meet_the_targets():
    records = shipped_records("cpu")
    if not records:
        pytest.skip("no cpu teachers in this checkout")
    targets = {"optical-detection": 50.0, "sar-detection": 60.0, "rgb-detection": 40.0, "saliency": 0.88}
    total = 0
    for rec in records:
        for k in ("name", "task", "metric", "value", "split", "file", "bytes", "config_key", "steps", "train_seconds"):
            assert rec.get(k) not in (None, ""), (rec["name"], k)
        assert rec["split"] == "test" and rec["config_key"].split("/")[1].startswith("cpu-s0-")
        total += rec["bytes"]
        if rec["name"] != "saliency-assistant":
            assert rec["value"] >= targets[rec["task"]], rec["name"]
    assert total <= 40e6
    # every teacher a cpu chapter asks for is shipped (the keys are checked by `rskd teachers --check`:
    # computing them generates the cpu scenes, minutes of CI)
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.teachers import catalog

    assert {e.name for e in catalog(get_profile("cpu"))} == {rec["name"] for rec in records}


def _rskd(*args, env):
    exe = Path(sys.executable).with_name("rskd")
    cmd = [str(exe), *args] if exe.is_file() else [sys.executable, "-m", "rskd_tutorial.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_rskd_teachers_ships_lists_checks_and_catches_tampering(tmp_path):
    env = dict(os.environ, RSKD_SHIPPED=str(tmp_path / "store"), RSKD_CACHE=str(tmp_path / "cache"),
               RSKD_PROFILE="ci")
    r = _rskd("teachers", "--profile", "ci", "--only", "optical-retinanet", "saliency-teacher", "--json", env=env)
    assert r.returncode == 0, r.stderr
    shipped = json.loads(r.stdout)
    assert [x["name"] for x in shipped] == ["optical-retinanet", "saliency-teacher"]
    r = _rskd("teachers", "--list", "--json", env=env)
    listed = json.loads(r.stdout)
    assert {"name", "task", "metric", "value", "split", "file", "bytes"} <= set(listed[0])
    r = _rskd("teachers", "--check", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert all(abs(x["measured"] - x["value"]) < 1e-6 for x in json.loads(r.stdout))
    # tamper with the weights *and* update the hash: the re-measured metric must give it away
    from rskd_tutorial.engine.store import file_sha256

    folder = tmp_path / "store" / "ci"
    import lzma

    from safetensors.torch import load, save

    packed = folder / "saliency-teacher.safetensors.xz"
    state = load(lzma.decompress(packed.read_bytes()))
    state = {k: (torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v) for k, v in state.items()}
    packed.write_bytes(lzma.compress(save(state)))
    rec = json.loads((folder / "saliency-teacher.json").read_text())
    rec["sha256"] = file_sha256(packed)
    (folder / "saliency-teacher.json").write_text(json.dumps(rec))
    r = _rskd("teachers", "--check", env=env)
    assert r.returncode == 2 and "saliency-teacher" in r.stderr and "differs from its record" in r.stderr
    # a file changed without its record: refused by its hash
    (folder / "optical-retinanet.safetensors.xz").write_bytes(b"0" * 16)
    r = _rskd("teachers", "--check", env=env)
    assert r.returncode == 2 and "optical-retinanet" in r.stderr


def test_delegated_subcommands_take_leading_options():
    env = dict(os.environ)
    for sub in ("teachers", "synth", "bench"):
        r = _rskd(sub, "--help", env=env)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (sub, r.stderr)


def test_rskd_seeds_limits_the_student_seeds(monkeypatch):
    from rskd_tutorial.profile import get_profile

    monkeypatch.setenv("RSKD_SEEDS", "1")
    assert get_profile("cpu").seeds == (0,)
    monkeypatch.delenv("RSKD_SEEDS")
    assert get_profile("cpu").seeds == (0, 1, 2)
    monkeypatch.setenv("RSKD_SEEDS", "zero")
    with pytest.raises(ValueError, match="RSKD_SEEDS"):
        get_profile("cpu")


def test_result_rows_mean_sd_and_file(tmp_path):
    from rskd_tutorial.recipes.results import read_results, result_row, rows_table, write_results

    t = result_row("optical-detection", "retinanet-regnetx_002", "teacher", "none", "AP50", [80.0], [0])
    s = result_row("optical-detection", "retinanet-regnetx_002", "student", "none", "AP50", [10.0, 12.0, 14.0], [0, 1, 2])
    k = result_row("optical-detection", "retinanet-regnetx_002", "kd", "fitnet", "AP50", [13.0, 15.0, 17.0], [0, 1, 2])
    assert s["mean"] == 12.0 and s["sd"] == pytest.approx(2.0) and t["sd"] == 0.0   # sample sd: sqrt(8 / 2)
    table = rows_table([t, s, k])
    assert table.loc[2, "Δ vs student"] == 3.0 and table.loc[1, "AP50"] == "12.0 ± 2.0"
    path = write_results("00", "demo", [t, s, k], profile="ci", device="cpu", root=tmp_path)
    assert path.name == "00_demo.json"
    assert read_results(tmp_path)[0]["rows"][2]["method"] == "fitnet"
    with pytest.raises(ValueError, match="one value per seed"):
        result_row("saliency", "m", "kd", "x", "S", [0.9], [0, 1])
    with pytest.raises(ValueError, match="role"):
        result_row("saliency", "m", "boss", "x", "S", [0.9], [0])
