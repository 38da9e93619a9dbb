"""Out-of-scope detection: how well the classifier's score tells "none of these" apart.

In each episode the in-scope queries and every out-of-scope query are scored
against the episode's prototypes with the prototype maths ``classify`` uses; the
score is the best class's (what ``classify --threshold`` compares). The AUROC of
in-scope (positive) against out-of-scope is averaged over episodes, with its
95% CI. At the threshold that accepts 95% of in-scope queries (a
``--threshold`` a user would pick from the in-scope scores of their own index)
it also reports how many out-of-scope queries are falsely accepted and the
accuracy on in-scope queries that clear it.
"""
from __future__ import annotations

import numpy as np

from fewshot.episodes import EpisodeSampler
from fewshot.metrics import mean_ci95
from fewshot.prototypes import class_prototypes, prototype_scores

#: The share of in-scope queries the reported threshold accepts.
IN_SCOPE_KEEP = 0.95


def oos_auroc(emb: np.ndarray, oos_emb: np.ndarray, sampler: EpisodeSampler, episodes: int,
              metric: str = "cosine") -> dict:
    """AUROC (in-scope vs out-of-scope by best score), its CI, and the false-accept trade-off."""
    from sklearn.metrics import roc_auc_score

    aucs, false_accept, acc_kept = (np.empty(episodes) for _ in range(3))
    for i in range(episodes):
        ep = sampler.episode(i)
        shots = ep.support.shape[1]
        _, protos = class_prototypes(emb[ep.support.ravel()], np.repeat(np.arange(ep.ways), shots), metric)
        s_in = prototype_scores(emb[ep.query.ravel()], protos, metric)
        best_in, best_out = s_in.max(1), prototype_scores(oos_emb, protos, metric).max(1)
        truth = np.concatenate([np.ones(len(best_in)), np.zeros(len(best_out))])
        aucs[i] = roc_auc_score(truth, np.concatenate([best_in, best_out]))
        thr = np.quantile(best_in, 1 - IN_SCOPE_KEEP)
        false_accept[i] = (best_out >= thr).mean()
        kept = best_in >= thr
        correct = s_in.argmax(1) == np.repeat(np.arange(ep.ways), ep.query.shape[1])
        acc_kept[i] = correct[kept].mean() if kept.any() else np.nan
    mean, ci = mean_ci95(aucs)
    return {"auroc": mean, "auroc_ci95": ci, "n_oos": int(len(oos_emb)), "in_scope_kept": IN_SCOPE_KEEP,
            "false_accept_rate": float(false_accept.mean()), "accuracy_kept": float(np.nanmean(acc_kept))}


# --- open-set episodes: some queries come from classes outside the support set ------------------------
def episode_scores(emb: np.ndarray, sampler: EpisodeSampler, index: int, known_ways: int, metric: str = "cosine"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(support vectors, support positions, known query score rows, their true positions, unknown query rows)
    of episode ``index``: its first ``known_ways`` classes are taught, the rest play untaught classes."""
    ep = sampler.episode(index)
    sup = ep.support[:known_ways]
    shots = sup.shape[1]
    pos = np.repeat(np.arange(known_ways), shots)
    _, protos = class_prototypes(emb[sup.ravel()], pos, metric)
    rows_known = prototype_scores(emb[ep.query[:known_ways].ravel()], protos, metric)
    rows_unknown = prototype_scores(emb[ep.query[known_ways:].ravel()], protos, metric)
    return emb[sup.ravel()], pos, rows_known, np.repeat(np.arange(known_ways), ep.query.shape[1]), rows_unknown


def _fpr_at_tpr(truth: np.ndarray, score: np.ndarray, tpr_level: float = 0.95) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(truth, score)
    return float(fpr[np.searchsorted(tpr, tpr_level, side="left")])


def open_set_episodes(emb: np.ndarray, sampler: EpisodeSampler, known_ways: int, episodes: int,
                      target_accept: float = 0.95, prior=None, temperature: float = 0.1, metric: str = "cosine",
                      progress: bool = False) -> dict:
    """Open-set metrics over ``episodes`` episodes, each calibrated on its own support set.

    Per episode the support of the ``known_ways`` taught classes is calibrated with
    :func:`fewshot.calibration.calibrate_vectors` (what ``fewshot calibrate`` does on an
    index holding exactly those examples), then the known and unknown queries are scored.
    Reported: AUROC of known-vs-unknown by the best score and FPR at 95% TPR (scikit-learn),
    closed-set accuracy, the share of known queries the calibrated threshold accepts, the
    share of unknown ones it falsely accepts, open-set accuracy at that threshold (a known
    query right and accepted, an unknown one rejected), and the ECE of the top probability
    on known queries with the encoder's temperature (before) and the calibrated one (after).
    """
    from sklearn.metrics import roc_auc_score
    from tqdm import tqdm

    from fewshot.calibration import calibrate_vectors, expected_calibration_error, reliability
    from fewshot.prototypes import softmax

    per = {k: np.empty(episodes) for k in ("auroc", "fpr95", "closed", "accept", "false_accept", "open",
                                           "est_false_accept", "threshold", "temperature")}
    kb, ub, conf0, conf1, correct = [], [], [], [], []
    sources = None
    for i in tqdm(range(episodes), desc="open-set episodes", disable=not progress, leave=False, delay=0.5):
        sup, pos, rk, tk, ru = episode_scores(emb, sampler, i, known_ways, metric)
        cal = calibrate_vectors(sup, [str(p) for p in pos], metric, target_accept, prior,
                                temperature_before=temperature, seed=i)
        sources = sources or cal.sources
        best_k, best_u = rk.max(1), ru.max(1)
        ok = rk.argmax(1) == tk
        truth = np.r_[np.ones(len(best_k)), np.zeros(len(best_u))]
        both = np.r_[best_k, best_u]
        acc_k, acc_u = best_k >= cal.threshold, best_u >= cal.threshold
        per["auroc"][i] = roc_auc_score(truth, both)
        per["fpr95"][i] = _fpr_at_tpr(truth, both)
        per["closed"][i] = ok.mean()
        per["accept"][i] = acc_k.mean()
        per["false_accept"][i] = acc_u.mean()
        per["open"][i] = (np.sum(ok & acc_k) + np.sum(~acc_u)) / len(both)
        per["est_false_accept"][i] = np.nan if cal.false_accept_rate is None else cal.false_accept_rate
        per["threshold"][i], per["temperature"][i] = cal.threshold, cal.temperature
        kb.append(best_k), ub.append(best_u), correct.append(ok)
        conf0.append(softmax(rk, temperature).max(1)), conf1.append(softmax(rk, cal.temperature).max(1))
    conf0, conf1, correct = np.concatenate(conf0), np.concatenate(conf1), np.concatenate(correct)
    out = {}
    for key, name in (("auroc", "auroc"), ("fpr95", "fpr_at_95_tpr"), ("closed", "closed_set_accuracy"),
                      ("accept", "known_accept_rate"), ("false_accept", "unknown_accept_rate"),
                      ("open", "open_set_accuracy")):
        m, ci = mean_ci95(per[key])
        out[name], out[name + "_ci95"] = m, ci
    out.update({"target_accept": target_accept,
                "estimated_false_accept_rate": float(np.nanmean(per["est_false_accept"]))
                if np.isfinite(per["est_false_accept"]).any() else None,
                "threshold_mean": float(per["threshold"].mean()), "threshold_std": float(per["threshold"].std()),
                "temperature_before": temperature, "temperature_after_mean": float(per["temperature"].mean()),
                "ece_before": expected_calibration_error(conf0, correct),
                "ece_after": expected_calibration_error(conf1, correct),
                "calibration_sources": sources, "known_queries": int(len(correct)),
                "unknown_queries": int(sum(len(u) for u in ub))})
    plot = {"known_scores": np.concatenate(kb), "unknown_scores": np.concatenate(ub),
            "reliability_before": reliability(conf0, correct), "reliability_after": reliability(conf1, correct)}
    return {"metrics": out, "plot": plot}


def prior_samples(emb: np.ndarray, sampler: EpisodeSampler, known_ways: int, episodes: int,
                  metric: str = "cosine") -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(known best scores, unknown best scores, (known rows, true positions)) pooled over episodes:
    the score distributions an encoder prior (:class:`fewshot.calibration.EncoderPrior`) stores."""
    kb, ub, rows, true = [], [], [], []
    for i in range(episodes):
        _, _, rk, tk, ru = episode_scores(emb, sampler, i, known_ways, metric)
        kb.append(rk.max(1)), ub.append(ru.max(1)), rows.append(rk), true.append(tk)
    return np.concatenate(kb), np.concatenate(ub), (np.concatenate(rows), np.concatenate(true))
