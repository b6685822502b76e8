"""Measuring what a model does: image metrics and FID (metrics.py, features.py), the Shapes judge (judge.py: a
small CNN that reads every attribute of a scene), prompt / class / layout accuracy and Shapes-FID (accuracy.py),
per-shape fidelity (fidelity.py), and probes that look inside a model (probes.py)."""

from .accuracy import class_accuracy, layout_accuracy, prompt_accuracy, shapes_features, shapes_generative_metrics
from .judge import load_evaluator
from .metrics import (
                      fid_from_features,
                      latent_statistics,
                      log_spectrum_distance,
                      lpips,
                      precision_recall,
                      psnr,
                      radial_power_spectrum,
                      ssim,
)
from .probes import attention_mass, object_mask, word_attention_maps, word_influence

__all__ = ["class_accuracy", "layout_accuracy", "prompt_accuracy", "shapes_features", "shapes_generative_metrics",
           "load_evaluator", "fid_from_features", "latent_statistics", "log_spectrum_distance", "lpips",
           "precision_recall", "psnr", "radial_power_spectrum", "ssim", "attention_mass", "object_mask",
           "word_attention_maps", "word_influence"]
