"""The gallery's local matcher: `identify` on a gallery whose run fused the local-feature member
(`match.local`) matches a new photo as the run matched its test photos, against the whole
catalogue's features, so that a photo scores here as it would have as a test photo of the run:

- the photo's local features: the detect box on the photo at `long_side` (source photo) or the
  aligned crop (source crop), with the run's feature settings (`query_features`);
- the catalogue's: the run's training photos (its cached feature table) plus the added sightings'
  (extracted once by `add` and kept per photo in the gallery folder, `sighting_features`);
- the pairs: the embedding ensemble's shortlist joined by the LNBNN shortlist over every
  catalogue descriptor (photo features), verified by the run's matcher (match/pair_scoring.py);
- the identity's evidence and its probability under the run's own validation calibration, fused
  with the embedding members at the run's fitted weights and compared with its threshold.

Without a local member (or with its fitted weight 0) the manifest has no `local` section and
identify fuses the embeddings alone, as before."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.local_features import LocalFeatures, image_keypoints, load_features, pack_features
from flukeline.match.pair_calibration import PairCalibration
from flukeline.match.settings import LocalFeatureSettings, LocalMatchSettings

log = logging.getLogger(__name__)

# The run's identity (the fused ensemble's name for it) in the gallery's member tables.
LOCAL = "local"


@dataclass(frozen=True)
class GalleryLocal:
    """A gallery's `local` section: how the run extracted, matched and calibrated local features,
    and the fused ensemble's weights and threshold."""

    method: str
    source: str  # photo | crop
    size: str  # the feature table's: photo<N>, or the crops' WxH
    features: LocalFeatureSettings
    match: LocalMatchSettings
    train_features: str
    score: str
    calibration: PairCalibration
    outside_similarity: float
    weights: dict[str, float]  # every member's fused weight, the local member's under LOCAL
    threshold: float

    @classmethod
    def of(cls, manifest: dict) -> GalleryLocal | None:
        section = manifest.get("local")
        if not section:
            return None
        return cls(
            method=section["method"],
            source=section["source"],
            size=section["size"],
            features=LocalFeatureSettings.from_dict(section["features"]),
            match=LocalMatchSettings.from_dict(section["match"]),
            train_features=section["train_features"],
            score=section["score"],
            calibration=PairCalibration.from_dict(section["calibration"]),
            outside_similarity=float(section["outside_similarity"]),
            weights={k: float(v) for k, v in section["weights"].items()},
            threshold=float(section["threshold"]),
        )

    @property
    def crop_size(self) -> str | None:
        """The member crop size whose crops the features come from (source crop), else None."""
        return self.size if self.source == "crop" else None

    def settings_key(self) -> str:
        """What a sighting's features depend on: method, source, size and feature settings."""
        recipe = [self.method, self.source, self.size, self.features.to_dict()]
        return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def local_section(local_settings: dict, ensemble_summary: dict, members: list[dict]) -> dict | None:
    """The manifest's `local` section of a workflow run (None when its final ensemble gave the
    local member no weight: the gallery then fuses the embeddings alone). local_settings: method,
    source, size, features (LocalFeatureSettings' keys), match (LocalMatchSettings' keys),
    train_features (path) and summary (the final round's local member's summary.json)."""
    weights = ensemble_summary.get("members", {})
    local_names = [n for n in weights if n.split("@")[0] == f"local_{local_settings['method']}"]
    if not local_names or float(weights[local_names[0]]) <= 0:
        return None
    summary = json.loads(Path(local_settings["summary"]).read_text())
    fused = {m["name"]: float(weights.get(m["name"], 0.0)) for m in members}
    fused[LOCAL] = float(weights[local_names[0]])
    return {
        "method": local_settings["method"],
        "source": local_settings["source"],
        "size": local_settings["size"],
        "features": local_settings["features"],
        "match": local_settings["match"],
        "train_features": local_settings["train_features"],
        "score": summary["score"],
        "calibration": summary["evidence_calibration"],
        "outside_similarity": float(summary["outside_similarity"]),
        "weights": fused,
        "threshold": float(ensemble_summary["threshold"]),
    }


def query_features(images: pd.DataFrame, boxes: pd.DataFrame, crops: pd.DataFrame | None, local: GalleryLocal):
    """Per photo (images' order) its (xy, descriptors, frame or None): of its detect box on the
    photo (source photo), or of its aligned crop (source crop), as the run's feature rules do."""
    from flukeline.match.photo_features import photo_boxes, photo_keypoints

    if local.source == "photo":
        framed = photo_boxes(images.assign(sha1=""), None)
        if len(boxes):
            found = boxes.drop_duplicates("image", keep="last").set_index("image")[["x0", "y0", "x1", "y1"]]
            framed.update(found.reindex(framed["image"]).set_axis(framed.index))
        return [
            photo_keypoints(path, box, local.method, local.features)
            for path, box in zip(framed["path"], framed[["x0", "y0", "x1", "y1"]].to_numpy())
        ]
    paths = crops.set_index("image")["crop_path"].loc[images["image"]]
    return [(*image_keypoints(str(p), local.method, local.features), None) for p in paths]


def as_table(local: GalleryLocal, names, features: list) -> LocalFeatures:
    """Features (xy, descriptors, frame) as one LocalFeatures table named `names`."""
    table = pack_features(local.method, local.size, list(names), [f[:2] for f in features])
    if local.source == "photo":
        table.frames = np.stack([f[2] for f in features]) if features else np.zeros((0, 5), np.float32)
    return table


class SightingFeatures:
    """The added sightings' local features, one .npz per photo under the gallery folder
    (local_features/<settings key>/<sha1>.npz): extracted once, by `add` or the first identify
    after the settings changed."""

    def __init__(self, folder, local: GalleryLocal):
        self.root = Path(folder) / "local_features" / local.settings_key()

    def path(self, sha1: str) -> Path:
        return self.root / f"{sha1}.npz"

    def get(self, sha1: str):
        path = self.path(sha1)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return data["xy"], data["descriptors"], (data["frame"] if "frame" in data else None)

    def put(self, sha1: str, features: tuple) -> None:
        from flukeline.core.io import write_atomic

        xy, descriptors, frame = features
        arrays = {"xy": xy, "descriptors": descriptors, **({} if frame is None else {"frame": frame})}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        self.path(sha1).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(sha1), write)


def sighting_key(sha1: str) -> str:
    """An added sighting's name among the catalogue's photos (the run's are its image names)."""
    return f"sighting:{sha1}"


def catalogue(manifest: dict, sightings: pd.DataFrame, local: GalleryLocal) -> tuple[pd.DataFrame, LocalFeatures]:
    """(photos: image, id, fold; their features): the run's known training photos (its feature
    table) and the added sightings (their stored features; `ensure_sighting_features` first)."""
    train = pd.read_parquet(manifest["train"]) if manifest.get("train") else pd.DataFrame(columns=["image", "id"])
    run = load_features(local.train_features)
    known = train[(train["id"] != NEW_WHALE) & train["image"].isin(set(map(str, run.images)))]
    names = list(known["image"])
    features = [(*run.get(n), run.frames[run.position[n]] if run.frames is not None else None) for n in names]
    ids = list(known["id"])
    # The run's folds: the index stores photos sorted by fold, and in the run's order an IVF index
    # trains on the same sample (the lists, and so the votes, of the run's test photos).
    folds = list(known["fold"]) if "fold" in known else [0] * len(known)
    after = int(max(folds)) + 1 if folds else 0
    store = SightingFeatures(manifest["folder"], local)
    added = sightings.drop_duplicates("sha1") if len(sightings) else sightings
    for sha1, id_ in zip(added.get("sha1", []), added.get("id", [])):
        found = store.get(sha1)
        if found is None:
            raise InputError(f"{store.path(sha1)}: an added sighting's local features are missing")
        names.append(sighting_key(sha1))
        ids.append(id_)
        folds.append(after)
        features.append(found)
    photos = pd.DataFrame({"image": names, "id": ids, "fold": folds})
    return photos, as_table(local, names, features)


def local_topk(
    images: pd.DataFrame,
    queries: LocalFeatures,
    photos: pd.DataFrame,
    gallery: LocalFeatures,
    embedding: dict[str, tuple[np.ndarray, np.ndarray]],
    embedding_topk: dict[str, tuple[pd.DataFrame, float]],
    local: GalleryLocal,
    threads: int = 1,
    index_dir=None,
) -> pd.DataFrame:
    """The local member's top-k table (image, rank, id, similarity) of the new photos, as the run's
    local_match computes a test photo's: the embedding ensemble's shortlist (embedding: member ->
    (query vectors, catalogue photo vectors in `photos`' order); embedding_topk: member -> (its
    top-k table, weight in the embedding ensemble)) and, for SIFT photo features, the LNBNN
    shortlist over every catalogue descriptor (its index kept in `index_dir`, see catalogue_index_of);
    pairs verified, evidence calibrated."""
    from flukeline.match.ensemble import ensemble_topk
    from flukeline.match.local_member import catalogue_normalisers, query_features
    from flukeline.match.local_tables import identity_evidence, identity_table
    from flukeline.match.pair_scoring import score_pairs

    settings = local.match
    # The embedding ensemble's identities, as the run's local_match ranks them (global_ranking).
    ranking = {"test": ensemble_topk(embedding_topk, int(settings.candidates))}
    shortlist = int(settings.local.shortlist)
    pairs = embedding_shortlist(images, ranking["test"], photos, embedding, embedding_topk, shortlist)
    features = {"train": gallery, "test": queries}
    query_tables = query_features(features, settings)

    # The run's own decisions (LNBNN pairs, normalisers), with the index kept in the gallery.
    def index_of(train, gallery_features, _pair_settings, workers):
        return catalogue_index_of(train, gallery_features, settings, workers, index_dir)

    pairs, normalisers = catalogue_normalisers(
        photos, features, ranking, settings, threads, pairs, query_tables, index_of
    )
    pairs, _ = score_pairs(
        pairs, features, settings.local, threads, method=local.method, normalisers=normalisers, queries=query_tables
    )
    score = local.score if normalisers is not None else "inliers"
    identities = identity_evidence(pairs, score)
    identities["probability"] = local.calibration(identities["evidence"]).astype(np.float32)
    return identity_table(identities, "test", photos)


def catalogue_index_of(photos: pd.DataFrame, gallery: LocalFeatures, settings: LocalMatchSettings, threads, index_dir):
    """The LNBNN index of the catalogue's descriptors, built once per catalogue and kept in
    `index_dir` (one file, named by a key of the photos, their ids and folds, their features and
    the index settings; an older one is replaced): a 25k-photo catalogue's takes minutes to
    build (bench/results/catalogue_index.md), so identify must not rebuild it per call."""
    from flukeline.match.local_index import index_settings
    from flukeline.match.local_reuse import kept_index
    from flukeline.match.local_shortlist import catalogue_index

    if index_dir is None:
        return catalogue_index(photos, gallery, settings.local, threads)
    pair = settings.local
    digest = hashlib.sha1(json.dumps(index_settings(pair), sort_keys=True).encode())
    for column in ("image", "id", "fold"):
        digest.update("\n".join(map(str, photos[column])).encode())
    digest.update(gallery.offsets.tobytes())
    digest.update(hashlib.sha1(gallery.descriptors.tobytes()).digest())
    return kept_index(index_dir, digest.hexdigest(), lambda: catalogue_index(photos, gallery, pair, threads), threads)


def embedding_shortlist(
    images: pd.DataFrame,
    ranking: pd.DataFrame,
    photos: pd.DataFrame,
    embedding: dict[str, tuple[np.ndarray, np.ndarray]],
    embedding_topk: dict[str, tuple[pd.DataFrame, float]],
    shortlist: int,
) -> pd.DataFrame:
    """Per new photo, the `shortlist` catalogue photos of its ranked identities with the highest
    weighted-mean cosine of the embedding members (local_shortlist.shortlist_pairs' test pairs)."""
    from flukeline.match.local_shortlist import PAIR_COLUMNS

    weights = {name: float(w) for name, (_, w) in embedding_topk.items()}
    total = sum(weights.values()) or 1.0
    ids = photos["id"].to_numpy()
    position = pd.Series(np.arange(len(images)), index=images["image"].to_numpy())
    rows = []
    for image, candidates in ranking.groupby("image", sort=False):
        q = int(position[image])
        ranked = [i for i in candidates.sort_values("rank")["id"] if i != NEW_WHALE]
        rank_of = {i: r for r, i in enumerate(ranked)}
        gallery = np.flatnonzero(np.isin(ids, ranked))
        if len(gallery) == 0:
            continue
        score = np.zeros(len(gallery))
        for name, (queries, catalogue_vectors) in embedding.items():
            score += weights[name] * (catalogue_vectors[gallery] @ queries[q])
        keep = gallery[np.argsort(-score / total, kind="stable")[:shortlist]]
        rows.append(
            pd.DataFrame(
                {
                    "split": "test",
                    "query": image,
                    "fold": -1,
                    "gallery": photos["image"].to_numpy()[keep],
                    "gallery_id": ids[keep],
                    "identity_rank": [rank_of[i] for i in ids[keep]],
                    "global_similarity": (score[np.searchsorted(gallery, keep)] / total).astype(np.float32),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PAIR_COLUMNS)
