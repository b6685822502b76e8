"""Train the flow-matching text model in the cpu profile on the shipped cpu autoencoder (same steps, batch, seed
and data as the shipped diffusion text model; only LDMConfig.process differs)."""
import json, time
import torch
from minildm.course import pretrained
from minildm.train.profiles import get_profile
from minildm.train.stages import train_ldm

torch.set_num_threads(1)            # as the shipped models: OMP_NUM_THREADS=1, two runs at a time
ae = pretrained.load_autoencoder("cpu", "cpu")
profile = get_profile("cpu").replace(ldm={"process": "flow"})
print(profile.ldm, profile.ldm_train, "threads", torch.get_num_threads(), flush=True)
t0 = time.time()
r = train_ldm(profile, ae, "outputs/flow-cpu", cond="text", device="cpu", seed=0, progress=True)
print(json.dumps({"step": r["step"], "minutes": r["minutes"], "wall_minutes": (time.time() - t0) / 60,
                  "first_loss": sum(h["loss"] for h in r["history"][:100]) / 100,
                  "last_loss": sum(h["loss"] for h in r["history"][-100:]) / 100}), flush=True)
