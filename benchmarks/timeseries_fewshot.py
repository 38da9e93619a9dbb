"""Few-shot time-series classification on problems never seen in training: ts-rocket against the usual baselines.

    .venv-aeon/bin/python benchmarks/timeseries_aeon_baselines.py --out benchmarks/results/work-ts/aeon.npz
    python benchmarks/timeseries_fewshot.py --aeon-data .venv-aeon/lib/python3.11/site-packages/aeon/datasets/data \\
        --baselines benchmarks/results/work-ts/aeon.npz --out benchmarks/results/TIMESERIES.md

Leave one data set out: for each classification problem shipped with aeon, a
``ts-rocket`` (``--arch``) is fitted and trained (fewshot.train.timeseries, the shipped
recipe, ``--steps`` steps on 1 thread: a couple of minutes each) on all the *other* problems, then
N-way 1-shot and 5-shot episodes (N = the problem's class count, at most 10;
``--episodes`` episodes, seed 0, up to 5 queries per class) are drawn over all its
series. On the very same episodes (same sampler, same seed):

* ``ts-rocket``: the encoder trained without the problem (cosine prototypes, as ``classify``);
* ``metric untrained``: the same encoder with its statistics fitted on the other problems but
  its metric not trained (every weight at its initial value): what the training adds;
* ``halfway`` (with ``--interpolate A``): the metric's weights interpolated between the two
  above, ``A`` x trained + (1 - A) x untrained (WiSE-FT, Wortsman et al. 2022: a fine-tuned
  model's robustness to new distributions, partly regained by averaging it with its start);
* ``untrained RNN``: ``ts-gru``'s architecture, randomly initialised (seed 0);
* ``time-avg``: each channel standardised over the problem's series, averaged over time (L2 prototypes);
* ``DTW 1-NN``: nearest support series by aeon's full-window DTW distance;
* ``MiniRocket``: aeon's MiniRocket features (fitted without labels on the problem's series),
  standardised, L2 prototypes.

Accuracy and 95% CI come from the evaluation kernel (DTW: its per-episode 1-NN
accuracies through the kernel's ``mean_ci95``). A second protocol (``--within``)
is the one of demos/timeseries_one_shot.py: train on the other problems plus the
first half of the problem's classes, test on the other half.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ALL = "ACSF1,ArrowHead,BasicMotions,Covid3Month_disc,GunPoint,ItalyPowerDemand,JapaneseVowels,OSULeaf," \
      "PickupGestureWiimoteZ,UnitTest"
METHODS = ("trained", "metric untrained", "untrained RNN", "time-avg", "DTW 1-NN", "MiniRocket")


def dtw_accuracies(dist: np.ndarray, sampler, episodes: int) -> np.ndarray:
    """Per-episode accuracy of 1-NN by a precomputed distance matrix (rows/columns = the set's examples)."""
    accs = np.empty(episodes)
    for i in range(episodes):
        ep = sampler.episode(i)
        sup, qry = ep.support.ravel(), ep.query.ravel()
        sup_lab = np.repeat(np.arange(ep.ways), ep.support.shape[1])
        pred = sup_lab[dist[np.ix_(qry, sup)].argmin(1)]
        accs[i] = (pred == np.repeat(np.arange(ep.ways), ep.query.shape[1])).mean()
    return accs


def time_averaged(items: list[np.ndarray]) -> np.ndarray:
    """Each channel standardised over all steps of all series (no labels), then averaged over time."""
    allx = np.concatenate(items)
    mu, sd = allx.mean(0), np.maximum(allx.std(0), 1e-6)
    return np.stack([((s - mu) / sd).mean(0) for s in items]).astype(np.float32)


def standardised(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-6)).astype(np.float32)


def interpolated(trained, start, alpha: float):
    """A copy of ``trained`` whose learnt metric (``log_*`` weights) is ``alpha`` of the way from ``start``'s."""
    import copy

    out, ts, ss = copy.deepcopy(trained), trained.module.state_dict(), start.module.state_dict()
    out.module.load_state_dict({k: alpha * v + (1 - alpha) * ss[k] if k.startswith("log_") else v for k, v in ts.items()})
    return out


def score(ds, rows: np.ndarray, embs: dict[str, np.ndarray], base: dict[str, np.ndarray], episodes: int,
          seed: int) -> dict:
    """Every method on the same N-way 1- and 5-shot episodes of ``ds`` (``rows``: its rows in ``base``)."""
    from fewshot.episodes import EpisodeSampler
    from fewshot.evaluation.kernel import evaluate_embeddings, max_queries
    from fewshot.metrics import mean_ci95

    ways = min(len(ds.classes), 10)
    out = {"ways": ways, "classes": len(ds.classes), "series": len(ds)}
    feats = {**{k: (v, "cosine") for k, v in embs.items()},
             "time-avg": (time_averaged(ds.items), "l2"),
             "MiniRocket": (standardised(base["minirocket"][rows]), "l2")}
    for shots in (1, 5):
        q = max_queries(ds, ways, shots, 5)
        res = {"queries": q}
        for name, (emb, metric) in feats.items():
            r = evaluate_embeddings(emb, ds, ways, shots, q, episodes, seed, metric=metric)
            res[name] = [round(r.accuracy, 4), round(r.ci95, 4)]
        sampler = EpisodeSampler(ds.labels, ways, shots, q, ds.groups, False, seed)
        m, ci = mean_ci95(dtw_accuracies(base["dtw"][np.ix_(rows, rows)], sampler, episodes))
        res["DTW 1-NN"] = [round(m, 4), round(ci, 4)]
        out[f"{shots}-shot"] = res
    return out


def encoder_for(key: str, train_sets: list, work: Path, a, log) -> tuple[object, dict]:
    """The ``a.arch`` encoder trained on ``train_sets`` (cached in ``work/key``: rerunning resumes or reuses it)."""
    from fewshot.encoders.registry import from_file
    from fewshot.train.timeseries import pool_sets, train_ts_encoder, ts_config

    path = work / key / "encoder.pt"
    meta = work / key / "summary.json"
    if path.exists() and meta.exists():
        return from_file(path), json.loads(meta.read_text())
    t0 = time.time()
    enc, summary = train_ts_encoder(pool_sets(train_sets), work / key / "run",
                                    ts_config(a.steps, a.seed, a.threads, arch=a.arch), name=a.arch, arch=a.arch)
    summary = {"train_seconds": round(time.time() - t0, 1), "steps": summary["step"],
               "load_avg": [round(x, 2) for x in os.getloadavg()], "train_series": sum(len(s) for s in train_sets),
               **{k: summary[k] for k in ("validation_problems", "val_acc_start", "best_val_acc") if k in summary}}
    enc.save(path)
    meta.write_text(json.dumps(summary))
    log(f"{key}: trained in {summary['train_seconds']}s (load {summary['load_avg']})")
    return enc, summary


def fmt(r: list) -> str:
    return f"{100 * r[0]:.1f} ± {100 * r[1]:.1f}"


def table(results: dict, shots_list=("1-shot", "5-shot")) -> list[str]:
    methods = [m for m in (*METHODS[:2], "halfway", *METHODS[2:]) if m in next(iter(results.values()))["1-shot"]]
    lines = []
    for shots in shots_list:
        lines += [f"**{shots}** (accuracy %, 95% CI)", "",
                  "| problem | N-way | chance | " + " | ".join(methods) + " |",
                  "|---|---|---|" + "---|" * len(methods)]
        for name, r in results.items():
            best = max(r[shots][m][0] for m in methods)
            cells = [(f"**{fmt(r[shots][m])}**" if r[shots][m][0] == best else fmt(r[shots][m])) for m in methods]
            lines.append(f"| {name} | {r['ways']} | {100 / r['ways']:.0f} | " + " | ".join(cells) + " |")
        means = [np.mean([r[shots][m][0] for r in results.values()]) for m in methods]
        lines += ["| **mean** | | | " + " | ".join(f"{100 * v:.1f}" for v in means) + " |", ""]
    return lines


def targets(results: dict, method: str = "trained") -> list[str]:
    """Issue 17's targets, checked: above the untrained RNN and time-avg wherever either beats chance;
    the mean within 3 points of the better of DTW and MiniRocket."""
    lines = [f"Targets ({method}):", ""]
    for shots in ("1-shot", "5-shot"):
        beaten = [n for n, r in results.items()
                  if any(r[shots][m][0] > 1 / r["ways"] for m in ("untrained RNN", "time-avg"))
                  and r[shots][method][0] <= max(r[shots]["untrained RNN"][0], r[shots]["time-avg"][0])]
        mean = {m: 100 * np.mean([r[shots][m][0] for r in results.values()]) for m in (*METHODS, method)}
        bar = max(mean["DTW 1-NN"], mean["MiniRocket"]) - 3
        lines.append(f"- {shots}: above the untrained RNN and time-avg on {len(results) - len(beaten)} of "
                     f"{len(results)} problems{' (not on ' + ', '.join(beaten) + ')' if beaten else ''}; mean "
                     f"{mean[method]:.1f} against the bar {bar:.1f} (best of DTW and MiniRocket - 3): "
                     f"{'met' if mean[method] >= bar else 'missed'}")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aeon-data", default=None, help="aeon/datasets/data (default: $FEWSHOT_AEON_DATA or aeon)")
    p.add_argument("--baselines", required=True, help="the .npz of benchmarks/timeseries_aeon_baselines.py")
    p.add_argument("--train-only", action="store_true", help="only train (and cache) the encoders")
    p.add_argument("--only", default="", help="with --train-only: these encoders (lodo-NAME, within-NAME)")
    p.add_argument("--datasets", default=ALL)
    p.add_argument("--within", default="JapaneseVowels", help="problems for the within-problem protocol ('' = none)")
    p.add_argument("--arch", default="ts-rocket", choices=("ts-rocket", "ts-gru"))
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--interpolate", type=float, default=None, metavar="A",
                   help="add a 'halfway' column: the metric A of the way from untrained to trained (WiSE-FT)")
    p.add_argument("--episodes", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="benchmarks/results/work-ts")
    p.add_argument("--out", default="benchmarks/results/TIMESERIES.md")
    a = p.parse_args()

    import torch

    from fewshot.data.timeseries import load_ucr, split_classes
    from fewshot.encoders.timeseries import new_ts_encoder
    from fewshot.train.timeseries import ARCH_STEPS, fitted_ts_encoder, pool_sets

    torch.set_num_threads(a.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t_start, load_start = time.time(), os.getloadavg()
    names = a.datasets.split(",")
    sets = {n: load_ucr(n, a.aeon_data) for n in names}
    work = Path(a.work)
    within_names = list(filter(None, a.within.split(",")))
    splits = {n: split_classes(sets[n]) for n in within_names}
    jobs = [(f"lodo-{n}", [sets[m] for m in names if m != n]) for n in names]
    jobs += [(f"within-{n}", [sets[m] for m in names if m != n] + [sets[n].subset(splits[n][0])])
             for n in within_names]
    if a.train_only:  # train (and cache) some or all encoders, e.g. several processes at once
        for key, train in jobs:
            if not a.only or key in a.only.split(","):
                encoder_for(key, train, work, a, log)
        return
    encoders = {key: encoder_for(key, train, work, a, log) for key, train in jobs}  # training first (cached)
    npz = np.load(a.baselines, allow_pickle=False)
    base = {n: {"dtw": npz[f"{n}/dtw"], "minirocket": npz[f"{n}/minirocket"]} for n in names}
    for n in names:  # the baselines were computed on the same series in the same order
        if [f"{n}/{x}".lower() for x in npz[f"{n}/labels"]] != [lab.lower() for lab in sets[n].labels]:  # aeon lowercases
            raise SystemExit(f"error: {a.baselines} does not hold {n} in load_ucr's order; recompute it")
    torch.manual_seed(a.seed)
    untrained = new_ts_encoder("untrained")
    results, within, train_info = {}, {}, {}
    train_of = dict(jobs)

    def embeddings(key: str, items: list) -> dict[str, np.ndarray]:
        torch.manual_seed(a.seed)
        before = fitted_ts_encoder(pool_sets(train_of[key]), arch=a.arch)  # the trained one's starting point
        embs = {"trained": encoders[key][0].embed(items), "metric untrained": before.embed(items),
                "untrained RNN": untrained.embed(items)}
        if a.interpolate is not None:
            embs["halfway"] = interpolated(encoders[key][0], before, a.interpolate).embed(items)
        return embs

    for n in names:
        info = encoders[f"lodo-{n}"][1]
        ds = sets[n]
        embs = embeddings(f"lodo-{n}", ds.items)
        results[n] = score(ds, np.arange(len(ds)), embs, base[n], a.episodes, a.seed)
        train_info[f"lodo-{n}"] = info
        log(f"{n}: " + json.dumps({k: results[n][k] for k in ("1-shot", "5-shot")}))
    for n in within_names:
        ds, rows = sets[n], np.asarray(splits[n][1])
        info = encoders[f"within-{n}"][1]
        test = ds.subset(rows)
        embs = embeddings(f"within-{n}", test.items)
        within[f"{n} (unseen half)"] = score(test, rows, embs, base[n], a.episodes, a.seed)
        train_info[f"within-{n}"] = info
    seconds = round(time.time() - t_start)
    load_end = os.getloadavg()
    cmd = "python benchmarks/timeseries_fewshot.py " + " ".join(sys.argv[1:])
    md = ["# Time series: few-shot on problems never seen in training", "",
          f"Command: `{cmd}`  ", f"Host: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{a.threads} thread(s); load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at the end; "
          f"{seconds} s in all (training included).  ",
          f"Episodes: {a.episodes} per cell, seed {a.seed}, N-way = class count (at most 10), up to 5 queries per "
          f"class; every method sees the same episodes. trained = {a.arch}, {a.steps or ARCH_STEPS[a.arch]} training steps per encoder; "
          f"metric untrained = {a.arch} before those steps"
          + (f"; halfway = the metric {a.interpolate} of the way from untrained to trained" if a.interpolate is not None
             else "") + ".", "",
          "## Leave one problem out (the encoder never saw the problem)", ""] + table(results) + targets(results) \
        + (targets(results, "halfway") if a.interpolate is not None else [])
    if within:
        md += ["## Within a problem (demo protocol): trained on the other problems + the first half of its "
               "classes, tested on the other half", ""] + table(within)
    md += ["## Training runs", "", "| encoder | series | steps | seconds | load avg (1, 5, 15 min) |",
           "|---|---|---|---|---|"]
    md += [f"| {k} | {v['train_series']} | {v['steps']} | {v['train_seconds']} | {v['load_avg']} |"
           for k, v in train_info.items()]
    Path(a.out).write_text("\n".join(md) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps({"leave_one_out": results, "within": within,
                                                            "training": train_info, "seconds": seconds}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
