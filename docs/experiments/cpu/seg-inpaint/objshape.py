import torch
torch.set_num_threads(1)
from minildm.course import pretrained
from minildm.eval.accuracy import inpainting_tasks, inpaint_images, inpaint_scores
inp = pretrained.load_ldm("cpu", "inpaint", "cpu")
tasks = inpainting_tasks(200, 32, 2, 0)
x = inpaint_images(inp, tasks, "object", 50, 0, 100)
s = inpaint_scores(x, tasks, "object")
o = ~s["empty"]
print("object kind, trained model: occupied", o.float().mean().item(), "shape right", s["shape"].float().mean().item(), "color right", s["color"].float().mean().item())
