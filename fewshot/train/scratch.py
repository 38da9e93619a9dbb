"""Training an encoder from scratch: the library behind ``fewshot train``.

Two families share the one loop: a Conv-N image encoder (``arch="conv"``) and a
recurrent sequence encoder (``arch="rnn-gru"`` / ``"rnn-lstm"``) for pen strokes
or time series, optionally distilled from an image encoder (``teacher``). A run
folder holds ``train_args.json``, the loop's checkpoints and log, and finally
``encoder.pt``; the same call again resumes it, refusing options that would
change the network's shape.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fewshot.data.dataset import LabelledSet
from fewshot.errors import InputError

ARCHS = ("conv", "rnn-gru", "rnn-lstm")
# Options that fix the network's shape (and what it reads): a run cannot resume with different ones.
ARCH_KEYS = ("arch", "width", "depth", "size")
RNN_ARCH_KEYS = ("arch", "hidden", "layers", "pooling", "bidirectional", "resample")
# Defaults that differ by family (the RNN ones are the shipped omniglot-strokes-gru recipe).
FAMILY_DEFAULTS = {"conv": {"ways": 60, "queries": 5, "lr": 1e-3, "within_group_fraction": 0.0},
                   "rnn": {"ways": 40, "queries": 4, "lr": 2e-3, "within_group_fraction": 0.25}}
# The shipped stroke encoder's fixed shape around the recurrent core.
RNN_INPUT_PROJ, RNN_DIM = 64, 128


@dataclass
class TrainOptions:
    """Everything ``fewshot train`` takes; ``None`` means the family's default."""

    data: str
    out_dir: str
    arch: str = "conv"
    width: int = 64
    depth: int = 4
    size: int = 28
    hidden: int = 128
    layers: int = 1
    pooling: str = "attention"
    bidirectional: bool = True
    resample: float = 0.05
    teacher: str | None = None
    ways: int | None = None
    shots: int = 1
    queries: int | None = None
    steps: int = 2000
    lr: float | None = None
    seed: int = 0
    held_out: str = ""
    rotations: bool = True
    within_group_fraction: float | None = None
    threads: int = 0
    name: str | None = None
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (fewshot.train.devices)

    @property
    def family(self) -> str:
        return "rnn" if self.arch.startswith("rnn-") else "conv"

    def resolved(self) -> "TrainOptions":
        """A copy with the family defaults filled in."""
        d = FAMILY_DEFAULTS[self.family]
        pick = lambda v, k: d[k] if v is None else v  # noqa: E731
        return TrainOptions(**{**self.__dict__, "ways": pick(self.ways, "ways"), "queries": pick(self.queries, "queries"),
                               "lr": pick(self.lr, "lr"),
                               "within_group_fraction": pick(self.within_group_fraction, "within_group_fraction")})

    def args(self) -> dict:
        """What ``train_args.json`` records (the shape options of this family only)."""
        a = {k: getattr(self, k) for k in ("arch", "data", "ways", "shots", "queries", "steps", "lr", "seed",
                                             "held_out", "rotations", "within_group_fraction")}
        a["data"] = str(self.data)
        keys = ("width", "depth", "size") if self.family == "conv" else \
            ("hidden", "layers", "pooling", "bidirectional", "resample", "teacher")
        return {**a, **{k: getattr(self, k) for k in keys}}


def flag(key: str, value: Any) -> str:
    """How an option of a recorded run is given on the command line."""
    if key == "bidirectional":
        return "--bidirectional" if value else "--no-bidirectional"
    return f"--{key} {value}"


def shape_text(o: TrainOptions) -> str:
    if o.family == "conv":
        return f"--arch {o.arch} --width {o.width} --depth {o.depth}"
    return f"--arch {o.arch} " + " ".join(flag(k, getattr(o, k)) for k in ("hidden", "layers", "pooling",
                                                                            "bidirectional"))


def check_same_shape(o: TrainOptions, out: Path) -> None:
    """A run folder with a checkpoint resumes only with the options that fixed its shape."""
    args_file = out / "train_args.json"
    if not ((out / "last.pt").exists() and args_file.exists()):
        return
    before, now = json.loads(args_file.read_text()), o.args()
    diff = [k for k in (ARCH_KEYS if o.family == "conv" else RNN_ARCH_KEYS) if before.get(k) != now[k]]
    if diff:
        raise InputError(f"{out} holds a run with " + ", ".join(flag(k, before.get(k)) for k in diff)
                         + "; pass the same options to resume it, or choose another --out")


def resumed_step(path: Path, model: torch.nn.Module, shape: str) -> int:
    """The step ``path`` (a ``last.pt``) stopped at, after checking its weights fit ``model``; 0 without one."""
    if not path.exists():
        return 0
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        step, state = int(ck["step"]), ck["model"]
    except Exception as exc:  # noqa: BLE001 - truncated file, not ours, refused pickle
        raise InputError(f"cannot resume from {path} ({type(exc).__name__}: {str(exc)[:120]}); "
                         "delete it to start over, or choose another --out") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != {k: tuple(v.shape) for k, v in state.items()}:
        raise InputError(f"{path} holds weights of another shape than {shape}; pass the options "
                         "the run was started with, or choose another --out")
    return step


def group_ways(ds: LabelledSet, need: int) -> int:
    """Most classes one group of ``ds`` offers with >= ``need`` examples."""
    from fewshot.train.loop import usable_ways

    return usable_ways(ds.labels, ds.groups, need, True)


def load_split(o: TrainOptions) -> tuple[LabelledSet, LabelledSet, LabelledSet | None]:
    """(all, train, held-out) data of the kind the family trains on."""
    from fewshot.data.registry import dataset_kind, load_dataset, load_sequence_dataset

    want = "sequence" if o.family == "rnn" else "image"
    kind = dataset_kind(o.data)
    if kind != want:
        raise InputError(f"--arch {o.arch} trains on {want}s, but {o.data} holds {kind}s; "
                         + ("use --arch rnn-gru or rnn-lstm for sequence data" if o.family == "conv"
                            else "use --arch conv"))
    ds = load_dataset(o.data, size=o.size) if o.family == "conv" else load_sequence_dataset(o.data)
    held = [h.strip() for h in o.held_out.split(",") if h.strip()]
    if not held:
        return ds, ds, None
    unknown = sorted(set(held) - set(ds.groups))
    if unknown:
        known = sorted(set(ds.groups))
        raise InputError(f"unknown --held-out group(s) {', '.join(unknown)}; {o.data} has "
                         + (f"groups {', '.join(known)}" if len(known) > 1 else "no groups to hold out (not Omniglot)"))
    return (ds, *ds.split_groups(held))


def sequence_setup(ds: LabelledSet, o: TrainOptions) -> tuple[Any, dict]:
    """(SequencePreprocess, SequenceRNN kwargs) for training on ``ds``: strokes when every file is a
    ``.txt`` stroke file, otherwise series of ``F`` features normalised with statistics fitted on ``ds``."""
    from fewshot.sequences import SequencePreprocess, fit_series_stats

    if all(str(src).lower().endswith(".txt") for src in ds.sources):
        pre = SequencePreprocess(kind="strokes", resample=o.resample)
    else:
        widths = sorted({int(s.shape[1]) for s in ds.items})
        if len(widths) > 1:
            raise InputError(f"the sequences have different numbers of features ({widths}); "
                             "a series encoder needs one")
        mean, std = fit_series_stats(ds.items)
        pre = SequencePreprocess(kind="series", n_features=widths[0], mean=mean, std=std)
    arch_kwargs = {"in_features": pre.in_features, "hidden": o.hidden, "layers": o.layers,
                   "cell": o.arch[len("rnn-"):], "bidirectional": o.bidirectional, "pooling": o.pooling,
                   "dim": RNN_DIM, "input_proj": RNN_INPUT_PROJ}
    return pre, arch_kwargs


def build_model(train: LabelledSet, o: TrainOptions) -> tuple[torch.nn.Module, str, dict, Any]:
    """(module, arch name for the encoder file, arch kwargs, sequence preprocessing or None)."""
    if o.family == "conv":
        from fewshot.encoders.archs import build_arch

        arch_kwargs = {"in_channels": 1, "width": o.width, "depth": o.depth}
        return build_arch(o.arch, **arch_kwargs)[0], o.arch, arch_kwargs, None
    from fewshot.encoders.sequence import SequenceRNN

    pre, arch_kwargs = sequence_setup(train, o)
    if o.teacher and pre.kind != "strokes":
        raise InputError("--teacher renders pen strokes as images; it does not apply to series data")
    torch.manual_seed(o.seed)
    return SequenceRNN(**arch_kwargs), "rnn", arch_kwargs, pre


def usable_classes(labels: list[str], need: int) -> int:
    return sum(1 for n in Counter(labels).values() if n >= need)


def load_teacher(name: str | None) -> Any:
    if not name:
        return None
    from fewshot import encoders

    teacher = encoders.load(name)
    if getattr(teacher, "input_kind", "image") != "image" or not callable(getattr(teacher, "embed_tensor", None)):
        raise InputError(f"--teacher {name} is not an image encoder; distillation needs one (e.g. omniglot-conv4)")
    return teacher


