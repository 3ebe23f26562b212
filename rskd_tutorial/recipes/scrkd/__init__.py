"""SCRKD's procedures: SOD teachers, cross-resolution distillation, and the two-stage cascade.

Two layers, as for detection (``recipes/detection.py``):

* **Full scale** -- three registered recipes for ``rskd train CONFIG``
  (``rskd_tutorial/configs/scrkd/``): ``sod_model`` trains one SOD net at one resolution (a teacher,
  or the "Student" baseline row); ``scrkd`` distils a trained teacher into a lower-resolution student
  (any subset of MVCD / MSFD / DSD); ``scrkd_cascade`` runs teacher -> assistant -> student
  (paper Sec. III-F, Fig. 3).
* **Tutorial scale** -- :func:`saliency_root`, :func:`tutorial_sod_model`, :func:`tutorial_distill`
  and :func:`tutorial_cascade` size everything from the run profile and cache every run, so
  chapter 5 trains (or reloads) each row of its table in a line.

:func:`cascade` is the procedure itself: stage 1 distils the high-resolution teacher into an
assistant at the intermediate resolution, stage 2 uses that trained assistant -- frozen, in eval mode
-- as the teacher of the low-resolution student. Every stage trains through ``engine.fit`` with a
:class:`~rskd_tutorial.distill.base.Distiller`, which keeps the teacher in eval mode whatever
``train()`` is called (the official code's per-epoch ``net.train()`` puts its teacher's BatchNorm
in training mode -- a defect we do not copy).

The package's modules: :mod:`.config` (the recipes' dataclasses), :mod:`.stages` (data, nets, one
stage's Distiller, the cascade), :mod:`.recipe` (full scale) and :mod:`.tutorial` (chapter 5's scale).
"""

from __future__ import annotations

from rskd_tutorial.recipes.scrkd.config import (METRIC_KEYS, CascadeRun, SaliencyData, SaliencyModelSpec, SCRKDRun,
                                                SODRun)
from rskd_tutorial.recipes.scrkd.recipe import (evaluate_cascade, evaluate_scrkd, evaluate_sod, train_cascade, train_scrkd,
                                                train_sod)
from rskd_tutorial.recipes.scrkd.stages import (CascadeResult, build_model, cached_sod_metrics, cascade, saliency_collate,
                                                saliency_splits, scalar_metrics, scrkd_distiller,
                                                sod_evaluation)
from rskd_tutorial.recipes.scrkd.tutorial import (COMPARISON, baseline_terms, saliency_root, saliency_spec,
                                                  saliency_train_config, sod_setup, tutorial_cascade, tutorial_comparison,
                                                  tutorial_distill, tutorial_sod_model)

__all__ = ["METRIC_KEYS", "CascadeRun", "SaliencyData", "SaliencyModelSpec", "SCRKDRun", "SODRun", "evaluate_cascade",
           "evaluate_scrkd", "evaluate_sod", "train_cascade", "train_scrkd", "train_sod", "CascadeResult", "build_model",
           "cached_sod_metrics", "cascade", "saliency_collate", "saliency_splits", "scalar_metrics", "scrkd_distiller", "sod_evaluation",
           "COMPARISON", "baseline_terms", "saliency_root", "saliency_spec", "saliency_train_config", "sod_setup",
           "tutorial_cascade", "tutorial_comparison", "tutorial_distill", "tutorial_sod_model"]
