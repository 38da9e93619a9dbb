"""FewShotIndex: an index directory bound to one encoder. The main object of the library.

    >>> from fewshot import FewShotIndex
    >>> idx = FewShotIndex.create("my_index")              # the shipped Omniglot encoder
    >>> idx.add("alpha", "alpha.png")                      # a new class from one example
    >>> idx.classify(["query.png"])[0].label
    'alpha'

Vectors, labels and metadata live in :mod:`index` (torch-free); this class adds
the encoder, the stored copies of every example (so ``reindex`` can re-embed
them after an encoder change), probabilities and the open-set threshold.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fewshot.errors import EncoderError, FewShotError, InputError
from fewshot.folder_add import FolderAdd, FolderNoticeWarning, add_folder_report, split_duplicates
from fewshot.input_kinds import input_kind
from fewshot.inputs import InputItem, display_path
from index import (BlobStore, ConflictError, MissingBlobError, RecordNotFoundError, RecordsChangedError,
                   ValidationError, create_store, open_store)
from index.validation import label_for_display, metadata_to_json, normalize_label, prepare_vectors, resolve_label

DEFAULT_TEMPERATURE = 0.1
#: Metadata keys the index writes itself for every example; caller metadata may not set them.
RESERVED_METADATA_KEYS = ("added", "blob", "source")
#: How often a write is redone when the index changed under it (a concurrent reindex, add or remove).
MAX_ATTEMPTS = 5


@dataclass
class Candidate:
    label: str
    score: float


@dataclass
class Prediction:
    """One classified input. ``label`` is None (and ``unknown`` True) when the best score is under the threshold."""

    input: str
    label: str | None
    unknown: bool
    score: float
    probability: float
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Neighbor:
    id: int
    label: str
    score: float
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    input: str
    neighbors: list[Neighbor]

    def to_dict(self) -> dict:
        return {"input": self.input, "neighbors": [n.to_dict() for n in self.neighbors]}


def _local_encoder_name(ref: str) -> bool:
    """Whether a manifest reference names an encoder copy inside the index (``encoder-<fp>.pt``)."""
    return ref.startswith("encoder-") and ref.endswith(".pt") and "/" not in ref and os.sep not in ref


def _bind_encoder(index_dir: Path, entry: str, fingerprint: str) -> str:
    """The manifest's reference for an encoder recorded as ``entry``: a name stays a name, a
    user's encoder file (an absolute path) becomes a copy inside the index.

    The copy, ``INDEX/encoder-<fingerprint>.pt``, is referenced relatively, so the
    index keeps working when the original moves and moves with its directory. It
    is written atomically *before* the manifest points at it, and named by
    content, so a reindex never overwrites the file the committed state uses.
    """
    from index.atomic import atomic_write_bytes

    if not (os.path.isabs(entry) and Path(entry).is_file()):
        return entry
    name = f"encoder-{''.join(c for c in str(fingerprint) if c.isalnum())[:32]}.pt"
    target = index_dir / name
    if not target.is_file():
        try:
            atomic_write_bytes(target, Path(entry).read_bytes())  # encoder files are small
        except OSError as exc:
            raise EncoderError(f"cannot copy encoder file {entry} into {index_dir}: {exc.strerror or exc}") from None
    return name


def _drop_encoder_copies(index_dir: Path, keep: set[str]) -> None:
    """Encoder copies not in ``keep``: after a reindex, those the manifest no longer names;
    after a failed one, the copy made for it (the index is left as it was)."""
    for f in index_dir.glob("encoder-*.pt"):
        if f.name not in keep:
            f.unlink(missing_ok=True)


def _load_index_encoder(path: Path, extra: dict):
    """The encoder an index's manifest names; a missing file gets a message that says how to recover."""
    from fewshot import encoders as reg

    ref = extra["encoder"]
    if _local_encoder_name(ref):
        f = path / ref
        if not f.is_file():
            raise EncoderError(f"index {path}: its copy of the encoder file ({f}) is missing; restore the index "
                               f"directory from a backup, or run `fewshot reindex {path} --encoder NAME|PATH` "
                               "to re-embed its examples with an encoder you have")
        return reg.from_file(f, name=extra.get("encoder_name"))
    if os.path.isabs(ref) and not Path(ref).exists():
        raise EncoderError(f"index {path} was built with the encoder file {ref}, which is gone (moved or deleted); "
                           f"put it back, or run `fewshot reindex {path} --encoder NEW/PATH.pt` with its new path "
                           "(the index then keeps its own copy)")
    # a registered name: the release whose fingerprint the index records, even when a newer one is the default
    return reg.resolve_recorded(ref, weights=extra.get("encoder_weights"), fingerprint=extra.get("fingerprint"))


class FewShotIndex:
    """Few-shot classifier and similarity search over an on-disk vector index."""

    def __init__(self, store, encoder):
        self.store = store
        self.encoder = encoder
        self.blobs = BlobStore(store.path)

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, encoder: Any = None, metric: str = "cosine",
               temperature: float | None = None, weights: str | None = None, exist_ok: bool = False,
               backend: str = "faiss", kind: str | None = None, **store_kwargs) -> "FewShotIndex":
        """Create an index directory bound to ``encoder`` (name, path or Encoder object; None: the
        default encoder for input ``kind``, images when not given)."""
        from fewshot import encoders as reg

        enc = reg.resolve(encoder, weights=weights, kind=kind)
        temp = temperature if temperature is not None else (getattr(enc, "temperature", None) or DEFAULT_TEMPERATURE)
        if not temp > 0:
            raise InputError("temperature must be > 0")
        extra = {**reg.manifest_entries(enc), "encoder_name": enc.name, "fingerprint": enc.fingerprint,
                 "input_kind": enc.input_kind, "temperature": float(temp)}
        store = create_store(path, enc.dim, metric=metric, extra=extra, backend=backend, exist_ok=exist_ok,
                             **store_kwargs)
        try:  # (an existing index, exist_ok=True, keeps its own encoder reference)
            ref = _bind_encoder(Path(store.path), extra["encoder"], enc.fingerprint) \
                if store.extra.get("fingerprint") == enc.fingerprint else store.extra.get("encoder")
            if ref != store.extra.get("encoder"):
                store.set_extra(encoder=ref)  # from now on the index uses its own copy
        except BaseException:
            store.close()
            raise
        return cls(store, enc)

    @classmethod
    def open(cls, path: str | os.PathLike, encoder: Any = None, readonly: bool = False,
             **store_kwargs) -> "FewShotIndex":
        """Open an index; its encoder is loaded from the manifest unless one is given.

        A given encoder must have the fingerprint the index was built with: vectors
        from two different encoders are not comparable.
        """
        from fewshot import encoders as reg

        store = open_store(path, readonly=readonly, **store_kwargs)
        try:
            enc = _encoder_of(path, store.extra, None if encoder is None else reg.resolve(encoder))
        except Exception:
            store.close()
            raise
        return cls(store, enc)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "FewShotIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return Path(self.store.path)

    @property
    def temperature(self) -> float:
        return float(self.store.extra.get("temperature", DEFAULT_TEMPERATURE))

    # --- inputs -------------------------------------------------------------------------
    def _items(self, inputs: Any) -> list[InputItem]:
        """What the user passed, as items of this index's input kind (see :mod:`fewshot.input_kinds`)."""
        items = input_kind(self.encoder.input_kind).read(inputs)
        if not items:
            raise InputError("no inputs given")
        return items

    def embed(self, inputs: Any, progress: bool = False) -> np.ndarray:
        """Embeddings of ``inputs`` with this index's encoder, float32 [n, dim]."""
        return self.encoder.embed(self._items(inputs), progress=progress)

    def _store_copy(self, item: InputItem) -> str:
        """Content-addressed copy of the example inside the index, so it can be re-embedded."""
        if item.path is not None:
            return self.blobs.put_file(item.path)
        return self.blobs.put_bytes(*input_kind(self.encoder.input_kind).stored(item))

    # --- writing ------------------------------------------------------------------------
    def add(self, label: str, inputs: Any, metadata: dict | None = None, progress: bool = False) -> list[int]:
        """Add examples of class ``label`` (one is enough). Returns the new ids."""
        return self.add_many([(label, inputs)], metadata=metadata, progress=progress)

    def add_many(self, pairs: Sequence[tuple[str, Any]], metadata: dict | None = None,
                 progress: bool = False) -> list[int]:
        """Add several (label, inputs) pairs in one atomic write: all or nothing.

        The vectors are committed only if the index is still on the encoder
        that embedded them (checked under the writer lock): after a concurrent
        reindex the examples are re-embedded with the new encoder and the
        write is retried, so a re-encoded index never holds old vectors.
        """
        items, labels, stored = [], [], None
        for label, inputs in pairs:
            stored = self.store.labels() if stored is None else stored
            label = self.stored_label(label, must_exist=False, stored=stored)  # checked before any file is copied
            its = self._items(inputs)
            items += its
            labels += [label] * len(its)
        _check_metadata(metadata)
        vecs = self._embed_for_store(items, progress)
        now = time.time()
        metas = self._store_copies(items, metadata, now)
        for _ in range(MAX_ATTEMPTS):
            try:
                ids = self.store.add(vecs, labels, metas, expect={"fingerprint": self.encoder.fingerprint})
                return [int(i) for i in ids]
            except MissingBlobError:  # a concurrent remove deleted a copy this add shares
                metas = self._store_copies(items, metadata, now)
            except ConflictError:  # a concurrent reindex switched the encoder
                self._reload_encoder(self.store.extra)
                vecs = self._embed_for_store(items, progress)
            except ValidationError as exc:
                raise InputError(str(exc)) from None
        raise FewShotError(f"index {self.path} kept changing while adding (a reindex or remove in a loop?); "
                           "nothing was added: try again")

    def _embed_for_store(self, items: list[InputItem], progress: bool) -> np.ndarray:
        """Embeddings the store will accept; NaN/inf/zero or wrong-width output fails before any write.

        Vectors of the wrong width because another process reindexed to an
        encoder of another dimension are made again with that encoder.
        """
        for _ in range(MAX_ATTEMPTS):
            vecs = self.encoder.embed(items, progress=progress)
            try:
                prepare_vectors(vecs, self.store.dim, self.store.metric)
                return vecs
            except ValidationError as exc:
                extra = self.store.extra
                if extra.get("fingerprint") in (None, self.encoder.fingerprint):
                    raise InputError(f"encoder {self.encoder.name} produced unusable vectors: {exc}") from None
                self._reload_encoder(extra)
        raise FewShotError(f"index {self.path} kept changing encoder while adding; nothing was added: try again")

    def _store_copies(self, items: list[InputItem], metadata: dict | None, now: float) -> list[dict]:
        """Copy each example into the index; the metadata of each record (index keys + caller's)."""
        metas = []
        for it in items:
            key = self._store_copy(it)
            src = display_path(it.path.resolve()) if it.path is not None else it.name
            metas.append({**(metadata or {}), "source": src, "blob": key, "added": now})
        return metas

    def _reload_encoder(self, extra: dict) -> Any:
        """Switch to the encoder the index now records (another process reindexed it)."""
        self.encoder = _encoder_of(self.path, extra, None)
        return self.encoder

    def add_folder(self, root: str | os.PathLike, progress: bool = False,
                   skip_duplicates: bool = False) -> dict[str, int]:
        """Add every sub-folder of ``root`` as a class named after it; returns examples per label.

        Skipped empty folders, merged nested folders, followed links and duplicates
        are reported as :class:`FolderNoticeWarning` (see :meth:`add_folder_report`).
        """
        import warnings

        report = self.add_folder_report(root, progress=progress, skip_duplicates=skip_duplicates)
        for notice in report.notices:
            warnings.warn(notice, FolderNoticeWarning, stacklevel=2)
        return report.labels

    def add_folder_report(self, root: str | os.PathLike, progress: bool = False,
                          skip_duplicates: bool = False) -> FolderAdd:
        """:meth:`add_folder`, returning the new ids and the notices instead of warning."""
        return add_folder_report(self, root, progress=progress, skip_duplicates=skip_duplicates)

    def split_duplicates(self, inputs: Any) -> tuple[list[InputItem], list[InputItem]]:
        """(new, duplicates) among ``inputs``: files whose bytes equal a stored example's or an earlier input's."""
        return split_duplicates(self, inputs)

    def remove(self, label: str) -> int:
        """Remove a class and all its examples; returns how many examples went.

        Their stored copies are deleted too, unless another record shares one:
        removing a class for privacy reasons removes its images.
        """
        n = self.store.remove_label(self.stored_label(label))
        if n == 0:
            raise InputError(f"no class named '{label_for_display(label)}' in {self.path}")
        return n

    def stored_label(self, label: Any, must_exist: bool = True, stored: dict | None = None) -> str:
        """The label as this index stores it: NFC, or the stored class it equals after NFC.

        Validated first (InputError, never a UnicodeEncodeError later). With
        ``must_exist`` a label naming no class is an error, so a typo in
        ``remove`` or a search filter is not silently an empty answer.
        """
        try:
            found = resolve_label(label, self.store.labels() if stored is None else stored)
            if found is None and not must_exist:
                return normalize_label(label)
        except ValidationError as exc:
            raise InputError(str(exc)) from None
        if found is None:
            raise InputError(f"no class named '{label_for_display(label)}' in {self.path}; "
                             "see `fewshot info` for the labels it holds")
        return found

    # --- reading ------------------------------------------------------------------------
    def labels(self) -> dict[str, int]:
        return self.store.labels()

    def classify(self, inputs: Any, top_k: int = 5, threshold: float | str | None = None,
                 progress: bool = False) -> list[Prediction]:
        """Nearest-prototype classification of each input.

        Per input: best label, its score, a probability (softmax over all class
        scores with the index's temperature, the calibrated one once
        :meth:`calibrate` ran), the top-k candidates, and label ``None``
        (``unknown=True``) when the best score is below ``threshold`` (an
        unknown class). ``threshold="auto"``: the calibrated threshold.
        """
        if top_k < 1:
            raise InputError("top_k must be >= 1")
        if isinstance(threshold, str):
            threshold = self.calibrated_threshold(threshold)
        items = self._items(inputs)
        vecs = self.encoder.embed(items, progress=progress)
        # One snapshot of every class: the probability is a softmax over all of them.
        with self.store.snapshot() as snap:
            vecs = self._embedded_for(snap.extra, items, vecs, progress)
            temperature = float(snap.extra.get("temperature", DEFAULT_TEMPERATURE))
            m = snap.top_classes(vecs, top_k, temperature=temperature)
        if m.n_classes == 0:
            raise FewShotError(f"index {self.path} has no classes yet; add examples first")
        out = []
        for it, labels, scores, probs in zip(items, m.labels, m.scores.tolist(), m.probabilities.tolist()):
            label = labels[0] if threshold is None or scores[0] >= threshold else None
            out.append(Prediction(it.name, label, label is None, scores[0], probs[0],
                                  [Candidate(lab, sc) for lab, sc in zip(labels, scores)]))
        return out

    def search(self, inputs: Any, k: int = 5, labels: Sequence[str] | None = None,
               progress: bool = False, **search_params: Any) -> list[SearchResult]:
        """The k nearest stored examples of each input (optionally within some labels).

        ``search_params``: ``ef_search`` (HNSW) / ``nprobe`` (IVF) for this call.
        """
        if k < 1:
            raise InputError("k must be >= 1")
        if labels is not None and not isinstance(labels, str):  # a typo is an error, not an empty answer
            labels = [self.stored_label(lab) for lab in labels]
        items = self._items(inputs)
        vecs = self.encoder.embed(items, progress=progress)
        with self.store.snapshot() as snap:
            vecs = self._embedded_for(snap.extra, items, vecs, progress)
            hits = snap.search(vecs, k, labels=labels, **search_params)
        return [SearchResult(it.name, [Neighbor(int(h.id), h.label, float(h.score), h.metadata.get("source", ""))
                                       for h in hs]) for it, hs in zip(items, hits)]

    def _embedded_for(self, extra: dict, items: list[InputItem], vecs: np.ndarray, progress: bool) -> np.ndarray:
        """``vecs`` if the encoder that embedded them is the one of the state ``extra`` belongs to.

        Otherwise another process reindexed since this index was opened (or
        since ``vecs`` were embedded): load the encoder that state records and
        embed again, so queries and stored vectors always come from one encoder.
        """
        if extra.get("fingerprint") in (None, self.encoder.fingerprint):
            return vecs
        return self._reload_encoder(extra).embed(items, progress=progress)

    def info(self) -> dict:
        extra = self.store.extra
        labels = self.store.labels()
        return {"path": str(self.path), "encoder": extra.get("encoder_name", extra.get("encoder")),
                "encoder_ref": extra.get("encoder"), "fingerprint": extra.get("fingerprint"),
                "input_kind": extra.get("input_kind", "image"), "dim": self.store.dim,
                "metric": self.store.metric, "temperature": self.temperature,
                # from the same snapshot as the labels: a concurrent add cannot make them disagree
                "count": sum(labels.values()), "n_labels": len(labels), "labels": labels,
                "backend": extra.get("backend", getattr(self.store, "backend", "faiss")),
                "index": self.store.index_info() if hasattr(self.store, "index_info") else {},
                **_calibration_info(extra, labels), **self._version_info(extra)}

    # --- open set -------------------------------------------------------------------------
    def calibrate(self, target_accept: float = 0.95, unknown_data: Any = None, progress: bool = False) -> dict:
        """Fit and store the open-set threshold and the probability temperature (see :mod:`fewshot.calibration`).

        Known-query scores come from the stored examples (leave-one-example-out),
        unknown-query scores from leave-one-class-out and from ``unknown_data``
        (inputs of classes the index should reject), combined with the shipped
        encoder's own calibration where the index alone cannot tell (one example
        per class). Stored in one commit with the new temperature; returns the
        calibration record (``sources`` says where each number came from).
        """
        from fewshot.calibration import CalibrationError, calibrate_vectors, load_prior

        unknown = self.embed(unknown_data, progress=progress) if unknown_data is not None else None
        extra = self.store.extra
        records = list(self.store.records())
        vecs = np.stack([r.vector for r in records]) if records else np.zeros((0, self.store.dim), np.float32)
        try:
            cal = calibrate_vectors(vecs, [r.label for r in records], self.store.metric, target_accept,
                                    load_prior(extra.get("fingerprint")), unknown,
                                    float(extra.get("temperature", DEFAULT_TEMPERATURE)), extra.get("fingerprint"))
        except CalibrationError as exc:
            raise InputError(f"index {self.path}: {exc}") from None
        record = cal.to_dict()
        self.store.set_extra(calibration=record, temperature=cal.temperature)
        return {"path": str(self.path), **record}

    def calibrated_threshold(self, spec: str = "auto") -> float:
        """The stored calibrated threshold (``spec`` must be ``"auto"``); a clear error when there is none."""
        import warnings

        if spec != "auto":
            raise InputError(f"threshold must be a number or 'auto', not {spec!r}")
        extra = self.store.extra
        cal = extra.get("calibration")
        if not cal:
            raise InputError(f"index {self.path} is not calibrated; run `fewshot calibrate {self.path}` "
                             "(or FewShotIndex.calibrate()) first, or give a numeric threshold")
        state = _calibration_info(extra, self.store.labels())
        if cal.get("fingerprint") != extra.get("fingerprint"):
            raise InputError(f"the calibration of {self.path} was made for another encoder; run "
                             f"`fewshot calibrate {self.path}` again")
        if state["calibration_stale"]:
            warnings.warn(f"the calibration of {self.path} is stale ({state['calibration_stale_reason']}); "
                          f"run `fewshot calibrate {self.path}` to refit it", stacklevel=2)
        return float(cal["threshold"])

    def _version_info(self, extra: dict) -> dict:
        """Which release of its named encoder the index is on, and the upgrade when it is not the newest."""
        from fewshot import encoders as reg

        status = reg.version_status(extra.get("encoder"), extra.get("fingerprint"))
        name = reg.split_version(extra.get("encoder") or "")[0]
        status["upgrade"] = f"fewshot reindex {self.path} --encoder {name}" \
            if status["encoder_is_newest"] is False else None
        status["successor_upgrade"] = f"fewshot reindex {self.path} --encoder {status['encoder_successor']}" \
            if status["encoder_successor"] and status["encoder_version"] is not None else None
        return status

    # --- adapting the encoder ------------------------------------------------------------
    def finetune(self, data: Any = "index", out: str | os.PathLike | None = None, **kwargs: Any):
        """Fine-tune this index's encoder (the ensemble default: its Conv-4 member; see
        :func:`fewshot.finetune.finetune`), then reindex.

        ``data="index"`` trains on the examples this index stores. The new encoder is
        saved to ``out`` and every stored example is re-embedded with it in one atomic
        switch; if anything fails, the index stays on the old encoder.
        """
        from fewshot.train.recipes import finetune, index_finetune_base

        res = finetune(index_finetune_base(self.encoder), data, index_dir=self.path, out=out, **kwargs)
        self.reindex(res.encoder)
        return res

    # --- re-embedding ---------------------------------------------------------------------
    def reindex(self, encoder: Any = None, progress: bool = False, batch_size: int = 256) -> dict:
        """Re-embed every stored example (with ``encoder`` if given) in one atomic switch.

        Examples are read from the index's own copies (each checked against its
        SHA-256 first), so nothing depends on the original files. Until the final
        commit the index stays on the old encoder; a failure or a kill midway
        leaves it intact. Examples added by other processes meanwhile are
        embedded under the lock in the same commit.
        """
        from fewshot import encoders as reg

        enc = self.encoder if encoder is None else reg.resolve(encoder)
        try:
            self.blobs.refuse_linked_root()
        except ValidationError as exc:
            raise FewShotError(f"{exc}; the index is unchanged") from None
        had = {f.name for f in self.path.glob("encoder-*.pt")}
        extra = self._encoder_extra(enc)
        try:
            n = self._rewrite_all(enc, extra, progress, batch_size)
        except BaseException:
            _drop_encoder_copies(self.path, keep=had)
            raise
        _drop_encoder_copies(self.path, keep={extra["encoder"]})
        self.encoder = enc
        return {"reembedded": n, "encoder": enc.name, "fingerprint": enc.fingerprint}

    def _rewrite_all(self, enc: Any, extra: dict, progress: bool, batch_size: int) -> int:
        """Embed every record's copy with ``enc`` and commit them with ``extra``; the number rewritten.

        A record removed while its copy was being read makes the listing start
        again; the vectors already computed are kept (a stored copy never changes).
        """
        done: dict[int, np.ndarray] = {}

        def fill(added: list) -> np.ndarray:  # under the lock: records added since the listing
            return self._embed_copies(enc, added, False, batch_size)

        for _ in range(MAX_ATTEMPTS):
            records = list(self.store.records())
            todo = [r for r in records if r.id not in done]
            ids = [r.id for r in records]
            try:
                if todo:
                    done.update(zip([r.id for r in todo], self._embed_copies(enc, todo, progress, batch_size)))
            except RecordsChangedError:
                continue
            vecs = np.stack([done[i] for i in ids]) if ids else np.zeros((0, enc.dim), np.float32)
            n = self.store.rewrite_vectors(ids, vecs, dim=enc.dim, extra=extra, fill=fill)
            return len(ids) if n is None else int(n)
        raise FewShotError(f"records of {self.path} kept changing during the reindex; the index is unchanged: "
                           "try again")

    def _encoder_extra(self, enc: Any) -> dict:
        """The extra fields that bind the index to ``enc`` (written in the reindex's commit).

        A user's encoder file is copied into the index first; another encoder's
        scores get that encoder's own temperature, never the old one's.
        """
        from fewshot import encoders as reg

        same = enc.fingerprint == self.store.extra.get("fingerprint")
        extra = {**reg.manifest_entries(enc, previous=self.store.extra), "encoder_name": enc.name,
                 "fingerprint": enc.fingerprint, "input_kind": enc.input_kind}
        extra["encoder"] = _bind_encoder(self.path, extra["encoder"], enc.fingerprint)
        if not same:
            extra["temperature"] = float(getattr(enc, "temperature", None) or DEFAULT_TEMPERATURE)
        return extra

    def _embed_copies(self, enc: Any, records: list, progress: bool, batch_size: int) -> np.ndarray:
        """Embed the stored copies of ``records`` after checking each one is the file the index wrote.

        A copy swapped for other content, or replaced by a link (to a system
        file, say), would otherwise be embedded under the record's label.
        """
        items = []
        for r in records:
            key = r.metadata.get("blob")
            try:
                if not key:
                    raise ValidationError("it has no stored copy")
                path = self.blobs.verified_path(key)
            except ValidationError as exc:
                if self._gone(r.id):  # removed (copy and all) since the listing: list again
                    raise RecordsChangedError(f"record {r.id} was removed during the reindex") from None
                raise FewShotError(f"cannot re-embed record {r.id} (label {r.label!r}): {exc}; the index is "
                                   "unchanged: run `fewshot check`, then re-add or remove that example") from None
            items.append(InputItem(path, f"stored copy {key} of record {r.id} (label {r.label!r})"))
        return enc.embed(items, progress=progress, batch_size=batch_size)

    def _gone(self, record_id: int) -> bool:
        """True if the record no longer exists (a concurrent remove)."""
        try:
            self.store.get([record_id])
            return False
        except RecordNotFoundError:
            return True


def _encoder_of(path: Any, extra: dict, given: Any) -> Any:
    """The encoder ``extra`` records (or ``given``), refused unless its fingerprint is the recorded one."""
    try:
        enc = given if given is not None else _load_index_encoder(Path(path), extra)
    except KeyError:
        raise EncoderError(f"index {path} records no encoder; it was not made by fewshot") from None
    if enc.fingerprint != extra.get("fingerprint"):
        raise EncoderError(
            f"index {path} was built with encoder {extra.get('encoder_name', extra.get('encoder'))!r} "
            f"(fingerprint {extra.get('fingerprint')}), but encoder {enc.name!r} has fingerprint "
            f"{enc.fingerprint}; use the same encoder, or run `fewshot reindex {path} --encoder ...`")
    return enc


def _calibration_info(extra: dict, labels: dict[str, int]) -> dict:
    """The stored calibration (or None) and whether it is stale (classes/examples/encoder changed since)."""
    from fewshot.calibration import staleness

    cal = extra.get("calibration")
    st = staleness(cal, labels, extra.get("fingerprint"))
    return {"calibration": cal or None, "calibration_stale": st["stale"], "calibration_stale_reason": st["reason"]}


def _check_metadata(metadata: Any) -> None:
    """Caller metadata must be a JSON-able dict that does not set the index's own keys."""
    try:
        metadata_to_json(metadata or {})
    except ValidationError as exc:
        raise InputError(str(exc)) from None
    reserved = sorted(set(metadata or {}) & set(RESERVED_METADATA_KEYS))
    if reserved:
        raise InputError(f"metadata key(s) {', '.join(map(repr, reserved))} are reserved: the index records "
                         "each example's stored copy, original path and time under them; use other names")
