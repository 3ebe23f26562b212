"""rskd_tutorial.data: synthetic scenes, dataset readers, paired transforms (every chapter).

* ``CocoDetection`` -- COCO json + images (DIOR, DOTA, SSDD, HRSID, KAIST, FLIR, synthetic scenes)
* ``SaliencyFolder`` -- image/mask folders at several resolutions (ORSSD, EORSSD, ORSI-4199, synthetic)
* transforms that keep boxes and masks consistent: ``Compose``, ``RandomHorizontalFlip``,
  ``RandomVerticalFlip``, ``Resize``, ``RandomCrop``
* ``sliding_windows`` / ``merge_window_detections`` -- DOTA-style large-image inference
* ``synthetic`` -- the scene generators and ``write_scenes`` (chapters call it every run: it is
  idempotent)
* ``convert`` -- shared code of the real-dataset converters in ``data_scripts/``

Missing roots raise :class:`DatasetNotFoundError` (says how to prepare the dataset); malformed files
raise :class:`DatasetFormatError` (names the file and the defect).
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports resolve lazily (PEP 562), so ``data_scripts`` and the scene generators, which need only
# numpy and PIL, do not pay for importing torch.
_EXPORTS = {
    "CocoDetection": ".coco", "collate_detection": ".coco", "load_image": ".coco",
    "DatasetFormatError": ".errors", "DatasetNotFoundError": ".errors",
    "SaliencyFolder": ".saliency", "collate_saliency": ".saliency",
    "Compose": ".transforms", "RandomCrop": ".transforms", "RandomHorizontalFlip": ".transforms",
    "RandomVerticalFlip": ".transforms", "Resize": ".transforms",
    "merge_window_detections": ".windows", "sliding_windows": ".windows",
    "OPTICAL_CLASSES": ".synthetic", "RGBIR_CLASSES": ".synthetic", "SAR_CLASSES": ".synthetic",
    "optical_scene": ".synthetic", "plot_scenes": ".synthetic", "rgbir_scene": ".synthetic",
    "saliency_scene": ".synthetic", "sar_scene": ".synthetic", "synth_main": ".synthetic",
    "write_scenes": ".synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
