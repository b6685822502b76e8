"""The lab's tools: the `minildm` command line (cli.py), the paper's studies at mini scale
(studies.py), the demo (demo.py), speed against diffusers (bench.py, peer.py) and FLOP counting (flops.py).
Only the command line and the notebooks import from here."""
