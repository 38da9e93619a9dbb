"""``fewshot train``: train a Conv-N image encoder episodically and export it as an encoder file.

    fewshot train --data ../shared/data/omniglot/images_background.zip --out runs/my_conv4 \
        --held-out Bengali,Futurama,Greek,Korean,Tifinagh --steps 4500

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

# Options that fix the network's shape: a run cannot resume with different ones.
ARCH_KEYS = ("arch", "width", "depth", "size")


def _progress() -> bool:
    return not os.environ.get("FEWSHOT_NO_PROGRESS")


def _usable_classes(labels, need: int) -> int:
    return sum(1 for n in Counter(labels).values() if n >= need)


def _val_ways(val, need: int = 6) -> int:
    """Most classes one group of the validation set offers with >= ``need`` examples (1 shot + 5 queries)."""
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
              help="Omniglot zip or folder, a folder with one sub-folder per class, or 'digits'.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoints, log, and the exported OUT/encoder.pt.")
@click.option("--arch", type=click.Choice(["conv"]), default="conv", show_default=True,
              help="Backbone (Conv-N: conv3x3-BN-ReLU-maxpool blocks).")
@click.option("--width", type=click.IntRange(min=1), default=64, show_default=True, help="Channels per block.")
@click.option("--depth", type=click.IntRange(min=1), default=4, show_default=True, help="Number of blocks.")
@click.option("--size", type=click.IntRange(min=8), default=28, show_default=True, help="Image side in pixels.")
@click.option("--ways", type=click.IntRange(min=2), default=60, show_default=True, help="Classes per episode.")
@click.option("--shots", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Episodes to train on.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--held-out", "held_out", default="", metavar="A,B,...",
              help="Groups (Omniglot alphabets) kept out of training and used for validation.")
@click.option("--rotations/--no-rotations", default=True, show_default=True,
              help="Add 90/180/270-degree rotations of each class as new classes.")
@click.option("--within-group-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of episodes drawn within one group (alphabet).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="Torch threads (0: default).")
@click.option("--name", default=None, help="Name recorded in the encoder file [default: the OUT folder's name].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def command(data, out_dir, arch, width, depth, size, ways, shots, queries, steps, lr, seed, held_out,
            rotations, within_group_fraction, threads, name, as_json) -> None:
    """Train an image encoder on episodes (prototypical loss) and export OUT/encoder.pt; resumable."""
    import time

    from fewshot.data.registry import describe_dataset, load_dataset
    from fewshot.encoders.archs import build_arch
    from fewshot.training import TrainConfig, export_image_encoder, train_episodic

    out = Path(out_dir)
    args = {"arch": arch, "width": width, "depth": depth, "size": size, "data": str(data), "ways": ways,
            "shots": shots, "queries": queries, "steps": steps, "lr": lr, "seed": seed, "held_out": held_out,
            "rotations": rotations, "within_group_fraction": within_group_fraction}
    args_file = out / "train_args.json"
    resumed_from = 0
    if (out / "last.pt").exists():
        if args_file.exists():
            before = json.loads(args_file.read_text())
            diff = [k for k in ARCH_KEYS if before.get(k) != args[k]]
            if diff:
                raise click.ClickException(
                    f"{out} holds a run with " + ", ".join(f"--{k} {before.get(k)}" for k in diff)
                    + "; pass the same options to resume it, or choose another --out")
        resumed_from = _check_resume(out / "last.pt", build_arch(arch, in_channels=1, width=width, depth=depth)[0],
                                     f"--arch {arch} --width {width} --depth {depth}")
    t0 = time.time()
    ds = load_dataset(data, size=size)
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
    need = shots + queries
    n_train = _usable_classes(train.labels, need) * (4 if rotations else 1)
    if n_train < ways:
        raise click.ClickException(
            f"--ways {ways} needs {ways} training classes with >= {need} examples (shots + queries); "
            f"{data} has {n_train}{' counting rotations' if rotations else ''}; lower --ways, --shots or --queries")
    cfg = TrainConfig(ways=ways, shots=shots, queries=queries, steps=steps, lr=lr, seed=seed,
                      rotations=rotations, within_group_fraction=within_group_fraction, threads=threads,
                      extra={"data": str(data), "held_out": held_out, "arch": arch, "width": width,
                             "depth": depth, "size": size})
    if val is not None:
        vw = _val_ways(val)
        if vw < 2:
            raise click.ClickException("the --held-out groups need 2 or more classes with >= 6 examples "
                                       "(1 shot + 5 queries) in one group to validate on")
        cfg.val_ways = min(cfg.val_ways, vw)
    out.mkdir(parents=True, exist_ok=True)
    args_file.write_text(json.dumps(args, indent=2) + "\n")
    log = lambda line: click.echo(line, err=True)  # noqa: E731
    log(f"data: {describe_dataset(ds)} loaded in {time.time() - t0:.1f}s; train {len(train.classes)} classes"
        + (f", validation {len(val.classes)} classes ({cfg.val_ways}-way within-group)" if val is not None else "")
        + (f"; resuming from step {resumed_from}" if resumed_from else ""))
    arch_kwargs = {"in_channels": 1, "width": width, "depth": depth}
    model, _ = build_arch(arch, **arch_kwargs)
    summary = train_episodic(model, train, out, cfg, val=val, progress=_progress(), log=log)
    enc = export_image_encoder(out / "best.pt", out / "encoder.pt", train, name=name or out.resolve().name,
                               arch_kwargs=arch_kwargs, size=size, scale=summary["scale"], arch=arch)
    best = summary["best_val_acc"]
    result = {"out_dir": str(out), "encoder": str(out / "encoder.pt"), "name": enc.name,
              "fingerprint": enc.fingerprint, "steps": steps, "resumed_from": resumed_from,
              "best_val_acc": best if val is not None and best >= 0 else None,
              "scale": summary["scale"], "seconds": summary["seconds"], "train_classes": len(train.classes),
              "val_classes": len(val.classes) if val is not None else 0, "held_out": held}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"trained {steps} steps{f' (resumed from {resumed_from})' if resumed_from else ''} "
               f"in {summary['seconds']}s")
    if result["best_val_acc"] is not None:
        click.echo(f"best validation accuracy ({cfg.val_ways}-way 1-shot within group): {best:.4f}")
    click.echo(f"encoder: {out / 'encoder.pt'} ({enc.name}, fingerprint {enc.fingerprint}); "
               f"use it with --encoder {out / 'encoder.pt'}")
