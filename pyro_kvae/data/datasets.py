# SPDX-License-Identifier: Apache-2.0
"""
Generating, saving and loading the video datasets.

A dataset file is an ``.npz`` with, for each split ``s`` in ``train``, ``valid``,
``test``: ``s/x`` binary frames ``(N, T, H, W)`` uint8, ``s/u`` controls
``(N, T, dim_u)`` float32 (``dim_u = 0`` without controls) and the true states
``s/position``, ``s/velocity`` ``(N, T, 2)`` (pendulum also ``s/angle``,
``s/angular_velocity`` ``(N, T)``), float32; plus ``config``, a JSON string
with the environment name, its settings, the seed and the split sizes.
"""

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..files import atomic_write, unreadable
from .environments import DEFAULT_SPLITS, ENVIRONMENTS
from .sources import holds_videos, load_videos, split_indices

SPLITS = ("train", "valid", "test")


def make_environment(name: str, **settings):
    """The environment called ``name`` (one of :data:`ENVIRONMENTS`) with ``settings`` overriding its defaults."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"env must be one of {sorted(ENVIRONMENTS)}, got {name!r}")
    return ENVIRONMENTS[name](**settings)


def simulate(env, n: int, seed: int, stream: int = 0, progress: bool = False, desc: str = "") -> Dict[str, np.ndarray]:
    """
    Simulates and renders ``n`` sequences of ``env``.

    Sequence ``i`` draws from its own generator ``np.random.default_rng([seed, stream, i])``,
    so it does not depend on ``n`` or on the order of generation.

    :returns: dict with ``x (n, T, H, W)`` uint8 and the state arrays ``(n, T, ...)``.
    """
    runs = [
        env.simulate(np.random.default_rng([seed, stream, i])) for i in tqdm(range(n), desc=desc, disable=not progress)
    ]
    states = {k: np.stack([r[k] for r in runs]).astype(np.float32) for k in runs[0]} if runs else {}
    x = (
        env.render({k: v.astype(np.float64) for k, v in states.items()})
        if runs
        else np.zeros((0, env.T, env.size, env.size), np.uint8)
    )
    return {"x": x, **states}


def generate(
    name: str,
    sizes: Optional[Sequence[int]] = None,
    seed: int = 0,
    progress: bool = True,
    **settings,
) -> Dict[str, np.ndarray]:
    """
    Generates the train/valid/test splits of environment ``name``.

    :param sizes: ``(n_train, n_valid, n_test)``; default :data:`DEFAULT_SPLITS` (the paper's).
    :param int seed: base seed; split ``k`` is stream ``k`` of :func:`simulate`.
    :returns: flat dict of arrays keyed ``"{split}/{field}"`` plus ``"config"``.
    """
    env = make_environment(name, **settings)
    sizes = tuple(DEFAULT_SPLITS[name] if sizes is None else sizes)
    if len(sizes) != 3 or any(int(n) < 0 for n in sizes):
        raise ValueError(f"sizes must be (n_train, n_valid, n_test) of non-negative ints, got {sizes}")
    out = {}
    for k, (split, n) in enumerate(zip(SPLITS, sizes)):
        data = simulate(env, int(n), seed, stream=k, progress=progress, desc=f"{name} {split}")
        out.update({f"{split}/{key}": value for key, value in data.items()})
    config = {"env": name, "settings": dataclasses.asdict(env), "seed": seed, "sizes": list(sizes)}
    out["config"] = np.array(json.dumps(config))
    return out


def from_videos(
    train, test, n_valid: int = 0, binarize: Optional[float] = None, name: str = "videos"
) -> Dict[str, np.ndarray]:
    """
    A dataset (the dict :func:`save` writes) from separate training and test videos, e.g. the
    KVAE authors' files ``{env}_train.npz`` / ``{env}_test.npz`` (key ``images``).

    :param train: training videos, any source of :func:`~pyro_kvae.data.sources.load_videos`.
    :param test: test videos, likewise.
    :param int n_valid: the first ``n_valid`` test videos are also the validation split (used
        only to pick the baselines' epochs and to watch training; every test video stays a test video).
    :param float binarize: pixels above it become 1, the rest 0 (``0`` is the authors' ``images > 0``).
    :param str name: what the ``config`` entry calls the data.
    :returns: flat dict ``"{split}/x"`` uint8 frames ``(N, T, H, W)`` plus ``"config"``.
    """
    splits = {"train": load_videos(train, binarize=binarize), "test": load_videos(test, binarize=binarize)}
    if isinstance(n_valid, bool) or not isinstance(n_valid, int) or not 0 <= n_valid <= len(splits["test"]):
        raise ValueError(f"n_valid must be an int in [0, {len(splits['test'])}] (test videos), got {n_valid!r}")
    if splits["train"].shape[1:] != splits["test"].shape[1:]:
        raise ValueError(
            f"train and test videos must share (T, *frame_shape): {splits['train'].shape[1:]} and "
            f"{splits['test'].shape[1:]}"
        )
    splits["valid"] = splits["test"][:n_valid]
    out = {}
    for split in SPLITS:
        x = splits[split]
        out[f"{split}/x"] = x.astype(np.uint8) if binarize is not None else x  # else float32 in [0, 1]
    config = {
        "env": name,
        "sources": {"train": str(train), "test": str(test)},
        "sha256": {
            split: file_digest(src)
            for split, src in (("train", train), ("test", test))
            if isinstance(src, (str, os.PathLike)) and os.path.isfile(src)
        },  # fmt: skip
        "binarize": binarize,
        "valid": f"the first {n_valid} test videos",
        "sizes": [len(splits[s]) for s in SPLITS],
    }
    out["config"] = np.array(json.dumps(config))
    return out


def file_digest(path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def built_from(path: str, train, test) -> bool:
    """Whether the dataset file ``path`` (written by :func:`save` from :func:`from_videos`) was built
    from the files ``train`` and ``test`` as they are now (same bytes: their recorded SHA-256)."""
    recorded = _config(path).get("sha256", {})
    return recorded == {"train": file_digest(train), "test": file_digest(test)}


def _config(path: str) -> dict:
    """The ``config`` entry of the dataset file ``path``; ``{}`` if it has none or is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return json.loads(str(f["config"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return {}


def authors_files(env: str, folder: str):
    """The KVAE authors' ``folder/<env>_train.npz`` and ``folder/<env>_test.npz``.

    :raises FileNotFoundError: naming the folder if it does not exist, else the files that are not there.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder (it should hold the KVAE authors' {env}_train.npz, "
                                f"{env}_test.npz)")  # fmt: skip
    files = [os.path.join(folder, f"{env}_{split}.npz") for split in ("train", "test")]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{folder} has no {', '.join(missing)} (the KVAE authors' files of {env!r})")
    return files


#: how :func:`from_authors` builds its files; a cached file of another version is built again
AUTHORS_FORMAT = 4
#: the pixels of the authors' pong frames that only the ball lights: rows 1 to 30 (rows 0 and 31
#: are the floor and the roof) and columns 2 to 29 (columns 0, 1 and 30, 31 hold the paddles)
PONG_BALL_WINDOW = (slice(1, 31), slice(2, 30))


def ball_centre(x: np.ndarray, window=(slice(None), slice(None))) -> np.ndarray:
    """
    The centre of the lit pixels of each frame of ``x (..., H, W)`` inside ``window`` (rows,
    columns), as a position ``(..., 2)`` in pixels with ``y`` up, as the simulators' (pixel
    centres at ``x = column + 0.5``, ``y = H - row - 0.5``); NaN where nothing is lit there.
    """
    H, W = x.shape[-2:]
    rows, cols = np.arange(H)[window[0]], np.arange(W)[window[1]]
    lit = (x[..., window[0], window[1]] > 0).astype(np.float64)
    n = lit.sum((-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (lit.sum(-2) * (cols + 0.5)).sum(-1) / n
        cy = (lit.sum(-1) * (H - rows - 0.5)).sum(-1) / n
    return np.stack([cx, cy], -1).astype(np.float32)


def from_authors(env: str, folder: str, n_valid: int = 500) -> Dict[str, np.ndarray]:
    """The paper's dataset from the KVAE authors' files of ``env`` in ``folder`` (:func:`authors_files`):
    :func:`from_videos` binarised as the authors do (``images > 0``), the first ``n_valid`` test
    videos also the validation split, and ``position (N, T, 2)`` of every split: the ball's true
    position in each frame, in the simulator's units. The files' ``state[n, t]`` is recorded after
    the physics step that follows frame ``t`` (it matches the ball of frame ``t + 1``), so frame
    ``t``'s position is ``state[n, t - 1, :2]``; the first frame's is unknown and NaN, and so is
    the position of a ball outside the frame (``[0, W]^2`` in the simulator's units, ``W`` the
    frame's width): the authors' ``box_gravity`` files hold 54 training and 11 test sequences
    where the ball falls through the floor and leaves the frames blank but for the walls.
    The authors' pong files record no state: there ``position`` is estimated from the frames,
    the :func:`ball_centre` of the pixels that only the ball lights (:data:`PONG_BALL_WINDOW`),
    and the config says so (``"position": "estimated from the frames"``)."""
    train, test = authors_files(env, folder)
    data = from_videos(train, test, n_valid=n_valid, binarize=0.0, name=f"authors_{env}")
    config = json.loads(str(data["config"]))
    config["authors_format"] = AUTHORS_FORMAT
    data["config"] = np.array(json.dumps(config))
    states = {}
    for split, path in (("train", train), ("test", test)):
        with np.load(path) as f:
            if "state" in f.files:
                state = f["state"][..., :2].astype(np.float32)
                width = f["images"].shape[-1]
                state[((state < 0) | (state > width)).any(-1)] = np.nan  # the ball has left the frame
                states[split] = np.concatenate([np.full_like(state[:, :1], np.nan), state[:, :-1]], 1)
    if not states and env == "pong":
        states = {split: ball_centre(data[f"{split}/x"], PONG_BALL_WINDOW) for split in ("train", "test")}
        config["position"] = "estimated from the frames"
        data["config"] = np.array(json.dumps(config))
    if len(states) == 2:
        states["valid"] = states["test"][:n_valid]
        data.update({f"{split}/position": v for split, v in states.items()})
    return data


def authors_dataset(env: str, folder: str, path: str) -> str:
    """The paper's dataset of ``env`` (:func:`from_authors`) cached in ``path``: built if missing,
    and built again (saying so) when it was not built from the authors' files in ``folder`` as
    they are now (:func:`built_from`) or by another version of :func:`from_authors`. Returns ``path``.

    :raises FileNotFoundError: as :func:`authors_files`, before any work.
    """
    files = authors_files(env, folder)
    exists = os.path.exists(path)
    if not exists or not built_from(path, *files) or _config(path).get("authors_format") != AUTHORS_FORMAT:
        if exists:
            print(f"{os.path.relpath(path)} was not built from {', '.join(files)} as they are now, by this version: "
                  "rebuilding it")  # fmt: skip
        save(path, from_authors(env, folder))
    return path


def save(path: str, data: Dict[str, np.ndarray]) -> None:
    """Writes ``data`` to ``path`` (.npz, compressed) atomically: a reader never sees a partial file."""
    atomic_write(path, lambda f: np.savez_compressed(f, **data))


def load(path: str) -> Dict[str, np.ndarray]:
    """
    Reads a dataset file written by :func:`save` into memory.

    :raises ValueError: naming the file and the fix if it is not a readable ``.npz`` dataset
        (truncated, empty, another format, object arrays, no ``config``).
    """
    fix = (
        "Delete it and it is generated again on the next run, or write it with "
        f"`python -m pyro_kvae.data ENV --out {path}`."
    )
    if os.path.isfile(path) and not zipfile.is_zipfile(path):  # np.load would try to unpickle it
        size = os.path.getsize(path)
        cause = "the file is empty" if size == 0 else f"its {size} bytes are not a complete .npz (zip) archive"
        raise ValueError(f"{path} is not a readable dataset file ({cause}). {fix}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as e:
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise unreadable(path, "dataset file (.npz written by pyro_kvae.data)", e, fix) from None
    if not isinstance(data, dict) or "config" not in data:
        found = sorted(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a pyro-kvae dataset: it has no 'config' entry (found {found}). {fix}")
    return data


class VideoDataset(torch.utils.data.Dataset):
    """
    One split of a video dataset, held in memory as tensors.

    ``source`` is one of:

    * a dataset ``.npz`` of this package (:func:`save`), with its splits; if the file does
      not exist it is generated with ``generate(env, sizes, seed)`` and cached there;
    * your own videos (:mod:`pyro_kvae.data.sources`): a numpy array ``(N, T, H, W[, C])``,
      a ``.npy`` of such an array, a ``.gif`` / ``.mp4`` / ``.npz`` video, or a folder of
      video files; they are split by a permutation seeded with ``seed`` into ``fractions``
      (train, valid, test), or taken whole with ``split="all"``.

    Items are dicts with ``x (T, *frame_shape)`` float32 (``frame_shape`` is ``(H, W)`` or
    ``(C, H, W)``), ``u (T, dim_u)`` float32 (``dim_u = 0`` for your own videos), and for
    simulated data the true states (``position (T, 2)`` ...), so a
    :class:`torch.utils.data.DataLoader` yields ``x (batch, T, *frame_shape)``.

    :param str split: ``"train"``, ``"valid"``, ``"test"``, or ``"all"`` for your own videos.
    :param str env: environment to generate if the ``.npz`` is missing (default: from the file name).
    :param bool channels_last: an array source's 5-d layout is ``(N, T, H, W, C)`` (else ``(N, T, C, H, W)``).
    :param float binarize: your own videos only: pixels above it become 1, the rest 0 (``0``: the
        KVAE authors' rule ``images > 0``); default: the values as :func:`~.sources.load_videos` scales them.
    """

    def __init__(
        self,
        source,
        split: str = "train",
        env: Optional[str] = None,
        sizes=None,
        seed: int = 0,
        channels_last: bool = True,
        fractions=(0.8, 0.1, 0.1),
        binarize: Optional[float] = None,
    ):
        own = (
            not isinstance(source, (str, os.PathLike))
            or not str(source).endswith(".npz")
            or (os.path.isfile(source) and holds_videos(str(source)))
        )
        if split not in SPLITS + (("all",) if own else ()):
            raise ValueError(f"split must be one of {SPLITS + (('all',) if own else ())}, got {split!r}")
        if binarize is not None and not own:
            raise ValueError(f"binarize applies to your own videos; {source} is a pyro-kvae dataset (already binary)")
        if own:
            videos = load_videos(
                source if not isinstance(source, os.PathLike) else str(source), channels_last, binarize
            )
            idx = split_indices(len(videos), fractions, seed)[split]
            x = torch.from_numpy(videos[idx])
            self.tensors = {"x": x, "u": x.new_zeros(x.shape[:2] + (0,))}
            self.path = source if isinstance(source, (str, os.PathLike)) else "an array"
            self.config = {"env": "own videos", "source": str(self.path), "fractions": list(fractions), "seed": seed,
                           "binarize": binarize}  # fmt: skip
            self.split = split
            return
        path = str(source)
        if not os.path.exists(path):
            name = env or os.path.splitext(os.path.basename(path))[0]
            save(path, generate(name, sizes, seed=seed))
        data = load(path)
        try:
            self.config = json.loads(str(data["config"]))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: its 'config' entry is not JSON ({e}); regenerate the file") from None
        prefix = split + "/"
        self.tensors = {
            k[len(prefix) :]: torch.from_numpy(v.astype(np.float32)) for k, v in data.items() if k.startswith(prefix)
        }
        x = self.tensors.get("x")
        if x is None or x.dim() not in (4, 5):
            got = "nothing" if x is None else f"shape {tuple(x.shape)}"
            raise ValueError(f"{path}: '{split}/x' must hold frames of shape (N, T, H, W), found {got}")
        self.tensors.setdefault("u", x.new_zeros(x.shape[:2] + (0,)))
        self.split, self.path = split, path

    @property
    def frame_shape(self):
        """``(H, W)`` or ``(C, H, W)``."""
        return tuple(self.x.shape[2:])

    def take(self, n: int) -> "VideoDataset":
        """The first ``min(n, len(self))`` sequences as a new dataset (sharing memory); ``n >= 1``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int (sequences to take from {self.path}), got {n!r}")
        new = object.__new__(VideoDataset)
        new.config, new.split, new.path = self.config, self.split, self.path
        new.tensors = {k: v[:n] for k, v in self.tensors.items()}
        return new

    @property
    def x(self) -> torch.Tensor:
        """All frames ``(N, T, H, W)``."""
        return self.tensors["x"]

    @property
    def u(self) -> torch.Tensor:
        """All controls ``(N, T, dim_u)``."""
        return self.tensors["u"]

    def __len__(self) -> int:
        return self.tensors["x"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}
