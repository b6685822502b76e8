"""Train the semantic-synthesis (seg) or inpainting model in the cpu profile on the shipped cpu autoencoder
(the profile's second-stage recipe: same U-Net, 3,200 steps, batch 64, seed 0), one thread; the two run side by side.
Usage: python outputs/seg-inpaint-cpu/train.py seg|inpaint"""
import json, sys, time
import torch
from minildm.course import pretrained
from minildm.train.profiles import get_profile
from minildm.train.stages import train_ldm

cond = sys.argv[1]
torch.set_num_threads(1)            # as the shipped models: one thread, two runs at a time
ae = pretrained.load_autoencoder("cpu", "cpu")
profile = get_profile("cpu")
print(cond, profile.ldm, profile.ldm_train, "threads", torch.get_num_threads(), flush=True)
t0 = time.time()
r = train_ldm(profile, ae, f"outputs/seg-inpaint-cpu/{cond}", cond=cond, device="cpu", seed=0, progress=True)
print(json.dumps({"cond": cond, "step": r["step"], "minutes": r["minutes"], "wall_minutes": (time.time() - t0) / 60,
                  "first_loss": sum(h["loss"] for h in r["history"][:100]) / 100,
                  "last_loss": sum(h["loss"] for h in r["history"][-100:]) / 100}), flush=True)
