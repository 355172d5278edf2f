"""Shortcut audit: low-level image statistics per class, and how well they alone predict the class.

If images of one class were acquired, exported or framed differently from the others, a
network can learn that difference instead of the disease, and it fails where the difference
is absent. The audit measures per image what such a shortcut would use (sharpness, intensity,
contrast, border darkness, noise, JPEG quality, bytes per pixel, original size and aspect),
tabulates them per split and class, and trains a small classifier on these statistics alone:
its patient-grouped cross-validated AUC says how much of the label they carry. An AUC near
0.5 means no usable shortcut among them; near 1 means the label can be read off the
acquisition.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pneumo.data.archive import Record, load_records
from pneumo.labels import BACTERIAL, NORMAL, SHORT_NAMES, VIRAL

__all__ = ["FEATURES", "AuditResult", "audit", "image_statistics", "jpeg_quality", "shortcut_probe"]

ANALYSIS_SIZE = 224  # statistics are measured on the image as a 224 px model would see it
FEATURES = ("sharpness", "mean", "std", "contrast", "border", "noise", "jpeg_quality", "bytes_per_pixel", "width",
            "height", "aspect")
FEATURE_LABELS = {
    "sharpness": "sharpness (variance of the Laplacian)", "mean": "mean intensity", "std": "intensity std",
    "contrast": "contrast (95th - 5th percentile)", "border": "border darkness (centre - border mean)",
    "noise": "noise sigma (Immerkaer)", "jpeg_quality": "JPEG quality (estimated)",
    "bytes_per_pixel": "file bytes per pixel", "width": "original width", "height": "original height",
    "aspect": "original aspect (w/h)",
}
TASKS = {"normal_vs_pneumonia": None, "bacterial_vs_viral": (BACTERIAL, VIRAL)}

# The IJG standard luminance quantization table (JPEG Annex K), row by row, as Pillow reports it.
_STANDARD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)


def jpeg_quality(data: bytes) -> float:
    """The IJG quality (1-100) whose scaled standard table best matches the file's luminance table; NaN if not a JPEG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            tables = getattr(image, "quantization", None)
    except Exception:
        return float("nan")
    if not tables or 0 not in tables:
        return float("nan")
    table = np.asarray(tables[0], np.float64)
    best, quality = math.inf, float("nan")
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q  # libjpeg's jpeg_quality_scaling
        expected = np.clip(np.floor((_STANDARD_LUMINANCE * scale + 50) / 100), 1, 255)
        error = float(np.abs(expected - table).mean())
        if error < best:
            best, quality = error, float(q)
    return quality


def image_statistics(gray: np.ndarray) -> dict[str, float]:
    """Sharpness, intensity, contrast, border darkness and noise of a gray uint8 image at ANALYSIS_SIZE."""
    image = cv2.resize(gray, (ANALYSIS_SIZE, ANALYSIS_SIZE), interpolation=cv2.INTER_AREA).astype(np.float64)
    low, high = np.percentile(image, [5, 95])
    ring = max(1, ANALYSIS_SIZE // 12)
    border = np.concatenate([image[:ring].ravel(), image[-ring:].ravel(), image[:, :ring].ravel(), image[:, -ring:].ravel()])
    quarter = ANALYSIS_SIZE // 4
    centre = image[quarter:-quarter, quarter:-quarter]
    # Immerkaer (1996), "Fast noise variance estimation": a mask that cancels smooth structure.
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    residual = np.abs(cv2.filter2D(image, -1, mask, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1])
    noise = math.sqrt(math.pi / 2) * residual.sum() / (6 * (ANALYSIS_SIZE - 2) ** 2)
    return {"sharpness": float(cv2.Laplacian(image, cv2.CV_64F).var()), "mean": float(image.mean()),
            "std": float(image.std()), "contrast": float(high - low), "border": float(centre.mean() - border.mean()),
            "noise": float(noise)}


def _file_statistics(job: tuple[Record, Path]) -> dict[str, float] | str:
    record, path = job
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"{path}: {error.strerror or error}"
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        return f"{path}: not a decodable image"
    return {**image_statistics(gray), "jpeg_quality": jpeg_quality(data),
            "bytes_per_pixel": len(data) / max(record.width * record.height, 1), "width": float(record.width),
            "height": float(record.height), "aspect": record.width / max(record.height, 1)}


def _auc_interval(y: np.ndarray, score: np.ndarray, patients: np.ndarray, *, resamples: int, seed: int) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    _, index = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(index == p) for p in range(index.max() + 1)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = np.concatenate([members[p] for p in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[chosen])) == 2:
            values.append(roc_auc_score(y[chosen], score[chosen]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def shortcut_probe(features: np.ndarray, labels: np.ndarray, patients: np.ndarray, *, folds: int = 5,
                   resamples: int = 300, seed: int = 0) -> dict:
    """How well the statistics alone separate the classes, per task.

    A gradient-boosted tree classifier (scikit-learn's HistGradientBoostingClassifier, which
    takes missing values as they are) is cross-validated with folds grouped by patient, so
    that no patient is on both sides; its out-of-fold AUC gets a patient-bootstrap 95% interval.
    Each statistic's own AUC (orientation-free, max(AUC, 1 - AUC)) says which ones carry it.

    Args:
        features: (N, len(FEATURES)).
        labels: (N,) class indices.
        patients: (N,) patient ids.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    results = {}
    for task, pair in TASKS.items():
        chosen = np.ones(len(labels), bool) if pair is None else np.isin(labels, pair)
        x, groups = features[chosen], patients[chosen]
        y = (labels[chosen] != NORMAL).astype(int) if pair is None else (labels[chosen] == pair[1]).astype(int)
        if len(np.unique(y)) < 2 or len(np.unique(groups)) < folds:
            results[task] = {"images": int(chosen.sum()), "auc": float("nan"), "auc_ci95": [float("nan")] * 2,
                             "note": "too few images or patients of both kinds"}
            continue
        score = np.zeros(len(y))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for train, test in splitter.split(x, y, groups):
            model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=seed)
            score[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
        single = {}
        for column, name in enumerate(FEATURES):
            values = x[:, column]
            finite = np.isfinite(values)
            if finite.sum() > 1 and len(np.unique(y[finite])) == 2 and np.ptp(values[finite]) > 0:
                auc = roc_auc_score(y[finite], values[finite])
                single[name] = round(float(max(auc, 1 - auc)), 4)
        results[task] = {
            "images": int(chosen.sum()), "patients": int(len(np.unique(groups))),
            "auc": float(roc_auc_score(y, score)),
            "auc_ci95": list(_auc_interval(y, score, groups, resamples=resamples, seed=seed)),
            "single_feature_auc": dict(sorted(single.items(), key=lambda item: -item[1])),
        }
    return results


def _describe(values: np.ndarray) -> dict[str, float]:
    """Mean, sd and median of the finite values (NaN for all three when there are none, e.g. no JPEG)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"mean": float("nan"), "sd": float("nan"), "median": float("nan")}
    return {"mean": float(finite.mean()), "sd": float(finite.std()), "median": float(np.median(finite))}


@dataclass(frozen=True)
class AuditResult:
    records: list[Record]
    features: np.ndarray  # (N, len(FEATURES))
    sections: np.ndarray  # (N,) the split (or split-file role) of each image
    groups: dict[str, dict]  # "<section>/<class>" -> {"images": n, feature: {"mean", "sd", "median"}}
    probe: dict
    problems: list[str]

    def to_dict(self) -> dict:
        return {"images": len(self.records), "features": list(FEATURES), "feature_labels": FEATURE_LABELS,
                "groups": self.groups, "probe": self.probe, "problems": self.problems}


def audit(data: Path, *, roles: dict[str, str] | None = None, workers: int = 4, resamples: int = 300,
          seed: int = 0) -> AuditResult:
    """Audit the images of a data folder (archive layout or organized).

    Args:
        data: the data folder.
        roles: optional sha256 -> role ("train", "val", "test") from a split file; groups are then per role.
        workers: threads decoding images (OpenCV releases the GIL).

    Unreadable files are listed in ``problems`` and left out; the rest go on.
    """
    data = Path(data)
    records, problems = load_records(data)
    jobs = [(record, data / record.path if (data / record.path).is_file() else Path(record.source)) for record in records]
    with ThreadPoolExecutor(workers) as pool:
        measured = list(pool.map(_file_statistics, jobs))
    kept = [(record, values) for record, values in zip(records, measured) if isinstance(values, dict)]
    messages = [f"{p.source}: {p.reason}" for p in problems] + [v for v in measured if isinstance(v, str)]
    features = np.array([[values[name] for name in FEATURES] for _, values in kept], np.float64).reshape(-1, len(FEATURES))
    kept_records = [record for record, _ in kept]
    labels = np.array([r.label for r in kept_records], int)
    patients = np.array([r.patient for r in kept_records])
    sections = np.array([roles.get(r.sha256, "unused") if roles else r.split for r in kept_records])
    groups = {}
    for section in sorted(set(sections)):
        for index, name in enumerate(SHORT_NAMES):
            members = (sections == section) & (labels == index)
            if members.any():
                groups[f"{section}/{name}"] = {"images": int(members.sum()), **{
                    feature: _describe(features[members, column]) for column, feature in enumerate(FEATURES)}}
    probe = shortcut_probe(features, labels, patients, resamples=resamples, seed=seed) if len(labels) else {}
    return AuditResult(kept_records, features, sections, groups, probe, messages)


def audit_markdown(result: dict) -> str:
    """The audit as Markdown: the probe's AUCs, then the statistics per group (mean ± sd)."""
    lines = ["| Task | Images | Patients | Probe AUC (95% CI) | Statistics that carry it (own AUC) |", "|---|---|---|---|---|"]
    for task, probe in result["probe"].items():
        low, high = probe["auc_ci95"]
        carriers = ", ".join(f"{name} {auc:.2f}" for name, auc in list(probe.get("single_feature_auc", {}).items())[:3])
        lines.append(f"| {task.replace('_', ' ')} | {probe['images']} | {probe.get('patients', '')} | "
                     f"{probe['auc']:.3f} ({low:.3f}–{high:.3f}) | {carriers} |")
    shown = [name for name in FEATURES if name not in ("width", "height")]
    lines += ["", "| Group | Images | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for group, values in result["groups"].items():
        cells = [f"{values[name]['mean']:.3g} ± {values[name]['sd']:.2g}" if math.isfinite(values[name]["mean"]) else "–"
                 for name in shown]
        lines.append(f"| {group} | {values['images']} | " + " | ".join(cells) + " |")
    lines += ["", "Statistics on each image resized to 224 px; " + "; ".join(
        f"{name}: {FEATURE_LABELS[name]}" for name in shown) + ". Probe: gradient-boosted trees on these statistics "
        "alone, 5-fold cross-validation grouped by patient, patient-bootstrap interval."]
    return "\n".join(lines)


def audit_figure(audit_result: AuditResult, out: Path) -> Path:
    """Box plots of the image statistics per split (or role) and class."""
    from pneumo.plotting import plt, save_figure

    shown = ("sharpness", "noise", "bytes_per_pixel", "contrast", "border", "mean")
    labels = np.array([r.label for r in audit_result.records])
    sections = audit_result.sections
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    names, members = [], []
    for section in sorted(set(sections)):
        for index, name in enumerate(SHORT_NAMES):
            chosen = (sections == section) & (labels == index)
            if chosen.any():
                names.append(f"{section}\n{name}")
                members.append(chosen)
    for axis, feature in zip(axes.flat, shown):
        column = FEATURES.index(feature)
        values = [audit_result.features[chosen, column][np.isfinite(audit_result.features[chosen, column])]
                  for chosen in members]
        axis.boxplot(values, showfliers=False)
        axis.set_xticks(range(1, len(names) + 1), names, fontsize=8)
        axis.set_title(FEATURE_LABELS[feature], fontsize=9)
    figure.suptitle("Low-level image statistics per split and class (a class difference here is a shortcut risk)",
                    fontsize=10)
    return save_figure(figure, out, dpi=90)
