# SPDX-License-Identifier: Apache-2.0
"""Baselines and the experiment runner."""

import json
import math
import os

import numpy as np
import pytest
import torch

from pyro_kvae.baselines import RNNBaseline
from pyro_kvae.data import generate, save
from pyro_kvae.evaluation import gap_mask, imputation_table
from pyro_kvae.experiments import main
from pyro_kvae.experiments.report import blank_frames_check, held_out_table, imputation_heading
from pyro_kvae.nn import MLPDecoder, MLPEncoder
from pyro_kvae.train import Trainer, random_mask


def test_masks():
    g = torch.Generator().manual_seed(0)
    m = random_mask((500, 20), 0.5, 4, g)
    assert m[:, :4].all() and abs((~m[:, 4:]).float().mean().item() - 0.5) < 0.02
    assert random_mask((3, 20), 1.0, 4, g)[:, 4:].sum() == 0
    m = gap_mask((2, 20), 6)  # the authors' placement: after the first 4 frames
    assert m.sum(1).tolist() == [14, 14] and not m[:, 4:10].any() and m[:, :4].all()


def test_imputation_table_scores_each_method_on_the_same_masks():
    x = (torch.rand(8, 20, 4, 4) > 0.5).float()
    methods = {"truth": lambda x, m: x, "inverted": lambda x, m: 1 - x}
    rows = imputation_table(methods, x, probs=(0.5,), gaps=(4,))
    errors = {(r["setting"], r["method"]): r["pixel_error"] for r in rows}
    assert errors == {(0.5, "truth"): 0.0, (0.5, "inverted"): 1.0, (4, "truth"): 0.0, (4, "inverted"): 1.0}


def test_imputation_table_scores_the_held_out_videos_alone():
    x = (torch.rand(8, 20, 4, 4) > 0.5).float()
    wrong_first_3 = lambda x, m: torch.cat([1 - x[:3], x[3:]])  # noqa: E731
    rows = imputation_table({"m": wrong_first_3}, x, probs=(0.5,), gaps=(4,), held_out=3)
    for r in rows:
        assert r["pixel_error_held_out"] == 0.0 and 0.2 < r["pixel_error"] < 0.5
    assert "pixel_error_held_out" not in imputation_table({"m": wrong_first_3}, x, probs=(0.5,), gaps=())[0]
    for bad in (8, -1, True, 2.0):
        with pytest.raises(ValueError, match="held_out"):
            imputation_table({"m": wrong_first_3}, x, held_out=bad)


def test_held_out_table_shows_the_held_out_errors_at_the_summary_settings():
    rows = [{"experiment": e, "setting": k, "method": "KVAE", "pixel_error": 1.0, "pixel_error_held_out": v}
            for e, k, v in [("missing_at_random", 0.5, 0.01), ("missing_at_random", 0.8, 0.02),
                            ("missing_in_middle", 5, 0.03)]]  # fmt: skip
    text = held_out_table({"rows": rows, "held_out_from": 500})
    assert "Test videos 500.. alone" in text
    assert text.splitlines()[-1] == "| KVAE | 0.0100 | 0.0200 | 0.0300 | n/a |"


def test_blank_frames_check_names_where_a_baseline_is_not_below_blank_frames():
    rows = [{"experiment": e, "setting": k, "method": m, "pixel_error": v}
            for e, k, m, v in [("missing_at_random", 0.5, "blank frames", 0.02), ("missing_at_random", 0.5, "A", 0.01),
                               ("missing_at_random", 0.5, "B", 0.03), ("missing_at_random", 0.9, "blank frames", 0.02),
                               ("missing_at_random", 0.9, "A", 0.05), ("missing_in_middle", 7, "blank frames", 0.02),
                               ("missing_in_middle", 7, "A", 0.01), ("missing_in_middle", 7, "B", 0.02)]]  # fmt: skip
    text = blank_frames_check({"rows": rows, "baselines": {"A": {}, "B": {}}})
    assert text == ("Against blank frames: A: below blank frames at every drop probability <= 0.8 and every gap <= 8; "
                    "B: not below blank frames at p=0.5, gap 7.")  # fmt: skip


def test_rnn_baseline_feeds_its_own_predictions_where_missing():
    torch.manual_seed(0)
    model = RNNBaseline(MLPEncoder(4, 2, (8,)), MLPDecoder(4, 2, (8,)), variational=True)
    a = torch.randn(3, 6, 2)
    full, pred = model.predict(a)
    stepped, pred2 = model.predict(a, torch.ones(3, 6, dtype=torch.bool))
    assert torch.equal(full, a) and torch.allclose(pred, pred2, atol=1e-6)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0]] * 3, dtype=torch.bool)
    filled, pred3 = model.predict(a, mask)
    assert torch.equal(filled[mask], a[mask]) and torch.equal(filled[~mask], pred3[~mask])
    b = a.clone()
    b[:, 2:4] = 100.0  # values at missing steps are never read
    assert torch.equal(model.predict(b, mask)[0], filled)


def test_experiment_runner(tmp_path, capsys):
    data = str(tmp_path / "box.npz")
    save(data, generate("box", (24, 4, 12), seed=0, progress=False))
    run = str(tmp_path / "exp")
    args = ["box", "--data", data, "--run-dir", run, "--epochs", "1", "--n-test", "12", "--dynamics", "mlp",
            "--rnn-epochs", "2"]  # fmt: skip
    main(args)
    results = json.load(open(os.path.join(run, "results.json")))
    assert results["iwae_particles"] == 10 and results["kvae_test_iwae_bound"] < 0
    methods = {r["method"] for r in results["rows"]}
    assert methods == {"KVAE smoothing", "KVAE filtering", "VAE-RNN", "AE-RNN", "blank frames"}
    assert len(results["rows"]) == 5 * (10 + 8)
    assert results["seed"] == 0 and results["settings"]["epochs"] == 1 and results["versions"]["torch"]
    assert results["kvae_train_seconds"] > 0 and results["n_valid"] == 4
    for name, b in results["baselines"].items():
        assert 0 <= b["reconstruction_error_test"] <= 1 and b["train_seconds"] > 0
        assert (b["autoencoder"], b["autoencoder_epochs"]) == (("kvae", None) if name == "AE-RNN" else ("own", 1))
    # running it again continues every model from its checkpoint: nothing is retrained
    mtimes = {f: os.path.getmtime(os.path.join(run, f)) for f in ("vae-rnn.pt", "ae-rnn.pt", "kvae/checkpoint.pt")}
    main(args)
    assert mtimes == {f: os.path.getmtime(os.path.join(run, f)) for f in mtimes}
    assert json.load(open(os.path.join(run, "results.json")))["rows"] == results["rows"]
    for name in (
        "results.csv",
        "fig3a.png",
        "fig3b.png",
        "fig3c.png",
        "fig4.png",
        "fig5.png",
        "generation.gif",
        "imputation.gif",
    ):
        assert os.path.exists(os.path.join(run, name)), name
    assert "outputs in" in capsys.readouterr().out


def test_pendulum_table_runner(tmp_path):
    data = str(tmp_path / "pendulum.npz")
    save(data, generate("pendulum", (8, 2, 4), seed=0, progress=False))
    for likelihood in ("bernoulli", "gaussian_learned"):
        summary = main(["pendulum", "--data", data, "--run-dir", str(tmp_path / likelihood), "--epochs", "1",
                        "--likelihood", likelihood, "--filters", "4", "4"])  # fmt: skip
        assert set(summary["test_elbo"]) == {"KVAE (CNN)", "KVAE (MLP)", "DVBF", "DMM"}
        assert set(summary["test_iwae_bound"]) == {"KVAE (CNN)", "KVAE (MLP)"}
        assert all(math.isfinite(v) for v in summary["test_elbo"].values())
        assert summary["per_frame"] == (likelihood == "gaussian_learned") and summary["versions"]["pyro"]
        assert summary["dvbf_dmm_epochs"] == 2
        if likelihood == "bernoulli":
            assert all(v < 0 for v in summary["test_elbo"].values())


def test_experiment_runner_on_own_videos(tmp_path):
    """--data pointing to your own videos (RGB, non-square): frame shape from the data, any likelihood."""
    from test_sources import toy_videos

    data = str(tmp_path / "videos.npy")
    np.save(data, toy_videos(n=30, T=12))
    run = str(tmp_path / "exp")
    args = ["box", "--data", data, "--run-dir", run, "--epochs", "1", "--baseline-epochs", "1", "--rnn-epochs", "1",
            "--n-test", "3", "--filters", "8", "8", "--likelihood", "continuous_bernoulli",
            "--iwae-particles", "2"]  # fmt: skip
    main(args)
    results = json.load(open(os.path.join(run, "results.json")))
    assert json.load(open(os.path.join(run, "kvae", "config.json")))["channels"] == 3
    assert {r["method"] for r in results["rows"]} >= {"KVAE smoothing", "VAE-RNN"} and results["n_test"] == 3


def test_evaluate_reports_the_longest_finished_run(tmp_path, monkeypatch):
    """--stage evaluate: the tables of the KVAE as far as it has trained, no training, no baselines until finished."""
    data, run = str(tmp_path / "box.npz"), tmp_path / "exp"
    save(data, generate("box", (16, 4, 8), seed=0, progress=False, T=8, size=16))
    common = ["box", "--data", data, "--run-dir", str(run), "--n-test", "4", "--filters", "4", "4",
              "--iwae-particles", "2", "--dynamics", "mlp"]  # fmt: skip
    assert main([*common, "--stage", "kvae", "--epochs", "1"]) is None
    mtime = os.path.getmtime(run / "kvae" / "checkpoint.pt")
    s = main([*common, "--stage", "evaluate", "--epochs", "3"])  # a run of 3 epochs, 1 finished
    assert os.path.getmtime(run / "kvae" / "checkpoint.pt") == mtime
    assert s["kvae_epochs"] == 1 and s["kvae_epochs_planned"] == 3 and s["baselines"] == {}
    assert s["positions"] == "true" and len(s["kvae_a_space_r2_test"]) == 2  # the simulator's positions
    assert {r["method"] for r in s["rows"]} == {"KVAE smoothing", "KVAE filtering", "blank frames"}
    assert "KVAE 1 of 3 epochs" in imputation_heading(s)
    assert json.load(open(run / "results.json"))["kvae_epochs"] == 1 and (run / "fig3a.png").exists()
    # the evaluated KVAE exported as a pretrained model, with what results.json records
    from pyro_kvae import pretrained

    out = tmp_path / "pretrained"
    out.mkdir()
    pretrained.export_run(str(run), "tiny", "a test CPU", out_dir=str(out))
    monkeypatch.setattr(pretrained, "HERE", str(out))
    info = pretrained.info("tiny")
    assert info["training"]["epochs"] == 1 and info["training"]["hardware"] == "a test CPU"
    assert "seed_selection" not in info["training"] and info["results"]["n_test"] == 4
    p05 = {r["method"]: r["pixel_error"] for r in s["rows"] if r["setting"] == 0.5}
    assert info["results"]["pixel_error_p0.5"] == p05 and len(p05) == 3
    trained = Trainer.resume(str(run / "kvae"), progress=False).model.state_dict()
    loaded = pretrained.load("tiny").state_dict()
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in loaded)


def test_all_runs_every_experiment_and_writes_the_readme_tables(tmp_path):
    folder = tmp_path / "data"
    for env in ("box", "box_gravity", "polygon", "pong"):
        save(str(folder / f"{env}.npz"), generate(env, (8, 2, 4), seed=0, progress=False, T=8, size=16))
    save(str(folder / "pendulum.npz"), generate("pendulum", (4, 2, 2), seed=0, progress=False, T=5))
    run, docs = tmp_path / "runs", tmp_path / "docs"
    summaries = main(["all", "--data", str(folder), "--run-dir", str(run), "--docs", str(docs), "--epochs", "1",
                      "--filters", "4", "4", "--iwae-particles", "2", "--rnn-epochs", "1",
                      "--paper-epochs", "1"])  # fmt: skip
    assert set(summaries) == {"box", "box_gravity", "polygon", "pong", "box_paper", "pendulum_gaussian_learned",
                              "pendulum_bernoulli"}  # fmt: skip
    tables = open(run / "tables.md").read()
    for env in ("box", "box_gravity", "polygon", "pong", "box_paper"):
        assert f"## {env}: 8 training sequences, {32 if env == 'box_paper' else 4} filters, KVAE 1 epochs" in tables
        assert json.load(open(run / env / "results.json"))["settings"]["epochs"] == 1
        for fig in ("fig3a", "fig3b", "fig5"):
            assert (docs / f"{fig}_{env}.png").exists()
    assert tables.count("Against blank frames: VAE-RNN: ") == 4  # each run with baselines
    # the paper-settings box is the KVAE alone (its baselines are the box run's)
    assert summaries["box_paper"]["baselines"] == {} and summaries["box_paper"]["settings"]["filters"] == [32, 32, 32]
    assert "## pendulum, gaussian_learned" in tables and "| DVBF |" in tables and "798.56" in tables
    os.remove(run / "tables.md")
    main(["all", "--run-dir", str(run), "--tables-only"])  # from the results files alone
    assert open(run / "tables.md").read().split("\n")[1:] == tables.split("\n")[1:]
    os.remove(run / "pong" / "results.json")  # an unfinished experiment is listed as such
    main(["all", "--run-dir", str(run), "--tables-only"])
    assert "## pong: not finished" in open(run / "tables.md").read()


def test_no_committed_results_file_holds_a_machine_path():
    """Results record paths relative to the repository (a run moves with a clone), never a machine's."""
    import glob
    import json
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = glob.glob(os.path.join(root, "docs", "experiments", "results", "*.json"))
    files += glob.glob(os.path.join(root, "experiments", "**", "*.json"), recursive=True)
    assert files

    def strings(o):
        if isinstance(o, dict):
            for v in o.values():
                yield from strings(v)
        elif isinstance(o, list):
            for v in o:
                yield from strings(v)
        elif isinstance(o, str):
            yield o

    for path in files:
        absolute = [s for s in strings(json.load(open(path))) if os.path.isabs(s)]
        assert absolute == [], f"{os.path.relpath(path, root)} holds {absolute}"


def test_experiment_selects_seeds_on_validation_data(tmp_path):
    data = str(tmp_path / "box.npz")
    save(data, generate("box", (24, 4, 12), seed=0, progress=False))
    run = str(tmp_path / "exp")
    args = ["box", "--data", data, "--run-dir", run, "--epochs", "2", "--n-test", "12", "--dynamics", "mlp",
            "--rnn-epochs", "2", "--select-seeds", "2", "--select-epochs", "1", "--baseline-seeds", "2"]  # fmt: skip
    main(args)
    results = json.load(open(os.path.join(run, "results.json")))
    for b in results["baselines"].values():
        scores = b["seed_scores_valid"]
        assert set(scores) == {"0", "1"} and b["seed"] == int(min(scores, key=scores.get))
        assert b["imputation_error_valid"] == scores[str(b["seed"])]
    assert os.path.exists(os.path.join(run, "vae-rnn-seed1.pt")) and os.path.exists(os.path.join(run, "ae-rnn.pt"))
    selection = json.load(open(os.path.join(run, "kvae", "selection.json")))
    assert set(selection["scores"]) == {"0", "1"} and results["kvae_epochs"] == 2
    chosen = json.load(open(os.path.join(run, "kvae", "config.json")))["seed"]
    assert chosen == selection["chosen_seed"] == int(min(selection["scores"], key=selection["scores"].get))
    # again: every model continues from its checkpoint, the choices stand
    mtime = os.path.getmtime(os.path.join(run, "kvae", "checkpoint.pt"))
    main(args + ["--stage", "evaluate"])
    assert os.path.getmtime(os.path.join(run, "kvae", "checkpoint.pt")) == mtime


def test_baselines_compare_seeds_early_and_train_only_the_chosen_one(tmp_path):
    data = str(tmp_path / "box.npz")
    save(data, generate("box", (24, 4, 12), seed=0, progress=False))
    run = str(tmp_path / "exp")
    args = ["box", "--data", data, "--run-dir", run, "--epochs", "3", "--rnn-epochs", "2", "--stage", "baselines",
            "--baseline-seeds", "3", "--baseline-select-epochs", "1",
            "--baselines", "vae-rnn", "ae-rnn-own"]  # fmt: skip
    main(args)
    assert not os.path.exists(os.path.join(run, "ae-rnn.pt"))  # not asked for (and no KVAE trained yet)
    for name in ("vae-rnn", "ae-rnn-own"):
        selection = json.load(open(os.path.join(run, f"{name}-selection.json")))
        scores = selection["scores"]
        assert set(scores) == {"0", "1", "2"} and selection["select_epochs"] == 1
        assert selection["seed"] == int(min(scores, key=scores.get))
        paths = {k: os.path.join(run, f"{name}.pt" if k == 0 else f"{name}-seed{k}.pt") for k in range(3)}
        for k, path in paths.items():
            state = torch.load(path, weights_only=False)["state"]
            if k == selection["seed"]:
                assert state["stage"] == "done" and state["ae_epochs"] == 3 and state["rnn_epochs"] == 2
            else:  # left after its selection epoch
                assert state["stage"] == "ae" and len(state["history"]) == 1
    # again: the choice stands and nothing trains
    mtimes = {p: os.path.getmtime(os.path.join(run, p)) for p in os.listdir(run)}
    main(args)
    assert {p: os.path.getmtime(os.path.join(run, p)) for p in os.listdir(run)} == mtimes


def test_ae_rnn_is_an_lstm_on_the_kvae_autoencoder_and_follows_it(tmp_path, capsys):
    """The AE-RNN's encoder and decoder are the KVAE's, frozen; when the KVAE trains on, its LSTM
    trains again on the new auto-encoder, and the baselines with their own auto-encoders stay."""
    data = str(tmp_path / "box.npz")
    save(data, generate("box", (16, 4, 8), seed=0, progress=False, T=8, size=16))
    run = tmp_path / "exp"
    common = ["box", "--data", data, "--run-dir", str(run), "--n-test", "4", "--filters", "4", "4",
              "--iwae-particles", "2", "--dynamics", "mlp", "--rnn-epochs", "2", "--baseline-epochs", "1"]  # fmt: skip

    def same_autoencoder():
        kvae = Trainer.resume(str(run / "kvae")).model
        saved = torch.load(run / "ae-rnn.pt", weights_only=False)["model"]
        ours = {f"{part}.{k}": v for part in ("encoder", "decoder")
                for k, v in getattr(kvae, part).state_dict().items()}  # fmt: skip
        return all(torch.equal(v, saved[k]) for k, v in ours.items())

    s = main([*common, "--epochs", "1", "--baselines", "vae-rnn", "ae-rnn", "ae-rnn-own"])
    assert set(s["baselines"]) == {"VAE-RNN", "AE-RNN", "AE-RNN (own AE)"} and same_autoencoder()
    assert "AE-RNN the KVAE's auto-encoder and 2 LSTM epochs" in imputation_heading(s)
    mtimes = {f: os.path.getmtime(run / f) for f in ("vae-rnn.pt", "ae-rnn-own.pt")}
    main([*common, "--epochs", "2", "--baselines", "vae-rnn", "ae-rnn", "ae-rnn-own"])  # the KVAE trains on
    assert "the KVAE has trained on since" in capsys.readouterr().out and same_autoencoder()
    assert mtimes == {f: os.path.getmtime(run / f) for f in mtimes}
