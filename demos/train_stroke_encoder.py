"""Train the shipped Omniglot stroke encoder (``omniglot-strokes-gru``) and measure it.

    python demos/train_stroke_encoder.py --data ../shared/data/omniglot/strokes_background_small1.zip \\
        --out runs/strokes_gru --steps 1500 --seed 0

A bidirectional GRU over pen offsets, trained with the episodic prototypical
loss on four of the five stroke alphabets; one alphabet (default: Greek, also
held out from the shipped CNN's training) never enters training and is used to
validate and for the reported accuracy. Two levers from the CNN: every
trajectory is also rendered as an Omniglot image and embedded by the shipped
CNN (``--teacher omniglot-conv4``), and a head on the RNN embedding learns to
match it (distillation), so the RNN inherits what the CNN learned on 25 image
alphabets. Re-running the command resumes from ``<out>/last.pt``. At the end the
best checkpoint is exported to ``<out>/encoder.pt`` and evaluated on the
held-out alphabet (``--eval-episodes``), with fusion against the CNN.
"""
from __future__ import annotations

import json
import time

from demo_args import add_ints, demo_parser

HELD_OUT = ["Greek"]


def protocols(episodes: int) -> list[dict]:
    """The image protocols, within one held-out alphabet: 20-way 1-shot, 5-way 1-shot, 20-way 5-shot."""
    return [{"ways": 20, "shots": 1, "queries": 5, "episodes": episodes, "within_group": True},
            {"ways": 5, "shots": 1, "queries": 5, "episodes": episodes, "within_group": True},
            {"ways": 20, "shots": 5, "queries": 5, "episodes": episodes, "within_group": True}]


def fusion_weight(spec: str | None, enc, image, val, embedded) -> tuple[float, dict | None]:
    """(weight, how it was chosen) for --fusion-weight: a number, 'auto', or the shipped default."""
    from fewshot.encoders.sequence_builtin import FUSION_SEQUENCE_WEIGHT
    from fewshot.evaluation.fusion import choose_fusion_weight

    if spec == "auto":
        choice = choose_fusion_weight(enc, image, val, embedded=embedded)
        print(f"fusion weight chosen on validation episodes: {choice['best']} {choice['accuracy']}", flush=True)
        return choice["best"], choice
    return (float(spec) if spec is not None else FUSION_SEQUENCE_WEIGHT), None


def main() -> None:
    p = demo_parser(__doc__)
    p.add_argument("--data", default="../shared/data/omniglot/strokes_background_small1.zip")
    p.add_argument("--out", default="runs/strokes_gru")
    add_ints(p, steps=1500, ways=40, queries=4, hidden=128, layers=1, input_proj=64, dim=128)
    p.add_argument("--cell", default="gru", choices=["gru", "lstm"])
    p.add_argument("--pooling", default="attention", choices=["attention", "mean", "last"])
    p.add_argument("--resample", type=float, default=0.05)
    p.add_argument("--symmetries", type=int, default=4, choices=[1, 4, 8])
    p.add_argument("--teacher", default="omniglot-conv4", help="image encoder to distil from ('' for none)")
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--teacher-views", type=int, default=6)
    p.add_argument("--teacher-tta", type=int, default=None,
                   help="override the teacher's test-time shifts (0 renders the views 9x faster)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--init", default=None, metavar="STATE_DICT",
                   help="start from these weights (a best.pt of an earlier run) instead of random ones")
    p.add_argument("--reverse-prob", type=float, default=0.0, help="augmentation: reverse a stroke")
    p.add_argument("--shuffle-prob", type=float, default=0.0, help="augmentation: reorder the strokes")
    p.add_argument("--held-out", default=",".join(HELD_OUT))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the steps run (checkpoints stay CPU files)")
    add_ints(p, seed=0, threads=2, val_every=50, eval_episodes=1000)
    p.add_argument("--eval-only", metavar="ENCODER", default=None,
                   help="skip training: evaluate this stroke encoder (name or file) on the held-out alphabet")
    p.add_argument("--image-encoder", default="omniglot-conv4", help="the CNN for the fusion comparison")
    p.add_argument("--fusion-weight", default=None,
                   help="weight of the stroke cosine in the fusion (default: the shipped one); 'auto' chooses it "
                        "on validation episodes of the held-out alphabet (seed 12345) before the evaluation")
    a = p.parse_args()

    import torch

    from fewshot import encoders
    from fewshot.metrics import json_safe
    from fewshot.data.strokes import load_omniglot_strokes
    from fewshot.encoders.sequence import SequenceRNN
    from fewshot.evaluation.fusion import evaluate_fusion, fusion_parts
    from fewshot.train.export import export_sequence_encoder
    from fewshot.train.loop import SequenceTrainConfig
    from fewshot.train.recipes import train_model
    from fewshot.sequences import SequencePreprocess

    torch.set_num_threads(a.threads)
    t0 = time.time()
    ds = load_omniglot_strokes(a.data)
    train, val = ds.split_groups(a.held_out.split(",")) if a.held_out else (ds, None)
    print(f"loaded {len(ds)} trajectories in {time.time() - t0:.1f}s; train {len(train.classes)} classes, "
          f"held out {len(val.classes) if val else 0} classes ({a.held_out})", flush=True)
    if a.eval_only:
        enc = encoders.load(a.eval_only)
        image = encoders.load(a.image_encoder)
        embedded = fusion_parts(enc, image, val)  # once, for the weight choice and the evaluation
        weight, choice = fusion_weight(a.fusion_weight, enc, image, val, embedded)
        rows = evaluate_fusion(enc, image, val, protocols(a.eval_episodes), seed=a.seed, sequence_weight=weight,
                               embedded=embedded)
        print(json.dumps({"encoder": enc.name, "fingerprint": enc.fingerprint, "image_encoder": a.image_encoder,
                          "held_out": a.held_out, "fusion_sequence_weight": weight, "fusion_weight_choice": choice,
                          "seconds": round(time.time() - t0, 1), "results": rows}))
        return
    pre = SequencePreprocess(kind="strokes", resample=a.resample)
    arch = {"in_features": pre.in_features, "hidden": a.hidden, "layers": a.layers, "cell": a.cell,
            "bidirectional": True, "pooling": a.pooling, "dim": a.dim, "input_proj": a.input_proj}
    torch.manual_seed(a.seed)
    model = SequenceRNN(**arch)
    if a.init:
        model.load_state_dict(torch.load(a.init, map_location="cpu", weights_only=True))
    teacher = encoders.load(a.teacher) if a.teacher else None
    if teacher is not None and a.teacher_tta is not None:
        teacher.tta_shift = a.teacher_tta
    cfg = SequenceTrainConfig(ways=a.ways, queries=a.queries, steps=a.steps, lr=a.lr, seed=a.seed,
                              symmetries=a.symmetries, distill_weight=a.distill_weight,
                              teacher_views=a.teacher_views, threads=a.threads, device=a.device, val_every=a.val_every,
                              val_episodes=200, checkpoint_every=25, reverse_prob=a.reverse_prob,
                              shuffle_prob=a.shuffle_prob,
                              extra={"data": a.data, "held_out": a.held_out, "arch": arch, "init": a.init,
                                     "teacher": a.teacher, "teacher_tta": a.teacher_tta,
                                     "teacher_fingerprint": teacher.fingerprint if teacher else None})
    summary = train_model(model, train, a.out, cfg, val=val, pre=pre, teacher=teacher,
                          log=lambda s: print(s, flush=True))
    enc = export_sequence_encoder(f"{a.out}/best.pt", f"{a.out}/encoder.pt", pre, arch,
                                  "omniglot-strokes-gru", train, summary["scale"])
    summary.update(encoder=f"{a.out}/encoder.pt", fingerprint=enc.fingerprint,
                   total_seconds=round(time.time() - t0, 1))
    if val is not None and a.eval_episodes:
        image = encoders.load(a.image_encoder)
        embedded = fusion_parts(enc, image, val)
        weight, summary["fusion_weight_choice"] = fusion_weight(a.fusion_weight, enc, image, val, embedded)
        summary["held_out_eval"] = evaluate_fusion(enc, image, val, protocols(a.eval_episodes), seed=a.seed,
                                                   sequence_weight=weight, embedded=embedded)
    print(json.dumps(json_safe(summary)), flush=True)


if __name__ == "__main__":
    main()
