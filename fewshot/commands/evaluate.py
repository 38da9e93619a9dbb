"""``fewshot evaluate``: N-way K-shot episodic accuracy of an encoder on a dataset.

    fewshot evaluate --data ../shared/data/omniglot/images_background.zip \
        --alphabets Bengali,Futurama,Greek,Korean,Tifinagh --ways 20 --shots 1 --within-alphabet

Stroke data (an Omniglot strokes zip or folder, or a folder of class folders of
``.txt``/``.npy``/``.csv`` sequences) is evaluated the same way with a sequence
encoder (default ``omniglot-strokes-fusion``, the stroke default):

    fewshot evaluate --data ../shared/data/omniglot/strokes_background_small1.zip \
        --alphabets Greek --ways 20 --shots 1 --within-alphabet

Torch is imported inside the command, so ``fewshot --help`` stays instant.
"""
from __future__ import annotations

import json

import click

from fewshot.commands import progress_enabled

def _names(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


@click.command("evaluate")
@click.option("--data", required=True, metavar="PATH|NAME",
              help="Omniglot zip or folder (images or strokes), a folder with one sub-folder per class "
                   "(images, or .txt/.npy/.csv sequences), 'digits', or text: CLINC150 JSON (supports from "
                   "train, queries from test, groups = domains) or a .csv/.tsv/.jsonl with text and label columns.")
@click.option("--encoder", default=None, metavar="NAME|PATH",
              help="Encoder name (see `fewshot encoders`) or encoder file [default: the shipped one for "
                   "the data's kind: omniglot-conv4 for images, omniglot-strokes-fusion for sequences].")
@click.option("--weights", default=None, metavar="imagenet|none|PATH", help="Weights for a named torchvision encoder.")
@click.option("--ways", type=click.IntRange(min=2), default=20, show_default=True, help="Classes per episode.")
@click.option("--shots", type=click.IntRange(min=1), default=1, show_default=True, help="Examples per class.")
@click.option("--queries", type=click.IntRange(min=1), default=5, show_default=True,
              help="Queries per class (lowered to what the data allows).")
@click.option("--episodes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same episodes.")
@click.option("--within-alphabet", "within", is_flag=True,
              help="Draw all classes of an episode from one alphabet (group): the harder protocol.")
@click.option("--alphabets", default=None, metavar="A,B,...",
              help="Only these Omniglot alphabets (groups of a grouped sequence folder; CLINC150 domains).")
@click.option("--exclude-alphabets", default=None, metavar="A,B,...", help="Leave out these Omniglot alphabets.")
@click.option("--tta", is_flag=True,
              help="Average each embedding over the image and its 1-pixel shifts (images only).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="OUT.png",
              help="Write accuracy against shots and a confusion matrix to OUT.png (with --open-set: score "
                   "histograms and the reliability diagram).")
@click.option("--oos", is_flag=True,
              help="Text (CLINC150 JSON): also the AUROC of in-scope vs its out-of-scope queries (oos_val).")
@click.option("--open-set", "open_set", is_flag=True,
              help="Also episodes where some queries come from untaught classes: AUROC known-vs-unknown, FPR at "
                   "95% TPR, accuracy at the calibrated threshold, ECE before/after calibration (--plot: score "
                   "histograms and reliability diagram).")
@click.option("--unknown-ways", type=click.IntRange(min=1), default=5, show_default=True,
              help="With --open-set: untaught classes per episode (their queries should come out unknown).")
@click.option("--target-accept", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="With --open-set: the share of known queries the calibrated threshold should accept.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def command(data, encoder, weights, ways, shots, queries, episodes, seed, within, alphabets,
            exclude_alphabets, tta, plot_path, oos, open_set, unknown_ways, target_accept, as_json) -> None:
    """Episodic N-way K-shot accuracy (95% CI, macro precision/recall/F1) of an encoder on a dataset."""
    from fewshot.data.registry import dataset_kind, describe_dataset
    from fewshot.evaluation import evaluate_data
    from fewshot.metrics import json_safe

    if plot_path and not plot_path.lower().endswith(".png"):
        raise click.UsageError("--plot writes a PNG; give a path ending in .png")
    kind = dataset_kind(data)
    if tta and kind != "image":
        raise click.UsageError(f"--tta applies to images, not to {kind} data")
    if oos and kind != "text":
        raise click.UsageError("--oos applies to text data (CLINC150 JSON)")
    report = evaluate_data(data, encoder, weights, ways, shots, queries, episodes, seed, within, _names(alphabets),
                           _names(exclude_alphabets), tta, plot_path, progress=progress_enabled(), oos=oos,
                           open_set=open_set, unknown_ways=unknown_ways, target_accept=target_accept)
    if as_json:
        click.echo(json.dumps(json_safe(report.out), ensure_ascii=False, allow_nan=False))
    else:
        enc, result = report.encoder, report.result
        click.echo(f"{enc.name} ({enc.fingerprint}) on {data} [{describe_dataset(report.dataset)}]")
        click.echo(result.summary())
        if "oos" in report.out:
            o = report.out["oos"]
            click.echo(f"out-of-scope AUROC {o['auroc']:.4f} +- {o['auroc_ci95']:.4f} ({o['n_oos']} oos queries); "
                       f"at the threshold keeping {100 * o['in_scope_kept']:.0f}% of in-scope queries: "
                       f"{100 * o['false_accept_rate']:.1f}% of oos accepted, accuracy {100 * o['accuracy_kept']:.2f}%")
        if "open_set" in report.out:
            click.echo(_open_set_lines(report.out["open_set"]))
        if plot_path and "points" in report.out["plot"]:
            pts = ", ".join(f"{p['shots']}-shot {100 * p['accuracy']:.1f}% ({p['episodes']} episodes)"
                            for p in report.out["plot"]["points"])
            click.echo(f"plot: {plot_path} ({pts}; confusion by {result.confusion_kind})")
        elif plot_path:
            click.echo(f"plot: {plot_path} (score histograms, reliability diagram)")
    for n in report.notes:
        click.echo(f"note: {n}", err=True)


def _open_set_lines(o: dict) -> str:
    """The open-set metrics, readable."""
    return (f"open set (+{o['unknown_ways']} untaught classes per episode): AUROC {o['auroc']:.4f} +- "
            f"{o['auroc_ci95']:.4f}, FPR at 95% TPR {100 * o['fpr_at_95_tpr']:.1f}%\n"
            f"calibrated threshold (target {100 * o['target_accept']:.0f}%): accepts "
            f"{100 * o['known_accept_rate']:.1f}% of known and {100 * o['unknown_accept_rate']:.1f}% of unknown "
            f"queries; closed-set accuracy {100 * o['closed_set_accuracy']:.2f}%, open-set accuracy "
            f"{100 * o['open_set_accuracy']:.2f}%\n"
            f"ECE {o['ece_before']:.4f} (temperature {o['temperature_before']:.4f}) -> {o['ece_after']:.4f} "
            f"calibrated (mean temperature {o['temperature_after_mean']:.4f})")
