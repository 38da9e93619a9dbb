"""How close are trajectories traced from images to the pen trajectories people drew?

    python benchmarks/traced_strokes_gap.py [--alphabets Balinese,Early_Aramaic,Korean,Latin] [--out F.json]

Omniglot's images were drawn from its stroke files, so every official trajectory
of ``strokes_background_small1`` has its image in ``images_background``. This
traces each image (:mod:`fewshot.data.pseudo_strokes`) and compares the trace
with the drawer's trajectory:

* the number of strokes (pen lifts), traced and real;
* the cosine between the stroke encoder's embeddings of the two (1 = the encoder
  cannot tell the trace from the real drawing);
* nearest-neighbour accuracy from each trace to the real trajectories of the other
  drawings (is its nearest real drawing the same character?).

The default encoder (``omniglot-strokes-gru``) never saw a traced trajectory.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "omniglot"


def _drawing(source: str) -> str:
    """``<Alphabet>/characterNN/<id>_<drawer>``: the same key for a stroke file and its image."""
    return re.search(r"([^/]+/character\d+/\d+_\d+)\.\w+$", source).group(1)


def measure(alphabets: list[str], encoder: str = "omniglot-strokes-gru") -> dict:
    from fewshot import encoders
    from fewshot.data.omniglot import load_omniglot
    from fewshot.data.pseudo_strokes import TRACER_VERSION, trace_images
    from fewshot.data.strokes import load_omniglot_strokes
    from fewshot.sequences import array_to_strokes

    real = load_omniglot_strokes(DATA / "strokes_background_small1.zip", alphabets=alphabets)
    images = load_omniglot(DATA / "images_background.zip", size=105, alphabets=alphabets)
    where = {_drawing(s): i for i, s in enumerate(images.sources)}
    traced = trace_images(images.items[[where[_drawing(s)] for s in real.sources]])
    enc = encoders.load(encoder)
    er, et = (e / np.linalg.norm(e, axis=1, keepdims=True) for e in (enc.embed(real.items), enc.embed(traced)))
    sims = et @ er.T
    np.fill_diagonal(sims, -np.inf)  # not the drawing itself
    labels = np.array(real.labels)
    return {"alphabets": alphabets, "drawings": len(real), "encoder": enc.name, "tracer_version": TRACER_VERSION,
            "strokes_real": float(np.mean([len(array_to_strokes(a)) for a in real.items])),
            "strokes_traced": float(np.mean([len(array_to_strokes(a)) for a in traced])),
            "cosine_real_traced": float(np.mean(np.sum(er * et, axis=1))),
            "traced_to_real_nn_accuracy": float(np.mean(labels[sims.argmax(1)] == labels))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alphabets", default="Balinese,Early_Aramaic,Korean,Latin")
    p.add_argument("--encoder", default="omniglot-strokes-gru")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    r = measure(a.alphabets.split(","), a.encoder)
    print(json.dumps(r, indent=1))
    if a.out:
        a.out.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
