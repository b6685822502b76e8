import json, sys, glob
rows = [r for f in sorted(glob.glob(f"outputs/flow-cpu/compare-*-n{sys.argv[1]}.json")) for r in json.load(open(f))]
print("| model | sampler | NFE | prompt accuracy [95 % Wilson] | one-object | two-object | Shapes-FID ± spread (floor) | precision / recall |")
print("|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["nfe"], r["sampler"], r["model"])):
    ci = lambda k: f"{100 * r[k]:.1f} % [{100 * r[k + '_ci'][0]:.1f}, {100 * r[k + '_ci'][1]:.1f}]"
    print(f"| {r['model']} | {r['sampler']}-{r['steps']} | {r['nfe']} | {ci('accuracy')} | {ci('one_object')} | "
          f"{ci('two_object')} | {r['fid']:.2f} ± {r['fid_spread']:.2f} ({r['fid_floor']:.2f}) | "
          f"{r['precision']:.2f} / {r['recall']:.2f} |")
