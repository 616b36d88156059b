"""One HotSpotter run, executed INSIDE the peer environment (bench/.peers/hotspotter).

This file is the only one in the repository that imports ibeis; our own venv never imports it
(bench/peers/hotspotter.py starts it with the peer environment's python). It uses only the
standard library and the peer environment's packages.

    <peer python> hotspotter_job.py JOB.json RESULTS.json

JOB.json: {"gallery": [{"path", "name", "box"?}], "queries": [{"path", "name"?, "box"?}],
"workdir"}; a box is [x0, y0, x1, y1] in image pixels, without one the annotation is the whole
image. A fresh ibeis database is made in <workdir>/ibeis_db (an old one there is deleted).

What runs is ibeis' own default: `ibs.query_chips([qaid], daids)` with `cfgdict=None`, i.e. the
`vsmany` HotSpotter pipeline (hesaff+SIFT on 700-px chips, LNBNN with K=4, Knorm=1, spatial
verification of the top 40 names, `nsum` name scoring). One call per query, each timed; the
gallery's chips, features and FLANN index are made once beforehand and timed apart. Queries are
matched against the gallery annotations only. The query annotations get no name.

RESULTS.json: per query its ranked names with HotSpotter's name scores (as ibeis returns them:
every name the chip match still holds after spatial verification, highest first; a name with
no surviving match is absent), its top annotations, its seconds and descriptor count; plus the
config ibeis used, the chip sizes and the gallery's descriptor totals.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path


def _bbox(box, width: int, height: int, where: str) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1] (or None: the whole image) -> ibeis' (x, y, w, h), clipped to the image."""
    if box is None:
        return (0, 0, int(width), int(height))
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
    x1, y1 = min(int(width), int(round(x1))), min(int(height), int(round(y1)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"{where}: box {box} is empty inside the {width}x{height} image")
    return (x0, y0, x1 - x0, y1 - y0)


def _jsonable(value):
    """qparams values (numpy scalars, tuples, dicts) -> JSON; anything else as its repr."""
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is always in the peer env
        pass
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _add_annotations(ibs, entries: list[dict], role: str, name_for=None) -> tuple[list[int], list[int]]:
    """Add the images (without copying them into the database) and one annotation each."""
    paths = [str(Path(e["path"]).resolve()) for e in entries]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{role}: {len(missing)} image(s) not found, first {missing[0]}")
    gids = ibs.add_images(paths, auto_localize=False)
    unread = [p for p, g in zip(paths, gids) if g is None]
    if unread:
        raise RuntimeError(f"{role}: ibeis could not read {len(unread)} image(s), first {unread[0]}")
    sizes = ibs.get_image_sizes(gids)
    bboxes = [
        _bbox(e.get("box"), w, h, f"{role}[{i}] {e['path']}") for i, (e, (w, h)) in enumerate(zip(entries, sizes))
    ]
    kwargs = {}
    if name_for is not None:
        kwargs["name_list"] = [name_for[e["name"]] for e in entries]
    # prevent_visual_duplicates=False: two entries of the same photo and box stay two annotations
    # (ibeis would otherwise hand back the first one's id).
    aids = ibs.add_annots(gids, bbox_list=bboxes, prevent_visual_duplicates=False, **kwargs)
    return list(aids), list(gids)


def run(job: dict) -> dict:
    t_start = time.perf_counter()
    gallery, queries = job["gallery"], job["queries"]
    if not gallery or not queries:
        raise ValueError("the job needs at least one gallery and one query image")
    workdir = Path(job["workdir"]).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    dbdir = workdir / "ibeis_db"
    if dbdir.exists():
        shutil.rmtree(dbdir)

    import ibeis
    import numpy as np

    t_import = time.perf_counter() - t_start
    ibs = ibeis.opendb(dbdir=str(dbdir), allow_newdir=True, make_backups=False)

    # ibeis name texts: our own labels, so no gallery name can clash with ibeis' conventions
    # (its unknown name '____', empty strings, names that look like rowids).
    unique_names = sorted({str(e["name"]) for e in gallery})
    label_of = {name: f"peer_name_{i:05d}" for i, name in enumerate(unique_names)}
    name_of = {label: name for name, label in label_of.items()}
    gallery = [{**e, "name": str(e["name"])} for e in gallery]

    t0 = time.perf_counter()
    daids, dgids = _add_annotations(ibs, gallery, "gallery", name_for=label_of)
    qaids, qgids = _add_annotations(ibs, queries, "queries")
    t_add = time.perf_counter() - t0
    gidx_of_aid = {aid: i for i, aid in enumerate(daids)}
    same_image = [
        {"query": qi, "gallery": [gi for gi, g in enumerate(dgids) if g == qg]}
        for qi, qg in enumerate(qgids)
        if qg in set(dgids)
    ]

    # The default request, only to read its config and to build the gallery side once.
    qreq_ = ibs.new_query_request(qaids, daids, cfgdict=None, verbose=False)
    t0 = time.perf_counter()
    qreq_.dannots.preload("kpts", "vecs")
    qreq_.load_indexer(verbose=False)
    t_gallery = time.perf_counter() - t0
    dcfg, qcfg = qreq_.extern_data_config2, qreq_.extern_query_config2
    gallery_nfeats = [int(n) for n in ibs.get_annot_num_feats(daids, config2_=dcfg)]
    gallery_chips = [list(map(int, s)) for s in ibs.get_annot_chip_sizes(daids, config2_=dcfg)]

    results = []
    for qi, (entry, qaid) in enumerate(zip(queries, qaids)):
        t0 = time.perf_counter()
        cm = ibs.query_chips(qaid_list=[qaid], daid_list=daids, cfgdict=None, verbose=False)[0]
        seconds = time.perf_counter() - t0
        nids = np.asarray(cm.unique_nids)
        scores = np.asarray(cm.name_score_list, dtype=float)
        order = np.argsort(-scores, kind="stable")
        texts = ibs.get_name_texts(nids.tolist())
        ranked = [{"name": name_of[texts[k]], "score": float(scores[k])} for k in order if texts[k] in name_of]
        annot_scores = np.asarray(cm.annot_score_list, dtype=float)
        aorder = np.argsort(-annot_scores, kind="stable")[:10]
        top_annots = [
            {
                "gallery_index": gidx_of_aid[int(cm.daid_list[k])],
                "score": float(annot_scores[k]),
                "n_matches": int(len(cm.fm_list[k])),
            }
            for k in aorder
        ]
        results.append(
            {
                "index": qi,
                "path": entry["path"],
                "name": entry.get("name"),
                "seconds": seconds,
                "n_descriptors": int(ibs.get_annot_num_feats([qaid], config2_=qcfg)[0]),
                "chip_size": list(map(int, ibs.get_annot_chip_sizes([qaid], config2_=qcfg)[0])),
                "ranked": ranked,
                "top_annotations": top_annots,
            }
        )
        print(f"[hotspotter_job] query {qi + 1}/{len(queries)} {seconds:.2f} s", file=sys.stderr, flush=True)

    qparams = qreq_.qparams
    return {
        "ibeis_version": ibeis.__version__,
        "python": platform.python_version(),
        "call": "ibs.query_chips(qaid_list=[qaid], daid_list=gallery_aids, cfgdict=None)",
        "pipeline_root": qparams.pipeline_root,
        "cfgstr": qreq_.get_full_cfgstr(),
        "qparams": {key: _jsonable(qparams[key]) for key in sorted(qparams) if not key.startswith("_")},
        "n_gallery": len(gallery),
        "n_gallery_names": len(unique_names),
        "n_queries": len(queries),
        "gallery_descriptors_total": int(sum(gallery_nfeats)),
        "gallery_descriptors": gallery_nfeats,
        "gallery_chip_sizes": gallery_chips,
        "queries_same_image_as_gallery": same_image,
        "seconds": {
            "import": t_import,
            "add_images": t_add,
            "gallery_features_and_index": t_gallery,
            "queries_total": float(sum(r["seconds"] for r in results)),
            "wall": time.perf_counter() - t_start,
        },
        "cpu_count": os.cpu_count(),
        "queries": results,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: hotspotter_job.py JOB.json RESULTS.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    result = run(job)
    out = Path(argv[1])
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
