# SPDX-License-Identifier: Apache-2.0
"""
Your own videos: frames from a numpy array, a ``.npy`` file, a ``.gif`` / ``.mp4``
file, or a folder of such files (``.npz`` too), as one array
``(N, T, H, W)`` or ``(N, T, C, H, W)`` (channels first, float32).

A ``.npy`` file given on its own holds several videos ``(N, T, H, W[, C])``, and so
does an ``.npz`` with the key ``images`` (the layout of the KVAE authors' datasets;
other keys are ignored); every other file (and a ``.npy`` inside a folder) holds one
video ``(T, H, W[, C])``, whose ``C`` is 1, 3 (RGB) or 4 (RGBA).

Pixel values: ``uint8`` frames are divided by 255, ``bool`` frames become 0/1,
float frames are kept; ``binarize=b`` then makes every pixel above ``b`` a 1 and
the rest 0 (``binarize=0`` is the authors' rule ``images > 0``). Arrays and files hold channels last, as images do:
a video is ``(T, H, W)`` or ``(T, H, W, C)``, several are ``(N, T, H, W[, C])``
(pass ``channels_last=False`` for an array already ``(N, T, C, H, W)``). A fourth
(alpha) channel of RGBA frames is dropped. GIF and MP4 are read with ``imageio``
(MP4 needs its ffmpeg plugin: ``pip install imageio imageio-ffmpeg``, or in a clone
``pip install -e ".[video]"``).
"""

import os
import zipfile
from typing import Optional, Sequence

import numpy as np

VIDEO_SUFFIXES = (".npy", ".npz", ".gif", ".mp4")
#: the key of an ``.npz`` that holds several videos ``(N, T, H, W[, C])``
VIDEOS_KEY = "images"
CHANNELS = (1, 3, 4)


def _frames(video: np.ndarray, where: str) -> np.ndarray:
    """float32 frames of one or more videos, values scaled as the module says."""
    if video.dtype == np.uint8:
        return video.astype(np.float32) / 255.0
    if video.dtype == np.bool_ or np.issubdtype(video.dtype, np.integer):
        if video.dtype != np.bool_ and (video.min() < 0 or video.max() > 1):
            raise ValueError(
                f"{where}: integer frames must be uint8 (0..255) or 0/1, found {video.min()}..{video.max()}"
            )
        return video.astype(np.float32)
    if np.issubdtype(video.dtype, np.floating):
        return video.astype(np.float32)
    raise ValueError(f"{where}: frames must be numbers (uint8, bool or float), got dtype {video.dtype}")


def read_video(path: str) -> np.ndarray:
    """One video file as ``(T, H, W)`` or ``(T, H, W, C)``, values as :func:`_frames` leaves them."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: unsupported video file; supported are {', '.join(VIDEO_SUFFIXES)}")
    if suffix == ".npy":
        video = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if len(f.files) != 1 and "x" not in f.files:
                raise ValueError(f"{path}: a video .npz must hold one array, or one called 'x'; found {f.files}")
            video = f["x" if "x" in f.files else f.files[0]]
    else:
        try:
            import imageio.v3 as iio
        except ImportError:
            raise ImportError(
                f"reading {path} needs imageio: pip install imageio imageio-ffmpeg (or pip install -e '.[video]')"
            ) from None
        try:
            video = iio.imread(path, index=None)
        except Exception as e:
            hint = " (MP4 needs imageio's ffmpeg plugin: pip install imageio-ffmpeg)" if suffix == ".mp4" else ""
            raise ValueError(f"{path}: cannot read this video ({type(e).__name__}: {e}){hint}") from None
    if video.ndim not in (3, 4):
        raise ValueError(f"{path}: a video must be (T, H, W) or (T, H, W, C), got shape {video.shape}")
    if video.ndim == 4 and video.shape[-1] not in CHANNELS:
        raise ValueError(
            f"{path}: a video (T, H, W, C) has C in {CHANNELS}, got shape {video.shape}; several grey videos "
            f"(N, T, H, W) go in an .npz under the key '{VIDEOS_KEY}' or in a .npy given on its own"
        )
    return _drop_alpha(video)


def _drop_alpha(videos: np.ndarray) -> np.ndarray:
    """RGBA frames (channels last) without their alpha channel."""
    return videos[..., :3] if videos.ndim >= 4 and videos.shape[-1] == 4 else videos


def read_videos_npz(path: str) -> np.ndarray:
    """The videos ``(N, T, H, W[, C])`` under the key ``images`` of an ``.npz`` (other keys are ignored)."""
    with np.load(path, allow_pickle=False) as f:
        if VIDEOS_KEY not in f.files:
            raise ValueError(
                f"{path}: an .npz of several videos holds them under the key '{VIDEOS_KEY}'; found {f.files}"
            )
        videos = f[VIDEOS_KEY]
    if videos.ndim not in (4, 5) or (videos.ndim == 5 and videos.shape[-1] not in CHANNELS):
        raise ValueError(f"{path}: '{VIDEOS_KEY}' must be (N, T, H, W) or (N, T, H, W, C), got shape {videos.shape}")
    return _drop_alpha(videos)


def holds_videos(path: str) -> bool:
    """Whether ``path`` is an ``.npz`` with the key ``images`` (several videos)."""
    if not path.lower().endswith(".npz") or not zipfile.is_zipfile(path):  # a damaged file is reported elsewhere
        return False
    with zipfile.ZipFile(path) as f:  # the names only, no array read
        return VIDEOS_KEY + ".npy" in f.namelist()


def load_videos(source, channels_last: bool = True, binarize: Optional[float] = None) -> np.ndarray:
    """
    All videos of ``source`` (an array, a video file, an ``.npz`` of videos under ``images``, or
    a folder of video files) as float32 ``(N, T, H, W)`` or ``(N, T, C, H, W)``.

    :param bool channels_last: an array source's 5-d layout is ``(N, T, H, W, C)`` (else ``(N, T, C, H, W)``).
    :param float binarize: if given, pixels above it (after scaling to [0, 1]) become 1, the others 0.

    :raises ValueError: naming the source (and the file) when it is not a set of equally shaped videos.
    """
    if isinstance(source, np.ndarray) or hasattr(source, "numpy"):
        videos, where = np.asarray(source), "the array"
        if videos.ndim not in (4, 5):
            raise ValueError(f"videos must be an array (N, T, H, W) or (N, T, H, W, C), got shape {videos.shape}")
    elif os.path.isdir(source):
        names = sorted(os.listdir(source))
        other = [n for n in names if os.path.splitext(n)[1].lower() not in VIDEO_SUFFIXES and not n.startswith(".")]
        if other:
            raise ValueError(
                f"{source} holds {other[:3]}: a folder of videos may hold only {', '.join(VIDEO_SUFFIXES)}"
            )
        files = [os.path.join(source, n) for n in names if not n.startswith(".")]
        if not files:
            raise ValueError(f"{source} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
        clips = [read_video(f) for f in files]
        shapes = {c.shape for c in clips}
        if len(shapes) > 1:
            first = clips[0].shape
            odd, shape = next((f, c.shape) for f, c in zip(files, clips) if c.shape != first)
            raise ValueError(f"videos in {source} must share one shape: {files[0]} is {first}, {odd} is {shape}")
        videos, where = np.stack(clips), source
    elif os.path.isfile(source) and holds_videos(source):
        videos, where = read_videos_npz(source), source
    elif os.path.isfile(source) and source.lower().endswith(".npy"):
        # a .npy given on its own holds several videos; inside a folder, one
        videos, where = np.load(source, allow_pickle=False), source
        if videos.ndim not in (4, 5):
            raise ValueError(f"{source}: a .npy of videos must be (N, T, H, W) or (N, T, H, W, C), got {videos.shape}")
        if videos.ndim == 4 and videos.shape[-1] in (3, 4):
            raise ValueError(
                f"{source} of shape {videos.shape} is ambiguous: grey videos (N, T, H, W) {videos.shape[-1]} pixels "
                "wide, or one colour video (T, H, W, C)? Save several videos as (N, T, H, W, C), or put one "
                "video in a folder (a .npy inside a folder holds one video)"
            )
        videos = _drop_alpha(videos) if videos.ndim == 5 else videos
    elif os.path.isfile(source):
        videos, where = read_video(source)[None], source
    else:
        raise FileNotFoundError(f"no videos at {source}: give an array, a {'/'.join(VIDEO_SUFFIXES)} file or a folder")
    videos = _frames(videos, where)
    if binarize is not None:
        if isinstance(binarize, bool) or not isinstance(binarize, (int, float)) or not 0 <= binarize < 1:
            raise ValueError(f"binarize must be a threshold in [0, 1) or None, got {binarize!r}")
        videos = (videos > binarize).astype(np.float32)
    if videos.ndim == 5:
        if channels_last:
            videos = np.moveaxis(videos, -1, 2)
        if videos.shape[2] == 1:
            videos = videos[:, :, 0]
    return np.ascontiguousarray(videos)


def split_indices(n: int, fractions: Sequence[float], seed: int):
    """Indices of the train / valid / test parts of ``n`` videos: a seeded permutation cut by
    ``fractions``; every part but train may be empty, train holds at least one video."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    order = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = int(n * fractions[1]), int(n * fractions[2])
    n_train = max(1, n - n_valid - n_test)
    n_valid = min(n_valid, n - n_train)
    return {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid : n_train + n_valid + n_test],
        "all": np.arange(n),
    }
