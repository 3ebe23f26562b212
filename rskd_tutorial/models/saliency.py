"""Salient-object-detection networks with taps: the PSPNet-style SOD net of SCRKD and a transformer variant.

Both follow the package's model contract ``forward(images, targets=None, *, taps_only=False) ->
ModelOutput`` (taught in chapter 5, ``book/05_scrkd_cascade.ipynb``):

* ``images`` ``[B, 3, s, s]`` in [0, 1] (normalised inside the model with the EORSSD statistics the
  official code uses for every dataset); ``targets`` the saliency mask ``[B, 1, m, m]`` in [0, 1]
  (any ``m``: :func:`sod_loss` resizes it to each head's size).
* ``losses``: ``{"loss_sod": sod_loss(...)}`` in training mode when ``targets`` are given.
* ``predictions``: the final logit map ``[B, 1, s, s]`` (head 1, up-sampled to the input size).
* ``taps``:

  - ``features``: ``OrderedDict(stage1=o_1, ..., stageN=o_N)`` -- the decoder's stage maps (before
    any disentanglement), what teachers hand to every feature loss and what the generic FitNet / AT
    baselines pair by name (``distill.baselines.paired_features`` resizes the student map to the
    teacher's; the official FitNet/AT baselines pair the same stage index in the same way);
  - ``logits``: list of the head logits up-sampled to the input size (5 deep-supervision heads for
    the PSPNet net, 1 for the transformer variant); ``stage_logits``: the same at their native size;
  - with ``disentangle=True`` (the SCRKD student, Sec. III-B): ``mvcd`` and ``msfd``
    (``OrderedDict`` per stage of the branch features distilled by MVCD and MSFD), ``aggregation``
    (the per-pixel weights ``w_1, w_2, w_3`` of Eq. 4) and ``own`` (the student's own branch);
  - ``input_size``: ``s``.

``taps_only`` is accepted and ignored: a saliency teacher's taps *are* its decoder maps and head
logits, so everything is computed either way (the predictions cost nothing extra).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rskd_tutorial.models.outputs import ModelOutput

__all__ = [
    "DEEP_SUPERVISION_WEIGHTS", "EORSSD_MEAN", "EORSSD_STD", "AdaptiveAggregation", "FeatureDisentangle",
    "PyramidPooling", "ResNetEncoder", "SaliencyPSPNet", "SaliencyTransformer", "build_saliency_model",
    "sod_loss", "structure_loss",
]

# the official code normalises every dataset with the EORSSD statistics
EORSSD_MEAN = (0.3412, 0.3798, 0.3583)
EORSSD_STD = (0.1148, 0.1042, 0.0990)
# deep-supervision weights of the official code (paper Eq. 2 says 1, 1/2, 1/4, 1/8, 1/16)
DEEP_SUPERVISION_WEIGHTS = (1.0, 1.0, 0.5, 0.25, 0.125)


def _up(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with ``align_corners=True``, as every SCRKD/PSPNet path does."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


# ------------------------------------------------------------------------------------------------
# the SOD loss (paper Eq. 2, official ``structure_loss``)
# ------------------------------------------------------------------------------------------------

def _mask_to(mask: Tensor, size: Sequence[int]) -> Tensor:
    mask = mask.float()
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    down = mask.shape[-1] > size[-1]
    return F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False, antialias=down).clamp(0, 1)


def structure_loss(logits: Tensor, mask: Tensor) -> Tensor:
    """BCE + soft IoU of one logit map against a (soft) mask of the same size (one term of paper Eq. 2):

    ``BCE_mean(z, Y) + mean_b [1 - (sum sigma(z) Y + 1) / (sum (sigma(z) + Y) - sum sigma(z) Y + 1)]``.

    Both terms are unweighted: the paper's "wIoU" is this plain soft IoU in the official code.
    """
    z, y = logits.float(), mask.float()
    bce = F.binary_cross_entropy_with_logits(z, y)
    p = torch.sigmoid(z)
    inter = (p * y).sum(dim=(2, 3))
    union = (p + y).sum(dim=(2, 3))
    iou = 1 - (inter + 1) / (union - inter + 1)
    return bce + iou.mean()


def sod_loss(logits: Tensor | Sequence[Tensor], mask: Tensor, weights: Sequence[float] | None = None) -> Tensor:
    """Deep-supervised SOD loss: ``sum_i w_i * structure_loss(z_i, Y)`` (paper Eq. 2).

    ``logits``: one map or a list (one per head); ``mask`` ``[B, 1, m, m]`` is resized to each map's
    size (antialiased bilinear when shrinking, the way PIL's bilinear makes the official LR labels).
    ``weights`` default: the official 1, 1, 1/2, 1/4, 1/8 for five heads, 1 for a single map.
    """
    maps = [logits] if torch.is_tensor(logits) else list(logits)
    if weights is None:
        weights = DEEP_SUPERVISION_WEIGHTS[: len(maps)] if len(maps) == len(DEEP_SUPERVISION_WEIGHTS) else (1.0,) * len(maps)
    if len(weights) != len(maps):
        raise ValueError(f"sod_loss: {len(maps)} logit maps but {len(weights)} weights")
    return torch.stack([w * structure_loss(z, _mask_to(mask, z.shape[-2:])) for w, z in zip(weights, maps)]).sum()


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------

def conv_bn_prelu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Conv(k x k) -> BN -> PReLU (the official ``CBP`` block)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.PReLU())


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module as the official code builds it: ``x = CBP_3x3(s_5)``; four
    branches pool ``x`` to 1, 2, 3, 6, apply Conv1x1-BN-PReLU and are up-sampled back; their
    concatenation (``x`` itself is *not* included) goes through Conv1x1-BN-PReLU."""

    def __init__(self, in_channels: int, channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.down = conv_bn_prelu(in_channels, channels, 3)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_prelu(channels, channels, 1)) for b in bins)
        self.fuse = conv_bn_prelu(len(bins) * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return self.fuse(torch.cat([_up(b(x), x.shape[-2:]) for b in self.branches], dim=1))


class FuseBlock(nn.Module):
    """Top-down fusion: ``ReLU(BN(Conv3x3([skip, top])))``."""

    def __init__(self, skip_channels: int, top_channels: int, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(skip_channels + top_channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, skip: Tensor, top: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(torch.cat([skip, _up(top, skip.shape[-2:])], dim=1))))


class SODHead(nn.Module):
    """Saliency head: Conv3x3 c->c/2 -> BN -> Conv3x3 c/2->c/4 -> BN -> Conv3x3 ->1 (linear, as in
    the official code; 256 -> 128 -> 64 -> 1 at full width)."""

    def __init__(self, channels: int):
        super().__init__()
        c2, c4 = max(channels // 2, 1), max(channels // 4, 1)
        self.process = nn.Sequential(
            nn.Conv2d(channels, c2, 3, padding=1), nn.BatchNorm2d(c2),
            nn.Conv2d(c2, c4, 3, padding=1), nn.BatchNorm2d(c4),
            nn.Conv2d(c4, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.process(x)


class FeatureDisentangle(nn.Module):
    """Feature disentanglement (paper Eq. 3): three parallel Conv3x3-BN-PReLU branches give the
    student's own feature ``f'``, the MVCD feature ``f_mv`` and the MSFD feature ``f_ms``."""

    def __init__(self, channels: int):
        super().__init__()
        self.own = conv_bn_prelu(channels, channels)
        self.mvcd = conv_bn_prelu(channels, channels)
        self.msfd = conv_bn_prelu(channels, channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.own(x), self.mvcd(x), self.msfd(x)


class AdaptiveAggregation(nn.Module):
    """Adaptive aggregation (paper Eqs. 4-5 as coded): ``w = sigmoid(Conv1x1([f', f_mv, f_ms]))``
    (three per-pixel weights; the paper writes a 3x3 conv), ``o_hat = BN(Conv3x3(w1 f' + w2 f_mv +
    w3 f_ms))`` (no bias). Returns ``(o_hat, w)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Conv2d(3 * channels, 3, 1)
        self.fusion = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, own: Tensor, mv: Tensor, ms: Tensor) -> tuple[Tensor, Tensor]:
        w = torch.sigmoid(self.attention(torch.cat([own, mv, ms], dim=1)))
        fused = own * w[:, 0:1] + mv * w[:, 1:2] + ms * w[:, 2:3]
        return self.fusion(fused), w


def init_official_weights(module: nn.Module, skip: tuple[type, ...] = ()) -> None:
    """Kaiming-normal (fan-in, ReLU gain) convs with zero bias, BN weight 1 / bias 0, as the official
    ``weight_init``; modules of a type in ``skip`` keep PyTorch's default init (the official init
    never descends into ``DecoupledConvolution``)."""
    for m in module.children():
        if isinstance(m, skip):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        else:
            init_official_weights(m, skip)


class _Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


# ------------------------------------------------------------------------------------------------
# encoders
# ------------------------------------------------------------------------------------------------

class ResNetEncoder(nn.Module):
    """torchvision ResNet as a five-stage encoder (no dilation): ``s_1`` = ReLU(BN(conv7x7/2))
    (stride 2), ``s_2`` = layer1 after the 3x3/2 max-pool (4), ``s_3..s_5`` = layer2..4 (8, 16, 32).

    ``pretrained``: a local torchvision checkpoint (``resnet50-0676ba61.pth``: the weights the
    official code downloads as ``resnet50-19c8e357.pth``; see ``models.pretrained``) loaded strictly except for the classifier ``fc.*``; nothing is
    downloaded (the official code's bare ``try/except`` silently trains from scratch when its
    download fails -- here a missing file is an error).
    """

    DEPTHS = ("resnet18", "resnet34", "resnet50", "resnet101")

    def __init__(self, depth: str = "resnet50", pretrained: str | os.PathLike | None = None):
        super().__init__()
        import torchvision

        if depth not in self.DEPTHS:
            raise ValueError(f"ResNetEncoder: unknown depth {depth!r}; choose one of {self.DEPTHS}")
        net = getattr(torchvision.models, depth)(weights=None)
        if pretrained is not None:
            self.load_torchvision(net, pretrained, depth)
        self.conv1, self.bn1, self.maxpool = net.conv1, net.bn1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        w = 4 if depth in ("resnet50", "resnet101") else 1
        self.channels = (64, 64 * w, 128 * w, 256 * w, 512 * w)

    @staticmethod
    def load_torchvision(net: nn.Module, path: str | os.PathLike, backbone: str = "resnet") -> None:
        """Load a local torchvision ImageNet file into ``net``; errors name the file expected for ``backbone``
        (``models.pretrained``)."""
        from rskd_tutorial.models.pretrained import mismatch_message, missing_weights_message
        from rskd_tutorial.models.utils import CheckpointError, read_checkpoint

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(missing_weights_message(backbone, path))
        state = read_checkpoint(path)
        state = state.get("state_dict", state.get("model", state))
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise CheckpointError(mismatch_message(backbone, path, missing, unexpected))

    def forward(self, x: Tensor) -> list[Tensor]:
        s1 = F.relu(self.bn1(self.conv1(x)))
        s2 = self.layer1(self.maxpool(s1))
        s3 = self.layer2(s2)
        s4 = self.layer3(s3)
        return [s1, s2, s3, s4, self.layer4(s4)]


class TimmEncoder(nn.Module):
    """A timm ``features_only`` network as a five-stage encoder at strides 2, 4, 8, 16, 32 (random init):
    the tutorial scale's small saliency encoders (e.g. ``regnetx_002``), in :class:`ResNetEncoder`'s shape."""

    def __init__(self, name: str):
        super().__init__()
        from rskd_tutorial.models.backbones import timm_features

        self.body = timm_features(name, (2, 4, 8, 16, 32))
        self.channels = tuple(self.body.feature_info.channels())

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


def saliency_encoder(backbone: str, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """:class:`ResNetEncoder` for a torchvision ResNet name, else :class:`TimmEncoder` (no pretrained file)."""
    if backbone in ResNetEncoder.DEPTHS:
        return ResNetEncoder(backbone, pretrained)
    if pretrained is not None:
        raise ValueError(f"the timm encoder {backbone!r} trains from scratch here; pretrained_backbone is for ResNets")
    return TimmEncoder(backbone)


# ------------------------------------------------------------------------------------------------
# the networks
# ------------------------------------------------------------------------------------------------

class _SaliencyNet(nn.Module):
    """What both networks share: normalisation, disentangle/aggregate per stage, the output contract."""

    n_stages: int

    def _build_disentangle(self, channels: int, disentangle: bool) -> None:
        self.disentangle = disentangle
        if disentangle:
            self.branches = nn.ModuleList(FeatureDisentangle(channels) for _ in range(self.n_stages))
            self.aggregate = nn.ModuleList(AdaptiveAggregation(channels) for _ in range(self.n_stages))

    def _disentangle(self, feats: list[Tensor], taps: dict) -> list[Tensor]:
        """Per stage: three branches -> aggregated map for the head (the decoder keeps ``feats``)."""
        if not self.disentangle:
            return feats
        names = [f"stage{k + 1}" for k in range(self.n_stages)]
        own, mv, ms, weights, out = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict(), []
        for name, f, branch, agg in zip(names, feats, self.branches, self.aggregate):
            own[name], mv[name], ms[name] = branch(f)
            fused, weights[name] = agg(own[name], mv[name], ms[name])
            out.append(fused)
        taps.update(own=own, mvcd=mv, msfd=ms, aggregation=weights)
        return out

    def _output(self, images: Tensor, targets: Tensor | None, feats: list[Tensor], stage_logits: list[Tensor],
                taps: dict) -> ModelOutput:
        size = images.shape[-2:]
        logits = [_up(z, size) for z in stage_logits]
        taps.update(features=OrderedDict((f"stage{k + 1}", f) for k, f in enumerate(feats)),
                    logits=logits, stage_logits=stage_logits, input_size=int(size[-1]))
        losses = {}
        if self.training and targets is not None:
            losses["loss_sod"] = sod_loss(logits, targets, self.ds_weights)
        return ModelOutput(losses=losses, taps=taps, predictions=logits[0])


class SaliencyPSPNet(_SaliencyNet):
    """The PSPNet-style SOD network of SCRKD (official ``model/pspnet.py``; paper Fig. 2; chapter 5).

    ResNet encoder (five stages) -> PPM on ``s_5`` -> top-down FuseBlocks ``o_5 = Fuse(s_5, PPM)``,
    ``o_k = Fuse(s_k, Up(o_{k+1}))`` -> five deeply supervised heads. With ``disentangle=True`` (the
    SCRKD student) every ``o_k`` is split into three branches and re-aggregated before its head
    (Sec. III-B); the top-down path keeps the original ``o_k``.

    Args:
        backbone: ``resnet18 | resnet34 | resnet50 | resnet101`` (the paper: resnet50).
        channels: decoder width (the paper: 256); heads narrow to ``channels/2``, ``channels/4``.
        disentangle: add the feature-disentanglement branches and the adaptive aggregation.
        pretrained_backbone: local torchvision ResNet checkpoint (see :class:`ResNetEncoder`).
        ds_weights: deep-supervision weights of :func:`sod_loss`.

    Stage sizes for input ``s``: ``o_1..o_5`` = ``s/2, s/4, s/8, s/16, s/32`` (rounded up).
    """

    n_stages = 5

    def __init__(self, backbone: str = "resnet50", channels: int = 256, *, disentangle: bool = False,
                 pretrained_backbone: str | os.PathLike | None = None, bins: Sequence[int] = (1, 2, 3, 6),
                 ds_weights: Sequence[float] = DEEP_SUPERVISION_WEIGHTS,
                 mean: Sequence[float] = EORSSD_MEAN, std: Sequence[float] = EORSSD_STD):
        super().__init__()
        self.backbone_name, self.channels = backbone, channels
        self.ds_weights = tuple(ds_weights)
        self.normalize = _Normalize(mean, std)
        self.encoder = saliency_encoder(backbone, pretrained_backbone)
        enc = self.encoder.channels
        self.ppm = PyramidPooling(enc[4], channels, bins)
        self.fuse = nn.ModuleList(FuseBlock(enc[k], channels, channels) for k in range(5))
        self.heads = nn.ModuleList(SODHead(channels) for _ in range(5))
        self._build_disentangle(channels, disentangle)
        # official init: everything but the encoder (torchvision's own init or the pretrained file)
        # and the three disentangle branches (PyTorch default init, as in the official code)
        init_official_weights(self, skip=(ResNetEncoder, FeatureDisentangle))

    def forward(self, images: Tensor, targets: Tensor | None = None, *, taps_only: bool = False) -> ModelOutput:
        s = self.encoder(self.normalize(images))
        top = self.ppm(s[4])
        feats: list[Tensor] = [None] * 5  # type: ignore[list-item]
        for k in range(4, -1, -1):
            top = feats[k] = self.fuse[k](s[k], top)
        taps: dict = {}
        head_in = self._disentangle(feats, taps)
        stage_logits = [head(f) for head, f in zip(self.heads, head_in)]
        return self._output(images, targets, feats, stage_logits, taps)


class SaliencyTransformer(_SaliencyNet):
    """A SegFormer-style SOD net on a timm PVTv2 encoder (PVTv2-B1 is the closest timm relative of
    SegFormer's MiT-B1), to show SCRKD is model-agnostic (the paper's SegFormer-B1 rows, Table III).

    As in the official SegFormer baseline the first patch embedding has stride 2 (not 4), so the four
    stages sit at strides 2, 4, 8, 16; an all-MLP decoder projects each to ``channels`` (1x1 conv)
    and up-samples it to the stage-1 size (``align_corners=False`` as SegFormer does) -- these four
    maps are the ``features`` taps -- then fuses them (Conv1x1-BN-ReLU) and predicts one map, up-sampled
    x2 to the input size. ``disentangle=True`` splits and re-aggregates each projected map before the fuse.
    Random initialisation (no hub download).
    """

    n_stages = 4

    def __init__(self, backbone: str = "pvt_v2_b1", channels: int = 256, *, disentangle: bool = False,
                 first_stride: int = 2, mean: Sequence[float] = EORSSD_MEAN, std: Sequence[float] = EORSSD_STD):
        super().__init__()
        import timm

        self.backbone_name, self.channels = backbone, channels
        self.ds_weights = (1.0,)
        self.normalize = _Normalize(mean, std)
        self.encoder = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
        embed = self.encoder.patch_embed.proj
        embed.stride = (first_stride, first_stride)
        self.project = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.encoder.feature_info.channels())
        self.fuse = nn.Sequential(nn.Conv2d(4 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.predict = nn.Conv2d(channels, 1, 1)
        self._build_disentangle(channels, disentangle)

    def forward(self, images: Tensor, targets: Tensor | None = None, *, taps_only: bool = False) -> ModelOutput:
        c = self.encoder(self.normalize(images))
        size = c[0].shape[-2:]
        feats = [F.interpolate(p(x), size=size, mode="bilinear", align_corners=False) if x.shape[-2:] != size else p(x)
                 for p, x in zip(self.project, c)]
        taps: dict = {}
        head_in = self._disentangle(feats, taps)
        logit = self.predict(self.fuse(torch.cat(head_in[::-1], dim=1)))
        return self._output(images, targets, feats, [logit], taps)


def build_saliency_model(arch: str = "pspnet", backbone: str = "resnet50", channels: int = 256, *,
                         disentangle: bool = False, pretrained_backbone: str | os.PathLike | None = None) -> nn.Module:
    """``pspnet`` -> :class:`SaliencyPSPNet`, ``transformer`` -> :class:`SaliencyTransformer` (timm name as ``backbone``)."""
    if arch == "pspnet":
        return SaliencyPSPNet(backbone, channels, disentangle=disentangle, pretrained_backbone=pretrained_backbone)
    if arch == "transformer":
        if pretrained_backbone is not None:
            raise ValueError("the transformer variant takes no pretrained_backbone file (random init)")
        return SaliencyTransformer(backbone, channels, disentangle=disentangle)
    raise ValueError(f"unknown saliency architecture {arch!r}; choose 'pspnet' or 'transformer'")
