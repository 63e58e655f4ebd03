"""``cellgen evaluate video``: FID / FVD of a video diffusion checkpoint against real test videos and the real floor.

Trains nothing. The real videos are cut exactly as the model's training videos were (the checkpoint records its data
module's patch settings), from a region of the frame the model never saw (``--test_region``): FVD(generated, real
test) / FVD(real train, real test) then says how far the samples are from being another draw of real data, with the
same number of videos in every set (Fréchet distances of few samples are biased upwards, equally so here). Long videos
are generated chunk by chunk (reconstruction guidance) and measured per 10-frame window, so FVD of frames 30-40 over
FVD of frames 0-10 says whether quality holds with length.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from cellgen.data.errors import CellgenInputError


def real_patch_videos(datamodule_hparams: dict, region: list[float] | None, sequences: list[str] | None) -> np.ndarray:
    """Real (N, T, P, P) patch videos in [0, 1], cut with the training data's settings from ``region``."""
    from cellgen.data.ctc import checked_sequence
    from cellgen.data.patch_video import PatchVideoSpec, load_patch_videos

    hp = datamodule_hparams
    spec = PatchVideoSpec(
        hp["patch_size"],
        hp["overlap"],
        hp["num_frames"],
        tuple(hp["start_frames"]),
        hp["frame_skip"],
        tuple(float(v) for v in region) if region is not None else None,
        hp.get("intensity", "video"),  # checkpoints from before the option used the paper's scaling
    )
    paths = sequences or hp.get("sequences") or []
    if not paths:
        raise CellgenInputError(None, "the checkpoint's data module names no sequences", "pass --test_sequences")
    cache = hp.get("cache_dir") or None
    return np.concatenate([load_patch_videos(checked_sequence(p), spec, cache)[0][:, 0] for p in paths])


def pick(videos: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` videos drawn without replacement (all when fewer), in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(videos))
    return videos[np.sort(order[:count])]


def frame_subset(videos: np.ndarray, per_video: int) -> np.ndarray:
    """``per_video`` evenly spaced frames (N * per_video, H, W) of videos (N, T, H, W), for FID."""
    picks = np.unique(np.linspace(0, videos.shape[1] - 1, per_video).round().astype(int))
    return videos[:, picks].reshape(-1, *videos.shape[2:])


class Features:
    """Inception (FID) and I3D (FVD) features, networks loaded once; real-set features cached on disk by key."""

    def __init__(self, cache_dir: Path | None) -> None:
        from cellgen.metrics.fid import InceptionFeatures
        from cellgen.metrics.i3d import load_i3d

        self.inception = InceptionFeatures()
        self.i3d = load_i3d()
        self.cache_dir = cache_dir

    def __call__(self, videos: np.ndarray, frames_per_video: int, key: str | None = None) -> dict[str, np.ndarray]:
        """``{"inception": (N * k, 2048), "i3d": (N, 400)}`` of videos (N, T, H, W) in [0, 1]."""
        from cellgen.data.atomic import atomic_file
        from cellgen.metrics.fid import extract_features
        from cellgen.metrics.fvd import i3d_logits

        path = self.cache_dir / f"real-{key}.npz" if key and self.cache_dir else None
        if path is not None and path.is_file():
            with np.load(path) as cached:
                return {name: cached[name] for name in cached.files}
        features = {
            "inception": extract_features(frame_subset(videos, frames_per_video), self.inception).double().numpy(),
            "i3d": i3d_logits(videos, self.i3d).numpy(),
        }
        if path is not None:
            with atomic_file(path) as tmp:
                np.savez(tmp, **features)
        return features


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    from cellgen.metrics.frechet import frechet_distance_of_features

    return frechet_distance_of_features(a, b)


def evaluate_video_command(
    *,
    ckpt: str,
    test_region: list[float] | None = (0.0, 1.0, 0.75, 1.0),
    test_sequences: list[str] | str | None = None,
    num_videos: int = 64,
    frames: int | None = None,
    steps: int | None = None,
    eta: float | None = None,
    overlap: int | None = None,
    guidance_weight: float | None = None,
    batch_size: int = 8,
    fid_frames: int = 2,
    seed: int = 0,
    bootstrap: int = 200,
    out: str = "runs/evaluate_video",
    device: str = "auto",
    wandb_project: str | None = None,
) -> int:
    """FID and FVD of generated patch videos against a real test set, with the real-train-vs-real-test floor.

    Prints one JSON line: the distances, the floors, their ratios and, for videos longer than the model's
    ``num_frames``, the distances per window of ``num_frames`` frames (and the last window's FVD over the first's).

    Args:
        ckpt: a VideoDiffusion or FlowVideoDiffusion checkpoint written by ``cellgen fit`` (it records the data).
        test_region: ``(y0, y1, x0, x1)`` fractions of the frame the real test videos come from; disjoint from the
            training ``region`` recorded in the checkpoint (default: the right quarter, as configs/psc32 train left).
        test_sequences: real test sequence folder(s) (default: the training sequences, other region).
        num_videos: videos per set (generated, real test, real train).
        frames: generated frames per video (default: the model's ``num_frames``); e.g. 40 from a 10-frame model.
        steps, eta: DDIM steps per chunk and stochasticity (defaults: the model's).
        overlap, guidance_weight: extension settings (defaults: the model's).
        batch_size: videos per network call.
        fid_frames: frames per video used for FID (evenly spaced).
        seed: which real videos are drawn, and the base seed of the generated ones.
        bootstrap: draws for the spread of the FVD and FID ratios (features resampled by video, nothing
            recomputed; :mod:`cellgen.metrics.frechet_bootstrap`); 0 skips it.
        out: folder for report.json, report.md, generated.npz and grid GIFs.
        device: auto, cpu or cuda.
        wandb_project: also log the table to this W&B project (offline unless WANDB_MODE is set).
    """
    from cellgen.callbacks.previews import to_uint8, video_grid, write_gif
    from cellgen.commands.reports import write_report
    from cellgen.commands.sample import generate_videos, load_video_model
    from cellgen.commands.synthesize import resolve_device
    from cellgen.data.cache import resolve_cache_dir
    from cellgen.metrics.weights import WeightsUnavailable
    from cellgen.models.checkpoint import read_checkpoint

    if num_videos < 2 or fid_frames < 1:
        raise CellgenInputError(None, "--num_videos must be >= 2 and --fid_frames >= 1", "e.g. --num_videos 64")
    state = read_checkpoint(ckpt)
    data_hp = state.get("datamodule_hyper_parameters")
    if not data_hp or "patch_size" not in data_hp:
        raise CellgenInputError(ckpt, "the checkpoint records no patch-video data module", "use one from `cellgen fit`")
    train_region = data_hp.get("region")
    sequences = [test_sequences] if isinstance(test_sequences, str) else test_sequences
    if train_region is not None and test_region is not None and not sequences:
        (ty0, ty1, tx0, tx1), (sy0, sy1, sx0, sx1) = train_region, test_region
        if ty0 < sy1 and sy0 < ty1 and tx0 < sx1 and sx0 < tx1:
            message = f"--test_region {list(test_region)} overlaps the training region {train_region}"
            raise CellgenInputError(None, message, "pick disjoint fractions of the frame")
    model = load_video_model(ckpt, resolve_device(device))
    model.hparams.seed = seed
    window = model.hparams.num_frames
    frames = frames or window
    began = time.perf_counter()
    test = pick(real_patch_videos(data_hp, test_region, sequences), num_videos, seed)
    train = pick(real_patch_videos(data_hp, train_region, None), len(test), seed + 1)
    n = len(test)
    try:
        features = Features(resolve_cache_dir(data_hp.get("cache_dir") or None, "metrics"))
        names = ("sequences", "patch_size", "overlap", "num_frames", "start_frames", "frame_skip")
        cut = {k: data_hp.get(k) for k in names}  # how videos are cut, not which model: both models share the cache
        if data_hp.get("intensity", "video") != "video":  # keys of caches from before the option stay valid
            cut["intensity"] = data_hp["intensity"]
        settings = repr((sorted(cut.items()), train_region, test_region, sequences, n, seed, fid_frames))
        key = hashlib.sha1(settings.encode()).hexdigest()[:12]
        real_test = features(test, fid_frames, f"{key}-test")
        real_train = features(train, fid_frames, f"{key}-train")
        real_s = time.perf_counter() - began
        began = time.perf_counter()
        generated = generate_videos(model, range(n), frames, batch_size, steps, eta, overlap, guidance_weight)["video"]
        generate_s = time.perf_counter() - began
        began = time.perf_counter()
        starts = sorted({0, frames - window})  # the first and the last window of the model's length
        per_window, first_features = {}, None
        for start in starts:
            fake = features(generated[:, start : start + window], fid_frames)
            if start == 0:
                first_features = fake  # the bootstrap spread is of the first window's ratios
            per_window[f"{start}-{start + window}"] = {
                "FVD": _distance(real_test["i3d"], fake["i3d"]),
                "FID": _distance(real_test["inception"], fake["inception"]),
            }
        metric_s = time.perf_counter() - began
    except WeightsUnavailable as exc:
        raise CellgenInputError(None, str(exc), "run `make install-metrics`") from exc
    floor = {
        "FVD": _distance(real_test["i3d"], real_train["i3d"]),
        "FID": _distance(real_test["inception"], real_train["inception"]),
    }
    first, last = per_window[f"0-{window}"], per_window[f"{frames - window}-{frames}"]
    row = {
        "model": type(model).__name__,
        "step": int(state.get("global_step", 0)),
        "videos": n,
        "frames": frames,
        "FVD": first["FVD"],
        "FVD_floor": floor["FVD"],
        "FVD_ratio": first["FVD"] / max(floor["FVD"], 1e-12),
        "FID": first["FID"],
        "FID_floor": floor["FID"],
        "FID_ratio": first["FID"] / max(floor["FID"], 1e-12),
    }
    if bootstrap:
        from cellgen.metrics.frechet_bootstrap import bootstrap_frechet_ratio

        frames_per_video = len(frame_subset(test[:1], fid_frames))  # FID rows per video, resampled together
        for name, key, group in (("FVD", "i3d", 1), ("FID", "inception", frames_per_video)):
            fake, real, floor_set = first_features[key], real_test[key], real_train[key]
            spread = bootstrap_frechet_ratio(fake, real, floor_set, draws=bootstrap, seed=seed, group=group)
            row[f"{name}_ratio_sd"], row[f"{name}_ratio_ci95"] = spread["ratio_sd"], spread["ratio_ci95"]
    if frames > window:
        row["FVD_last_over_first"] = last["FVD"] / max(first["FVD"], 1e-12)
        row["FID_last_over_first"] = last["FID"] / max(first["FID"], 1e-12)
    row["seconds"] = {"real": round(real_s, 1), "generate": round(generate_s, 1), "metrics": round(metric_s, 1)}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "generated.npz", videos=generated.astype(np.float16), real_test=test[:16])
    # features of frames 0-T and the real sets: a later bootstrap or another statistic needs no network
    np.savez_compressed(
        out_dir / "features.npz",
        **{
            f"{s}_{k}": v
            for s, f in (("generated", first_features), ("real_test", real_test), ("real_train", real_train))
            for k, v in f.items()
        },
    )
    grids = {
        "generated": write_gif(out_dir / "generated.gif", video_grid([to_uint8(v) for v in generated[:16]])),
        "real_test": write_gif(out_dir / "real_test.gif", video_grid([to_uint8(v) for v in test[:16]])),
    }
    table = [{"window": name, **values} for name, values in per_window.items()] + [{"window": "real floor", **floor}]
    extra = {"summary": row, "ckpt": str(ckpt), "test_region": test_region, "train_region": train_region}
    write_report(out_dir, "video", table, ["window", "FVD", "FID"], extra, grids, wandb_project)
    print(json.dumps({**row, "windows": per_window, "report": str(out_dir / "report.json")}))
    return 0
