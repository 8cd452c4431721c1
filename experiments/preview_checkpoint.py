# SPDX-License-Identifier: Apache-2.0
"""
A preview of a box run in progress (not the final table): its checkpoint, read without touching
the run, scored on the first 300 of the authors' test sequences at p = 0.5 and at a 9-frame gap
after the 4 initial frames (the authors' placement), smoothing and filtering, and its a-space R^2::

    .venv/bin/python experiments/preview_checkpoint.py   # from the repository root
"""

import torch

from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset
from pyro_kvae.evaluation import T_INIT, a_space_r2, gap_mask
from pyro_kvae.imputation import impute, pixel_error
from pyro_kvae.train import Trainer, load_checkpoint, random_mask

checkpoint = load_checkpoint("experiments/authors_box/kvae/checkpoint.pt")  # read only: the run goes on
config = KVAEConfig.from_dict(checkpoint["pyro_kvae"]["config"])
trainer = Trainer(config, progress=False, state=checkpoint)
kvae = trainer.model.eval()
test = VideoDataset("data/authors_box.npz", "test").take(300)
x = test.x
g = torch.Generator().manual_seed(0)
rows = []
with torch.no_grad():
    for name, mask in (("p = 0.5", random_mask(x.shape[:2], 0.5, T_INIT, g)), ("gap 9", gap_mask(x.shape[:2], 9))):
        s = pixel_error(impute(kvae, x, mask).x, x, mask).item()
        f = pixel_error(impute(kvae, x, mask, smooth=False).x, x, mask).item()
        rows.append(f"| {name} | {s:.4f} | {f:.4f} |")
r2 = [round(v, 3) for v in a_space_r2(kvae, x, test.tensors["position"]).tolist()]
print(f"epoch {trainer.epoch}; a-space R^2 (aligned) {r2}")
print("| mask (first 300 test sequences) | smoothing | filtering |\n|---|---|---|")
print("\n".join(rows))
