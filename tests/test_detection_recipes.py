"""Tutorial-scale detection recipes: seeded initial weights and a quiet data writer."""

from __future__ import annotations

from pathlib import Path

import torch

from rskd_tutorial.distill import FitNetLoss
from rskd_tutorial.profile import get_profile
from rskd_tutorial.recipes import detection as det_recipes
from rskd_tutorial.recipes import runs


def test_tutorial_runs_start_from_seeded_weights_and_write_data_quietly(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RSKD_CACHE", str(tmp_path))
    P = get_profile("ci")
    det_recipes.synthetic_root("optical", P, progress=False)
    assert "synth optical" not in capsys.readouterr().err

    initial: list[dict[str, torch.Tensor]] = []

    def fake_train_or_load(model, key, train, **kwargs):   # record the weights fit() would start from
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        return model, tmp_path / "run", True

    monkeypatch.setattr(runs, "train_or_load", fake_train_or_load)
    monkeypatch.setattr(runs, "cached_metrics", lambda *args, **kwargs: {})
    torch.manual_seed(1)
    det_recipes.tutorial_teacher(P, "retinanet", role="student", verbose=False)
    torch.manual_seed(2)                                     # other global RNG state: same student
    teacher = det_recipes.tutorial_teacher(P, "retinanet", verbose=False).model
    torch.manual_seed(3)
    det_recipes.distill_student(P, "retinanet", teacher, "fitnet",
                                lambda s, t: {"fitnet": FitNetLoss(list(s.levels), 32, 32)}, {"fitnet": 1.0},
                                verbose=False)
    alone, _, distilled = initial
    student = {k[len("student."):]: v for k, v in distilled.items() if k.startswith("student.")}
    assert student.keys() == alone.keys()
    assert all(torch.equal(alone[k], student[k]) for k in alone)
