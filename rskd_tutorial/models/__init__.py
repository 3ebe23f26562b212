"""Models with taps: detectors (torchvision), saliency nets, ViT feature taps."""

from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.models.utils import count_parameters, freeze, load_state_strict

__all__ = ["ModelOutput", "count_parameters", "freeze", "load_state_strict"]

# ViT trunks, simple feature pyramid, ViT detectors (chapter 4)
from rskd_tutorial.models.vit import (  # noqa: E402
    FeatureModel,
    SimpleFeaturePyramid,
    ViTTrunk,
    build_vit_detector,
    create_vit,
    load_vit_weights,
)
from rskd_tutorial.models.trunks import ResNetTrunk  # noqa: E402

__all__ += ["FeatureModel", "ResNetTrunk", "SimpleFeaturePyramid", "ViTTrunk", "build_vit_detector", "create_vit",
            "load_vit_weights"]

# salient-object-detection nets (chapter 5)
from rskd_tutorial.models.saliency import (  # noqa: E402
    SaliencyPSPNet,
    SaliencyTransformer,
    build_saliency_model,
)

__all__ += ["SaliencyPSPNet", "SaliencyTransformer", "build_saliency_model"]
