"""FreqKD's procedures: the RGB -> IR divergence study and the two-stage distillation recipe.

The abstract (FreqKD, 2026) fixes the loss structure; the procedure around it is **our
reconstruction** (no code or full text is public):

* **Stage A** -- feature distillation on paired frames: a frozen RGB teacher sees the RGB frame, the
  student the paired infrared frame (replicated to 3 channels, ImageNet statistics), with the same
  geometric augmentation on both; the only objective is the KD term
  (:class:`~rskd_tutorial.distill.freqkd.FreqKDLoss`; ``split="none"`` gives the plain full-band MSE
  control row).
* **Stage B** -- detection fine-tuning on IR only: the stage-A trunk (or the un-distilled one, the
  baseline) gets a ViTDet simple pyramid and a RetinaNet / Faster R-CNN head -- new at full scale
  (DINOv2 has none), the teacher detector's at tutorial scale (:func:`tutorial_student`) -- trained
  identically for every row.
* **Divergence study** -- a frozen trunk's features on the RGB and the IR frame of the same scenes,
  per block and band, with bootstrap CIs and the high/low ratio (the abstract reports 2.4x on 500 pairs);
  ``rskd divergence``.

Two layers, as for the other methods:

* **Full scale** -- the ``freqkd`` recipe (``rskd train rskd_tutorial/configs/freqkd/...``): DINOv2
  ViT-B/14 teacher and student from a local weights file on KAIST / FLIR ADAS, or a ResNet-50
  student; ``stage_a: null`` is the DINOv2 baseline; ``stage_a_weights`` fine-tunes a finished stage-A
  student on another dataset (the FLIR transfer row). :func:`divergence_main` is ``rskd divergence``.
* **Tutorial scale** -- :func:`rgb_teacher` (a small CNN detector trained from scratch on synthetic RGB
  scenes and shipped with the package: our stand-in for the RGB foundation model),
  :func:`tutorial_student` (stage A + B of one table row, evaluated on the IR test and validation
  pairs) and :func:`tutorial_divergence`, sized by ``profile.crossmodal`` and cached.

Taught in chapter 4 (``book/04_freqkd_divergence.ipynb``).

The package's modules: :mod:`.config` (the recipe's dataclasses), :mod:`.data` (paired frames),
:mod:`.models` (trunks and detectors around them), :mod:`.stages` (A and B), :mod:`.study` (the
divergence study), :mod:`.recipe` (full scale) and :mod:`.tutorial` (chapter 4's scale).
"""

from __future__ import annotations

from rskd_tutorial.recipes.freqkd.config import (BackboneSpec, DivergenceSpec, FreqKDRun, HeadSpec, LossSpec,
                                                 PairedData, StageA, StageB)
from rskd_tutorial.recipes.freqkd.data import ModalityView, collate_pairs, ir_splits, paired_splits
from rskd_tutorial.recipes.freqkd.models import (build_trunk, copy_head, detector_from_trunk, detector_trunk, make_loss,
                                                 student_trunk_state)
from rskd_tutorial.recipes.freqkd.recipe import divergence_main, evaluate_freqkd, train_freqkd
from rskd_tutorial.recipes.freqkd.stages import stage_a, stage_a_distiller, stage_b, stage_b_params
from rskd_tutorial.recipes.freqkd.study import divergence_study
from rskd_tutorial.recipes.freqkd.tutorial import (COMPARISON, VAL_PREFIX, chosen_on_val, eval_splits, grid_specs,
                                                   paired_data, rgb_teacher, rgb_teacher_setup, run_name,
                                                   stage_a_trunk, stage_train_config, tutorial_backbone,
                                                   tutorial_divergence, tutorial_head, tutorial_roots, tutorial_rows,
                                                   tutorial_student)

__all__ = ["BackboneSpec", "DivergenceSpec", "FreqKDRun", "HeadSpec", "LossSpec", "PairedData", "StageA", "StageB",
           "ModalityView", "collate_pairs", "ir_splits", "paired_splits", "build_trunk", "copy_head",
           "detector_from_trunk", "detector_trunk", "make_loss", "student_trunk_state", "divergence_main",
           "evaluate_freqkd", "train_freqkd", "stage_a", "stage_a_distiller", "stage_b", "stage_b_params",
           "divergence_study", "tutorial_backbone", "tutorial_divergence", "tutorial_head", "tutorial_roots",
           "tutorial_student", "tutorial_rows", "COMPARISON", "grid_specs", "run_name", "chosen_on_val", "stage_a_trunk",
           "rgb_teacher", "rgb_teacher_setup", "stage_train_config", "VAL_PREFIX", "eval_splits", "paired_data"]
