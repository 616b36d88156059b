"""Gallery/query CSVs for the peer benchmarks, from the real photos in ../shared/data (never
copied into the repository; Omniglot is extracted to the folder given).

    python -m bench.peers.splits mantas OUT            # OUT/gallery.csv, OUT/queries.csv
    python -m bench.peers.splits omniglot OUT [--characters 40] [--seed 0]

- mantas (Apache-2.0, Wild Me's PIE examples): database/<NNNN Name>/*.png is the gallery,
  test/<name>-test-NN.png the queries; the id is the lower-cased name (4 individuals, 6 gallery
  photos, 5 queries, each of a gallery individual).
- omniglot (MIT, images_background_small1.zip): identity = character folder
  (<alphabet>/<characterNN>), each drawer's png one sighting; `--characters` characters drawn
  with `--seed`, drawers 1-4 of each are the gallery and drawers 5-6 the queries.
"""

from __future__ import annotations

import random
import sys
import zipfile
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MANTAS = SHARED / "manta-demo"
OMNIGLOT_ZIP = SHARED / "omniglot" / "images_background_small1.zip"


def mantas(root: Path = MANTAS) -> tuple[pd.DataFrame, pd.DataFrame]:
    gallery = [
        {"path": str(p), "id": p.parent.name.split(" ", 1)[-1].lower()}
        for p in sorted((root / "database").glob("*/*.png"))
    ]
    queries = [{"path": str(p), "id": p.name.split("-test-")[0].lower()} for p in sorted((root / "test").glob("*.png"))]
    return pd.DataFrame(gallery), pd.DataFrame(queries)


def omniglot(
    out: Path,
    zip_path: Path = OMNIGLOT_ZIP,
    characters: int = 40,
    seed: int = 0,
    gallery_drawers=(1, 2, 3, 4),
    query_drawers=(5, 6),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = Path(out) / "omniglot"
    with zipfile.ZipFile(zip_path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".png")]
        if not (images / names[0]).exists():
            archive.extractall(images)
    by_character: dict[str, dict[int, Path]] = {}
    for name in names:
        parts = Path(name).parts  # images_background_small1/<alphabet>/<characterNN>/<id>_<drawer>.png
        drawer = int(Path(name).stem.rsplit("_", 1)[1])
        by_character.setdefault(f"{parts[-3]}/{parts[-2]}", {})[drawer] = images / name
    chosen = sorted(random.Random(seed).sample(sorted(by_character), characters))
    gallery = [{"path": str(by_character[c][d]), "id": c} for c in chosen for d in gallery_drawers]
    queries = [{"path": str(by_character[c][d]), "id": c} for c in chosen for d in query_drawers]
    return pd.DataFrame(gallery), pd.DataFrame(queries)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write gallery.csv and queries.csv for a peer benchmark.")
    parser.add_argument("dataset", choices=("mantas", "omniglot"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--characters", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "mantas":
        gallery, queries = mantas()
    else:
        gallery, queries = omniglot(args.out, characters=args.characters, seed=args.seed)
    gallery.to_csv(args.out / "gallery.csv", index=False)
    queries.to_csv(args.out / "queries.csv", index=False)
    print(f"{len(gallery)} gallery ({gallery['id'].nunique()} ids), {len(queries)} queries -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
