"""``fewshot finetune``: adapt an encoder to labelled data with a metric-learning loss.

Registered by the CLI as ``cli.add_command(command)``. Torch is imported inside
the command, so ``fewshot --help`` stays instant.
"""
from __future__ import annotations

import json
import sys

import click

from fewshot.commands import progress_enabled

LOSS_CHOICES = ("proto", "triplet", "supcon", "ce")


@click.command("finetune")
@click.option("--encoder", default=None, metavar="NAME|PATH",
              help="Encoder to start from: a name (see `fewshot encoders`) or an encoder file "
                   "[default: with --data index, the --into index's encoder (for the image default, "
                   "omniglot-ensemble, its Conv-4 member); else omniglot-conv4].")
@click.option("--data", required=True, metavar="PATH|digits|index",
              help="Labelled images, pen strokes or texts: a folder with one sub-folder per class, an Omniglot zip or "
                   "folder, a CLINC150 JSON or text/label table, 'digits' (scikit-learn's), 'index' (the examples "
                   "stored in --into) or an index folder.")
@click.option("--classes", default=None, metavar="SPEC",
              help="Train on these classes only: '0-4', 'a,b,c' or glob patterns ('Greek/*'). Default: all.")
@click.option("--loss", type=click.Choice(LOSS_CHOICES), default="proto", show_default=True,
              help="proto: episodic prototypical; triplet: batch-hard triplet; supcon: supervised contrastive; "
                   "ce: cross-entropy over the training classes (a head dropped after training).")
@click.option("--margin", type=float, default=None, help="Triplet margin on unit vectors (default 0.2).")
@click.option("--temperature", type=float, default=None, help="SupCon temperature (default 0.1).")
@click.option("--train-last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train only the last N blocks of the encoder (default: all).")
@click.option("--freeze-until", type=click.IntRange(min=0), default=None, metavar="K",
              help="Freeze blocks 0..K-1 (the alternative to --train-last).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam's learning rate [default: 1e-3; 2e-5 for a sentence transformer such as minilm].")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training steps (episodes), at most; early stopping may end sooner.")
@click.option("--ways", type=click.IntRange(min=2), default=None,
              help="Classes per episode (default 10, at most the training classes).")
@click.option("--shots", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=None, help="Queries per class (default 5).")
@click.option("--batch-size", type=click.IntRange(min=4), default=None,
              help="Images per step instead of --queries (split evenly over the episode's classes).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random small rotation, shear, scale and shift of every training image (photo "
                   "encoders: also left-right mirror images; sequences and text: their own augmentation).")
@click.option("--expand", type=click.Choice(["auto", "dihedral", "rotations", "none"]), default="auto",
              show_default=True, help="Make new classes from each class's rotations (x4) and mirror images "
              "(dihedral, x8); auto: dihedral for grayscale encoders (handwriting), none for RGB (photos).")
@click.option("--val-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.2,
              show_default=True, help="Share of classes held out of training for early stopping (0: none).")
@click.option("--val-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--patience", type=click.IntRange(min=0), default=4, show_default=True,
              help="Stop after this many validations without improvement (0: never).")
@click.option("--centre", type=click.Choice(["keep", "recompute", "none"]), default="keep", show_default=True,
              help="Embedding centre (CL2N): the encoder's own, the fine-tuning data's mean, or none.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", required=True, type=click.Path(), metavar="ENCODER.pt|FOLDER",
              help="Where to write the new encoder file (usable wherever an encoder name is); a fine-tuned "
                   "sentence transformer (minilm) is a folder.")
@click.option("--name", default=None, help="Name of the new encoder (default: the file's stem).")
@click.option("--into", "into", default=None, type=click.Path(file_okay=False), metavar="INDEX_DIR",
              help="Then switch this index to the new encoder, re-embedding its examples (atomic).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--fresh", is_flag=True, help="Discard an interrupted run and start over.")
@click.option("--keep-run", is_flag=True, help="Keep the checkpoint folder (<out>.run) after success.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Torch CPU threads (0: default).")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda|cuda:N|auto",
              help="Where the training steps run (auto: a CUDA GPU when torch sees one). Checkpoints and the "
                   "written encoder are CPU files either way.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def command(encoder, data, classes, loss, margin, temperature, train_last, freeze_until, lr, steps, ways, shots,
            queries, batch_size, augment, expand, val_fraction, val_every, patience, centre, seed, out, name,
            into, resume, fresh, keep_run, threads, device, as_json) -> None:
    """Fine-tune an encoder on labelled classes; write it to --out (and switch --into an index).

    \b
    Examples:
      fewshot finetune --data digits --classes 0-4 --out digits.pt
      fewshot finetune --data my_classes/ --loss supcon --train-last 2 --out mine.pt --into my_index
      fewshot finetune --data index --into my_index --out my_index_ft.pt   # its own examples
      fewshot finetune --data index --into intents --out intents-minilm --loss supcon --train-last 3 \
          --ways 30 --shots 2 --queries 3 --steps 40 --lr 5e-5 --val-fraction 0   # minilm: a folder

    A Ctrl-C or a kill leaves the last checkpoint (in <out>.run) and the index
    untouched; run the same command with --resume to continue.
    """
    if train_last is not None and freeze_until is not None:
        raise click.UsageError("give --train-last or --freeze-until, not both")
    if queries is not None and batch_size is not None:
        raise click.UsageError("give --queries or --batch-size, not both")
    if resume and fresh:
        raise click.UsageError("give --resume or --fresh, not both")
    if margin is not None and loss != "triplet":
        raise click.UsageError("--margin applies to --loss triplet")
    if temperature is not None and loss != "supcon":
        raise click.UsageError("--temperature applies to --loss supcon")
    if data == "index" and into is None:
        raise click.UsageError("--data index fine-tunes on the examples of the index given by --into; give --into")
    from fewshot.finetune import default_run_dir, finetune

    loss_kwargs = {}
    if margin is not None:
        loss_kwargs["margin"] = margin
    if temperature is not None:
        loss_kwargs["temperature"] = temperature
    progress = progress_enabled()
    try:
        result = finetune(encoder, data, classes=classes, loss=loss, loss_kwargs=loss_kwargs, ways=ways,
                          shots=shots, queries=queries, batch_size=batch_size, steps=steps, lr=lr,
                          train_last=train_last, freeze_until=freeze_until, augment=augment, expand=expand,
                          val_fraction=val_fraction, patience=patience, val_every=val_every, seed=seed,
                          centre=centre, out=out, name=name, resume=resume, fresh=fresh, keep_run=keep_run,
                          into=into, threads=threads, device=device, progress=progress)
    except KeyboardInterrupt:
        run = default_run_dir(out)
        where = f"the last checkpoint is in {run}; " if (run / "last.pt").exists() else ""
        click.echo(f"interrupted: {where}the index was not changed; run the same command with --resume "
                   "to continue", err=True)
        raise
    from fewshot.metrics import json_safe

    d = result.to_dict()
    if as_json:
        click.echo(json.dumps(json_safe(d), default=str, allow_nan=False))
        return
    click.echo(summary_text(d))
    sys.stdout.flush()


def summary_text(s: dict) -> str:
    """The human summary of a fine-tune (``FinetuneResult.to_dict()``): what trained, on what, what changed."""
    noun = {"image": "images", "text": "texts"}.get(s.get("input_kind", "image"), "sequences")
    grown = {"dihedral": ", x8 by rotations and mirroring", "rotations": ", x4 by rotations"}.get(s["expand"], "")
    lines = [f"fine-tuned {s['base']} on {len(s['train_classes'])} classes ({s['n_train_images']} {noun}{grown}) "
             f"with the {s['loss']} loss: {s['step']}/{s['steps']} steps in {s['seconds']:.0f}s"
             + (" (stopped early)" if s["stopped_early"] else ""),
             f"wrote {s['path']} (encoder {s['encoder']}, fingerprint {s['fingerprint']})"]
    if s["val_classes"]:
        lines.insert(1, f"validation accuracy on {len(s['val_classes'])} held-out classes: "
                        f"{100 * s['val_acc_start']:.1f}% before, best {100 * s['best_val_acc']:.1f}%"
                        + ("" if s["improved"] else "; no step beat the starting weights, so they are kept"))
    lines += [f"note: {n}" for n in s.get("notes", [])]
    if s.get("into"):
        lines.append(f"switched {s['into']['index']} to it: re-embedded {s['into']['reembedded']} example(s)")
    return "\n".join(lines)
