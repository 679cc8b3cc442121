"""report.html in a fine-tuned model folder: what was trained on what, the training curves (loss, validation
accuracy and macro F1 per epoch), the best epoch's validation confusion matrix and its per-class precision, recall
and F1. Drawn from finetune.json alone (FineTuneResult), so a folder can be judged without loading the model."""

from __future__ import annotations

import html
from typing import Any

from . import figures, report
from .finetune_spec import FineTuneResult, ValidationScores

REPORT_FILE = "report.html"


def validation_scores(y: Any, predicted: Any, labels: list[str]) -> ValidationScores:
    """The validation split's confusion matrix and per-class scores (class ids 0..len(labels)-1)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=ids, zero_division=0)
    return ValidationScores(
        labels=labels,
        confusion=confusion_matrix(y, predicted, labels=ids).tolist(),
        per_class={
            name: (round(float(precision[i]), 4), round(float(recall[i]), 4), round(float(f1[i]), 4), int(support[i]))
            for i, name in enumerate(labels)
        },  # fmt: skip
        accuracy=round(float(accuracy_score(y, predicted)), 4),
        macro_f1=round(float(f1_score(y, predicted, labels=ids, average="macro", zero_division=0)), 4),
    )


def curves_picture(result: FineTuneResult) -> str:
    plt = figures.pyplot()
    epochs = [h.epoch for h in result.history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), dpi=90)
    left.plot(epochs, [h.train_loss for h in result.history], "o-", label="training loss")
    left.plot(epochs, [h.val_loss for h in result.history], "s-", label="validation loss")
    left.set_ylabel("loss")
    right.plot(epochs, [h.val_accuracy for h in result.history], "o-", label="validation accuracy")
    right.plot(epochs, [h.val_macro_f1 for h in result.history], "s-", label="validation macro F1")
    majority = max(result.split.val_per_class.values()) / max(result.split.val_cells, 1)
    right.axhline(majority, color="#888", ls=":", label=f"majority class ({majority:.2f})")
    right.set_ylim(0, 1.02)
    for ax in (left, right):
        ax.axvline(result.best.epoch, color="#c00", ls="--", lw=0.8)
        ax.set_xlabel("epoch (dashed: the best, kept)")
        ax.set_xticks(epochs)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return figures.png(fig)


def render(result: FineTuneResult) -> str:
    e = html.escape
    best, split = result.best, result.split
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fine-tuned {e(result.model)} on "
             f"{e(result.label_key)}</title>{report.STYLE}</head><body>",
             f"<h1>Fine-tuned {e(result.model)} on {e(result.dataset)}: {e(result.label_key)}</h1>"]  # fmt: skip
    if result.fixture:
        parts.append("<p class='fixture'>FIXTURE weights (random tiny models): the fine-tuned model proves the "
                     "pipeline, not the biology.</p>")  # fmt: skip
    stop = result.early_stopping
    early = "; stopped early" if stop.get("stopped_early") else ""
    parts.append("<h2>How it was trained</h2>")
    parts.append(figures.table([
        ("base model", f"{result.model} ({result.family}, helical {result.helical_model_name}), weights "
         f"{result.weights_checksum[:12]}"),
        ("training data", f"{result.input_path} (run key {result.input_run_key})"),
        ("split (stratified, seeded)", f"{split.train_cells} training, {split.val_cells} validation cells (seed "
         f"{split.seed}, validation fraction {split.validation_fraction:g}"
         f"{', training capped by --max-train-cells' if split.capped_by_max_train_cells else ''})"),
        ("classes", ", ".join(f"{k} ({split.train_per_class.get(k, 0)}/{split.val_per_class.get(k, 0)})"
                              for k in result.labels) + " (training/validation cells)"),
        ("class weighting", f"{result.class_weighting}: {', '.join(f'{w:.2f}' for w in result.class_weights)}"),
        ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(result.params.items()))),
        ("epochs", f"{stop.get('epochs_run')} run, best {best.epoch} (early stopping on "
         f"{stop.get('monitor')}, patience {stop.get('patience')}{early})"),
        ("best epoch on validation", f"accuracy {best.val_accuracy:.3f}, macro F1 {best.val_macro_f1:.3f}, "
         f"loss {best.val_loss:.4f}"),
        ("device, time", f"{result.device}, {result.seconds:.1f} s"),
        ("finetune key", result.finetune_key),
    ]))  # fmt: skip
    parts.append("<h2>Training curves</h2>" + figures.img("training curves", curves_picture(result)))
    v = result.validation
    if v is None:
        parts.append("<p>This folder was written before the validation confusion matrix was recorded.</p>")
    else:
        parts.append(validation_html(v))
    parts.append("<p class='small'>Details: finetune.json; the split's rows: split.json.</p></body></html>")
    return "\n".join(parts)


def validation_html(v: ValidationScores) -> str:
    cells = sum(map(sum, v.confusion))
    return (
        f"<h2>Validation ({cells} cells, the best epoch's weights)</h2>"
        f"<p>accuracy {v.accuracy:.3f}, macro F1 {v.macro_f1:.3f}</p>"
        "<h3>Per class</h3>"
        + figures.per_class_table(v.per_class)
        + "<h3>Confusion matrix</h3>"
        + figures.img("validation confusion matrix", figures.confusion(v.confusion, v.labels, v.labels, "true class"))
    )
