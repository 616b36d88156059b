"""Embed stage speed: training and inference images per second per backbone and input size.

Random inputs and weights: the arithmetic is the same as with real crops and trained weights.
Training = forward + backward + AdamW step of EmbeddingNet (BN-dropout-FC-BN head) at the
configured batch (P x K + negatives); inference = forward of plain crops in batches of 128, the
way `flukeline embed` runs (the mirrored pass doubles its time).

Usage: .venv/bin/python bench/bench_embed.py [--backbones resnet18 mobilenetv2_100 ...]
                                             [--sizes 128x64] [--threads 2] [--quick]
Target (issue 6): one member trains in <= 3 min on 2 cores on the demo preset.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from flukeline.embed.model import EmbeddingNet

RESULTS = Path(__file__).resolve().parent / "results"


def rate(step, images_per_call: int, min_seconds: float, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < min_seconds:
        step()
        calls += 1
    return calls * images_per_call / (time.perf_counter() - started)


def measure(backbone: str, size: tuple[int, int], batch: int, min_seconds: float) -> dict:
    torch.manual_seed(0)
    model = EmbeddingNet(backbone, 512, 3, 0.2)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    x_train = torch.randn(batch, 3, size[1], size[0])
    x_infer = torch.randn(128, 3, size[1], size[0])

    def train_step():
        model.train()
        loss = model(x_train).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer_step():
        model.eval()
        model(x_infer)

    return {
        "backbone": backbone,
        "size": f"{size[0]}x{size[1]}",
        "train_batch": batch,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_img_s": round(rate(train_step, batch, min_seconds), 1),
        "infer_img_s": round(rate(infer_step, 128, min_seconds), 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbones", nargs="+", default=["resnet18", "mobilenetv2_100", "tf_efficientnet_lite0", "lcnet_100"]
    )
    parser.add_argument("--sizes", nargs="+", default=["128x64"])
    parser.add_argument("--batch", type=int, default=36, help="P x K + negatives (8 x 4 + 4 by default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument(
        "--quick", action="store_true", help="one small backbone, tiny input: keeps the script working in CI"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones, args.sizes, args.batch, args.min_seconds = ["lcnet_050"], ["32x16"], 4, 0.0
    torch.set_num_threads(args.threads)
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            rows.append(measure(backbone, (width, height), args.batch, args.min_seconds))
            print(json.dumps(rows[-1]), flush=True)
    result = {"threads": args.threads, "torch": torch.__version__, "rows": rows}
    out = args.out or RESULTS / ("embed_quick.json" if args.quick else "embed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = ["| backbone | size | params (M) | train img/s | inference img/s |", "|---|---|--:|--:|--:|"]
    table += [
        f"| {r['backbone']} | {r['size']} | {r['params_m']} | {r['train_img_s']} | {r['infer_img_s']} |" for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return result


if __name__ == "__main__":
    main()
