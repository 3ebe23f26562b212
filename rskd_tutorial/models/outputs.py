"""The one output type every model of the package returns, so a distillation loss never re-runs a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class ModelOutput:
    """What a model call returns.

    * ``losses``: the model's own supervised losses by name (training mode with targets; keys start
      with ``loss``), empty otherwise. ``engine.fit`` sums every entry whose key starts with ``loss``.
    * ``taps``: intermediate tensors a distillation loss needs (features per level, head outputs,
      image sizes ...), named per model family; see each model's docstring.
    * ``predictions``: the model's inference output (detections, saliency logits ...), or ``None``
      when it was not computed (``taps_only=True``).
    """

    losses: dict[str, Tensor] = field(default_factory=dict)
    taps: dict[str, Any] = field(default_factory=dict)
    predictions: Any = None
