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
import os

import click

# Extra points of the --plot accuracy-against-shots curve use at most this many episodes.
PLOT_EXTRA_EPISODES = 300


def _names(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def _progress() -> bool:
    return not os.environ.get("FEWSHOT_NO_PROGRESS")


def dataset_size_for(encoder) -> tuple[int, bool]:
    """(size, rgb) to load a dataset at so the encoder's own preprocessing resamples it least."""
    pre = getattr(encoder, "preprocess", None)
    if pre is None:
        return 28, False
    if pre.channels == 3:
        return max(pre.size, pre.resize_size or 0), True
    return pre.size, False


def check_kinds(enc, data_kind: str, data) -> None:
    """One clear error when the encoder takes another kind of input than the data holds."""
    enc_kind = getattr(enc, "input_kind", "image")
    if enc_kind == data_kind:
        return
    if enc_kind == "sequence":
        raise click.ClickException(
            f"encoder {enc.name} takes sequences (pen strokes, time series), but {data} holds images; "
            "pass an image encoder (e.g. --encoder omniglot-conv4) or sequence data")
    raise click.ClickException(
        f"encoder {enc.name} takes {enc_kind}s, but {data} holds sequences (strokes); pass a sequence encoder "
        "(e.g. --encoder omniglot-strokes-gru) or image data")


@click.command("evaluate")
@click.option("--data", required=True, metavar="PATH|NAME",
              help="Omniglot zip or folder (images or strokes), a folder with one sub-folder per class "
                   "(images, or .txt/.npy/.csv sequences), or 'digits'.")
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
              help="Only these Omniglot alphabets (groups of a grouped sequence folder).")
@click.option("--exclude-alphabets", default=None, metavar="A,B,...", help="Leave out these Omniglot alphabets.")
@click.option("--tta", is_flag=True,
              help="Average each embedding over the image and its 1-pixel shifts (images only).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="OUT.png",
              help="Write accuracy against shots and a confusion matrix to OUT.png.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def command(data, encoder, weights, ways, shots, queries, episodes, seed, within, alphabets,
            exclude_alphabets, tta, plot_path, as_json) -> None:
    """Episodic N-way K-shot accuracy (95% CI, macro precision/recall/F1) of an encoder on a dataset."""
    from fewshot import encoders
    from fewshot.data.registry import dataset_kind, describe_dataset, load_dataset, load_sequence_dataset
    from fewshot.evaluation import dataset_counts, embed_dataset, evaluate_embeddings, max_queries

    if plot_path and not plot_path.lower().endswith(".png"):
        raise click.UsageError("--plot writes a PNG; give a path ending in .png")
    kind = dataset_kind(data)
    enc = encoders.resolve(encoder, weights=weights, kind=kind)
    check_kinds(enc, kind, data)
    if tta and kind == "sequence":
        raise click.UsageError("--tta applies to images, not to sequence data")
    if kind == "sequence":
        ds = load_sequence_dataset(data, alphabets=_names(alphabets), exclude_alphabets=_names(exclude_alphabets))
    else:
        size, rgb = dataset_size_for(enc)
        ds = load_dataset(data, size=size, rgb=rgb, alphabets=_names(alphabets),
                          exclude_alphabets=_names(exclude_alphabets))
    q = max_queries(ds, ways, shots, queries, within)
    if q < queries:
        click.echo(f"note: only {q} queries per class fit ({shots} shot(s) + queries per class); using {q}",
                   err=True)
    emb = embed_dataset(enc, ds, tta=tta, progress=_progress())
    info = {"tta": tta, "dataset": str(data), **dataset_counts(ds),
            "alphabets": _names(alphabets), "exclude_alphabets": _names(exclude_alphabets),
            "encoder": enc.name, "fingerprint": enc.fingerprint}
    result = evaluate_embeddings(emb, ds, ways, shots, q, episodes, seed, within, progress=_progress(),
                                 protocol=info)
    out = result.to_dict()
    notes = []
    if plot_path:
        from fewshot.plots import plot_evaluation

        points = [{"shots": shots, "accuracy": result.accuracy, "ci95": result.ci95, "episodes": episodes,
                   "queries": q}]
        for s in sorted({1, 5} - {shots}):
            try:
                qs = max_queries(ds, ways, s, q, within)
            except ValueError as exc:
                notes.append(f"{s}-shot point left out: {exc}")
                continue
            n_ep = min(episodes, PLOT_EXTRA_EPISODES)
            r = evaluate_embeddings(emb, ds, ways, s, qs, n_ep, seed, within, progress=False)
            points.append({"shots": s, "accuracy": r.accuracy, "ci95": r.ci95, "episodes": n_ep, "queries": qs})
        title = (f"{enc.name} on {os.path.basename(str(data).rstrip('/'))}: {ways}-way, "
                 f"{'within one group' if within else 'across groups'}{', TTA' if tta else ''}")
        plot_evaluation(points, result, plot_path, title)
        out["plot"] = {"path": str(plot_path), "points": sorted(points, key=lambda p: p["shots"]),
                       "confusion": result.confusion_kind}
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False))
        for n in notes:
            click.echo(f"note: {n}", err=True)
        return
    click.echo(f"{enc.name} ({enc.fingerprint}) on {data} [{describe_dataset(ds)}]")
    click.echo(result.summary())
    if plot_path:
        pts = ", ".join(f"{p['shots']}-shot {100 * p['accuracy']:.1f}% ({p['episodes']} episodes)"
                        for p in out["plot"]["points"])
        click.echo(f"plot: {plot_path} ({pts}; confusion by {result.confusion_kind})")
    for n in notes:
        click.echo(f"note: {n}", err=True)
