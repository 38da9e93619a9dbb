"""Training: one episodic loop (:mod:`.loop`) for every input kind, batchers per kind (:mod:`.batches`),
class symmetries (:mod:`.classes`), teacher targets (:mod:`.distill`), data preparation (:mod:`.prepare`),
encoder export (:mod:`.export`), and the recipes :func:`train` and :func:`finetune` (:mod:`.recipes`).

Imported lazily by the CLI, so ``fewshot --help`` does not load torch.
"""
