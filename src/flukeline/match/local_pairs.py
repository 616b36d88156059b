"""The `local` ensemble member (`match.local.method`): each query's shortlist of the global
ensemble's top-B gallery images re-scored by a local matcher on the aligned crops, the pair
scores calibrated to probabilities on the validation pairs, and written like any member
(results/match/round<r>/local_<method>/), so that the ensemble fuses it with its fitted weight.

- Shortlist (`shortlist_pairs`): the global members' weighted-mean identity ranking (their
  weights fitted on validation exactly as the ensemble fits them), and among the gallery images
  of its top `candidates` identities the B with the highest weighted-mean image cosine of the
  members' embeddings (B = `match.local.shortlist`). Validation queries of fold f see the other
  folds' images only, test queries every training image; new_whale images are no gallery.
- Pairs (`score_pairs`): the method's matcher (match/local_matchers.py: RootSIFT + ratio test, or
  LightGlue over ALIKED / DISK), then the inliers of a MAGSAC homography. Streamed query by query
  (a query's B pairs at a time): only the Q x B pair rows are kept, never a query x gallery
  matrix; the scored pairs are checkpointed beside the outputs, so a killed job resumes.
- Calibration (`local_calibration`): isotonic P(same individual | inliers) on the validation
  pairs, applied to every pair; an identity scores its best image's probability. An identity
  outside the shortlist was not matched: it counts with the probability of zero inliers
  (summary.json `outside_similarity`, which the ensemble reads).

Outputs as a member's ({val,test}_topk, {val,test}_predictions, calibration.{csv,png},
summary.json), plus pairs.parquet (one row per matched pair), correspondences.parquet (per test
query and identity, the best pair's inlier points, which the review page draws) and
local_calibration.png."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flukeline.core.errors import InputError
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_atomic, write_json_atomic, write_parquet_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.runtime import parallel_map
from flukeline.match.calibration import (
    decide_threshold,
    new_whale_top1_share,
    prediction_scores,
    ranked_predictions,
    write_calibration,
)
from flukeline.match.ensemble import ensemble_topk, fitted_members, member_tables
from flukeline.match.local_calibration import fit_pair_calibration, plot_pair_calibration
from flukeline.match.local_features import LEARNED, LocalFeatures, load_features, torch_workers
from flukeline.match.local_matchers import PairMatch, SiftMatcher, make_matcher
from flukeline.match.member import embedding_lookup
from flukeline.match.templates import fuse_views

log = logging.getLogger(__name__)

# Inlier correspondences kept per pair for the review page (and while scoring, to bound memory).
MAX_POINTS = 40
# A running job saves the pairs scored so far beside its outputs this often (seconds); a rerun
# after a kill resumes from there.
CHECKPOINT_SECONDS = 60.0


def match_pair(
    query: tuple[np.ndarray, np.ndarray],
    gallery: tuple[np.ndarray, np.ndarray],
    ratio: float = 0.8,
    ransac_threshold: float = 4.0,
) -> tuple[int, int]:
    """(ratio-test matches, MAGSAC homography inliers) of two images' SIFT (xy, descriptors); the
    query's descriptors may already be RootSIFT (float32), the gallery's are the cache's uint8."""
    matcher = SiftMatcher(ratio, ransac_threshold)
    return matcher.match(matcher.prepare(*query), gallery).counts()


class MemberViews:
    """One global member's embeddings as matrices indexed by position: per validation fold, the
    fold model's train vectors; for test, all fold models fused (train and test), as match_member
    searches them."""

    def __init__(self, tables: dict[int, pd.DataFrame], train_images, test_images, flip: bool):
        lookups = {fold: embedding_lookup(t, flip) for fold, t in sorted(tables.items())}
        self.val = {fold: lookup(train_images, "train") for fold, lookup in lookups.items()}
        self.test_gallery = fuse_views(*[lookup(train_images, "train") for lookup in lookups.values()])
        self.test_queries = fuse_views(*[lookup(test_images, "test") for lookup in lookups.values()])


def global_ranking(members: dict[str, tuple[Path, float]], params: dict, split: str) -> pd.DataFrame:
    """The global ensemble's identity candidates of one split (ensemble_topk of the members' tables
    with these weights), as the ensemble would rank them without the local member."""
    return ensemble_topk(member_tables(members, f"{split}_topk.parquet"), int(params.get("candidates", 20)))


def shortlist_pairs(
    train: pd.DataFrame,
    test_images: np.ndarray,
    ranking: dict[str, pd.DataFrame],
    views: dict[str, MemberViews],
    weights: dict[str, float],
    shortlist: int,
) -> pd.DataFrame:
    """Each query's B gallery images (see the module docstring): split, query, fold, gallery,
    gallery_id, identity_rank (the identity's place in the global ranking) and global_similarity
    (weighted-mean image cosine). Computed query by query: a query touches only its candidates'
    images."""
    total = sum(weights.values()) or 1.0
    train_ids = train["id"].to_numpy()
    train_folds = train["fold"].to_numpy()
    train_names = train["image"].to_numpy()
    train_pos = pd.Series(np.arange(len(train)), index=train_names)
    test_pos = pd.Series(np.arange(len(test_images)), index=np.asarray(test_images))
    by_id = pd.Series(np.arange(len(train))).groupby(train_ids).apply(np.asarray).to_dict()
    rows = []
    for split, table in ranking.items():
        for image, candidates in table.groupby("image", sort=False):
            fold = int(candidates["fold"].iloc[0]) if split == "val" else -1
            ids = [i for i in candidates.sort_values("rank")["id"] if i != NEW_WHALE and i in by_id]
            if not ids:
                continue
            gallery = np.concatenate([by_id[i] for i in ids])
            rank_of = {i: r for r, i in enumerate(ids)}
            if split == "val":
                gallery = gallery[train_folds[gallery] != fold]
                query = train_pos[image]
            else:
                query = test_pos[image]
            if len(gallery) == 0:
                continue
            score = np.zeros(len(gallery))
            for name, view in views.items():
                if split == "val":
                    q, g = view.val[fold][query], view.val[fold][gallery]
                else:
                    q, g = view.test_queries[query], view.test_gallery[gallery]
                score += weights[name] * (g @ q)
            score /= total
            keep = np.argsort(-score, kind="stable")[:shortlist]
            rows.append(
                pd.DataFrame(
                    {
                        "split": split,
                        "query": image,
                        "fold": fold,
                        "gallery": train_names[gallery[keep]],
                        "gallery_id": train_ids[gallery[keep]],
                        "identity_rank": [rank_of[i] for i in train_ids[gallery[keep]]],
                        "global_similarity": score[keep].astype(np.float32),
                    }
                )
            )
    columns = ["split", "query", "fold", "gallery", "gallery_id", "identity_rank", "global_similarity"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def crop_size(features: LocalFeatures) -> tuple[int, int]:
    """(W, H) of the crops a cache was extracted from (its `size`, "WxH")."""
    try:
        w, h = (int(v) for v in str(features.size).split("x"))
    except ValueError as error:
        raise InputError(f"local features: size {features.size!r} is not WxH") from error
    return w, h


def pairs_key(pairs: pd.DataFrame, features: dict[str, LocalFeatures], params: dict, method: str) -> str:
    """What a scoring run depends on: a checkpoint is resumed only under the same key."""
    digest = hashlib.sha1(json.dumps([method, params, {s: f.key for s, f in sorted(features.items())}]).encode())
    for column in ("split", "query", "gallery"):
        digest.update("\n".join(map(str, pairs[column])).encode())
    return digest.hexdigest()


def save_checkpoint(path: Path, rows: pd.DataFrame, key: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"flukeline_key": key.encode()})
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def resumed_pairs(path: Path | None, key: str, ordered: pd.DataFrame) -> pd.DataFrame | None:
    """The scored prefix an interrupted run saved at `path` (same key, same pair order), or None."""
    import pyarrow.parquet as pq

    if path is None or not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:  # a damaged checkpoint is only lost time
        log.warning("local pairs: ignoring the unreadable checkpoint %s (%s)", path, error)
        return None
    if (table.schema.metadata or {}).get(b"flukeline_key", b"").decode() != key:
        log.info("local pairs: the checkpoint %s is of other pairs or settings; starting over", path)
        return None
    done = table.to_pandas()
    head = ordered.iloc[: len(done)]
    if (
        len(done) > len(ordered)
        or not (
            (head["query"].to_numpy() == done["query"].to_numpy()).all()
            and (head["gallery"].to_numpy() == done["gallery"].to_numpy())
        ).all()
    ):
        log.info("local pairs: the checkpoint %s does not continue these pairs; starting over", path)
        return None
    log.info("local pairs: resuming after %d scored pairs from %s", len(done), path)
    return done


def _row(match: PairMatch, size: tuple[int, int], keep_points: bool) -> tuple:
    """A scored pair's columns; the inlier points (at most MAX_POINTS, as fractions of the crop's
    width and height) only where the review page reads them."""
    if not keep_points or match.inliers == 0:
        empty = np.zeros(0, np.float32)
        return match.matches, match.inliers, empty, empty
    scale = np.array(size, np.float32)
    q = (match.query_xy[:MAX_POINTS] / scale).ravel().astype(np.float32)
    g = (match.gallery_xy[:MAX_POINTS] / scale).ravel().astype(np.float32)
    return match.matches, match.inliers, q, g


def score_pairs(
    pairs: pd.DataFrame,
    features: dict[str, LocalFeatures],
    params: dict,
    threads: int = 1,
    chunk: int = 16,
    method: str | None = None,
    checkpoint: Path | None = None,
    points_for: tuple[str, ...] = ("test",),
) -> tuple[pd.DataFrame, float]:
    """pairs + matches, inliers and (for the `points_for` splits) the inlier points, streamed:
    `chunk` queries at a time, a progress bar over the pairs; and the seconds it took. Queries run
    on `threads` threads (OpenCV and torch release the GIL; LightGlue as torch_workers says). With
    `checkpoint`, the scored pairs are saved there every CHECKPOINT_SECONDS and a rerun resumes
    from them."""
    import cv2

    cv2.setNumThreads(1)  # our threads, not OpenCV's pool on top of them
    method = method or features["train"].method
    size = crop_size(features["train"])
    matcher = make_matcher(method, params, size)
    width = torch_workers(threads, matcher.device) if method in LEARNED else threads
    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 128), features["train"].descriptors.dtype))

    def lookup(split: str, image: str):
        table = features[split]
        return table.get(image) if image in table else empty

    def one_query(group: pd.DataFrame) -> list[tuple]:
        split = group["split"].iloc[0]
        query = matcher.prepare(*lookup("train" if split == "val" else "test", group["query"].iloc[0]))
        keep = split in points_for
        return [_row(matcher.match(query, lookup("train", g)), size, keep) for g in group["gallery"]]

    groups = [g for _, g in pairs.groupby(["split", "query"], sort=False)]
    ordered = pd.concat(groups, ignore_index=True) if groups else pairs.iloc[:0].copy()
    columns = ("matches", "inliers", "query_xy", "gallery_xy")
    key = pairs_key(ordered, features, params, method)
    done = resumed_pairs(checkpoint, key, ordered)
    results: list[tuple] = [] if done is None else list(zip(*(done[c] for c in columns)))
    # Whole queries only: a checkpoint ends on a query's last pair.
    first, covered = 0, 0
    while first < len(groups) and covered + len(groups[first]) <= len(results):
        covered += len(groups[first])
        first += 1
    results = results[:covered]

    def save() -> None:
        scored = ordered.iloc[: len(results)][["split", "query", "gallery"]].copy()
        for i, column in enumerate(columns):
            scored[column] = [r[i] for r in results]
        save_checkpoint(checkpoint, scored, key)

    start = last_save = time.perf_counter()
    with tqdm(total=len(pairs), initial=covered, desc=f"{method} pairs", mininterval=5) as progress:
        for lo in range(first, len(groups), chunk):
            batch = groups[lo : lo + chunk]
            for scored in parallel_map(one_query, batch, width):
                results.extend(scored)
            progress.update(sum(len(g) for g in batch))
            if checkpoint is not None and time.perf_counter() - last_save >= CHECKPOINT_SECONDS:
                save()
                last_save = time.perf_counter()
    seconds = time.perf_counter() - start
    ordered["matches"] = np.array([r[0] for r in results], dtype=np.int32)
    ordered["inliers"] = np.array([r[1] for r in results], dtype=np.int32)
    ordered["query_xy"] = [np.asarray(r[2], np.float32) for r in results]
    ordered["gallery_xy"] = [np.asarray(r[3], np.float32) for r in results]
    # Pairs scored by this run (the rest came from a checkpoint): the honest denominator of its time.
    ordered.attrs["scored_now"] = len(results) - covered
    return ordered, seconds


def correspondences(pairs: pd.DataFrame, method: str, split: str = "test") -> pd.DataFrame:
    """The review page's table: per query of `split` and gallery identity, the shortlisted image
    with the most inliers (ties: the global similarity) and its inlier points (fractions of the
    crop's width and height)."""
    columns = ["query", "gallery", "gallery_id", "method", "inliers", "probability", "query_xy", "gallery_xy"]
    part = pairs[pairs["split"] == split]
    if part.empty:
        return pd.DataFrame(columns=columns)
    order = ["query", "gallery_id", "inliers", "global_similarity"]
    best = part.sort_values(order, ascending=[True, True, False, False])
    best = best.drop_duplicates(["query", "gallery_id"]).assign(method=method)
    best["inliers"] = best["inliers"].astype(np.int32)
    best["probability"] = best["probability"].astype(np.float32)
    return best[columns].reset_index(drop=True)


def identity_table(pairs: pd.DataFrame, split: str, train: pd.DataFrame) -> pd.DataFrame:
    """The local member's long top-k table of one split: each shortlisted identity scored by its
    best image's probability, ranked by it (ties: the global ranking), with fold and truth on
    validation."""
    part = pairs[pairs["split"] == split]
    columns = ["image", "rank", "id", "similarity", *(("fold", "truth") if split == "val" else ())]
    if part.empty:
        return pd.DataFrame(columns=columns)
    best = (
        part.groupby(["query", "gallery_id"], sort=False)
        .agg(similarity=("probability", "max"), identity_rank=("identity_rank", "min"), fold=("fold", "first"))
        .reset_index()
    )
    order = pd.Series(np.arange(part["query"].nunique()), index=part["query"].drop_duplicates().to_numpy())
    best["order"] = order.loc[best["query"]].to_numpy()
    best = best.sort_values(["order", "similarity", "identity_rank"], ascending=[True, False, True], kind="stable")
    best["rank"] = best.groupby("query").cumcount()
    table = best.rename(columns={"query": "image", "gallery_id": "id"})
    table["similarity"] = table["similarity"].astype(np.float32)
    if split != "val":
        return table[["image", "rank", "id", "similarity"]].reset_index(drop=True)
    truth = pd.concat([validation_truth(train, f) for f in sorted(table["fold"].unique())])
    table["truth"] = truth.loc[table["image"]].to_numpy()
    table["fold"] = table["fold"].astype(np.int64)
    return table[["image", "rank", "id", "similarity", "fold", "truth"]].reset_index(drop=True)


def run_local_member(
    train_path,
    features_train,
    features_test,
    member_dirs,
    member_weights,
    embedding_paths,
    folds,
    params,
    out_dir,
    threads=1,
) -> None:
    """results/match/round<r>/local_<method>/ (see the module docstring). member_dirs: the global
    members' match folders; embedding_paths: their embeddings, member by member, fold by fold."""
    local = params.get("local", {})
    shortlist = int(local.get("shortlist", 25))
    if len(member_dirs) != len(member_weights):
        raise InputError(f"{len(member_dirs)} member folders but {len(member_weights)} weights")
    if len(embedding_paths) != len(member_dirs) * len(folds):
        raise InputError(f"{len(embedding_paths)} embedding tables for {len(member_dirs)} members x {len(folds)} folds")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_parquet(train_path)
    features = {"train": load_features(features_train), "test": load_features(features_test)}
    # Named as the ensemble names them (results/match/round<r>/<member> is "<member>@round<r>").
    members = {
        f"{Path(d).name}@{Path(d).parent.name}": (Path(d), float(w)) for d, w in zip(member_dirs, member_weights)
    }
    # The global ensemble's weights, fitted as the ensemble rule fits them (without this member).
    members, _ = fitted_members(members, params)
    weights = {n: w for n, (_, w) in members.items()}
    ranking = {split: global_ranking(members, params, split) for split in ("val", "test")}
    test_images = ranking["test"]["image"].drop_duplicates().to_numpy()
    flip = bool(params.get("flip_fusion", True))
    views = {}
    for i, name in enumerate(members):
        tables = {f: pd.read_parquet(p) for f, p in zip(folds, embedding_paths[i * len(folds) : (i + 1) * len(folds)])}
        views[name] = MemberViews(tables, train["image"], test_images, flip)

    pairs = shortlist_pairs(train, test_images, ranking, views, weights, shortlist)
    method = features["train"].method
    partial = out / ".pairs.partial.parquet"
    pairs, seconds = score_pairs(pairs, features, local, threads, method=method, checkpoint=partial)
    scored_now = int(pairs.attrs.get("scored_now", len(pairs)))

    val = pairs["split"] == "val"
    query_ids = train.set_index("image")["id"]
    same = (pairs.loc[val, "gallery_id"].to_numpy() == query_ids.loc[pairs.loc[val, "query"]].to_numpy()) & (
        pairs.loc[val, "gallery_id"].to_numpy() != NEW_WHALE
    )
    calibration = fit_pair_calibration(pairs.loc[val, "inliers"], same)
    # Known on validation pairs only (the test identities are never read here).
    pairs["same"] = pd.Series(pd.NA, index=pairs.index, dtype="boolean")
    pairs.loc[val, "same"] = same
    pairs["probability"] = calibration(pairs["inliers"]).astype(np.float32)
    title = f"{method} ({features['train'].size})"
    plot_pair_calibration(calibration, pairs.loc[val, "inliers"], same, out / "local_calibration.png", title)

    val_topk, test_topk = identity_table(pairs, "val", train), identity_table(pairs, "test", train)
    # The member's own new_whale threshold is on probabilities: a fixed cosine setting means nothing here.
    threshold, curve = decide_threshold(val_topk, {**params, "new_whale_threshold": "calibrate"})
    k = int(params.get("top_k", 5))
    val_predictions = ranked_predictions(val_topk, threshold, k)
    test_predictions = ranked_predictions(test_topk, threshold, k)
    write_parquet_atomic(correspondences(pairs, method), out / "correspondences.parquet")
    write_parquet_atomic(pairs.drop(columns=["query_xy", "gallery_xy"]), out / "pairs.parquet")
    write_parquet_atomic(val_topk, out / "val_topk.parquet")
    write_parquet_atomic(test_topk, out / "test_topk.parquet")
    write_parquet_atomic(val_predictions, out / "val_predictions.parquet")
    write_parquet_atomic(test_predictions, out / "test_predictions.parquet")
    write_calibration(curve, threshold, out, title=out.name)

    per_query = pairs.groupby(["split", "query"]).size()
    cost = {
        "pairs": len(pairs),
        "queries": int(len(per_query)),
        "pairs_per_query_mean": float(per_query.mean()) if len(per_query) else 0.0,
        "pairs_per_query_max": int(per_query.max()) if len(per_query) else 0,
        "seconds": round(seconds, 3),
        # Over the pairs this run scored (a resumed run took the others from its checkpoint).
        "pairs_scored_now": scored_now,
        "seconds_per_pair": seconds / max(1, scored_now),
        "threads": int(threads),
        # NaN (a cache written without timing) is no JSON: None.
        "seconds_per_image_features": {
            s: (f.seconds_per_image if np.isfinite(f.seconds_per_image) else None) for s, f in features.items()
        },
    }
    summary = {
        "threshold": threshold,
        "cv": prediction_scores(val_predictions),
        "test_new_whale_top1": new_whale_top1_share(test_predictions),
        "method": method,
        "size": features["train"].size,
        "shortlist": shortlist,
        "global_weights": weights,
        # What the ensemble gives an identity this member did not match (outside the shortlist).
        "outside_similarity": float(calibration(np.array([0.0]))[0]),
        "pair_calibration": calibration.to_dict(),
        "cost": cost,
    }
    write_json_atomic(summary, out / "summary.json")
    partial.unlink(missing_ok=True)
    log.info(
        "local member %s: %d pairs over %d queries (%.1f per query, at most %d), %.4f s per pair (%d threads, "
        "%.0f s); features %s s per image; calibrated on %d same / %d other validation pairs; "
        "threshold %.3f, CV MAP@5 %.4f",
        out.name,
        cost["pairs"],
        cost["queries"],
        cost["pairs_per_query_mean"],
        cost["pairs_per_query_max"],
        cost["seconds_per_pair"],
        threads,
        seconds,
        {s: (round(v, 4) if v is not None else None) for s, v in cost["seconds_per_image_features"].items()},
        calibration.positives,
        calibration.negatives,
        threshold,
        summary["cv"]["map5"],
    )
