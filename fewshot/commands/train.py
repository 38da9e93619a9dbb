"""``fewshot train``: train an encoder episodically and export it as an encoder file.

    fewshot train --data ../shared/data/omniglot/images_background.zip --out runs/my_conv4 \
        --held-out Bengali,Futurama,Greek,Korean,Tifinagh --steps 4500

``--arch conv`` trains a Conv-N image encoder on images; ``--arch rnn-gru`` or
``rnn-lstm`` trains a :class:`~fewshot.encoders.sequence.SequenceRNN` on sequence
data (an Omniglot strokes zip or folder, or class folders of ``.txt``/``.npy``/
``.csv`` files) with :func:`fewshot.train.recipes.train` (the one training loop),
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
from pathlib import Path

import click

from fewshot.commands import progress_enabled

ARCHS = ("conv", "rnn-gru", "rnn-lstm")
# Options of one family only: giving one to the other family is a usage error.
CONV_ONLY = ("width", "depth", "size")
RNN_ONLY = ("hidden", "layers", "pooling", "bidirectional", "resample", "teacher")


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
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda|cuda:N|auto",
              help="Where the training steps run (auto: a CUDA GPU when torch sees one); checkpoints and "
                   "OUT/encoder.pt are CPU files either way, so a run can resume on another machine.")
@click.option("--name", default=None, help="Name recorded in the encoder file [default: the OUT folder's name].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def command(data, out_dir, arch, width, depth, size, hidden, layers, pooling, bidirectional, resample, teacher,
            ways, shots, queries, steps, lr, seed, held_out, rotations, within_group_fraction, threads, name,
            device, as_json) -> None:
    """Train an encoder on episodes (prototypical loss) and export OUT/encoder.pt; resumable.

    Images with --arch conv; sequences (pen strokes, time series) with --arch rnn-gru or rnn-lstm.
    """
    from fewshot.metrics import json_safe
    from fewshot.train.recipes import train
    from fewshot.train.scratch import TrainOptions

    _check_family_options(click.get_current_context(), "rnn" if arch.startswith("rnn-") else "conv")
    opts = TrainOptions(data, out_dir, arch, width, depth, size, hidden, layers, pooling, bidirectional, resample,
                        teacher, ways, shots, queries, steps, lr, seed, held_out, rotations, within_group_fraction,
                        threads, name, device)
    result = train(opts, progress=progress_enabled(), log=lambda line: click.echo(line, err=True))
    val_ways = result.pop("val_ways")
    if as_json:
        click.echo(json.dumps(json_safe(result), allow_nan=False))
        return
    resumed_from, out = result["resumed_from"], Path(out_dir)
    click.echo(f"trained {steps} steps{f' (resumed from {resumed_from})' if resumed_from else ''} "
               f"in {result['seconds']}s")
    if result["best_val_acc"] is not None:
        click.echo(f"best validation accuracy ({val_ways}-way 1-shot within group): {result['best_val_acc']:.4f}")
    click.echo(f"encoder: {out / 'encoder.pt'} ({result['name']}, fingerprint {result['fingerprint']}); "
               f"use it with --encoder {out / 'encoder.pt'}")


def _check_family_options(ctx: click.Context, family: str) -> None:
    """A usage error for an option of the other family (--width with an RNN, --hidden with conv)."""
    from click.core import ParameterSource

    other = RNN_ONLY if family == "conv" else CONV_ONLY
    given = [k for k in other if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE]
    if given:
        which = "--arch rnn-gru / rnn-lstm" if family == "conv" else "--arch conv"
        raise click.UsageError(f"{', '.join('--' + k for k in given)} "
                               f"only appl{'y' if len(given) > 1 else 'ies'} to {which}")
