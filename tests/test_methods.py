"""Baseline rows built in one place: recipes.methods (builders, weight rule)."""

import math

import pytest

from rskd_tutorial.profile import get_profile
from rskd_tutorial.recipes.detection import build_from_spec, tutorial_spec
from rskd_tutorial.recipes.methods import BASELINES, balanced_weights, baseline_losses, round_125


@pytest.mark.parametrize("x, expected", [(1.0, 1.0), (3.0, 2.0), (4.0, 5.0), (0.7, 0.5), (0.8, 1.0), (130.0, 100.0),
                                         (0.0031, 0.002)])
def test_round_125_picks_the_nearest_on_a_log_scale(x, expected):
    assert round_125(x) == pytest.approx(expected)


def test_round_125_rejects_non_positive():
    with pytest.raises(ValueError, match="positive"):
        round_125(0.0)


def test_unknown_baseline_is_a_clear_error():
    P = get_profile("ci")
    det = build_from_spec(tutorial_spec(P, "retinanet", "student"), 3)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_losses("kd++", det, det)


def test_balanced_weights_bring_every_term_near_the_detection_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("RSKD_CACHE", str(tmp_path))
    P = get_profile("ci")
    teacher = build_from_spec(tutorial_spec(P, "retinanet", "teacher"), 5).eval()
    methods = ("fitnet", "cwd", "pkd", "mgd")
    weights, info = balanced_weights(P, "retinanet", teacher, methods, w_max=1e6)
    assert set(weights) == set(methods) and set(BASELINES) >= set(methods)
    for m in methods:
        weighted = weights[m] * info[m]["raw"]
        # a 1-2-5 rounding is at most a factor sqrt(2.5) away on a log scale
        assert 1 / math.sqrt(2.5) - 1e-6 <= weighted / info[m]["det"] <= math.sqrt(2.5) + 1e-6, (m, weights[m], info[m])
    capped, _ = balanced_weights(P, "retinanet", teacher, ("fitnet",), w_max=1e-9)
    assert capped["fitnet"] == 1e-9


def test_step0_terms_do_not_depend_on_the_global_random_state(tmp_path, monkeypatch):
    # the weights derived from them enter cache keys: a chapter and a warm-up script must get the same ones
    import torch

    from rskd_tutorial.recipes.dipkd import balanced_dipkd_weight
    from rskd_tutorial.recipes.methods import step0_terms

    monkeypatch.setenv("RSKD_CACHE", str(tmp_path))
    P = get_profile("ci")
    teacher = build_from_spec(tutorial_spec(P, "retinanet", "teacher"), 5).eval()
    make = lambda s, t: baseline_losses("mgd", s, t)    # MGD draws a random mask
    torch.manual_seed(123)
    first = step0_terms(P, "retinanet", teacher, make)
    torch.rand(1000)
    torch.manual_seed(7)
    assert step0_terms(P, "retinanet", teacher, make) == first
    assert first[0]["mgd"] > 0 and first[1] > 0

    class Run:   # a TutorialRun's two fields that balanced_dipkd_weight reads
        model = build_from_spec(tutorial_spec(P, "faster_rcnn", "teacher"), 1).eval()
        run_dir = tmp_path

    w, info = balanced_dipkd_weight(P, "faster_rcnn", Run())
    assert w == min(round_125(info["det"] / info["raw"]), 1000.0) and info["raw"] > 0


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_balanced_ds2d2_weights_bring_each_of_the_four_terms_near_the_detection_loss(arch, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from rskd_tutorial.distill.ds2d2 import TERMS
    from rskd_tutorial.recipes.ds2d2 import balanced_ds2d2_weights, build_amplifier

    monkeypatch.setenv("RSKD_CACHE", str(tmp_path))
    P = get_profile("ci")
    spec = tutorial_spec(P, arch, "teacher")
    teacher = build_from_spec(spec, 5).eval()
    amplifier = build_amplifier(spec, 5, teacher).eval()
    weights, info = balanced_ds2d2_weights(P, arch, SimpleNamespace(model=teacher), SimpleNamespace(model=amplifier))
    assert set(info) == set(TERMS) and set(weights.terms()) == set(TERMS)
    for term in TERMS:
        weighted = getattr(weights, term) * info[term]["raw"]
        assert 1 / math.sqrt(2.5) - 1e-6 <= weighted / info[term]["det"] <= math.sqrt(2.5) + 1e-6, (term, weights, info)
