"""Measuring what a model does: image metrics and FID (metrics.py, features.py), the Shapes judge (judge.py: a
small CNN that reads every attribute of a scene), prompt / class / layout accuracy, Shapes-FID and per-shape
fidelity of the first stage (accuracy.py), probes that look inside a model (probes.py), and the diffusion process
against its closed forms (process.py)."""

from .accuracy import class_accuracy, layout_accuracy, prompt_accuracy, shapes_features, shapes_generative_metrics
from .judge import load_evaluator
from .metrics import (fid_from_features, latent_statistics, log_spectrum_distance, lpips, precision_recall, psnr,
                      radial_power_spectrum, ssim)
from .probes import attention_mass, layer_shapes, object_mask, word_attention_maps, word_influence
from .process import (chain_moments, ideal_observer_accuracy, inversion_error, iterate_chain, loss_by_timestep,
                      moment_z_scores, target_coefficients, timestep_at_snr, x0_error_gain)

__all__ = ["class_accuracy", "layout_accuracy", "prompt_accuracy", "shapes_features", "shapes_generative_metrics",
           "load_evaluator", "fid_from_features", "latent_statistics", "log_spectrum_distance", "lpips",
           "precision_recall", "psnr", "radial_power_spectrum", "ssim", "attention_mass", "object_mask",
           "word_attention_maps", "word_influence", "layer_shapes",
           "chain_moments", "iterate_chain", "moment_z_scores", "timestep_at_snr", "ideal_observer_accuracy",
           "target_coefficients", "x0_error_gain", "loss_by_timestep", "inversion_error"]
