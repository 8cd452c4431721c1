# SPDX-License-Identifier: Apache-2.0
"""The experiments' runs: train what is not trained yet (resumably), evaluate, write results and figures."""

import argparse
import copy
import csv
import datetime
import json
import math
import os
import platform
import shutil
import sys
import time

import numpy as np
import torch

from ..baselines import DMM, DVBF, RNNBaseline, reconstruction_error, train_rnn_baseline, train_sequence_model
from ..config import KVAEConfig, build_kvae
from ..data import VideoDataset
from ..data.datasets import authors_dataset
from ..evaluation import PAPER_FIG3, PAPER_TABLE1, T_INIT, ValidationMonitor, imputation_table, test_elbo
from ..files import write_json
from ..imputation import impute
from ..plotting import plot_training
from ..train import CHECKPOINT, Trainer, fit_selecting_seed, load_checkpoint, run_settings
from .report import figures, imputation_heading, markdown_tables, pendulum_markdown, plot_curves

IMPUTATION_ENVS = ("box", "box_gravity", "polygon", "pong")
PAPER = dict(epochs=80, filters=[32, 32, 32])  # and every training sequence
#: the DVBF and the DMM train for this many times the KVAE's epochs (cheap; at 1x their
#: validation ELBO was still rising steeply)
SEQUENCE_MODEL_EPOCHS = 2


def run_info(args, started: float) -> dict:
    """What a results file records about its run: settings, seed, versions, machine, wall time."""
    import lightning
    import pyro

    settings = {k: v for k, v in vars(args).items() if k not in ("func",)}
    return {
        "settings": settings,
        "seed": args.seed,
        "command": "python -m pyro_kvae.experiments " + " ".join(sys.argv[1:]),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "lightning": lightning.__version__,
            "numpy": np.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() and args.cuda else None,
        },
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
    }


def fit_kvae(config: KVAEConfig, run_dir: str, train, valid=None, meta=None, overwrite=False) -> Trainer:
    """Trains (or continues training) the KVAE of ``config`` in ``run_dir``, logging the validation
    imputation error (and a-space R^2) per epoch; a run there with other settings than ``config``
    (except the epochs and the hardware) is refused."""
    monitor = ValidationMonitor.from_dataset(valid)
    if config.select_seeds > 1:
        if overwrite and os.path.exists(run_dir):
            shutil.rmtree(run_dir)
        return fit_selecting_seed(config, train, valid, run_dir, monitor, meta)
    if not overwrite and os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        trainer = Trainer.resume(run_dir, changes=run_settings(config, meta), monitor=monitor)
        print(f"{run_dir}: resumed at epoch {trainer.epoch} of {config.epochs}")
    else:
        trainer = Trainer(config, run_dir=run_dir, meta=meta, overwrite=overwrite, monitor=monitor)
    trainer.fit(train, valid)
    return trainer


def training_seconds(history) -> float:
    """Wall time of the training epochs in ``history`` (rows with ``"seconds"``), over all pieces."""
    return round(sum(h.get("seconds", 0.0) for h in history), 3)  # an LSTM epoch on a tiny run takes ~0.02 s


def _baseline(config, variational):
    ref = build_kvae(config)  # same encoder/decoder architecture as the KVAE
    return RNNBaseline(ref.encoder, ref.decoder, variational, config.dim_a, likelihood=config.likelihood)


def select_baseline_seed(name, variational, config, train, valid, paths, select_epochs, device, epochs, rnn_epochs,
                         patience=None):  # fmt: skip
    """
    Model selection among a baseline's seeds on validation data, early: each seed ``k`` of
    ``paths`` (``{seed: checkpoint path}``) trains its auto-encoder for ``select_epochs`` epochs
    of its ``epochs`` (paused in its checkpoint, :func:`~pyro_kvae.baselines.train_rnn_baseline`,
    which ``rnn_epochs`` LSTM epochs will follow), then a fresh LSTM
    trained on its codes scores it (:func:`~pyro_kvae.baselines.probe_imputation_error`, validation
    imputation error at p = 0.5, one mask for all seeds). The seed with the lowest score is
    returned; ``<first path>-selection.json`` records the scores and the choice, and a later
    call returns that choice without training.

    :raises ValueError: if a candidate's checkpoint has trained past ``select_epochs``.
    """
    from ..baselines import probe_imputation_error
    from ..train import random_mask

    record = os.path.splitext(paths[min(paths)])[0] + "-selection.json"
    if os.path.exists(record):
        with open(record) as f:
            saved = json.load(f)
        if saved["select_epochs"] == select_epochs and sorted(map(int, saved["scores"])) == sorted(paths):
            return saved["seed"], {int(k): v for k, v in saved["scores"].items()}
    valid_mask = random_mask(valid.x.shape[:2], 0.5, T_INIT, torch.Generator().manual_seed(min(paths) + 1))
    scores = {}
    for k, path in paths.items():
        torch.manual_seed(k)
        model = _baseline(config, variational)
        info = train_rnn_baseline(model, train.x, epochs, rnn_epochs, seed=k, device=device, valid=valid.x,
                                  checkpoint=path, lr=config.lr, desc=f"{name} seed {k}", patience=patience,
                                  pause_after=select_epochs)  # fmt: skip
        if info["stage"] != "ae" or len(info["history"]) != select_epochs:
            raise ValueError(f"{path} has trained past the {select_epochs} selection epochs of its auto-encoder; "
                             "remove it (or pass --overwrite) to select among seeds")  # fmt: skip
        scores[k] = probe_imputation_error(model, train.x, valid.x, valid_mask, seed=k)
        print(f"{name} seed {k}: validation imputation error {scores[k]:.4f} after {select_epochs} epochs")
    chosen = min(scores, key=lambda k: (math.isnan(scores[k]), scores[k]))
    write_json(record, {"select_epochs": select_epochs, "scores": {str(k): v for k, v in scores.items()},
                        "seed": chosen})  # fmt: skip
    return chosen, scores


#: the imputation baselines (paper section 5.1): ``{key: name}``; a key names the checkpoint ``<key>.pt``
BASELINES = {"vae-rnn": "VAE-RNN", "ae-rnn": "AE-RNN", "ae-rnn-own": "AE-RNN (own AE)"}
DEFAULT_BASELINES = ("vae-rnn", "ae-rnn")


def _kvae_autoencoder(kvae, config):
    """An AE-RNN whose frozen encoder (its means) and decoder are copies of the trained ``kvae``'s."""
    return RNNBaseline(copy.deepcopy(kvae.encoder), copy.deepcopy(kvae.decoder), False, config.dim_a,
                       likelihood=config.likelihood)  # fmt: skip


def _trained_on_another_kvae(kvae, path) -> bool:
    """Whether the AE-RNN checkpoint at ``path`` holds an auto-encoder other than ``kvae``'s (the KVAE
    has trained on since), so that its LSTM must train again."""
    saved = load_checkpoint(path, keys=("model",))["model"]
    ours = {f"{part}.{k}": v for part in ("encoder", "decoder") for k, v in getattr(kvae, part).state_dict().items()}
    return any(not torch.equal(v.cpu(), saved[k].cpu()) for k, v in ours.items())


def fit_baselines(config, train, valid, run_dir, epochs, seed, device, overwrite=False, rnn_epochs=None,
                  only_finished=False, patience=None, seeds=1, select_epochs=None, kvae=None,
                  kinds=DEFAULT_BASELINES):  # fmt: skip
    """
    The imputation baselines ``kinds`` (keys of :data:`BASELINES`), each an LSTM over the codes of
    an auto-encoder with the KVAE's encoder/decoder architecture (paper section 5.1):

    - ``"ae-rnn"``, **AE-RNN**: the auto-encoder is the trained ``kvae``'s own (its encoder means,
      frozen), so only the LSTM trains (``rnn_epochs``). The paper calls it "a pretrained
      convolutional auto-encoder, identical to the one used for the KVAE", and its AE-RNN errors
      follow the KVAE's filtering errors within 0.0007 at every gap of fig. 3b. Left out without
      ``kvae``; a checkpoint trained on another state of the KVAE (it has trained on since) is
      removed and its LSTM trains again (with ``only_finished`` it is left out instead).
    - ``"vae-rnn"``, **VAE-RNN**: its own VAE (N(0, I) prior), trained for ``epochs``.
    - ``"ae-rnn-own"``, **AE-RNN (own AE)**: its own deterministic auto-encoder, trained for ``epochs``
      (its 2-d code folds as the KVAE's a-space can).

    Each model is checkpointed in ``run_dir/<key>.pt`` and continued from it. With ``seeds > 1``
    each baseline is trained with seeds ``seed``, ``seed + 1``, ... (the others in
    ``run_dir/<key>-seed<N>.pt``) and the one with the lowest validation imputation error is kept
    (model selection on validation data). With ``select_epochs`` as well, the seeds of a baseline
    with its own auto-encoder are compared after that many auto-encoder epochs
    (:func:`select_baseline_seed`) and only the chosen one trains to the end. With
    ``only_finished`` a baseline whose training has not finished is left out instead. Returns
    ``{name: (model, info)}``; ``info["seed"]`` is the seed kept, ``info["seed_scores"]`` every
    finished seed's validation error, ``info["selection_scores"]`` the early scores (with
    ``select_epochs``) and ``info["autoencoder"]`` ``"kvae"`` or ``"own"``.
    """
    unknown = [k for k in kinds if k not in BASELINES]
    if unknown:
        raise ValueError(f"kinds must be keys of {tuple(BASELINES)}, got {unknown}")
    out = {}
    for key in kinds:
        name, variational, own = BASELINES[key], key == "vae-rnn", key != "ae-rnn"
        if not own and kvae is None:
            print(f"{name} left out: it needs the trained KVAE's auto-encoder")
            continue
        paths = {k: os.path.join(run_dir, f"{key}.pt" if k == seed else f"{key}-seed{k}.pt")
                 for k in range(seed, seed + seeds)}  # fmt: skip
        if overwrite:
            for path in paths.values():
                for p in (path, os.path.splitext(path)[0] + "-selection.json"):
                    if os.path.exists(p):
                        os.remove(p)
        selection = {}
        if own and select_epochs and seeds > 1:
            chosen, selection = select_baseline_seed(name, variational, config, train, valid, paths, select_epochs,
                                                     device, epochs, rnn_epochs or epochs, patience)  # fmt: skip
            paths = {chosen: paths[chosen]}
        candidates = {}
        for k, path in paths.items():
            if not own and os.path.exists(path) and _trained_on_another_kvae(kvae, path):
                if only_finished:
                    print(f"{name} left out: {path} was trained on the KVAE's auto-encoder of an earlier epoch")
                    continue
                print(f"{path}: the KVAE has trained on since; removed, its LSTM trains again")
                os.remove(path)
            if only_finished and not (
                os.path.exists(path) and load_checkpoint(path, keys=("state",))["state"]["stage"] == "done"
            ):
                continue
            torch.manual_seed(k)
            model = _baseline(config, variational) if own else _kvae_autoencoder(kvae, config)
            info = train_rnn_baseline(model, train.x, epochs if own else 0, rnn_epochs or epochs, seed=k,
                                      device=device, valid=valid.x if len(valid) else None, checkpoint=path,
                                      lr=config.lr, desc=name if seeds == 1 else f"{name} seed {k}",
                                      patience=patience)  # fmt: skip
            candidates[k] = (model.eval(), info)
        if not candidates:
            continue
        scores = {k: info["imputation_error_valid"] for k, (_, info) in candidates.items()}
        best = min(scores, key=lambda k: (math.isnan(scores[k]), scores[k]))
        model, info = candidates[best]
        out[name] = (model, {**info, "seed": best, "seed_scores": {str(k): v for k, v in scores.items()},
                             "selection_scores": {str(k): v for k, v in selection.items()},
                             "autoencoder": "own" if own else "kvae"})  # fmt: skip
    return out


def imputation_experiment(args):
    """Fig. 3 for ``args.env``: trains what is not trained yet, then evaluates and draws."""
    started = time.perf_counter()
    device = "cuda" if args.cuda else "cpu"
    run_dir = args.run_dir or (f"experiments/authors_{args.env}" if args.authors else f"runs/experiments/{args.env}")
    os.makedirs(run_dir, exist_ok=True)
    data = os.path.abspath(args.data or (f"data/authors_{args.env}" if args.authors else f"data/{args.env}") + ".npz")
    if args.authors:
        try:
            authors_dataset(args.env, args.authors, data)
        except FileNotFoundError as e:
            raise SystemExit(f"error: --authors: {e}") from None
    train = VideoDataset(data, "train", env=args.env, seed=args.seed)
    valid = VideoDataset(data, "valid", seed=args.seed)
    test = VideoDataset(data, "test", seed=args.seed).take(args.n_test)
    if args.n_train:
        train = train.take(args.n_train)
    config = KVAEConfig(epochs=args.epochs, conv_filters=tuple(args.filters), seed=args.seed, device=device,
                        kf_update_epochs=min(10, args.epochs // 4), dynamics=args.dynamics,
                        likelihood=args.likelihood, select_seeds=args.select_seeds,
                        select_epochs=args.select_epochs,
                        **KVAEConfig.frame_fields(train.frame_shape))  # fmt: skip
    # the data path relative to the working directory, so that a run moves with a clone of the repository
    meta = {"data": os.path.relpath(data), "n_train": len(train)}
    if args.stage in ("kvae", "all"):
        trainer = fit_kvae(config, os.path.join(run_dir, "kvae"), train, valid, meta, args.overwrite)
    kinds = tuple(args.baselines or DEFAULT_BASELINES)
    if args.stage in ("baselines", "all"):
        kvae = trainer.model if args.stage == "all" else None  # the AE-RNN's auto-encoder
        if kvae is None and os.path.exists(os.path.join(run_dir, "kvae", CHECKPOINT)):
            kvae = Trainer.resume(os.path.join(run_dir, "kvae"), changes=run_settings(config, meta)).model
        baselines = fit_baselines(config, train, valid, run_dir, args.baseline_epochs or args.epochs, args.seed,
                                  device, args.overwrite, args.rnn_epochs, patience=args.patience,
                                  seeds=args.baseline_seeds, select_epochs=args.baseline_select_epochs,
                                  kvae=kvae, kinds=kinds)  # fmt: skip
    if args.stage == "evaluate":  # what is trained now: the KVAE at its last finished epoch, finished baselines
        trainer = Trainer.resume(os.path.join(run_dir, "kvae"), changes=run_settings(config, meta))
        print(f"{run_dir}: evaluating the KVAE at epoch {trainer.epoch} of {config.epochs}")
        baselines = fit_baselines(config, train, valid, run_dir, args.baseline_epochs or args.epochs, args.seed,
                                  device, rnn_epochs=args.rnn_epochs, only_finished=True,
                                  patience=args.patience, seeds=args.baseline_seeds,
                                  select_epochs=args.baseline_select_epochs, kvae=trainer.model,
                                  kinds=kinds)  # fmt: skip
    elif args.stage != "all":
        return None

    kvae = trainer.model
    x = test.x.to(device)
    methods = {
        "KVAE smoothing": lambda x, m: impute(kvae, x, m, smooth=True).x,
        "KVAE filtering": lambda x, m: impute(kvae, x, m, smooth=False).x,
        **{name: (lambda x, m, b=b: b.impute(x, m)) for name, (b, _) in baselines.items()},
        "blank frames": lambda x, m: torch.zeros_like(x),
    }
    # the authors' files have no validation split: it is the first test videos, so the table also
    # scores the test videos that chose nothing (no seed, epoch or setting)
    held_out = len(valid) if 0 < len(valid) < len(test) and torch.equal(valid.x, test.x[: len(valid)]) else None
    rows = imputation_table(methods, x, seed=args.seed, held_out=held_out)
    summary = {
        "env": args.env,
        "data": meta["data"],
        "gap_start": T_INIT,  # fig. 3b's gaps start after the first T_INIT frames (the authors' placement)
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
        "held_out_from": held_out,  # rows' pixel_error_held_out: test videos held_out_from.. (not validation)
        "kvae_epochs": trainer.epoch,
        "kvae_epochs_planned": config.epochs,
        "kvae_test_elbo": trainer.evaluate(test),
        "iwae_particles": args.iwae_particles,
        "kvae_test_iwae_bound": trainer.evaluate(test, num_particles=args.iwae_particles),
        "kvae_train_seconds": training_seconds(trainer.history),
        "baselines": {
            name: {
                "autoencoder": info["autoencoder"],  # "kvae": the KVAE's own, frozen; "own": trained for it
                "autoencoder_epochs": (info["epochs"]["ae"] or args.baseline_epochs or args.epochs)
                if info["autoencoder"] == "own"
                else None,
                "lstm_epochs": info["epochs"]["rnn"] or args.rnn_epochs,
                "reconstruction_error_test": reconstruction_error(b, test.x),
                "reconstruction_error_valid": info["reconstruction_error_valid"],
                "imputation_error_valid": info["imputation_error_valid"],
                "seed": info["seed"],
                "seed_scores_valid": info["seed_scores"],
                "selection_scores_valid": info["selection_scores"],
                "train_seconds": training_seconds(info["history"]),
            }
            for name, (b, info) in baselines.items()
        },
        "device": device,
        "rows": rows,
        **run_info(args, started),
    }
    # the authors' pong files have no state: their positions are the ball's centre in the frames
    summary["positions"] = test.config.get("position", "true")
    names = ("true x", "true y") if summary["positions"] == "true" else ("estimated x", "estimated y")
    summary["kvae_a_space_r2_test"] = figures(kvae, x, run_dir, test.tensors.get("position"), names)
    write_json(os.path.join(run_dir, "results.json"), summary)
    with open(os.path.join(run_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paper = PAPER_FIG3 if args.env == "box" else None
    plot_curves(rows, "missing_at_random", "drop probability", os.path.join(run_dir, "fig3a.png"), paper)
    plot_curves(rows, "missing_in_middle", "number of missing frames in the middle",
                os.path.join(run_dir, "fig3b.png"), paper)  # fmt: skip
    plot_training(trainer.history, os.path.join(run_dir, "training.png"))  # the KVAE's curves, all pieces
    print(f"KVAE test ELBO {summary['kvae_test_elbo']:.1f}, importance-weighted bound (K={args.iwae_particles}) "
          f"{summary['kvae_test_iwae_bound']:.1f}")  # fmt: skip
    print(markdown_tables(summary))
    print(f"outputs in {os.path.abspath(run_dir)}")
    return summary


def pendulum_table(args):
    """
    Table 1 on the torque-controlled pendulum: test ELBO of the KVAE (CNN and MLP), the
    locally linear DVBF and a deep Markov model, trained on the same data and controls.
    ``--likelihood`` picks the frame likelihood; ``gaussian_learned`` (learned per-pixel
    variance, floor 1e-4) reported per frame is the paper's scale, ``bernoulli`` per sequence
    our earlier one.
    """
    started = time.perf_counter()
    device = "cuda" if args.cuda else "cpu"
    likelihood = args.likelihood or "gaussian_learned"
    per_frame = likelihood == "gaussian_learned"
    run_dir = args.run_dir or f"runs/experiments/pendulum_{likelihood}"
    os.makedirs(run_dir, exist_ok=True)
    data = os.path.relpath(args.data or "data/pendulum.npz")  # a run moves with a clone of the repository
    train = VideoDataset(data, "train", env="pendulum", seed=args.seed)
    valid = VideoDataset(data, "valid")
    test = VideoDataset(data, "test")
    results, bounds, seconds = {}, {}, {}
    for vae in ("conv", "mlp"):
        config = KVAEConfig(frame_size=16, dim_z=3, dim_u=1, K=2, vae=vae, conv_filters=tuple(args.filters),
                            epochs=args.epochs, kf_update_epochs=min(10, args.epochs // 4), seed=args.seed,
                            device=device, likelihood=likelihood)  # fmt: skip
        trainer = fit_kvae(config, os.path.join(run_dir, f"kvae_{vae}"), train, valid, {"data": data}, args.overwrite)
        name = f"KVAE ({'CNN' if vae == 'conv' else 'MLP'})"
        results[name] = test_elbo(trainer.model.model, trainer.model.guide, test, device, per_frame=per_frame)
        scale = test.x.shape[1] if per_frame else 1
        bounds[name] = trainer.evaluate(test, num_particles=args.iwae_particles) / scale
        seconds[name] = training_seconds(trainer.history)
    for name, cls in (("DVBF", DVBF), ("DMM", DMM)):
        torch.manual_seed(args.seed)
        model = cls(16, 3, 1, likelihood=likelihood)
        path = os.path.join(run_dir, f"{name.lower()}.pt")
        if args.overwrite and os.path.exists(path):
            os.remove(path)
        history = train_sequence_model(model, train, SEQUENCE_MODEL_EPOCHS * args.epochs, lr=3e-3, seed=args.seed,
                                       device=device, checkpoint=path, valid=valid, desc=name)  # fmt: skip
        results[name] = test_elbo(model.model, model.guide, test, device, per_frame=per_frame)
        seconds[name] = training_seconds(history)
    summary = {
        "env": "pendulum",
        "likelihood": likelihood,
        "per_frame": per_frame,
        "epochs": args.epochs,
        "dvbf_dmm_epochs": SEQUENCE_MODEL_EPOCHS * args.epochs,
        "test_elbo": results,
        "iwae_particles": args.iwae_particles,
        "test_iwae_bound": bounds,
        "train_seconds": seconds,
        "paper_test_elbo_per_frame": PAPER_TABLE1,
        **run_info(args, started),
    }
    write_json(os.path.join(run_dir, "results.json"), summary)
    unit = "per frame" if per_frame else "per sequence"
    print(f"test ELBO {unit} ({likelihood})")
    print(f"model        test ELBO  IW bound (K={args.iwae_particles})  paper (per frame, Gaussian)")
    for name, elbo in results.items():
        bound = f"{bounds[name]:9.2f}" if name in bounds else "      n/a"
        print(f"{name:12s} {elbo:9.2f}  {bound}              {PAPER_TABLE1[name]:.2f}")
    print(f"outputs in {os.path.abspath(run_dir)}")
    return summary


def run_all(args):
    """Every experiment of the README; writes ``tables.md`` beside them and copies the figures to ``--docs``."""
    summaries = {}
    base = args.run_dir or "runs/experiments"
    folder = args.data or "data"
    if args.tables_only:  # the finished experiments' results files (an unfinished one is listed as such)
        for name in (*IMPUTATION_ENVS, "box_paper", "pendulum_gaussian_learned", "pendulum_bernoulli"):
            path = os.path.join(base, name, "results.json")
            summaries[name] = json.load(open(path)) if os.path.exists(path) else None
    for env in IMPUTATION_ENVS if not args.tables_only else ():
        sub = argparse.Namespace(**{**vars(args), "env": env, "run_dir": os.path.join(base, env),
                                    "data": os.path.join(folder, f"{env}.npz"), "likelihood": "bernoulli"})  # fmt: skip
        summaries[env] = imputation_experiment(sub)
    if not args.tables_only:  # the KVAE at the paper's settings on the box (its baselines are the box run's)
        paper = {"epochs": args.paper_epochs, "filters": PAPER["filters"], "n_train": None, "likelihood": "bernoulli"}
        sub = argparse.Namespace(**{**vars(args), "env": "box", "run_dir": os.path.join(base, "box_paper"),
                                    "data": os.path.join(folder, "box.npz"), **paper})  # fmt: skip
        imputation_experiment(argparse.Namespace(**{**vars(sub), "stage": "kvae"}))
        summaries["box_paper"] = imputation_experiment(argparse.Namespace(**{**vars(sub), "stage": "evaluate"}))
    for likelihood in ("gaussian_learned", "bernoulli") if not args.tables_only else ():
        sub = argparse.Namespace(**{**vars(args), "env": "pendulum", "likelihood": likelihood,
                                    "epochs": args.pendulum_epochs or args.epochs,
                                    "data": os.path.join(folder, "pendulum.npz"),
                                    "run_dir": os.path.join(base, f"pendulum_{likelihood}")})  # fmt: skip
        summaries[f"pendulum_{likelihood}"] = pendulum_table(sub)
    if args.stage != "all":
        return summaries
    text = [f"# Results of `python -m pyro_kvae.experiments {' '.join(sys.argv[1:])}`"]
    for env in (*IMPUTATION_ENVS, "box_paper"):
        s = summaries[env]
        if s is None:
            text += ["", f"## {env}: not finished"]
            continue
        text += ["", f"## {env}: {imputation_heading(s)}", markdown_tables(s)]
    for likelihood in ("gaussian_learned", "bernoulli"):
        s = summaries[f"pendulum_{likelihood}"]
        text += ["", f"## pendulum, {likelihood}", "", pendulum_markdown(s) if s is not None else "not finished"]
    with open(os.path.join(base, "tables.md"), "w") as f:
        f.write("\n".join(text) + "\n")
    if args.docs:
        os.makedirs(args.docs, exist_ok=True)
        for env in (env for env in (*IMPUTATION_ENVS, "box_paper") if summaries[env] is not None):
            for fig in ("fig3a", "fig3b", "fig5"):
                shutil.copy(os.path.join(base, env, f"{fig}.png"), os.path.join(args.docs, f"{fig}_{env}.png"))
    print(f"tables in {os.path.abspath(os.path.join(base, 'tables.md'))}")
    return summaries
