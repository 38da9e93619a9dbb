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
