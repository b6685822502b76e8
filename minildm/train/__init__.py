"""Training the two stages: their loops (stages.py) and the chores they share (loop.py), how each is trained
(configs.py; the networks' own configs are stored with their weights), the ci / cpu / gpu presets (profiles.py),
how fast a step runs without changing what it computes (speed.py), and several processes under
torchrun (distributed.py)."""

from .configs import AETrainConfig, LDMTrainConfig
from .profiles import PROFILES, Profile, get_profile
from .speed import SpeedConfig
from .stages import AE_CHECKPOINT, LDM_CHECKPOINT, SampleSnapshots, train_autoencoder, train_ldm

__all__ = ["AETrainConfig", "LDMTrainConfig", "PROFILES", "Profile", "get_profile", "SpeedConfig", "AE_CHECKPOINT",
           "LDM_CHECKPOINT", "SampleSnapshots", "train_autoencoder", "train_ldm"]
