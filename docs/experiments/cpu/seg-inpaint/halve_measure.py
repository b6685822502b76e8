"""Measure the manifest metrics of ldm-class, ldm-class-token and ldm-layout as their manifest "evaluation" fields
say (evaluate_class_model(per_class=10, steps=50, guidance 3); evaluate_layout_model(n=200, steps=50, guidance 3)),
one thread, on the shipped files as they are now. Usage: python halve_measure.py float32|float16"""
import json, sys, time
import torch
from minildm.course import pretrained
from minildm.eval.accuracy import evaluate_class_model, evaluate_layout_model

torch.set_num_threads(1)
which, out = sys.argv[1], {}
for name in ("class", "class-token", "layout"):
    t = time.time()
    m = pretrained.load_ldm("cpu", name, "cpu")
    r = (evaluate_layout_model(m, n=200, steps=50, guidance_scale=3.0) if name == "layout"
         else evaluate_class_model(m, per_class=10, steps=50, guidance_scale=3.0))
    out[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
    out[name]["minutes"] = round((time.time() - t) / 60, 2)
    print(name, out[name], flush=True)
json.dump(out, open(f"outputs/seg-inpaint-cpu/halve-{which}.json", "w"), indent=1)
