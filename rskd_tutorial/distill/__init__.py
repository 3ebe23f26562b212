"""Distillation: the Distiller and every KD loss of the book (one home per loss)."""

from rskd_tutorial.distill.base import DistillationCheckError, Distiller, student_loss
from rskd_tutorial.distill.baselines import (
    ATLoss,
    CWDLoss,
    FGDLoss,
    FitNetLoss,
    LogitKDLoss,
    MGDLoss,
    PKDLoss,
    paired_features,
)
from rskd_tutorial.distill.masks import attention_maps, box_scale_masks

__all__ = [
    "student_loss",
    "ATLoss", "CWDLoss", "DistillationCheckError", "Distiller", "FGDLoss", "FitNetLoss", "LogitKDLoss",
    "MGDLoss", "PKDLoss", "attention_maps", "box_scale_masks", "paired_features",
]

# FreqKD (chapter 4)
from rskd_tutorial.distill.freqkd import FreqKDLoss, band_split, freqkd_loss, signed_log1p  # noqa: E402

__all__ += ["FreqKDLoss", "band_split", "freqkd_loss", "signed_log1p"]

# DS2D2 (chapter 2)
from rskd_tutorial.distill.ds2d2 import (  # noqa: E402
    DS2D2ExplicitLoss,
    DS2D2FasterRCNNImplicitLoss,
    DS2D2RetinaNetImplicitLoss,
    DS2D2Weights,
    disw,
    ds2d2_losses,
)

__all__ += ["DS2D2ExplicitLoss", "DS2D2FasterRCNNImplicitLoss", "DS2D2RetinaNetImplicitLoss", "DS2D2Weights",
            "disw", "ds2d2_losses"]

# SCRKD (chapter 5)
from rskd_tutorial.distill.scrkd import (  # noqa: E402
    DSDLoss,
    MultiScaleFeatureDistillation,
    MVCDLoss,
    SCRKDCoefficients,
    dsd_loss,
    hcl_loss,
    mvcd_loss,
    scrkd_losses,
    sod_loss,
    stage_matching,
)

__all__ += ["DSDLoss", "MVCDLoss", "MultiScaleFeatureDistillation", "SCRKDCoefficients", "dsd_loss", "hcl_loss",
            "mvcd_loss", "scrkd_losses", "sod_loss", "stage_matching"]

# DIPKD (chapter 3)
from rskd_tutorial.distill.dipkd import (  # noqa: E402
    DIPKDConfig,
    DIPKDLoss,
    ReverseInformationTransfer,
    SelectiveNoiseSuppression,
    dipkd_loss,
    kld_masks,
)

__all__ += ["DIPKDConfig", "DIPKDLoss", "ReverseInformationTransfer", "SelectiveNoiseSuppression", "dipkd_loss",
            "kld_masks"]
