"""Gallery commands: the gallery rule's manifest of a finished run (workflow/rules/gallery.smk),
and the commands people run on a gallery: identify new photos, add confirmed sightings, start an
empty gallery, recalibrate its new-individual threshold (new_whale in the tables). What these commands
print and their help say "new individual": people run them on photos of any species. The runners are
imported inside the commands (torch)."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_option, add_params, add_threads, call_runner

DEFAULT_GALLERY = "results/gallery"  # where the workflow's gallery rule writes it


def cmd_gallery(args):
    from flukeline.gallery.manifest import manifest_from_run

    call_runner(manifest_from_run, args, **args.params)


def cmd_gallery_new(args):
    from flukeline.gallery.manifest import new_gallery

    call_runner(new_gallery, args, pretrained=None if args.pretrained == "none" else args.pretrained)
    print(
        f"empty gallery in {args.out_dir}: add sightings with `flukeline add PHOTO... --id ID --gallery {args.out_dir}`"
    )


def cmd_identify(args):
    from flukeline.core.io import write_csv_atomic
    from flukeline.core.runtime import configure_torch
    from flukeline.gallery.identify import format_results, identify

    configure_torch(args.threads)
    results = call_runner(identify, args)
    print(format_results(results=results))
    if args.out:
        write_csv_atomic(results, args.out)


def cmd_add(args):
    from flukeline.core.runtime import configure_torch
    from flukeline.gallery.sightings import add_sightings

    configure_torch(args.threads)
    added = call_runner(add_sightings, args)
    print(f"{len(added['photo'].unique()) if len(added) else 0} new sighting(s) of {args.identity} in {args.gallery}")


def cmd_calibrate_gallery(args):
    from flukeline.core.runtime import configure_torch
    from flukeline.gallery.threshold import calibrate_gallery

    configure_torch(args.threads)
    found = call_runner(calibrate_gallery, args)
    print(
        f"new-individual threshold {found['threshold']:.3f} (was {found['previous_threshold']:.3f}): "
        f"leave-one-out MAP@5 {found['map5']:.3f} (was {found['previous_map5']:.3f}) over "
        f"{found['known_queries']} known and {found['new_queries']} new queries"
    )


def register(subparsers) -> None:
    p = add_command(
        subparsers, "gallery", cmd_gallery, "(workflow rule) the gallery manifest of a finished run", own=("params",)
    )
    add_params(p, required=True)
    p.add_argument("--out-dir", required=True)

    p = add_command(
        subparsers,
        "identify",
        cmd_identify,
        "top identities (or new individual) of new photos against a gallery",
        user=True,
        own=("out",),
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument(
        "--gallery", default=DEFAULT_GALLERY, help=f"gallery folder (default: the workflow's, {DEFAULT_GALLERY})"
    )
    top_help = "identities listed per photo, 'new individual' included (default 5)"
    p.add_argument("--top", type=int, default=5, help=top_help)
    out_help = "also write the lists as CSV (photo, rank, id, similarity, threshold; id new_whale: a new individual)"
    p.add_argument("--out", help=out_help)
    local_help = (
        "rank by the embeddings alone, at their own threshold (default: a gallery whose run fused the "
        "local-feature matcher matches the photos with it too, as the run did)"
    )
    p.add_argument("--no-local", dest="local", action="store_false", help=local_help)
    add_threads(p, default=2)

    p = add_command(
        subparsers, "add", cmd_add, "add confirmed sightings of one individual to a gallery (no retraining)", user=True
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    add_option(p, "--id", "identity", required=True, help="the individual's id")
    p.add_argument("--gallery", default=DEFAULT_GALLERY)
    add_threads(p, default=2)

    p = add_command(
        subparsers,
        "calibrate-gallery",
        cmd_calibrate_gallery,
        "set a gallery's new-individual threshold by leave-one-out over its sightings",
        user=True,
    )
    p.add_argument("--gallery", default=DEFAULT_GALLERY)
    p.add_argument(
        "--max-queries", type=int, default=2000, help="sightings held out in turn (a seeded sample above this)"
    )
    add_threads(p, default=2)

    p = add_command(
        subparsers,
        "gallery-new",
        cmd_gallery_new,
        "an empty gallery with an untrained ImageNet backbone (no workflow run needed)",
        user=True,
    )
    p.add_argument("out_dir", metavar="gallery", help="folder to create")
    p.add_argument(
        "--backbone",
        default="mobilenetv2_100",
        help="timm architecture (ImageNet offline: mobilenetv2_100, efficientnet_lite0, tf_efficientnet_lite0)",
    )
    p.add_argument("--pretrained", default="imagenet", help="imagenet | hub | none | a local weights file")
    p.add_argument("--size", default="224x224", help="crop size WxH the photos are resized to")
    p.add_argument("--threshold", type=float, default=0.5, help="a new individual below this cosine similarity")
