"""FreqKD (chapter 4): band split, loss values by hand, teacher gradients, divergence ratio, and the
two-stage recipe and divergence CLI end to end on tiny synthetic pairs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rskd_tutorial.distill import Distiller, FreqKDLoss, band_split, freqkd_loss, signed_log1p
from rskd_tutorial.models import FeatureModel, ModelOutput, ViTTrunk
from rskd_tutorial.spectral import band_divergence, divergence_ratio


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ band split

@pytest.mark.parametrize("split", ["fft", "haar"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 7, 5)])
def test_band_split_sums_back(split, shape):
    x = torch.randn(*shape, generator=_gen(), dtype=torch.float64)
    low, high = band_split(x, 0.25, split=split)
    assert low.shape == high.shape == x.shape
    assert torch.allclose(low + high, x, rtol=0, atol=1e-12)
    assert high.abs().max() > 1e-3 and low.abs().max() > 1e-3      # both bands carry something


@pytest.mark.parametrize("split", ["fft", "haar"])
def test_low_band_of_a_constant_map_is_the_map(split):
    x = torch.full((2, 3, 6, 5), 2.5)
    low, high = band_split(x, 0.1, split=split)
    assert torch.equal(low, x) or torch.allclose(low, x, rtol=0, atol=1e-6)
    assert high.abs().max() < 1e-6


def test_fft_split_is_ideal_low_pass_and_haar_low_is_block_mean():
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(3, 3)[None, None]   # Nyquist pattern, 6 x 6
    low, high = band_split(checker + 2.0, 0.25, split="fft")
    assert torch.allclose(low, torch.full_like(low, 2.0), atol=1e-6) and torch.allclose(high, checker, atol=1e-6)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    low, _ = band_split(x, split="haar")
    assert torch.allclose(low[0, 0, :2, :2], torch.full((2, 2), (0 + 1 + 4 + 5) / 4))


def test_none_split_is_full_band():
    x = torch.randn(1, 2, 4, 4, generator=_gen())
    low, high = band_split(x, split="none")
    assert torch.equal(low, x) and torch.equal(high, torch.zeros_like(x))


# ------------------------------------------------------------------------------------ the loss

def test_signed_log1p():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.allclose(signed_log1p(x), torch.tensor([-math.log(4), -math.log(1.5), 0, math.log(1.5), math.log(4)]))


@pytest.mark.parametrize("log_mse", ["signed_log1p", "log1p_of_mse", "none"])
@pytest.mark.parametrize("split", ["fft", "haar", "none"])
def test_loss_is_zero_for_identical_features(log_mse, split):
    f = torch.randn(2, 8, 5, 6, generator=_gen())
    value, terms = freqkd_loss(f, f.clone(), log_mse=log_mse, split=split, return_terms=True)
    assert value.item() == 0.0 and terms["low"].item() == 0.0 and terms["high"].item() == 0.0


@pytest.mark.parametrize("split", ["fft", "haar"])   # on 2x2 maps both splits give low = mean, high = rest
def test_loss_by_hand_2x2_without_normalisation(split):
    s = torch.tensor([[1.0, 2.0], [3.0, 6.0]])[None, None]     # mean 3 -> high [[-2, -1], [0, 3]]
    t = torch.ones(1, 1, 2, 2)                                   # mean 1 -> high 0
    low = (3 - 1) ** 2
    high = (math.log(3) ** 2 + math.log(2) ** 2 + 0 + math.log(4) ** 2) / 4
    got, terms = freqkd_loss(s, t, cutoff=0.25, high_weight=0.1, l2_normalize=False, split=split, return_terms=True)
    assert terms["low"].item() == pytest.approx(low, rel=1e-6)
    assert terms["high"].item() == pytest.approx(high, rel=1e-6)
    assert got.item() == pytest.approx(low + 0.1 * high, rel=1e-6)
    got = freqkd_loss(s, t, l2_normalize=False, split=split, log_mse="log1p_of_mse")
    assert got.item() == pytest.approx(low + 0.1 * math.log(1 + (4 + 1 + 0 + 9) / 4), rel=1e-6)
    got = freqkd_loss(s, t, l2_normalize=False, split=split, log_mse="none", high_weight=1.0)
    assert got.item() == pytest.approx(low + (4 + 1 + 0 + 9) / 4, rel=1e-6)       # = plain MSE (orthogonal bands)
    assert got.item() == pytest.approx(torch.mean((s - t) ** 2).item(), rel=1e-6)


def test_loss_by_hand_2x2_with_token_normalisation():
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    s = torch.stack([3 + checker, torch.full((2, 2), 4.0)])[None]    # low (3, 4) -> (0.6, 0.8); high (+-1, 0)
    t = torch.stack([1 - checker, torch.zeros(2, 2)])[None]          # low (1, 0);               high (-+1, 0)
    low = 4 * ((0.6 - 1) ** 2 + 0.8 ** 2) / 8                         # mean over 2 channels x 4 tokens
    high = 4 * (2 * math.log(2)) ** 2 / 8
    got, terms = freqkd_loss(s, t, return_terms=True)
    assert terms["low"].item() == pytest.approx(low, rel=1e-6)
    assert terms["high"].item() == pytest.approx(high, rel=1e-6)
    assert got.item() == pytest.approx(low + 0.1 * high, rel=1e-6)
    full = freqkd_loss(s, t, split="none")                             # control row: one normalised MSE
    n = lambda x: x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)                    # noqa: E731
    assert full.item() == pytest.approx(((n(s) - n(t)) ** 2).mean().item(), rel=1e-6)


def test_relaxation_compresses_large_high_band_errors():
    t = torch.zeros(1, 1, 2, 2)
    small, large = (torch.tensor([[0.1, -0.1], [-0.1, 0.1]]), torch.tensor([[10.0, -10.0], [-10.0, 10.0]]))
    ratio = lambda log_mse: (freqkd_loss(large[None, None], t, l2_normalize=False, log_mse=log_mse)  # noqa: E731
                             / freqkd_loss(small[None, None], t, l2_normalize=False, log_mse=log_mse)).item()
    assert ratio("none") == pytest.approx(1e4, rel=1e-4)         # strict MSE: quadratic in the error
    relaxed = ratio("signed_log1p")                                # (log 11 / log 1.1)^2 = 633
    assert relaxed == pytest.approx((math.log(11) / math.log(1.1)) ** 2, rel=1e-4) and relaxed < 1e3


def test_gradient_flows_to_student_only_and_loss_is_fp32_under_autocast():
    s = torch.randn(2, 6, 4, 4, generator=_gen(), requires_grad=True)
    t = torch.randn(2, 6, 4, 4, generator=_gen(1), requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = freqkd_loss(s.bfloat16(), t.bfloat16())
    assert value.dtype == torch.float32
    value.backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ in shape"):
        freqkd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="log_mse"):
        freqkd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), log_mse="log")


# ------------------------------------------------------------------------------------ FreqKDLoss module

def _taps(**maps):
    return ModelOutput(taps={"features": dict(maps)})


def test_module_averages_levels_and_keeps_terms():
    a, b = (torch.randn(2, 4, 3, 3, generator=_gen(i)) for i in range(2))
    c, d = (torch.randn(2, 4, 3, 3, generator=_gen(i)) for i in range(2, 4))
    loss = FreqKDLoss(["x", "y"], cutoff=0.3)
    value = loss(_taps(x=a, y=c), _taps(x=b, y=d))
    expected = (freqkd_loss(a, b, cutoff=0.3) + freqkd_loss(c, d, cutoff=0.3)) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(loss.last_terms) == {"low", "high"} and not loss.last_terms["low"].requires_grad


def test_module_projects_and_resizes_a_cnn_student():
    loss = FreqKDLoss(["block3"], student_levels=["c5"], student_channels=16, teacher_channels=8)
    s = torch.randn(2, 16, 2, 2, generator=_gen(), requires_grad=True)
    value = loss(_taps(c5=s), _taps(block3=torch.randn(2, 8, 4, 4, generator=_gen(1))))
    value.backward()
    assert s.grad.abs().sum() > 0 and loss.proj.weight.grad is not None
    with pytest.raises(ValueError, match="channels"):
        FreqKDLoss(["a"])(_taps(a=torch.zeros(1, 3, 2, 2)), _taps(a=torch.zeros(1, 4, 2, 2)))
    with pytest.raises(KeyError, match="tap missing"):
        FreqKDLoss(["b"])(_taps(a=torch.zeros(1, 3, 2, 2)), _taps(a=torch.zeros(1, 3, 2, 2)))


def _vit(seed: int) -> ViTTrunk:
    torch.manual_seed(seed)
    return ViTTrunk("vit_tiny_patch16_224", 32, depth=2, blocks=[0, 1])


def test_no_gradient_reaches_the_teacher_in_a_distiller():
    student, teacher = FeatureModel(_vit(0)), FeatureModel(_vit(1))
    d = Distiller(student, teacher, {"freqkd": FreqKDLoss()}, {"freqkd": 1.0}, student_input="ir", teacher_input="rgb")
    d.train()
    inputs = {"ir": torch.rand(2, 3, 32, 32, generator=_gen()), "rgb": torch.rand(2, 3, 32, 32, generator=_gen(1))}
    out = d(inputs, [{}, {}])
    assert set(out.losses) >= {"loss_kd_freqkd", "kd_freqkd", "kd_freqkd.low", "kd_freqkd.high"}
    out.losses["loss_kd_freqkd"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


# ------------------------------------------------------------------------------------ divergence ratio

def test_divergence_ratio_is_one_for_identical_inputs():
    f = torch.randn(16, 8, 8, 8, generator=_gen())
    d = band_divergence(f, f.clone(), metric="cosine")
    assert divergence_ratio(d, n_boot=20, generator=_gen())[0] == 1.0


def _smooth(seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    coarse = torch.randn(16, 8, 2, 2, generator=_gen(seed), dtype=dtype)
    return torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)


def test_divergence_ratio_with_noise_confined_to_the_high_band():
    a = _smooth(dtype=torch.float64)
    noise = band_split(torch.randn(16, 8, 8, 8, generator=_gen(1), dtype=torch.float64), 0.25)[1]
    d = band_divergence(a, a + 0.3 * noise, cutoff=0.25, metric="nmse")
    assert d["low"].max() < 1e-20 and d["high"].min() > 1e-3      # only the high bands differ
    ratio, lo, _ = divergence_ratio(d, n_boot=50, generator=_gen())
    assert ratio > 1e6 and lo > 1e6


@pytest.mark.parametrize("metric", ["cosine", "nmse"])
def test_divergence_ratio_exceeds_one_with_white_pixel_noise(metric):
    a = _smooth()                            # most energy at low frequencies, like real features
    b = a + 0.3 * torch.randn(16, 8, 8, 8, generator=_gen(1))      # white: 80 % of its energy above 0.25
    ratio, lo, hi = divergence_ratio(band_divergence(a, b, cutoff=0.25, metric=metric), n_boot=50, generator=_gen())
    assert 1 < lo <= ratio <= hi


# ------------------------------------------------------------------------------------ recipe, end to end

@pytest.fixture(scope="module")
def pairs_root(tmp_path_factory) -> Path:
    from rskd_tutorial.data.synthetic import write_scenes

    return write_scenes("rgbir", tmp_path_factory.mktemp("rgbir") / "pairs", n_train=6, n_val=4, size=64,
                        seed=3, progress=False)


def test_collate_pairs_and_rgb_view(pairs_root):
    from rskd_tutorial.recipes.freqkd import ModalityView, PairedData, collate_pairs, paired_splits

    train, val = paired_splits(PairedData(root=str(pairs_root)))
    inputs, targets = collate_pairs([train[0], train[1]])
    assert inputs["ir"].shape == inputs["rgb"].shape == (2, 3, 64, 64) and len(targets) == 2
    ir, target, rgb = val[0]
    view = ModalityView(val, "rgb")
    assert torch.equal(view[0][0], rgb) and view.coco is val.coco and view.num_classes == 2


def test_copy_head_moves_everything_but_the_trunk():
    from rskd_tutorial.models import build_vit_detector
    from rskd_tutorial.recipes.freqkd import copy_head

    torch.manual_seed(0)
    a = build_vit_detector("vit_tiny_patch16_224", 32, 2, out_channels=16, depth=1)
    b = build_vit_detector("vit_tiny_patch16_224", 32, 2, out_channels=16, depth=1)
    copy_head(a, b)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("net.backbone.trunk."))
    assert not torch.equal(sa["net.backbone.trunk.vit.blocks.0.mlp.fc1.weight"], sb["net.backbone.trunk.vit.blocks.0.mlp.fc1.weight"])
    with pytest.raises(RuntimeError, match="differ beyond the trunk"):
        copy_head(a, build_vit_detector("vit_tiny_patch16_224", 32, 2, out_channels=16, depth=1, det_arch="faster_rcnn"))


def test_divergence_study_identical_frames_give_ratio_one(pairs_root):
    from rskd_tutorial.data import CocoDetection
    from rskd_tutorial.recipes.freqkd import ModalityView, divergence_study

    class SameFrames(ModalityView):    # the RGB frame on both sides
        def __getitem__(self, i):
            rgb, target = super().__getitem__(i)
            return rgb, target, rgb

    same = SameFrames(CocoDetection(pairs_root, "val", return_paired=True), "rgb")
    res = divergence_study(_vit(0), same, n_boot=20, batch_size=2)
    assert [l["name"] for l in res["layers"]] == ["block0", "block1"] and res["n_pairs"] == 4
    assert res["ratio"][0] == 1.0
    real = divergence_study(_vit(0), CocoDetection(pairs_root, "val", return_paired=True), n_boot=20,
                            include_input=True, keep_values=True)
    assert real["layers"][0]["name"] == "input" and len(real["values"]["block1"]["low"]) == 4
    assert all(math.isfinite(v) for l in real["layers"] for v in l["low"] + l["high"])


def test_divergence_study_with_a_second_ir_trunk(pairs_root):
    from rskd_tutorial.data import CocoDetection
    from rskd_tutorial.recipes.freqkd import divergence_study

    pairs = CocoDetection(pairs_root, "val", return_paired=True)
    one = divergence_study(_vit(0), pairs, n_boot=20, batch_size=2)
    again = divergence_study(_vit(0), pairs, ir_trunk=_vit(0), n_boot=20, batch_size=2)
    other = divergence_study(_vit(0), pairs, ir_trunk=_vit(1), n_boot=20, batch_size=2)
    assert one["settings"]["same_trunk"] and not again["settings"]["same_trunk"]
    assert again["ratio"] == pytest.approx(one["ratio"])          # same weights on the IR side: same numbers
    assert other["layers"][1]["low"][0] != pytest.approx(one["layers"][1]["low"][0])


def test_single_band_variants_weigh_one_term():
    a, b = (torch.randn(2, 4, 4, 4, generator=_gen(i)) for i in range(2))
    terms = freqkd_loss(a, b, cutoff=0.25, return_terms=True)[1]
    low_only = freqkd_loss(a, b, cutoff=0.25, high_weight=0.0)
    high_only = freqkd_loss(a, b, cutoff=0.25, low_weight=0.0, high_weight=0.1)
    assert low_only.item() == pytest.approx(terms["low"].item(), rel=1e-6)
    assert high_only.item() == pytest.approx(0.1 * terms["high"].item(), rel=1e-6)


def test_tutorial_rows_grid_names_and_choice_on_val():
    from types import SimpleNamespace

    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.freqkd import COMPARISON, LossSpec, chosen_on_val, grid_specs, run_name

    grid = grid_specs(get_profile("cpu"))
    assert len(grid) == 6 and (0.25, 0.1) in grid
    assert run_name(grid[(0.25, 0.1)]) == run_name(COMPARISON["freqkd"]) == "freqkd"    # shared runs
    names = [run_name(spec) for spec in list(COMPARISON.values()) + list(grid.values())]
    assert len(set(names)) == len(COMPARISON) + len(grid) - 1
    assert run_name(LossSpec(split="none")) == "mse" and run_name(None) == "nokd"

    def runs(*vals):
        return [SimpleNamespace(metrics={"val_AP50": v, "AP50": 1.0 - v}) for v in vals]

    assert chosen_on_val({"a": runs(0.3, 0.5), "b": runs(0.45), "c": runs(0.1, 0.2)}) == "b"   # mean val 0.4 < 0.45


def _write_config(path: Path, root: Path, *, stage_a: bool = True, student: str = "vit_tiny_patch16_224") -> Path:
    import yaml

    train = {"epochs": 1, "lr": 1e-3, "batch_size": 2, "optimizer": "adamw", "warmup_iters": 1, "seed": 0}
    cfg = {
        "recipe": "freqkd",
        "teacher": {"arch": "vit_tiny_patch16_224", "img_size": [64, 64], "depth": 2, "blocks": [0, 1]},
        "student": {"arch": student, "img_size": [64, 64], **({"depth": 2, "blocks": [0, 1]} if student.startswith("vit") else {})},
        "stage_b": {"data": {"root": str(root)}, "head": {"arch": "retinanet", "out_channels": 16, "anchor_factor": 0.5},
                    "train": train, "eval_batch_size": 2},
        "divergence": {"pairs": 3, "n_boot": 10, "batch_size": 2, "split": "val"},
    }
    if stage_a:
        cfg["stage_a"] = {"data": {"root": str(root)}, "train": train, "loss": {"cutoff": 0.25, "high_weight": 0.1}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("student", ["vit_tiny_patch16_224", "resnet18"])
def test_freqkd_recipe_two_stages(tmp_path, pairs_root, student):
    from rskd_tutorial.recipes.freqkd import evaluate_freqkd, student_trunk_state
    from rskd_tutorial.recipes.registry import load_config

    recipe, cfg = load_config(_write_config(tmp_path / "cfg.yaml", pairs_root, student=student))
    metrics = recipe.train(cfg, tmp_path / "run", False)
    assert {"mAP", "AP50"} <= set(metrics) and 0.0 <= metrics["AP50"] <= 1.0
    assert (tmp_path / "run" / "stage_a" / "final.pt").is_file() and (tmp_path / "run" / "stage_b" / "final.pt").is_file()
    state = student_trunk_state(tmp_path / "run" / "stage_a" / "final.pt")
    assert state and all(not k.startswith("student.") for k in state)
    again = evaluate_freqkd(cfg, tmp_path / "run" / "stage_b" / "final.pt")
    assert again["AP50"] == pytest.approx(metrics["AP50"], abs=1e-6)


@pytest.mark.slow
def test_divergence_cli_writes_json(tmp_path, pairs_root, capsys):
    from rskd_tutorial.recipes.freqkd import divergence_main

    cfg = _write_config(tmp_path / "cfg.yaml", pairs_root, stage_a=False)
    out = tmp_path / "div.json"
    assert divergence_main([str(cfg), "--pairs", "3", "--out", str(out), "--window", "hann"]) == 0
    res = json.loads(out.read_text())
    assert res["n_pairs"] == 3 and len(res["layers"]) == 2 and res["settings"]["window"] == "hann"
    assert len(res["ratio"]) == 3 and "ratio" in capsys.readouterr().out
    assert divergence_main([str(tmp_path / "missing.yaml")]) == 2


def test_full_scale_configs_parse_and_rows_share_stage_b():
    import rskd_tutorial
    from rskd_tutorial.recipes.registry import load_config

    folder = Path(rskd_tutorial.__file__).parent / "configs" / "freqkd"
    cfgs = {p.stem: load_config(p) for p in sorted(folder.rglob("*.yaml"))}
    assert len(cfgs) >= 7 and all(r.name == "freqkd" for r, _ in cfgs.values())
    c = {k: v for k, (_, v) in cfgs.items()}
    kd = c["freqkd_kaist_vitb14_from_dinov2_vitb14"]
    assert kd.stage_a.loss.high_weight == 0.1 and kd.teacher.arch == "vit_base_patch14_dinov2"
    pairs = [("freqkd_kaist_vitb14_baseline", "freqkd_kaist_vitb14_from_dinov2_vitb14"),
             ("freqkd_kaist_vitb14_baseline", "freqkd_kaist_vitb14_mse_from_dinov2_vitb14"),
             ("freqkd_kaist_r50_baseline", "freqkd_kaist_r50_from_dinov2_vitb14"),
             ("freqkd_flir_vitb14_baseline", "freqkd_flir_vitb14_from_kaist")]
    for base, row in pairs:                      # stage B identical, only stage A differs
        assert c[base].stage_b == c[row].stage_b and c[base].student == c[row].student, (base, row)
        assert c[base].stage_a is None and c[base].stage_a_weights is None
    assert c["freqkd_kaist_vitb14_mse_from_dinov2_vitb14"].stage_a.loss.split == "none"
    assert c["freqkd_flir_vitb14_from_kaist"].stage_a_weights.startswith("runs/freqkd_kaist_vitb14_from_dinov2_vitb14/")
