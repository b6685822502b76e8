"""The flow text model (outputs/flow-cpu/ldm.pt, EMA) against the shipped diffusion text model: prompt accuracy
(Wilson 95 % interval) and Shapes-FID (bootstrap spread, unpaired real-vs-real floor) on the same n test captions
(1-2 objects) with the same starting noise, Euler (and Heun) at a few model evaluations, guidance 3."""
import json, sys, time
import torch
from minildm.course import pretrained
from minildm.data.datasets import ShapesDataset
from minildm.data.shapes import parse_caption
from minildm.eval.accuracy import prompt_accuracy, shapes_generative_metrics
from minildm.eval.metrics import binomial_interval
from minildm.ldm import LatentDiffusion

which, n = sys.argv[1], int(sys.argv[2])         # "diffusion" or "flow", prompts per row
runs = [("euler", 10), ("euler", 20), ("heun", 10), ("euler", 50)]
if which == "diffusion":                          # the best diffusion solver at the same calls, for reference
    runs += [("dpmpp_2m", 10), ("dpmpp_2m", 20)]
if len(sys.argv) > 3:
    runs = [(r.split(":")[0], int(r.split(":")[1])) for r in sys.argv[3:]]
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
models = {"diffusion (shipped text)": pretrained.load_ldm("cpu", "text", "cpu")} if which == "diffusion" else \
    {"flow (outputs/flow-cpu)": LatentDiffusion.from_checkpoint("outputs/flow-cpu/ldm.pt", "cpu")}
ds = ShapesDataset("test", size=max(n, 1000), resolution=32, min_objects=1, max_objects=2)
captions = [ds.scene(i).caption for i in range(n)]
objects = torch.tensor([len(parse_caption(c)["objects"]) for c in captions])
rows = []
for name, ldm in models.items():
    for sampler, steps in runs:
        steps = int(steps)
        t0, images = time.time(), []
        for start in range(0, n, 100):                     # evaluate_text_model's seeding: seed·7919 + start, seed 0
            raw = ldm.prompt_condition(prompts=captions[start:start + 100])
            images.append(ldm.sample(raw, steps=steps, sampler=sampler, guidance_scale=3.0,
                                     generator=torch.Generator().manual_seed(start)).cpu())
        images, seconds = torch.cat(images), time.time() - t0
        ok = prompt_accuracy(images, captions)["correct"].bool()
        m = shapes_generative_metrics(images, split="test", max_objects=2, protocol="unpaired")
        row = {"model": name, "sampler": sampler, "steps": steps, "nfe": 2 * steps - 1 if sampler == "heun" else steps,
               "n": n, "accuracy": ok.float().mean().item(), "accuracy_ci": binomial_interval(int(ok.sum()), n)}
        for k, label in ((1, "one_object"), (2, "two_object")):
            sel = ok[objects == k]
            row[label] = sel.float().mean().item()
            row[label + "_ci"] = binomial_interval(int(sel.sum()), len(sel))
            row[label + "_n"] = len(sel)
        row.update(fid=m["fid"], fid_spread=m["fid_spread"], fid_floor=m["fid_floor"], precision=m["precision"],
                   recall=m["recall"], sample_seconds=seconds)
        rows.append(row)
        print(json.dumps(row), flush=True)
json.dump(rows, open(f"outputs/flow-cpu/compare-{which}-n{n}.json", "w"), indent=1)
