"""Embed stage commands (workflow/rules/embed.smk): train one ensemble member, then embed every
aligned crop with it. The runners are imported inside the commands (torch, timm)."""

from __future__ import annotations

from flukeline.core.cli_args import (
    add_cache,
    add_command,
    add_model_store,
    add_option,
    add_params,
    add_required,
    add_threads,
)


def cmd_zero_shot_model(args):
    from flukeline.embed.model import save_model
    from flukeline.embed.zero_shot import zero_shot_model

    model, meta = zero_shot_model(backbone=args.backbone, pretrained=args.pretrained)
    save_model(model=model, path=args.out, meta={**meta, "size": args.size})


def register(subparsers) -> None:
    p = add_command(
        subparsers, "train", "flukeline.embed.train:run_train", "train one ensemble member without one validation fold"
    )
    add_required(p, train_path="--train", align_path="--align")
    p.add_argument("--fold", type=int, required=True)
    add_params(p, required=True)
    add_required(p, model_path="--model", history_path="--history", curves_path="--curves")
    add_option(
        p,
        "--pseudo-labels",
        "pseudo_labels_path",
        help="test images (image, id) the previous round matched confidently: extra training data",
    )
    add_model_store(p)
    add_cache(p)
    add_threads(p)

    p = add_command(
        subparsers,
        "embed",
        "flukeline.embed.inference:run_embed",
        "embeddings of every aligned crop with a trained member",
    )
    add_required(p, model_path="--model", align_path="--align", out_path="--out")
    add_cache(p)
    add_threads(p)

    p = add_command(
        subparsers,
        "zero-shot-model",
        cmd_zero_shot_model,
        "an ImageNet backbone used untrained (the zero-shot baseline's model)",
    )
    p.add_argument("--backbone", required=True, help="timm architecture with offline weights, e.g. mobilenetv2_100")
    p.add_argument("--pretrained", default="imagenet", help="imagenet | hub | a local weights file")
    p.add_argument("--size", type=int, nargs=2, required=True, metavar=("WIDTH", "HEIGHT"), help="the crops' size")
    add_required(p, "--out")
