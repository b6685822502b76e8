"""Evaluate the seg and inpaint models: evaluate_seg_model(n=200) and evaluate_inpainting(n=200) against the
training-free blending with the shipped text model (scene captions, guidance 3), DDIM-50, seed 0, one thread.
Usage: python evaluate.py float32|float16   (float32: the training checkpoints' EMA weights; float16: the shipped
files; the baseline, the shipped text model, is run with float16 only)"""
import json, sys, time
import torch
from minildm.course import pretrained
from minildm.eval.accuracy import evaluate_inpainting, evaluate_seg_model, inpaint_report, seg_report
from minildm.ldm import LatentDiffusion

torch.set_num_threads(1)
which, out = sys.argv[1], {}
if which == "float32":
    seg = LatentDiffusion.from_checkpoint("outputs/seg-inpaint-cpu/seg/ldm.pt", "cpu")
    inp = LatentDiffusion.from_checkpoint("outputs/seg-inpaint-cpu/inpaint/ldm.pt", "cpu")
    text = None
else:
    seg, inp = pretrained.load_ldm("cpu", "seg", "cpu"), pretrained.load_ldm("cpu", "inpaint", "cpu")
    text = pretrained.load_ldm("cpu", "text", "cpu")
t = time.time()
out["seg"] = evaluate_seg_model(seg, n=200, steps=50, seed=0)
out["seg"]["minutes"] = round((time.time() - t) / 60, 2)
print("\n".join(seg_report(out["seg"])), flush=True)
t = time.time()
out["inpaint"] = evaluate_inpainting(inp, text, n=200, steps=50, seed=0)
out["inpaint"]["minutes"] = round((time.time() - t) / 60, 2)
print("\n".join(inpaint_report(out["inpaint"])), flush=True)
json.dump(out, open(f"outputs/seg-inpaint-cpu/eval-{which}.json", "w"), indent=1)
