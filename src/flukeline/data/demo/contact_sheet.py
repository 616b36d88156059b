"""The demo's contact sheet (`flukeline contact-sheet`, results/data/demo_contact_sheet.png): a
PNG grid read from a generated data root's train.csv, one row per identity with the most train
images, its sightings in the columns."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flukeline.core.io import write_bytes_atomic


def contact_sheet(out_root, out_png, n_identities=8, n_sightings=6) -> None:
    """PNG grid: one row per identity with the most train images, its sightings in columns."""
    out_root = Path(out_root)
    train = pd.read_csv(out_root / "train.csv")
    known = train[train["Id"] != "new_whale"]
    counts = known["Id"].value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_identities]
    cell_w, cell_h, label_w, pad = 220, 150, 130, 4
    sheet = np.full((len(order) * (cell_h + pad) + pad, label_w + n_sightings * (cell_w + pad) + pad, 3), 255, np.uint8)
    for row, (identity, count) in enumerate(order):
        top = pad + row * (cell_h + pad)
        cv2.putText(sheet, identity, (6, top + cell_h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(
            sheet,
            f"{count} images",
            (6, top + cell_h // 2 + 20),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (90, 90, 90),
            1,
            cv2.LINE_AA,
        )
        names = sorted(known.loc[known["Id"] == identity, "Image"])[:n_sightings]
        for col, name in enumerate(names):
            image = cv2.imread(str(out_root / "train" / name), cv2.IMREAD_COLOR)
            if image is None:
                continue
            scale = min(cell_w / image.shape[1], cell_h / image.shape[0])
            w, h = max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))
            thumb = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            left = label_w + pad + col * (cell_w + pad) + (cell_w - w) // 2
            y = top + (cell_h - h) // 2
            sheet[y : y + h, left : left + w] = thumb
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the contact sheet")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_png, png.tobytes())
