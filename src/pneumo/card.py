"""Model cards (Mitchell et al. 2019) in Markdown, from a bundle's metadata and its evaluation."""

from __future__ import annotations

from pneumo import DISCLAIMER
from pneumo.config import flat_config
from pneumo.evaluation.targets import missed
from pneumo.models import get_spec
from pneumo.models.info import ModelInfo

LIMITATIONS = [
    "Bacterial versus viral labels come from the archive's file names, set by radiologists' reading; they are "
    "not laboratory-confirmed, so the model learns radiologists' judgement, errors included.",
    "Training data are pediatric (1-5 years) anterior-posterior chest X-rays from one centre (Guangzhou Women and "
    "Children's Medical Center). Adults, other centres, other scanners and lateral views are untested.",
    "Shortcut risk: markers, text, devices, positioning and image borders can correlate with the class in this "
    "archive; Grad-CAM overlays help spot this but do not rule it out. Low-level statistics (sharpness, noise, "
    "file size) alone predict normal vs pneumonia in the training data (`pneumo audit`), and the stress battery "
    "shows which changes of acquisition or framing move this model's answers: expect worse results on images "
    "acquired, exported or framed differently, and consider `pneumo adapt` for a new site.",
    "The shared copy of the training split was re-encoded at 224x224; full-resolution images from the original "
    "archive are resized the same way but were not seen in training.",
    "The archive's test split has 37.5% normal images against 25.7% in training: the class balance at deployment "
    "changes the error rates (see the prior-shift adaptation option).",
    "The Metrics section is measured on an internal patient-grouped test split of the training folder; the "
    "archive's own test split is scored blind, outside this repository (its figures, where reported, have their "
    "own section).",
]


def _metric_rows(evaluation: dict) -> list[str]:
    from pneumo.evaluation.metrics import metric_rows

    return ["| Metric | Value | 95% CI (patient bootstrap) |", "|---|---|---|",
            *[f"| {label} | {value} | {interval} |" for label, value, interval in metric_rows(evaluation)]]


def seed_lines(seeds: dict | str) -> list[str]:
    """The seed runs a model was chosen from: each run's validation and internal-test figures (uncalibrated, most
    probable class), which one was chosen, and mean ± sd over the runs. (Bundles written before these records
    were data hold the table itself.)"""
    if isinstance(seeds, str):
        return [seeds]
    runs = seeds["runs"]
    lines = ["Uncalibrated, most-probable-class decisions, per seed (test = internal test split, reported only):", "",
             "| Run | Val loss | Val accuracy | Val macro-F1 | Test accuracy | Test macro-F1 |", "|---|---|---|---|---|---|"]
    for run in runs:
        mark = " (chosen)" if run["run"] == seeds["chosen"] else ""
        lines.append(f"| {run['run']}{mark} | {run['val']['loss']:.4f} | {run['val']['accuracy']:.4f} | "
                     f"{run['val']['macro_f1']:.4f} | {run['test']['accuracy']:.4f} | {run['test']['macro_f1']:.4f} |")

    def spread(role: str, key: str) -> str:
        values = [run[role][key] for run in runs]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        return f"{mean:.4f} ± {sd:.4f}"

    lines.append(f"| mean ± sd (val) | | {spread('val', 'accuracy')} | {spread('val', 'macro_f1')} | | |")
    lines.append(f"| mean ± sd (test) | | | | {spread('test', 'accuracy')} | {spread('test', 'macro_f1')} |")
    return lines


def target_lines(targets: dict | str) -> list[str]:
    """The targets table: each goal, the measured value and whether it is met (by how much it is missed)."""
    if isinstance(targets, str):  # a bundle written before targets were data
        return [targets]
    lines = [f"| Target | Measured ({targets['measured_on']}) | Goal | Met |", "|---|---|---|---|"]
    for row in targets["rows"]:
        met = "yes" if row["met"] else f"no, by {abs(row['value'] - row['goal']):.4f}"
        lines.append(f"| {row['name']} | {row['value']:.4f} | {row['sense']} {row['goal']} | {met} |")
    return lines


def _missed_any(targets: dict | str) -> bool:
    return "| no," in targets if isinstance(targets, str) else bool(missed(targets))


def _shortfall(evaluation: dict, metadata: dict) -> str:
    """Why targets are missed, from the measured figures and the training budget."""
    training, size = metadata.get("training", {}), metadata["preprocessing"].get("size", "?")
    if "ensemble" in metadata:
        budget = (f"Its {len(metadata['ensemble']['members'])} members were trained separately at {size} px "
                  "(their histories are in benchmarks/)")
    else:
        budget = (f"The training budget was {training.get('epochs_run', '?')} epochs at {size} px "
                  f"({training.get('train_seconds_total', '?')} s of training)")
    return (f"Why targets are missed: most errors are between bacterial and viral pneumonia (bacterial-vs-viral "
            f"AUC {evaluation.get('bacterial_viral_auc', float('nan')):.3f} against "
            f"{evaluation.get('pneumonia_auc', float('nan')):.3f} for pneumonia vs normal; viral sensitivity "
            f"{evaluation.get('recall_viral', float('nan')):.3f}), and those labels come from radiologists' reading, "
            f"not laboratory tests. {budget}; benchmarks/accuracy.md lists the levers measured, with intervals, and "
            "those not yet run.")


def model_card(metadata: dict, *, sha256: str = "", evaluation: dict | None = None, external: dict | None = None) -> str:
    """The Markdown card of a model bundle; ``external``: figures measured on other data outside this repository
    (``official-test.json`` beside a shipped model), shown apart from the internal ones."""
    evaluation = evaluation if evaluation is not None else metadata.get("evaluation")
    training = metadata.get("training", {})
    config = flat_config(training.get("config", {}))
    name = metadata.get("id") or metadata["model_name"]
    lines = [
        f"# Model card: {name}", "",
        f"> **{DISCLAIMER}**", "",
        "## Model details", "",
        f"- Architecture: {_architecture(metadata)}.",
        f"- Classes (output order): {', '.join(metadata['classes'])}.",
        f"- Weights sha256: `{metadata.get('weights_sha256', '')}`" + (f"; bundle file sha256 `{sha256}`." if sha256 else "."),
        "- Made with pneumo; bundle format `model.pt` (loads with `torch.load(weights_only=True)`), ONNX export beside it.",
        "", "## Intended use", "",
        "Research on pediatric chest X-ray classification into normal, bacterial pneumonia and viral pneumonia: "
        "benchmarking, teaching and studying model behaviour. Not for diagnosis, triage or any clinical decision, "
        "and not a medical device.",
        "", "## Data", "",
        "Kermany, Zhang & Goldbaum, *Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for "
        "Classification*, Mendeley Data v2 (doi:10.17632/rscbjbr9sj.2); Kermany et al., Cell 172(5), 2018. "
        "License CC BY 4.0. Pediatric patients aged one to five, one centre.",
        f"- Training images: {training.get('train_images', '?')} (per class {training.get('train_class_counts', '?')}), "
        f"validation images: {training.get('val_images', '?')}; split: {training.get('split', '?')} "
        f"({config.get('split_file') or 'made by pneumo'}), grouped by patient.",
        "", "## Preprocessing", "",
        *[f"- {key}: {value}" for key, value in metadata["preprocessing"].items()],
        "", "## Training", "",
        *(_member_lines(metadata["ensemble"]) if "ensemble" in metadata else _training_lines(training, config)),
    ]
    choice = metadata.get("choice")
    if choice:
        validation = choice["validation"]
        low, high = validation["accuracy_ci95"]
        lines += ["", f"Chosen on validation by the rule in {choice['rule']} among single runs and ensembles: "
                      f"{choice['candidate']}, accuracy {validation['accuracy']:.4f} ({low:.4f}–{high:.4f}) by the most "
                      f"probable class, worst middle-severity accuracy {validation['worst_middle_accuracy']:.4f} "
                      f"({validation['worst_middle']}). The best of many candidates on one validation set is "
                      "optimistic there: the internal test figures below are the ones to quote."]
    if metadata.get("seeds"):
        lines += ["", "## Seed spread (validation)", "", *seed_lines(metadata["seeds"])]
    lines += ["", "## Calibration and operating point", "",
              f"- Temperature (fitted on validation, Guo et al. 2017): {metadata.get('temperature', 1.0):.4f}."]
    point = metadata.get("operating_point")
    if point and point.get("fitted_on") == "site":
        lines.append(f"- Operating point: pneumonia when P(bacterial)+P(viral) >= {point['pneumonia_threshold']:.4f}, "
                     f"{ModelInfo.of(metadata).operating_point.source} (see Site calibration).")
    elif point:
        lines.append(f"- Operating point: pneumonia when P(bacterial)+P(viral) >= {point['pneumonia_threshold']:.4f}, "
                     f"chosen on validation for a pneumonia sensitivity of at least {point.get('target_sensitivity', '?')}"
                     f" (validation sensitivity {point.get('val_sensitivity', float('nan')):.4f}, specificity "
                     f"{point.get('val_specificity', float('nan')):.4f}).")
        if point.get("holds_under"):
            lines.append(f"  The threshold keeps that sensitivity on {point['holds_under']} of validation (the threshold "
                         f"for clean images alone would be {point['clean_only_threshold']:.4f}); the lowest validation "
                         f"specificity among them is {point['val_stress_worst_specificity']:.4f}.")
    else:
        lines.append("- Operating point: the most probable class (no threshold set).")
    adaptation = metadata.get("prior_adaptation")
    if adaptation:
        lines.append(f"- Prior-shift adaptation (`--adapt priors`, opt-in): EM (Saerens et al. 2002) after bias-corrected "
                     f"temperature scaling fitted on {adaptation['source']} (temperature {adaptation['temperature']:.4f}, "
                     f"class biases {adaptation['bias']}); the model's priors are then {adaptation['source_priors']}. "
                     "Adaptation re-estimates the class mix of each batch, so it needs a batch drawn from one population "
                     "and is off by default.")
    conformal = metadata.get("conformal")
    if conformal:
        lines.append(f"- Conformal class sets (`--conformal ALPHA`): {conformal['kind']}, calibrated on "
                     f"{conformal['fitted_on']} ({conformal['images']} images, per class {conformal['class_counts']}). "
                     "A set holds the true class for at least 1 - ALPHA of images of each class, on images "
                     "exchangeable with those.")
    lines += _adaptation_lines(metadata)
    lines += _site_lines(metadata)
    lines += ["", "## Novelty check", "", *_novelty_lines(metadata)]
    lines += ["", "## Metrics", ""]
    if evaluation:
        lines += [f"Measured on {evaluation.get('images', '?')} images of {evaluation.get('patients', '?')} patients: "
                  f"{evaluation.get('data', '')}.", "", *_metric_rows(evaluation)]
        seen = evaluation.get("seen_in_training") or {}
        if seen.get("train", 0) + seen.get("val", 0):
            lines += ["", f"**Optimistic:** {seen['train']} of these images are in the model's training role and "
                          f"{seen['val']} in its validation role ({seen['split_file']}); it learned or was tuned on them."]
    else:
        lines.append("Not evaluated yet: run `pneumo evaluate` and `pneumo card` with `--metrics`.")
    if external:
        lines += ["", "## The archive's official test split", "", *external_lines(external)]
    if metadata.get("targets"):
        lines += ["", "## Targets", "", *target_lines(metadata["targets"])]
        if _missed_any(metadata["targets"]) and evaluation:
            lines += ["", _shortfall(evaluation, metadata)]
    stress = (evaluation or {}).get("stress") or metadata.get("stress")
    if stress:
        lines += ["", "## Robustness (stress battery)", "", *stress_lines(stress)]
    if metadata.get("audit"):
        lines += ["", "## Shortcut audit of the training data", "", *audit_lines(metadata["audit"])]
    lines += ["", "## Limitations", "", *[f"- {item}" for item in LIMITATIONS], ""]
    return "\n".join(lines)


def _novelty_lines(metadata: dict) -> tuple[str, ...]:
    novelty = metadata.get("novelty")
    if not novelty:
        why = ((metadata.get("adaptation") or {}).get("novelty")
               or "none was fitted; `pneumo calibrate` fits one, refitting the temperature and operating point too")
        return (f"- This model has none ({why}): images unlike the training X-rays get no warning from its features.",)
    components = ", ".join(map(str, novelty["components"]))
    return (f"- Images whose features lie far from the training X-rays' are flagged: {novelty['score']}. Fitted on "
            f"{novelty['fitted_on_images']} training images ({components} principal directions); threshold "
            f"{novelty['threshold']:.3f}, which {novelty['val_flagged']:.1%} of {novelty['threshold_set_on_images']} "
            f"validation images exceed (set for {novelty['false_alarm_rate']:.0%}).",
            "- A flag means the image is unlike the training set: not a chest X-ray, or one degraded, framed or "
            f"exposed differently; about {novelty['false_alarm_rate']:.0%} of ordinary X-rays like the training "
            "set's are flagged too. No flag does not prove the image is a pediatric frontal chest X-ray; the check "
            "was not tried on adult, lateral or other X-rays.")


def _architecture(metadata: dict) -> str:
    if "ensemble" in metadata:
        members = metadata["ensemble"]["members"]
        return f"`ensemble` of {len(members)} models — {metadata['ensemble']['combination']}"
    return f"`{metadata['model_name']}` — {get_spec(metadata['model_name']).description}"


RECIPE = ("optimizer", "lr", "weight_decay", "schedule", "label_smoothing", "class_weights", "freeze_epochs",
          "backbone_lr_scale", "batch_size", "seed", "rotation", "shift", "zoom", "brightness", "contrast", "gamma",
          "crop", "framing", "blur", "sharpen", "downsample", "noise", "jpeg", "mixup")  # the options a card lists


def _training_lines(training: dict, config: dict) -> list[str]:
    # Framing is named only when used, so that the cards of recipes from before it existed stay as they were.
    recipe = [k for k in RECIPE if k in config and (k != "framing" or config[k])]
    return [
        f"- Epochs run: {training.get('epochs_run', '?')}; weights from epoch {training.get('epoch', '?')} "
        f"({'the final epoch' if training.get('weights') == 'last' else 'lowest validation loss'}), validation loss "
        f"{training.get('val_loss', float('nan')):.4f} and accuracy {training.get('val_acc', float('nan')):.4f}.",
        "- Recipe: " + ", ".join(f"{k}={config[k]}" for k in recipe) + ".",
        *_teacher_lines(training.get("teacher"), config),
        f"- Initial weights: {_initial_weights(config.get('pretrained'))}.",
        f"- Training time: {training.get('train_seconds_total', '?')} s{_trained_on(training.get('environment'))}.",
    ]


def _teacher_lines(teacher: dict | None, config: dict) -> list[str]:
    """How a distilled model learned from its teacher; nothing for a model trained on the labels alone."""
    if not teacher:
        return []
    return [f"- Distilled from `{teacher['id']}` (weights sha256 {teacher['weights_sha256'][:12]}..., its "
            f"temperature {teacher['temperature']:.3f}; its probabilities on the {teacher['images']} training "
            f"images, unaugmented{_labels_file(teacher)}): loss = {1 - config['distill_weight']:g} x cross-entropy "
            f"with the labels + {config['distill_weight']:g} x T^2 x KL divergence from the teacher, "
            f"T = {config['distill_temperature']:g}."]


def _labels_file(teacher: dict) -> str:
    """Where the teacher's probabilities came from when not from its weights: its labels file."""
    if "labels_file" not in teacher:
        return ""
    return f", read from its labels file `{teacher['labels_file']}`, sha256 {teacher['labels_sha256'][:12]}..."


def _member_lines(ensemble: dict) -> list[str]:
    """The members of an ensemble: each trained on its own, combined after training (nothing trained jointly)."""
    lines = ["The members were trained separately on the same split and combined afterwards; each keeps its own "
             "validation temperature.", "",
             "| Member | Architecture | Input | Seed | Temperature | Validation accuracy | Weights sha256 |",
             "|---|---|---|---|---|---|---|"]
    for member in ensemble["members"]:
        accuracy = f"{member['val_acc']:.4f}" if member.get("val_acc") is not None else "?"
        lines.append(f"| {member['id']} | `{member['model_name']}` | {member['size']} px | {member.get('seed', '?')} | "
                     f"{member['temperature']:.4f} | {accuracy} | `{member['weights_sha256'][:16]}…` |")
    views = ensemble.get("views", [1.0])
    if len(views) > 1:
        lines += ["", f"Test-time augmentation: every member also sees the image zoomed by "
                      f"{', '.join(f'{v:g}' for v in views if v != 1.0)} (edges repeated), and all views are averaged. "
                      "Grad-CAM explains the image as given."]
    return lines


def _initial_weights(pretrained: str | None) -> str:
    """Where training started, without the path of a file on the machine that trained it."""
    if not pretrained:
        return "random initialization"
    if pretrained == "imagenet":
        return "ImageNet weights (the backbone's published checkpoint)"
    return f"ImageNet weights from the file {pretrained.replace(chr(92), '/').rsplit('/', 1)[-1]}"


def _adaptation_lines(metadata: dict) -> list[str]:
    record = metadata.get("adaptation")
    if not record:
        return []
    lines = ["", "## Site adaptation", "",
             f"- {record['method']}, on {record['images']} images (file list sha256 `{record['file_list_sha256'][:16]}…`), "
             f"{record['date']}.",
             f"- Source model: {record['source']['id']} (bundle sha256 `{record['source']['bundle_sha256'][:16]}…`); "
             "every weight except the BatchNorm statistics is the source's."]
    if metadata.get("site_calibration"):
        lines.append("- Calibration: refitted on the site's labelled images after the adaptation (Site calibration).")
    else:
        lines.append(f"- Calibration: {record['calibration']}; it may no longer hold at the site.")
        lines.append("- The metrics below are the source model's, measured before adaptation, unless stated otherwise.")
    return lines


def external_lines(external: dict) -> list[str]:
    """Figures measured outside this repository (``official-test.json``) as a table, with where they came from."""
    lines = [f"Measured on {external['source']}.", "",
             "| Decision | Accuracy (95% CI) | Macro-F1 | Recall N / B / V | Pneumonia sens. / spec. | Pneumonia AUC | "
             "Bacterial vs viral AUC | ECE |", "|---|---|---|---|---|---|---|---|"]

    def value(number) -> str:
        return "" if number is None else f"{number:.3f}"

    for row in external["rows"]:
        interval = f" ({row['accuracy_ci95'][0]:.3f}–{row['accuracy_ci95'][1]:.3f})" if row.get("accuracy_ci95") else ""
        lines.append(f"| {row['decision']} | {row['accuracy']:.3f}{interval} | {row['macro_f1']:.3f} | "
                     f"{' / '.join(f'{r:.3f}' for r in row['recall_normal_bacterial_viral'])} | "
                     f"{' / '.join(f'{r:.3f}' for r in row['pneumonia_sensitivity_specificity'])} | "
                     f"{value(row.get('pneumonia_auc'))} | {value(row.get('bacterial_viral_auc'))} | {value(row.get('ece'))} |")
    return lines


def _site_lines(metadata: dict) -> list[str]:
    """The site calibration: where the cut-off came from, the site's own rates, and the source model apart."""
    record = metadata.get("site_calibration")
    if not record:
        return []
    counts = record["class_counts"]
    patients = f" of {record['patients']} patients" if record.get("patients") else ""
    lines = ["", "## Site calibration", "",
             f"- Site {record['name']}: {record['images']} labelled images{patients} (normal / bacterial / viral "
             f"{counts[0]} / {counts[1]} / {counts[2]}; file list sha256 `{record['file_list_sha256'][:16]}…`), "
             f"{record['date']}, method `{record['method']}`"
             + (" (BatchNorm statistics re-estimated first)" if record["method"] == "bn" else
                " (the network's weights are the source model's)") + "."]
    guarantee = record.get("guarantee")
    if guarantee:
        kind = ("split conformal: expected sensitivity on new site images >= target" if guarantee["kind"] == "conformal"
                else f"PAC: sensitivity >= target with probability {guarantee['confidence']:g} over the labelled draw")
        lines.append(f"- Cut-off P(pneumonia) >= {guarantee['threshold']:.4f} for sensitivity "
                     f"{guarantee['target_sensitivity']:g} ({kind}; {guarantee['positives']} pneumonia cases, "
                     f"{guarantee['misses_allowed']} of them allowed below it).")
        fitted = {"temperature": "the temperature", "batchnorm": "the BatchNorm statistics"}
        also = " and ".join(fitted[name] for name in record.get("also_fitted_on_them", []))
        if also:
            lines.append(f"- {also[0].upper()}{also[1:]} were fitted on the same labelled images, which the "
                         "guarantee assumes were not; the simulated sites of benchmarks/trust/ measure how far it "
                         "holds all the same.")
    else:
        lines.append("- Cut-off: the source model's, kept as it was.")
    rates = record["rates_on_labelled_images"]
    for name in ("sensitivity", "specificity"):
        rate = rates[name]
        lines.append(f"- Pneumonia {name} on the labelled site images that set it: {rate['value']:.3f} ({rate['count']}; "
                     f"95% CI {rate['ci95'][0]:.3f}–{rate['ci95'][1]:.3f}, Clopper-Pearson).")
    source = metadata.get("source_model") or {}
    evaluation = source.get("evaluation") or {}
    lines.append(f"- Source model: {source.get('id', '?')} (bundle sha256 `{str(source.get('bundle_sha256', ''))[:16]}…`)"
                 + (f"; its own figures, on its own test images, not this site's: accuracy "
                    f"{evaluation['accuracy']:.3f}, pneumonia sensitivity {evaluation['pneumonia_sensitivity']:.3f}, "
                    f"specificity {evaluation['pneumonia_specificity']:.3f}." if evaluation.get("accuracy") else "."))
    lines.append("- The guarantee holds for new images like the labelled ones: the same site, scanner, population and "
                 "labelling. It does not cover another site.")
    return lines


def audit_lines(audit: dict) -> list[str]:
    """The shortcut probe's result (``pneumo audit``) as card text."""
    lines = ["How well low-level statistics alone (sharpness, noise, file bytes per pixel, contrast, intensity, "
             f"borders) predict the class in the training folder (`pneumo audit`, {audit.get('source', '')}); an AUC "
             "of 0.5 would mean no shortcut among them.", ""]
    for task, probe in audit["probe"].items():
        low, high = probe["auc_ci95"]
        carriers = ", ".join(f"{name} {auc:.2f}" for name, auc in list(probe.get("single_feature_auc", {}).items())[:3])
        lines.append(f"- {task.replace('_', ' ')}: AUC {probe['auc']:.3f} ({low:.3f}–{high:.3f}); carried most by {carriers}.")
    lines += ["", "A model can learn these instead of the lungs. The acquisition augmentation and the stress battery "
              "above are how this model was trained against them and tested for them; they do not prove the model "
              "ignores them."]
    return lines


def stress_lines(stress: dict) -> list[str]:
    """The stress battery as a Markdown table and its middle-severity worst case."""
    lines = [f"Fixed acquisition changes (`pneumo evaluate --stress`), {stress['images']} images, decision by the "
             f"{stress['rule']}" + (f" (adaptation: {stress['adapt']})" if stress.get("adapt", "none") != "none" else "")
             + ".", "",
             "| Change | Severity | Accuracy (95% CI) | Recall normal / bacterial / viral | Pneumonia sens. / spec. | Flip rate |",
             "|---|---|---|---|---|---|"]
    for row in [{"description": "none (clean)", "severity": "", **stress["clean"]}, *stress["perturbations"]]:
        low, high = row["accuracy_ci95"]
        lines.append(f"| {row['description']} | {row['severity']} | {row['accuracy']:.3f} ({low:.3f}–{high:.3f}) | "
                     f"{row['recall_normal']:.3f} / {row['recall_bacterial']:.3f} / {row['recall_viral']:.3f} | "
                     f"{row['pneumonia_sensitivity']:.3f} / {row['pneumonia_specificity']:.3f} | {row['flip_rate']:.1%} |")
    summary = stress.get("summary") or {}
    if summary:
        lines += ["", f"Worst case at the middle severities: accuracy {summary['worst_accuracy']['value']:.3f} "
                      f"({summary['worst_accuracy']['perturbation']}; clean {summary['clean_accuracy']:.3f}), normal "
                      f"recall {summary['worst_recall_normal']['value']:.3f} ({summary['worst_recall_normal']['perturbation']}), "
                      f"pneumonia sensitivity {summary['worst_pneumonia_sensitivity']['value']:.3f} "
                      f"({summary['worst_pneumonia_sensitivity']['perturbation']}), flip rate "
                      f"{summary['worst_flip_rate']['value']:.1%} ({summary['worst_flip_rate']['perturbation']})."]
    return lines


def _trained_on(environment: dict | None) -> str:
    """' on <device> (torch <version>)', or nothing when the bundle does not say."""
    if not environment:
        return ""
    return f" on {environment.get('device', '?')} (torch {environment.get('torch', '?')})"
