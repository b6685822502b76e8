"""For every exercise of the course, one plausible wrong answer: the mistake a student would really make (a
missing square root, the paper's ε target where the model regresses v, the wrong spacing, a forgotten mask),
written as the code that would stand between BEGIN and END SOLUTION. tests/test_student.py runs each one in the
student edition and requires its check to reject it, saying what is wrong without the expected value."""

WRONG = {
    # 00 · Setup and shapes
    "0.1": ('my_parse = {"objects": [{"size": "large", "color": "red", "shape": "circle"},\n'
            '                        {"size": "small", "color": "green", "shape": "triangle"}],\n'
            '            "relation": "to the right of"}            # no "position" key for a relation caption'),
    "0.2": ("images, _ = render_scenes([scene_from_caption(c, seed=i) for i, c in enumerate(captions)], RES)\n"
            "my_judge = prompt_accuracy(images, captions)      # the whole report, not its accuracy"),
    "0.3": ("def my_rate(resolution, f, c):\n"
            "    h = resolution // f\n"
            "    return h * c / (resolution * 3)               # the side, not the area"),
    # 01 · Perceptual compression
    "1.1": ("def my_hinge(logits_real, logits_fake):   # without the relu: the margins never saturate\n"
            "    return 0.5 * ((1 - logits_real).mean() + (1 + logits_fake).mean())"),
    "1.2": ("grad_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]\n"
            "grad_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]\n"
            "my_lambda = (grad_gan.norm() / (grad_rec.norm() + 1e-4)).clamp(0, 1e4).detach() * LOSS.disc_weight"
            "   # the ratio upside down"),
    "1.3": ("blurred = torch.nn.functional.avg_pool2d(x_blur_test, 3, stride=1, padding=1)   # zero padding counted\n"
            "shifted = torch.roll(x_blur_test, 1, dims=-1)\n"
            "my_psnrs = (float(psnr(blurred, x_blur_test).mean()), float(psnr(shifted, x_blur_test).mean()))"),
    "1.4": ("img = (x_test[:1].cpu().double() + 1) / 2\n"
            "Y = 0.299 * img[0, 0] + 0.587 * img[0, 1] + 0.114 * img[0, 2]\n"
            "Y = Y - Y.mean()\n"
            "hann = torch.hann_window(32, dtype=torch.float64)          # periodic, not the symmetric window\n"
            "power = torch.fft.fft2(Y * hann[:, None] * hann[None, :]).abs() ** 2 / (32 * 32)\n"
            "u = torch.fft.fftfreq(32, d=1 / 32).abs()\n"
            "ring = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2).round().long()\n"
            "my_spectrum = torch.stack([power[ring == k].mean() for k in range(1, 17)])"),
    # 02 · The latent space
    "2.1": ("with torch.no_grad():\n"
            "    z_first = ae.encode(first).mean                 # the posterior mean, not a sample\n"
            "my_scale = 1.0 / float(z_first.std())"),
    # (not "decoded right": in the ci profile the scale is about 1, so D(scale·z) and D(z) are read alike, and
    # whether they differ by one scene depends on the CPU's rounding)
    "2.2": ("my_forgot = float(readable_scenes(predict_cells(x)).float().mean())   # the test images, not their decodes"),
    "2.3": ("cells = predict_cells(from_noise)\n"
            "p, occ = cells['p_occupied'], cells['occupied']\n"
            "ok = ((p >= 0.9) | (p <= 0.1)).all(1) & (occ.sum(1) >= 1) & (occ.sum(1) <= 2)\n"
            "parts = split_logits(cells['logits'])\n"
            "for key in ('shape', 'color', 'size'):             # also demands confident attributes in empty cells\n"
            "    ok &= (parts[key].softmax(-1).amax(-1) >= 0.9).all(1)\n"
            "my_readable = float(ok.float().mean())"),
    "2.4": ("a, b, t = mu[ia[:1]].flatten(), mu[ib[:1]].flatten(), 0.3\n"
            "omega = torch.acos(torch.dot(a, b) / (a.norm() * b.norm()))\n"
            "my_slerp = ((torch.sin(t * omega) * a + torch.sin((1 - t) * omega) * b) / torch.sin(omega)).view(1, c, h, w)"
            "   # the weights swapped"),
    # 03 · Forward diffusion
    "3.1": ("snr = diffusion.alpha_bar / (1 - diffusion.alpha_bar)\n"
            "my_t_equal = int((sigma_z * snr <= 1).nonzero()[0])   # σ_z, not σ_z²"),
    "3.2": ("ab_v = float(diffusion.alpha_bar[t_v])\n"
            "my_x0_hat = (z_t_ex - (1 - ab_v) ** 0.5 * v_hat) / ab_v ** 0.5   # the ε formula applied to v̂"),
    "3.3": ("my_copy_loss = tuple(float((diffusion.add_noise(z0, eps, t) - z0).pow(2).mean()) for t in (999, 100))"
            "   # against z₀, not ε"),
    # 04 · The U-Net and cross-attention
    "4.1": ("s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])\n"
            "my_attention = s.softmax(dim=-1) @ v               # the padding mask forgotten"),
    "4.2": ("free = (Q[:1] @ K[:1].transpose(-1, -2) / math.sqrt(Q.shape[-1])).softmax(dim=-1)\n"
            "my_leak = float(free[..., ~mask[0]].mean())        # the mean over the pads, not their sum"),
    "4.3": ("half = dim // 2\n"
            "omega = torch.exp(-math.log(10000.0) * torch.arange(half) / half)\n"
            "angles = ts[:, None].float() * omega[None, :]\n"
            "my_embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)   # sin first, as in Vaswani"),
    # 05 · Training the LDM
    "5.1": ("a = ldm.diffusion.alpha_bar[t_ex.cpu()].float().to(course.device).view(-1, 1, 1, 1)\n"
            "z_t = a.sqrt() * z0_ex + (1 - a).sqrt() * eps_ex\n"
            "target = eps_ex                                  # the paper's ε target; this model regresses v\n"
            "my_loss = ((ldm.model_fn(z_t, t_ex, ldm.encode_condition(raw_ex)) - target) ** 2).mean()"),
    "5.2": ("shadow = weights[0].clone()\n"
            "for w in weights[1:]:\n"
            "    shadow = DECAY * shadow + (1 - DECAY) * w     # no warm-up of the decay\n"
            "my_ema = shadow"),
    "5.3": ("runs = [train_by_hand(RACE, warmup), train_by_hand(RACE, lambda k: TR.lr)]\n"
            "my_means = [sum(run) / len(run) for run in runs]   # over all the steps, not the second half"),
    # 06 · DDIM sampling
    "6.1": ("timesteps = ddim_timesteps(T, 10)\n"
            "x = x_T\n"
            "for i, t in enumerate(timesteps):\n"
            "    out = guided_model_output(ldm.model_fn, x, t, cond, uncond, s)\n"
            "    t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else 0   # the last step to t = 0, not to −1\n"
            "    x, _ = ddim_step(ldm.diffusion, out, t, x, t_prev, eta=0.0)\n"
            "my_z0 = x"),
    "6.2": "my_steps = [999 - i * (1000 // 7) for i in range(7)]   # from T − 1 in steps of T // S",
    "6.3": ("weak_images = ldm.sample(ldm.prompt_condition(prompts=weak_captions), x_T=0.5 * weak_x_T, steps=25)\n"
            "my_weak = prompt_accuracy(weak_images, weak_captions)[\"correct\"]   # per caption, not the share"),
    # 07 · Guidance and attention
    "7.1": ("with torch.no_grad():\n"
            "    out_c = ldm.model_fn(z_t, t, cond)        # with the caption\n"
            "    out_u = ldm.model_fn(z_t, t, uncond)      # with the empty caption\n"
            "guided_by_hand = out_c + s * (out_u - out_c)   # the two predictions swapped"),
    "7.2": ("per_layer_and_step = []\n"
            "for name, calls in recorded.of_kind(\"cross\").items():\n"
            "    h_l, w_l = recorded.spatial[name]\n"
            "    for probs in calls:                                     # (2, heads, h·w, L), one per DDIM step\n"
            "        p = probs[0].mean(0)                                # conditional row, mean over heads: (h·w, L)\n"
            "        p = p[:, :n_words].T.reshape(n_words, 1, h_l, w_l)  # <bos> not skipped\n"
            "        per_layer_and_step.append(F.interpolate(p.cpu(), size=(H, H), mode=\"bilinear\", "
            "align_corners=False)[:, 0])\n"
            "my_maps = torch.stack(per_layer_and_step).mean(0)           # (n_words, H, W)"),
    "7.3": ("x, evals = early_x_T, 0\n"
            "with torch.no_grad():\n"
            "    for i, t_i in enumerate(early_steps):\n"
            "        scale = GUIDANCE if t_i > 500 else 0.0           # s = 0 (unconditional), not 1, at low noise\n"
            "        out = guided_model_output(ldm.model_fn, x, t_i, early_cond, early_uncond, scale)\n"
            "        evals += 2 if scale != 1.0 else 1\n"
            "        x, _ = ddim_step(ldm.diffusion, out, t_i, x, early_steps[i + 1] if i + 1 < len(early_steps) "
            "else -1, eta=0.0)\n"
            "my_z0, my_evals = x, evals"),
    # 08 · Other conditions
    "8.1": ("tri = COLOR_NAMES.index(\"green\") * len(SHAPES) + SHAPES.index(\"triangle\")   # color-major\n"
            "my_layout = torch.tensor([[[tri, 0.3, 0.05, 0.7, 0.45], [-1.0, -1.0, -1.0, -1.0, -1.0]]], "
            "dtype=torch.float32)"),
    "8.2": ("low_on_grid = F.interpolate(low4, size=(h, h), mode=\"bilinear\", align_corners=False)\n"
            "my_input = torch.cat([z_t, coordinate_grid(z_t), low_on_grid], dim=1)   # coordinates before the image"),
    "8.3": ("def sharpness(x):\n"
            "    x = x.float()\n"
            "    return ((x[..., :, 1:] - x[..., :, :-1]).flatten(1).mean(1)        # abs forgotten\n"
            "            + (x[..., 1:, :] - x[..., :-1, :]).flatten(1).mean(1))\n"
            "\n"
            "\n"
            "my_sharpness = {\"truth\": sharpness(ims[\"truth\"]), \"bicubic\": sharpness(ims[\"bicubic\"]), "
            "\"LDM\": sharpness(ims[\"sr\"])}"),
    "8.4": ("my_shares = F.interpolate(F.one_hot(m0, NUM_CLASSES + 1).permute(0, 3, 1, 2).float(),\n"
            "                          scale_factor=1 / f, mode=\"nearest\")   # one pixel per block, not the share"),
    # 09 · Experiments
    "9.1": ("mu_a, mu_b = fa.mean(0), fb.mean(0)\n"
            "cov_a = (fa - mu_a).T @ (fa - mu_a) / (n - 1)\n"
            "cov_b = (fb - mu_b).T @ (fb - mu_b) / (n - 1)\n"
            "fid_by_hand = float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b)\n"
            "                    - 2 * torch.trace(cov_a @ cov_b).sqrt())   # √Tr(Σ₁Σ₂), not Tr √(Σ₁Σ₂)"),
    "9.2": ('more = real_images(8 * n, "test", 2, RES)\n'
            "ga, gb = shapes_features(more[:4 * n]).double(), shapes_features(more[4 * n:]).double()\n"
            "my_ratio = float(fid_from_features(fa, fb) / fid_from_features(ga, gb))   # n over 4n, upside down"),
    # 10 · Beyond the paper
    "10.1": ("my_acc = {name: prompt_accuracy(sample_prompts(ldm, q_captions, steps=10, guidance_scale=s, seed=course.seed,\n"
             "                                               sampler=name), q_captions)[\"correct\"]\n"
             "          for name in (\"ddim\", \"dpmpp_2m\")}        # per caption, not the share"),
    "10.2": ("v1 = toy_flow(x1, torch.full((len(x1),), 1.0))       # t itself, not the network's time scale t·(T − 1)\n"
             "my_x = x1 + (0.75 - 1.0) * v1"),
    "10.3": ("my_straight = float(((flow_paths[1:] - flow_paths[:-1]).norm(dim=-1).sum(0)\n"
             "                     / (flow_paths[-1] - flow_paths[0]).norm(dim=-1)).mean())   # a mean of ratios"),
    "10.4": ("ab_t = ldm.diffusion.alpha_bar[t]\n"
             "my_u = (ab_t.sqrt() * x_T - (1 - ab_t).sqrt() * v_hat) - ((1 - ab_t).sqrt() * x_T + ab_t.sqrt() * v_hat)"
             "   # x̂₀ − ε̂: the sign flipped"),
}
