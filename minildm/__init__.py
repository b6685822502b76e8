"""minildm: a compact, readable Latent Diffusion Model (Rombach et al., CVPR 2022).

One file per idea of the paper, data flowing one way:

    data          shapes.py (the Shapes world), tokenizer.py, data.py (datasets), realdata.py (folders, MNIST)
    stage 1       nn.py (blocks, attention), autoencoder.py (E, D, KL / VQ / pixel), losses.py (LPIPS, GAN)
    stage 2       diffusion.py (q(x_t|x_0), targets, L_simple), unet.py, conditioning.py (τθ),
                  samplers.py (DDPM, DDIM, guidance), ldm.py (LatentDiffusion)
    training      train.py (both stages' steps), loop.py (the loop they share), profiles.py (ci / cpu / gpu presets),
                  speed.py (bf16, compile, time caps), distributed.py (torchrun + DDP)
    evaluation    metrics.py (PSNR, SSIM, LPIPS, spectra, FID, KID, P/R, IS), evaluator.py (the Shapes evaluator),
                  shapes_eval.py (Shapes-FID with its floor, prompt accuracy), probes.py (attention maps, word
                  influence), shape_fidelity.py (small shapes), features.py (FID on other data), viz.py
                  (pictures), widgets.py (sliders and a prompt box)
    studies       experiments.py (the paper's experiments), results.py (tables), bench.py / peer.py / flops.py
                  (speed, FLOPs, the gpu profile's predicted time)
    the course    course.py (setup, claims, exercise checks, models handed from notebook to notebook),
                  course_run.py (`minildm course`, `minildm check`), student.py (the student edition),
                  pretrained.py (the shipped checkpoints); commands.py and cli.py: the `minildm` command

A notebook needs only `import minildm` (or `from minildm import …`): the names below are the public API,
and each module's own `__all__` lists the rest of what it offers.
"""

__version__ = "0.2.0"

from . import (autoencoder, checkpoint, conditioning, course, data, diffusion, evaluator, experiments, ldm,  # noqa: E402
               losses, metrics, nn, probes, profiles, realdata, results, samplers, shapes, shapes_eval, tokenizer,
               train, unet, utils, viz, widgets)
from .autoencoder import (AEConfig, AutoencoderKL, AutoencoderVQ, DiagonalGaussian, PixelSpace,  # noqa: E402
                          build_autoencoder, load_autoencoder, reconstruct)
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .conditioning import ClassEmbedder, LayoutEncoder, LowResConcat, TextEncoder  # noqa: E402
from .data import DataConfig, ShapesDataset  # noqa: E402
from .diffusion import GaussianDiffusion, make_beta_schedule  # noqa: E402
from .evaluator import load_evaluator  # noqa: E402
from .ldm import LatentDiffusion, LDMConfig  # noqa: E402
from .losses import LPIPS, AutoencoderLoss, NLayerDiscriminator, adaptive_weight, hinge_d_loss  # noqa: E402
from .course import check_answer, setup  # noqa: E402
from .metrics import (fid_from_features, latent_statistics, log_spectrum_distance, lpips, precision_recall,  # noqa: E402
                      psnr, radial_power_spectrum, ssim)
from .nn import (EMA, CrossAttention, attention_explicit, attention_sdpa, layer_shapes, record_attention,  # noqa: E402
                 timestep_embedding)
from .profiles import PROFILES, Profile, get_profile  # noqa: E402
from .realdata import MNIST, ImageFolderDataset  # noqa: E402
from .samplers import (ddim_invert, ddim_sample, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step,  # noqa: E402
                       guided_model_output, img2img)
from .shapes import (NUM_CLASSES, ShapesTokenizer, class_id, class_name, parse_caption, parse_layout,  # noqa: E402
                     render_scenes, sample_scene, scene_from_caption)
from .probes import attention_mass, object_mask, word_attention_maps, word_influence  # noqa: E402
from .shapes_eval import (class_accuracy, layout_accuracy, prompt_accuracy, shapes_features,  # noqa: E402
                          shapes_generative_metrics)
from .tokenizer import WordTokenizer  # noqa: E402
from .train import fit, train_autoencoder, train_ldm  # noqa: E402
from .unet import UNet  # noqa: E402
from .utils import count_parameters, get_device, seed_everything, slerp  # noqa: E402
from .viz import attention_overlay, denoising_filmstrip, image_grid, latent_grid, save_figure  # noqa: E402

__all__ = [
    # modules
    "autoencoder", "checkpoint", "conditioning", "course", "data", "diffusion", "evaluator", "experiments", "ldm",
    "losses", "metrics", "nn", "probes", "profiles", "realdata", "results", "samplers", "shapes", "shapes_eval",
    "tokenizer", "train", "unet", "utils", "viz", "widgets",
    # the names a notebook reaches for first
    "AEConfig", "AutoencoderKL", "AutoencoderVQ", "DiagonalGaussian", "PixelSpace", "build_autoencoder",
    "load_autoencoder", "reconstruct", "load_checkpoint", "save_checkpoint", "ClassEmbedder", "LayoutEncoder",
    "LowResConcat", "TextEncoder", "DataConfig", "ShapesDataset", "GaussianDiffusion", "make_beta_schedule",
    "load_evaluator", "LatentDiffusion", "LDMConfig", "LPIPS", "AutoencoderLoss", "NLayerDiscriminator",
    "adaptive_weight", "hinge_d_loss", "fid_from_features", "latent_statistics", "lpips", "precision_recall",
    "psnr", "ssim", "CrossAttention", "EMA", "attention_explicit", "attention_sdpa", "record_attention",
    "timestep_embedding", "PROFILES", "Profile", "get_profile", "MNIST", "ImageFolderDataset", "ddim_invert",
    "ddim_sample", "ddim_step", "ddim_timesteps", "ddpm_sample", "ddpm_step", "guided_model_output", "img2img",
    "NUM_CLASSES", "ShapesTokenizer", "class_id", "class_name", "parse_caption", "parse_layout", "render_scenes",
    "sample_scene", "scene_from_caption", "class_accuracy", "layout_accuracy", "prompt_accuracy",
    "shapes_features", "shapes_generative_metrics", "word_influence", "WordTokenizer", "fit", "train_autoencoder",
    "train_ldm", "UNet", "count_parameters", "get_device", "seed_everything", "denoising_filmstrip", "image_grid",
    "save_figure", "__version__", "setup", "check_answer", "radial_power_spectrum", "log_spectrum_distance",
    "layer_shapes", "slerp", "latent_grid", "attention_overlay", "attention_mass", "object_mask",
    "word_attention_maps",
]
