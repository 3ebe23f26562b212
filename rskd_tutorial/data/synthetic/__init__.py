"""Synthetic remote-sensing scenes, deterministic by seed, written in the real datasets' formats.

Four kinds, one module each (the module docstrings describe the physics each imitates):

* ``optical``  -- DIOR-like optical scenes: dense small vehicles/ships/airplanes/tanks/buildings
* ``sar``      -- SSDD-like SAR ship scenes: sea clutter, sinc sidelobes, Gamma speckle with L looks
* ``rgbir``    -- KAIST-like pixel-aligned RGB / thermal-IR pairs with shared person/vehicle boxes
* ``saliency`` -- ORSSD-like salient objects with masks, rendered natively at any resolution

In-memory renderers: :func:`optical_scene`, :func:`sar_scene`, :func:`rgbir_scene`,
:func:`saliency_scene`; on disk: :func:`write_scenes` (and the CLI :func:`synth_main`); figures:
:func:`plot_scenes`.
"""

from ._common import image_seed
from .optical import OPTICAL_CLASSES, optical_scene
from .plot import plot_optical, plot_rgbir, plot_saliency, plot_sar, plot_scenes
from .rgbir import RGBIR_CLASSES, rgbir_scene
from .saliency import SaliencySceneSpec, saliency_scene
from .sar import SAR_AMPLITUDE_GAIN, SAR_CLASSES, gamma_speckle, sar_scene, sar_to_uint8
from .writer import KINDS, MANIFEST, SPLIT_CODES, eval_split, render_scene, split_seeds, synth_main, third_split, write_scenes

__all__ = [
    "KINDS", "MANIFEST", "OPTICAL_CLASSES", "RGBIR_CLASSES", "SAR_AMPLITUDE_GAIN", "SAR_CLASSES",
    "SaliencySceneSpec", "eval_split", "gamma_speckle", "image_seed", "optical_scene", "plot_optical",
    "plot_rgbir", "plot_saliency", "plot_sar", "plot_scenes", "render_scene", "rgbir_scene",
    "saliency_scene", "sar_scene", "sar_to_uint8", "synth_main", "write_scenes", "SPLIT_CODES", "split_seeds",
    "third_split",
]
