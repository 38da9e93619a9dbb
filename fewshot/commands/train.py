"""``fewshot train``: train an encoder episodically and export it as an encoder file.

    fewshot train --data ../shared/data/omniglot/images_background.zip --out runs/my_conv4 \
        --held-out Bengali,Futurama,Greek,Korean,Tifinagh --steps 4500

``--arch conv`` trains a Conv-N image encoder on images; ``--arch rnn-gru`` or
``rnn-lstm`` trains a :class:`~fewshot.encoders.sequence.SequenceRNN` on sequence
data (an Omniglot strokes zip or folder, or class folders of ``.txt``/``.npy``/
``.csv`` files) with :func:`fewshot.sequence_training.train_sequence_episodic`,
as the shipped ``omniglot-strokes-gru`` was trained (that recipe also distils
from the image CNN: ``--teacher omniglot-conv4``):

    fewshot train --arch rnn-gru --data ../shared/data/omniglot/strokes_background_small1.zip \
        --out runs/my_gru --held-out Greek --steps 1500

Writes ``OUT/last.pt`` (resume state), ``OUT/best.pt``, ``OUT/log.jsonl``,
``OUT/train_args.json`` and finally ``OUT/encoder.pt``, an encoder file usable
anywhere an encoder is asked for (``fewshot init IDX --encoder OUT/encoder.pt``).
Running the same command again resumes from ``OUT/last.pt``.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import click

ARCHS = ("conv", "rnn-gru", "rnn-lstm")
# Options that fix the network's shape (and what it reads): a run cannot resume with different ones.
ARCH_KEYS = ("arch", "width", "depth", "size")
RNN_ARCH_KEYS = ("arch", "hidden", "layers", "pooling", "bidirectional", "resample")
# Options of one family only: giving one to the other family is a usage error.
CONV_ONLY = ("width", "depth", "size")
RNN_ONLY = ("hidden", "layers", "pooling", "bidirectional", "resample", "teacher")
# Defaults that differ by family (the RNN ones are the shipped omniglot-strokes-gru recipe).
FAMILY_DEFAULTS = {"conv": {"ways": 60, "queries": 5, "lr": 1e-3, "within_group_fraction": 0.0},
                   "rnn": {"ways": 40, "queries": 4, "lr": 2e-3, "within_group_fraction": 0.25}}
# The shipped stroke encoder's fixed shape around the recurrent core.
RNN_INPUT_PROJ, RNN_DIM = 64, 128


def _progress() -> bool:
    return not os.environ.get("FEWSHOT_NO_PROGRESS")


def _usable_classes(labels, need: int) -> int:
    return sum(1 for n in Counter(labels).values() if n >= need)


def _val_ways(val, need: int = 6) -> int:
    """Most classes one group of ``val`` offers with >= ``need`` examples (default 1 shot + 5 queries)."""
    per_group: Counter = Counter()
    counts = Counter(val.labels)
    group_of = dict(zip(val.labels, val.groups))
    for c, n in counts.items():
        if n >= need:
            per_group[group_of[c]] += 1
    return max(per_group.values(), default=0)


def _check_resume(path: Path, model, shape: str) -> int:
    """The step ``path`` (a ``last.pt``) stopped at, after checking its weights fit ``model``."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        step, state = int(ck["step"]), ck["model"]
    except Exception as exc:  # noqa: BLE001 - truncated file, not ours, refused pickle
        raise click.ClickException(f"cannot resume from {path} ({type(exc).__name__}: {str(exc)[:120]}); "
                                   "delete it to start over, or choose another --out") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        raise click.ClickException(f"{path} holds weights of another shape than {shape}; pass the options "
                                   "the run was started with, or choose another --out")
    return step


@click.command("train")
@click.option("--data", required=True, metavar="PATH|NAME",
              help="conv: Omniglot zip or folder, a folder with one sub-folder per class, or 'digits'; "
                   "rnn: an Omniglot strokes zip or folder, or class folders of .txt/.npy/.csv sequences.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoints, log, and the exported OUT/encoder.pt.")
@click.option("--arch", type=click.Choice(ARCHS), default="conv", show_default=True,
              help="conv: Conv-N image encoder (conv3x3-BN-ReLU-maxpool blocks); rnn-gru / rnn-lstm: "
                   "a recurrent encoder of sequences (pen strokes, time series).")
@click.option("--width", type=click.IntRange(min=1), default=64, show_default=True,
              help="conv: channels per block.")
@click.option("--depth", type=click.IntRange(min=1), default=4, show_default=True, help="conv: number of blocks.")
@click.option("--size", type=click.IntRange(min=8), default=28, show_default=True,
              help="conv: image side in pixels.")
@click.option("--hidden", type=click.IntRange(min=1), default=128, show_default=True,
              help="rnn: hidden units per direction.")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="rnn: stacked layers.")
@click.option("--pooling", type=click.Choice(["attention", "mean", "last"]), default="attention",
              show_default=True, help="rnn: how the steps' outputs become one embedding.")
@click.option("--bidirectional/--no-bidirectional", default=True, show_default=True,
              help="rnn: also read each sequence backwards.")
@click.option("--resample", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="rnn, strokes: resample every stroke at this arc-length spacing (character size 1; 0: off).")
@click.option("--teacher", default=None, metavar="NAME|PATH",
              help="rnn, strokes: distil from this image encoder, which embeds each trajectory rendered as "
                   "an image (the shipped recipe: omniglot-conv4; slow: renders the training set 6 times).")
@click.option("--ways", type=click.IntRange(min=2), default=None,
              help="Classes per episode [default: 60 for conv, 40 for rnn].")
@click.option("--shots", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=None, help="[default: 5 for conv, 4 for rnn]")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Episodes to train on.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate [default: 0.001 for conv, 0.002 for rnn].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--held-out", "held_out", default="", metavar="A,B,...",
              help="Groups (Omniglot alphabets) kept out of training and used for validation.")
@click.option("--rotations/--no-rotations", default=True, show_default=True,
              help="Add 90/180/270-degree rotations of each class as new classes (images and strokes).")
@click.option("--within-group-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of episodes drawn within one group (alphabet) [default: 0 for conv, 0.25 for rnn].")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="Torch threads (0: default).")
@click.option("--name", default=None, help="Name recorded in the encoder file [default: the OUT folder's name].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def command(data, out_dir, arch, width, depth, size, hidden, layers, pooling, bidirectional, resample, teacher,
            ways, shots, queries, steps, lr, seed, held_out, rotations, within_group_fraction, threads, name,
            as_json) -> None:
    """Train an encoder on episodes (prototypical loss) and export OUT/encoder.pt; resumable.

    Images with --arch conv; sequences (pen strokes, time series) with --arch rnn-gru or rnn-lstm.
    """
    import time

    from fewshot.data.registry import dataset_kind, describe_dataset, load_dataset, load_sequence_dataset

    ctx = click.get_current_context()
    family = "rnn" if arch.startswith("rnn-") else "conv"
    _check_family_options(ctx, family)
    defaults = FAMILY_DEFAULTS[family]
    ways = defaults["ways"] if ways is None else ways
    queries = defaults["queries"] if queries is None else queries
    lr = defaults["lr"] if lr is None else lr
    wgf_given = within_group_fraction is not None
    within_group_fraction = within_group_fraction if wgf_given else defaults["within_group_fraction"]
    out = Path(out_dir)
    args = {"arch": arch, "data": str(data), "ways": ways, "shots": shots, "queries": queries, "steps": steps,
            "lr": lr, "seed": seed, "held_out": held_out, "rotations": rotations,
            "within_group_fraction": within_group_fraction}
    if family == "conv":
        args.update(width=width, depth=depth, size=size)
        shape_keys, shape = ARCH_KEYS, f"--arch {arch} --width {width} --depth {depth}"
    else:
        args.update(hidden=hidden, layers=layers, pooling=pooling, bidirectional=bidirectional,
                    resample=resample, teacher=teacher)
        shape_keys, shape = RNN_ARCH_KEYS, f"--arch {arch} " + " ".join(
            _flag(k, v) for k, v in (("hidden", hidden), ("layers", layers), ("pooling", pooling),
                                     ("bidirectional", bidirectional)))
    args_file = out / "train_args.json"
    if (out / "last.pt").exists() and args_file.exists():
        before = json.loads(args_file.read_text())
        diff = [k for k in shape_keys if before.get(k) != args[k]]
        if diff:
            raise click.ClickException(
                f"{out} holds a run with " + ", ".join(_flag(k, before.get(k)) for k in diff)
                + "; pass the same options to resume it, or choose another --out")
    want = "sequence" if family == "rnn" else "image"
    kind = dataset_kind(data)
    if kind != want:
        raise click.ClickException(
            f"--arch {arch} trains on {want}s, but {data} holds {kind}s; "
            + ("use --arch rnn-gru or rnn-lstm for sequence data" if family == "conv" else "use --arch conv"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    t0 = time.time()
    ds = load_dataset(data, size=size) if family == "conv" else load_sequence_dataset(data)
    held = [h.strip() for h in held_out.split(",") if h.strip()]
    if held:
        unknown = sorted(set(held) - set(ds.groups))
        if unknown:
            known = sorted(set(ds.groups))
            raise click.ClickException(
                f"unknown --held-out group(s) {', '.join(unknown)}; {data} has "
                + (f"groups {', '.join(known)}" if len(known) > 1 else "no groups to hold out (not Omniglot)"))
        train, val = ds.split_groups(held)
    else:
        train, val = ds, None
    pre = None
    if family == "conv":
        from fewshot.encoders.archs import build_arch

        arch_kwargs = {"in_channels": 1, "width": width, "depth": depth}
        model, _ = build_arch(arch, **arch_kwargs)
    else:
        import torch

        from fewshot.encoders.sequence import SequenceRNN

        pre, arch_kwargs = _sequence_setup(train, arch, hidden, layers, pooling, bidirectional, resample)
        if teacher and pre.kind != "strokes":
            raise click.ClickException("--teacher renders pen strokes as images; it does not apply to series data")
        torch.manual_seed(seed)
        model = SequenceRNN(**arch_kwargs)
    resumed_from = _check_resume(out / "last.pt", model, shape) if (out / "last.pt").exists() else 0
    need = shots + queries
    rotated = rotations and (pre is None or pre.kind == "strokes")  # series get no rotations
    n_train = _usable_classes(train.labels, need) * (4 if rotated else 1)
    if n_train < ways:
        raise click.ClickException(
            f"--ways {ways} needs {ways} training classes with >= {need} examples (shots + queries); "
            f"{data} has {n_train}{' counting rotations' if rotated else ''}; lower --ways, --shots or --queries")
    extra = {"data": str(data), "held_out": held_out, "arch": arch}
    if family == "conv":
        from fewshot.training import TrainConfig

        cfg = TrainConfig(ways=ways, shots=shots, queries=queries, steps=steps, lr=lr, seed=seed,
                          rotations=rotations, within_group_fraction=within_group_fraction, threads=threads,
                          extra={**extra, "width": width, "depth": depth, "size": size})
    else:
        from fewshot.sequence_training import SequenceTrainConfig

        group_ways = min(ways, 20)  # what train_sequence_episodic draws within one group
        if within_group_fraction > 0 and _val_ways(train, need) < group_ways:
            msg = f"no training group (alphabet) has {group_ways} classes with >= {need} examples"
            if wgf_given:
                raise click.ClickException(f"--within-group-fraction: {msg}; pass --within-group-fraction 0")
            click.echo(f"note: {msg}; training on episodes across groups only", err=True)
            within_group_fraction = args["within_group_fraction"] = 0.0
        cfg = SequenceTrainConfig(ways=ways, shots=shots, queries=queries, steps=steps, lr=lr, seed=seed,
                                  symmetries=4 if rotations else 1, within_group_fraction=within_group_fraction,
                                  threads=threads, extra={**extra, "arch_kwargs": arch_kwargs, "teacher": teacher})
    if val is not None:
        vw = _val_ways(val)
        if vw < 2:
            raise click.ClickException("the --held-out groups need 2 or more classes with >= 6 examples "
                                       "(1 shot + 5 queries) in one group to validate on")
        cfg.val_ways = min(cfg.val_ways, vw)
    teacher_enc = None
    if teacher:
        from fewshot import encoders

        teacher_enc = encoders.load(teacher)
        if getattr(teacher_enc, "input_kind", "image") != "image" or not hasattr(teacher_enc, "embed_tensor"):
            raise click.ClickException(f"--teacher {teacher} is not an image encoder; distillation needs one "
                                       "(e.g. omniglot-conv4)")
        cfg.extra["teacher_fingerprint"] = teacher_enc.fingerprint
    out.mkdir(parents=True, exist_ok=True)
    args_file.write_text(json.dumps(args, indent=2) + "\n")
    log = lambda line: click.echo(line, err=True)  # noqa: E731
    log(f"data: {describe_dataset(ds)} loaded in {time.time() - t0:.1f}s; train {len(train.classes)} classes"
        + (f", validation {len(val.classes)} classes ({cfg.val_ways}-way within-group)" if val is not None else "")
        + (f"; resuming from step {resumed_from}" if resumed_from else ""))
    enc_name = name or out.resolve().name
    if family == "conv":
        from fewshot.training import export_image_encoder, train_episodic

        summary = train_episodic(model, train, out, cfg, val=val, progress=_progress(), log=log)
        enc = export_image_encoder(out / "best.pt", out / "encoder.pt", train, name=enc_name,
                                   arch_kwargs=arch_kwargs, size=size, scale=summary["scale"], arch=arch)
    else:
        from fewshot.sequence_training import export_sequence_encoder, train_sequence_episodic

        summary = train_sequence_episodic(model, pre, train, out, cfg, val=val, teacher=teacher_enc,
                                          progress=_progress(), log=log)
        enc = export_sequence_encoder(out / "best.pt", out / "encoder.pt", pre, arch_kwargs, enc_name, train,
                                      summary["scale"])
    best = summary["best_val_acc"]
    result = {"out_dir": str(out), "encoder": str(out / "encoder.pt"), "name": enc.name,
              "fingerprint": enc.fingerprint, "steps": steps, "resumed_from": resumed_from,
              "best_val_acc": best if val is not None and best >= 0 else None,
              "scale": summary["scale"], "seconds": summary["seconds"], "train_classes": len(train.classes),
              "val_classes": len(val.classes) if val is not None else 0, "held_out": held,
              "arch": arch, "input_kind": enc.input_kind}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"trained {steps} steps{f' (resumed from {resumed_from})' if resumed_from else ''} "
               f"in {summary['seconds']}s")
    if result["best_val_acc"] is not None:
        click.echo(f"best validation accuracy ({cfg.val_ways}-way 1-shot within group): {best:.4f}")
    click.echo(f"encoder: {out / 'encoder.pt'} ({enc.name}, fingerprint {enc.fingerprint}); "
               f"use it with --encoder {out / 'encoder.pt'}")


def _flag(key: str, value) -> str:
    """How an option of a recorded run is given on the command line."""
    if key == "bidirectional":
        return "--bidirectional" if value else "--no-bidirectional"
    return f"--{key} {value}"


def _check_family_options(ctx: click.Context, family: str) -> None:
    """A usage error for an option of the other family (--width with an RNN, --hidden with conv)."""
    from click.core import ParameterSource

    other = RNN_ONLY if family == "conv" else CONV_ONLY
    given = [k for k in other if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE]
    if given:
        which = "--arch rnn-gru / rnn-lstm" if family == "conv" else "--arch conv"
        raise click.UsageError(f"{', '.join('--' + k for k in given)} "
                               f"only appl{'y' if len(given) > 1 else 'ies'} to {which}")


def _sequence_setup(ds, arch: str, hidden: int, layers: int, pooling: str, bidirectional: bool,
                    resample: float):
    """(SequencePreprocess, SequenceRNN kwargs) for training on ``ds``: strokes when every file is a
    ``.txt`` stroke file (an Omniglot strokes zip or folder), otherwise series of ``F`` features,
    normalised with statistics fitted on ``ds`` (the training split)."""
    from fewshot.sequences import SequencePreprocess, fit_series_stats

    strokes = all(str(src).lower().endswith(".txt") for src in ds.sources)
    if strokes:
        pre = SequencePreprocess(kind="strokes", resample=resample)
    else:
        widths = sorted({int(s.shape[1]) for s in ds.items})
        if len(widths) > 1:
            raise click.ClickException(f"the sequences have different numbers of features ({widths}); "
                                       "a series encoder needs one")
        mean, std = fit_series_stats(ds.items)
        pre = SequencePreprocess(kind="series", n_features=widths[0], mean=mean, std=std)
    arch_kwargs = {"in_features": pre.in_features, "hidden": hidden, "layers": layers,
                   "cell": arch[len("rnn-"):], "bidirectional": bidirectional, "pooling": pooling,
                   "dim": RNN_DIM, "input_proj": RNN_INPUT_PROJ}
    return pre, arch_kwargs
