"""rskd_tutorial: knowledge distillation for remote-sensing perception.

The package behind the RSKD Tutorial Book. Modules, and the chapter that teaches each:

* ``profile``   -- run profiles ci | cpu | gpu | t4 (every chapter)
* ``devices``   -- the device helper, the device check and the AMP dtype (every chapter)
* ``data``      -- synthetic scenes and dataset readers (every chapter)
* ``spectral``  -- Haar DWT, FFT bands, speckle metrics, band divergence (chapter 1)
* ``models``    -- detectors with feature taps, saliency nets, ViT taps (chapters 0, 4, 5)
* ``distill``   -- the Distiller and every KD loss (chapters 0, 2, 3, 4, 5)
* ``engine``    -- the one training loop and the evaluators (every chapter)
* ``recipes``   -- multi-stage procedures: teacher -> amplifier/assistant -> student
"""

__version__ = "0.1.0"
