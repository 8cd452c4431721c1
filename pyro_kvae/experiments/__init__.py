# SPDX-License-Identifier: Apache-2.0
"""
The paper's experiments (section 5): imputation (figure 3) on the bouncing-ball
environments and the pendulum's test ELBO (table 1), with their figures.

    python -m pyro_kvae.experiments box [--paper] [--cuda]   # fig. 3a/3b tables, figs 3c, 4, 5
    python -m pyro_kvae.experiments pendulum                 # table 1, both likelihoods
    python -m pyro_kvae.experiments all                      # every table and figure of the README

An imputation experiment trains the KVAE and the baselines of section 5.1 (``--baselines``):
the AE-RNN, an LSTM on the codes of the trained KVAE's own auto-encoder, and the VAE-RNN,
an LSTM on a VAE of its own with the KVAE's encoder/decoder architecture (optionally the
AE-RNN with an auto-encoder of its own, ``ae-rnn-own``); the same data, best epoch on the
validation split. It measures the fraction of wrong pixels on unobserved frames:

* missing at random (:func:`pyro_kvae.train.random_mask`): the first 4 frames
  observed, each later frame dropped with probability p = 0.1 ... 1.0
  (fig. 3a; p = 1 is pure generation);
* missing in the middle: a consecutive gap of 1, 3, ..., 15 frames starting after the first
  4 (fig. 3b; the authors' ``mask_impute_planning`` placement, :func:`pyro_kvae.evaluation.gap_mask`);

for KVAE smoothing, KVAE filtering, the baselines and blank frames, and
writes ``results.csv``, ``results.json``, ``training.png``, ``fig3a.png``, ``fig3b.png`` (the
paper's curves dashed beside ours for the box), ``fig3c.png`` (a-space
trajectories), ``fig4.png`` (alpha along the encoded trajectories),
``fig5.png`` (sequences as one image, colour for time), ``generation.gif`` and
``imputation.gif``.

Every model trains in its own sub-directory of ``--run-dir`` and checkpoints
after each epoch: running the same command again continues where it stopped
(``--overwrite`` starts afresh); ``--stage kvae`` or ``--stage baselines``
trains one part and stops, so long runs can be done in pieces. Each
``results.json`` records the settings, seed, library versions and wall times.
"""

from .cli import main
from .report import figures, markdown_tables, paper_summary
from .runs import fit_baselines, fit_kvae, imputation_experiment, pendulum_table, run_all

__all__ = [
    "figures",
    "fit_baselines",
    "fit_kvae",
    "imputation_experiment",
    "main",
    "markdown_tables",
    "paper_summary",
    "pendulum_table",
    "run_all",
]
