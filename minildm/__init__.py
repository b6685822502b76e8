"""minildm: a compact, readable Latent Diffusion Model (Rombach et al., CVPR 2022).

Two stages, one file per idea:
  perceptual compression  -> autoencoder.py, losses.py, train_ae.py
  latent diffusion        -> diffusion.py, unet.py, conditioning.py, samplers.py, ldm.py, train_ldm.py
and around them: data.py (the built-in Shapes dataset), profiles.py (ci / cpu / gpu sizes),
utils.py (device, seeding), checkpoint.py (atomic, config-carrying checkpoints), cli.py.
"""

__version__ = "0.1.0"
