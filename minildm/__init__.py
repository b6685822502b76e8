"""minildm: a compact, readable Latent Diffusion Model (Rombach et al., CVPR 2022).

The paper's model sits at the top of the package, one part per file, data flowing one way:

    nn.py            shared blocks: normalization, timestep embedding, attention (recordable), EMA
    autoencoder.py   stage 1: encoder E, decoder D, the Gaussian posterior; KL / VQ / pixel first stages
    perceptual.py    LPIPS, the perceptual distance, and where its backbone weights come from
    losses.py        stage 1's objective: L1 + LPIPS + patch GAN with the adaptive weight
    diffusion.py     stage 2: noise schedules, q(x_t|x_0), the posterior, targets, L_simple; beyond the paper,
                     flow matching's straight path (RectifiedFlow)
    unet.py          the denoiser: ResBlocks, SpatialTransformer (self + cross attention), down / up path
    conditioning.py  τθ: class, text (with its tokenizer), layout, low-resolution, semantic-map and masked-image
                     encoders; inpainting masks
    samplers.py      DDPM, DDIM and ODE-solver (Euler, Heun, DPM-Solver++) steps and loops, the flow samplers,
                     inversion, img2img, inpainting by blending, classifier-free guidance
    ldm.py           LatentDiffusion: frozen autoencoder + scale factor + U-Net + τθ
    utils.py         devices, seeding, seeded noise, the checkpoint file format

Everything that serves the lab lives in folders named after whom it serves:

    data/     the Shapes world and the datasets            train/   the two training loops, presets, speed, DDP
    eval/     metrics, the Shapes judge, probes             course/  setup and checks of the notebooks, pictures,
    tools/    the command line, studies, bench, FLOPs                widgets, shipped checkpoints, student edition

The files at the top import only each other; a folder imports the top and the folders before it in the order
data, eval, train, course, tools. A notebook needs only `import minildm` (or `from minildm import …`).
"""

__version__ = "0.3.0"

from . import (autoencoder, conditioning, course, data, diffusion, eval, ldm, losses, nn, perceptual, samplers, train,
               unet, utils)
from .autoencoder import (AEConfig, AutoencoderKL, AutoencoderVQ, DiagonalGaussian, PixelSpace, build_autoencoder,
                          load_autoencoder, reconstruct)
from .conditioning import ClassEmbedder, LayoutEncoder, LowResConcat, TextEncoder, WordTokenizer
from .course import (attention_overlay, check_answer, denoising_filmstrip, image_grid, latent_grid, save_figure,
                     setup, slerp)
from .data import (MNIST, NUM_CLASSES, DataConfig, ImageFolderDataset, ShapesDataset, ShapesTokenizer, class_id,
                   class_name, parse_caption, parse_layout, render_scenes, sample_scene, scene_from_caption)
from .diffusion import GaussianDiffusion, RectifiedFlow, make_beta_schedule
from .eval import (attention_mass, class_accuracy, fid_from_features, latent_statistics, layer_shapes,
                   layout_accuracy, load_evaluator, log_spectrum_distance, lpips, object_mask, precision_recall,
                   prompt_accuracy, psnr, radial_power_spectrum, shapes_features, shapes_generative_metrics, ssim,
                   word_attention_maps, word_influence)
from .ldm import LatentDiffusion, LDMConfig
from .losses import AutoencoderLoss, LossConfig, NLayerDiscriminator, adaptive_weight, hinge_d_loss
from .nn import EMA, CrossAttention, attention_explicit, attention_sdpa, record_attention, timestep_embedding
from .perceptual import LPIPS
from .samplers import (ddim_invert, ddim_sample, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step, dpmpp_2m_sample,
                       dpmpp_2m_step, euler_sample, euler_step, flow_euler_sample, flow_heun_sample,
                       guided_model_output, heun_sample, heun_step, img2img)
from .train import PROFILES, Profile, get_profile, train_autoencoder, train_ldm
from .unet import UNet
from .utils import count_parameters, get_device, load_checkpoint, save_checkpoint, seed_everything

# the public API is exactly what this file imports: the modules and the names a notebook reaches for first
__all__ = sorted(name for name in dir() if not name.startswith("_")) + ["__version__"]
