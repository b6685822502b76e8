"""Training the two stages: the loops (stages.py, loop.py), the ci / cpu / gpu presets (profiles.py), how fast a
step runs without changing what it computes (speed.py), and several processes under torchrun (distributed.py)."""

from .profiles import PROFILES, Profile, get_profile
from .speed import SpeedConfig
from .stages import AE_CHECKPOINT, LDM_CHECKPOINT, SampleSnapshots, fit, train_autoencoder, train_ldm

__all__ = ["PROFILES", "Profile", "get_profile", "SpeedConfig", "AE_CHECKPOINT", "LDM_CHECKPOINT", "SampleSnapshots",
           "fit", "train_autoencoder", "train_ldm"]
