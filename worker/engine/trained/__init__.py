"""A small model pixelmill trains itself: rendered scenes, a contrastive scorer and a latent diffusion model.

No model can be downloaded here, so the demo's pictures and the CLIP score would otherwise mean nothing.
`render.py` draws captioned 64x64 product scenes (numpy and PIL only); `scorer.py` trains a tiny CLIPModel on
them (the CLIP score's drop-in); `diffusion.py` trains a tiny Stable-Diffusion-layout pipeline whose text
encoder is the scorer's; `measure.py` holds the two rates they are judged by. See models/scenes64/README.md.
"""
