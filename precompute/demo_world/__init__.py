"""The demo world: procedurally rendered images (render.py), evaluation splits modelled on ImageNet's
shifts (world.py), a noisy caption corpus (corpus.py) and a tiny open_clip CLIP pretrained on it
(pretrain.py). Import the submodules directly; this package file stays free of heavy imports."""
