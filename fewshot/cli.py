"""The ``fewshot`` command line.

Contract (scripts rely on it): results on stdout, progress and errors on stderr;
an error is one line starting with ``error:``, exit code 1 (2 for usage errors),
never a traceback; every command takes ``--json``. Torch and FAISS are imported
inside the commands, so ``fewshot --help`` is instant.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click

from fewshot.commands import progress_enabled as _progress
from fewshot.cli_text import (ADD_FILE_HELP, QUERY_FILE_HELP, add_pairs, check_add_usage, from_file_option,
                              label_column_option, query_inputs, require_text_index, text_column_option, text_option,
                              wants_text)

EXIT_ERROR, EXIT_USAGE = 1, 2


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split()) or "unknown error"


class FewshotGroup(click.Group):
    """Turns every failure into one ``error:`` line and the contract's exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            with warnings.catch_warnings():  # restores showwarning for library callers afterwards
                warnings.showwarning = _warning_line
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            click.echo(f"error: {_one_line(exc.format_message())} (see --help)", err=True)
            code = EXIT_USAGE
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            code = EXIT_ERROR
        except (click.Abort, KeyboardInterrupt):
            click.echo("error: interrupted", err=True)
            code = 130
        except Exception as exc:  # noqa: BLE001 - the contract: never a traceback
            if os.environ.get("FEWSHOT_DEBUG"):
                raise
            click.echo(f"error: {_describe(exc)}", err=True)
            code = EXIT_ERROR
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning from numpy, PIL or the store: one ``warning:`` line, never Python's raw source excerpt."""
    click.echo(f"warning: {_one_line(str(message))}", err=True)


def _describe(exc: BaseException) -> str:
    """Known errors speak for themselves; anything else is named with its type."""
    from fewshot.errors import FewShotError

    known = (FewShotError, ValueError, FileNotFoundError, PermissionError)
    try:
        from index import StoreError

        known = known + (StoreError,)
    except Exception:  # noqa: BLE001
        pass
    if isinstance(exc, known):  # some say what to do in the command line's spelling
        return _one_line(getattr(exc, "cli_message", None) or str(exc))
    if isinstance(exc, OSError):
        return _one_line(f"{exc.strerror or exc}: {exc.filename or ''}")
    if isinstance(exc, MemoryError):
        return "out of memory"
    return _one_line(f"unexpected {type(exc).__name__}: {exc} (set FEWSHOT_DEBUG=1 for a traceback)")


def _emit(obj, as_json: bool, text: str | None = None) -> None:
    """Print ``obj`` as strict JSON (NaN/inf become null: any parser reads it), or ``text``."""
    if as_json:
        from fewshot.metrics import json_safe

        click.echo(json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False))
    elif text is not None:
        click.echo(text)


def _shown(text) -> str:
    """A label, input or source name for the human (tab-separated) output: one field, one line."""
    from index.validation import escape_for_display

    return escape_for_display(str(text))


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
encoder_option = click.option("--encoder", "encoder", default=None, metavar="NAME|PATH",
                              help="Encoder name (see `fewshot encoders`) or encoder file.")
lock_timeout_option = click.option(
    "--lock-timeout", "lock_timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
    envvar="FEWSHOT_LOCK_TIMEOUT", metavar="SECONDS",
    help="How long to wait for another process writing to the index (env FEWSHOT_LOCK_TIMEOUT).")
weights_option = click.option("--weights", default=None, metavar="imagenet|none|PATH",
                              help="Weights for a named torchvision encoder (default: imagenet).")
INDEX_TYPES = ["auto", "flat", "hnsw", "ivf", "ivfpq"]
ef_search_option = click.option("--ef-search", type=click.IntRange(min=1), default=None,
                                help="HNSW search effort (default 96: recall@10 >= 0.95 at 1M vectors).")
nprobe_option = click.option("--nprobe", type=click.IntRange(min=1), default=None,
                             help="IVF lists probed per query (default nlist/32).")


def _index_params(ef_search, nprobe) -> dict:
    return {k: v for k, v in (("ef_search", ef_search), ("nprobe", nprobe)) if v is not None}


def _open(index_dir: str, readonly: bool = False, lock_timeout: float = 10.0):
    from fewshot.fewshot_index import FewShotIndex

    if readonly:  # readers take no lock
        return FewShotIndex.open(index_dir, readonly=True)
    return FewShotIndex.open(index_dir, readonly=False, lock_timeout=lock_timeout)


def _open_info(index_dir: str):
    """The index without its encoder: ``info`` works when the encoder cannot be loaded."""
    from fewshot.fewshot_index import FewShotIndex
    from index import open_store

    return FewShotIndex(open_store(index_dir, readonly=True), encoder=None)


def _query_inputs(idx, index_dir: str, files, texts, from_file) -> list:
    """classify/search inputs: FILE... as before; --text / --from-file only on a text index."""
    if wants_text(texts, from_file):
        require_text_index(idx, index_dir)
    return query_inputs(files, texts, from_file, idx.encoder.input_kind)


@click.group(cls=FewshotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fewshot", prog_name="fewshot")
def cli() -> None:
    """fewshot: teach a new class from one example, then classify and search by similarity.

    \b
    Quick start:
      fewshot init my_index
      fewshot add my_index --label alpha alpha.png
      fewshot classify my_index query.png --json
    """


@cli.command("encoders")
@json_option
def encoders_cmd(as_json: bool) -> None:
    """List the named encoders."""
    from fewshot import encoders

    specs = [s.to_dict() for s in encoders.available()]
    text = "\n".join(f"{s['name']:<22} {s['input_kind']:<9} dim {s['dim']:<5} {s['weights']}" for s in specs)
    _emit(specs, as_json, text)


@cli.command("init")
@click.argument("index_dir", type=click.Path(file_okay=False))
@encoder_option
@weights_option
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default="cosine", show_default=True)
@click.option("--temperature", type=float, default=None, help="Softmax temperature for probabilities.")
@click.option("--kind", type=click.Choice(["image", "sequence", "text"]), default="image", show_default=True,
              help="Input kind when --encoder is not given: the default image, stroke or text (minilm) encoder.")
@click.option("--index-type", type=click.Choice(INDEX_TYPES), default="auto", show_default=True,
              help="auto: exact until 100k vectors, then HNSW (see docs/SCALING.md).")
@ef_search_option
@nprobe_option
@click.option("--backend", type=click.Choice(["faiss", "milvus"]), default="faiss", show_default=True,
              help="faiss: everything in INDEX_DIR. milvus: vectors in Milvus at --uri.")
@click.option("--uri", default=None, metavar="URI",
              help="Milvus: http://host:19530 (server/cluster) or a Milvus Lite file *.db "
                   "(default INDEX_DIR/milvus.db).")
@click.option("--token", default=None, envvar="FEWSHOT_MILVUS_TOKEN", show_envvar=True,
              help="Milvus token (user:password or API key); never written to disk.")
@json_option
def init_cmd(index_dir, encoder, weights, metric, temperature, kind, index_type, ef_search, nprobe, backend, uri,
             token, as_json) -> None:
    """Create an index in INDEX_DIR bound to an encoder."""
    from fewshot.fewshot_index import FewShotIndex
    from index import is_index_dir

    if is_index_dir(index_dir):  # the library's message would say exist_ok=True; say the CLI's way
        raise click.ClickException(
            f"{index_dir} already holds a fewshot index; use it as it is (`fewshot add {index_dir} --label ...`, "
            f"`fewshot info {index_dir}`), switch its encoder with `fewshot reindex {index_dir} --encoder ...`, "
            "or delete the directory to start over")
    if backend == "faiss" and uri is not None:
        raise click.UsageError("--uri is only for --backend milvus")
    store_kw = {"index_type": index_type, "index_params": _index_params(ef_search, nprobe)}
    if backend == "milvus":
        store_kw.update(uri=uri, token=token)
    with FewShotIndex.create(index_dir, encoder=encoder, metric=metric, temperature=temperature,
                             weights=weights, backend=backend, kind=kind, **store_kw) as idx:
        info = idx.info()
    _emit(info, as_json, f"created {index_dir} (encoder {info['encoder']}, dim {info['dim']}, {metric}, "
                         f"{backend}, index {index_type})")


@cli.command("add")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--label", default=None, help="Class label for FILE... (one example is enough).")
@click.option("--from-folder", "from_folder", type=click.Path(), default=None,
              help="Add each sub-folder of DIR as a class named after it (nested folders join it).")
@click.option("--skip-duplicates", is_flag=True,
              help="Leave out files whose bytes equal a stored example's (or an earlier file's).")
@text_option
@from_file_option(ADD_FILE_HELP)
@text_column_option
@label_column_option
@lock_timeout_option
@json_option
def add_cmd(index_dir, files, label, from_folder, skip_duplicates, texts, from_file, text_column, label_column,
            lock_timeout, as_json) -> None:
    """Add examples: FILE... (or --text) under --label, a folder of class folders, or a labelled --from-file."""
    if wants_text(texts, from_file):
        check_add_usage(label, files, from_folder, texts, from_file, skip_duplicates)
        return _add_text(index_dir, label, texts, from_file, text_column, label_column, lock_timeout, as_json)
    if (from_folder is None) == (label is None):
        raise click.UsageError("give either --label LABEL FILE... or --from-folder DIR")
    if label is not None and not files:
        raise click.UsageError("--label needs at least one FILE")
    if from_folder is not None and files:
        raise click.UsageError("--from-folder takes no FILE arguments")
    from fewshot.folder_add import add_files_report

    with _open(index_dir, lock_timeout=lock_timeout) as idx:
        if from_folder is not None:
            rep = idx.add_folder_report(from_folder, progress=_progress(), skip_duplicates=skip_duplicates)
        else:
            rep = add_files_report(idx, label, list(files), skip_duplicates, progress=_progress())
        total = idx.store.count()
    for notice in rep.notices:
        click.echo(f"warning: {_shown(notice)}", err=True)
    _emit_added(rep, total, as_json)


def _emit_added(rep, total: int, as_json: bool) -> None:
    n = sum(rep.labels.values())
    _emit({"added": n, "labels": rep.labels, "ids": rep.ids, "count": total, "skipped": rep.skipped,
           "warnings": rep.notices}, as_json,
          f"added {n} example(s) to {len(rep.labels)} class(es); index holds {total}")


def _add_text(index_dir, label, texts, from_file, text_column, label_column, lock_timeout, as_json) -> None:
    """``add --text`` / ``--from-file``: every text is read and checked before the index is written."""
    from fewshot.folder_add import FolderAdd

    pairs = add_pairs(label, texts, from_file, text_column, label_column)
    with _open(index_dir, lock_timeout=lock_timeout) as idx:
        require_text_index(idx, index_dir)
        ids = idx.add_many(pairs, progress=_progress())
        stored = idx.store.labels()
        labels: dict[str, int] = {}
        for lab, items in pairs:
            key = idx.stored_label(lab, stored=stored)
            labels[key] = labels.get(key, 0) + len(items)
        total = idx.store.count()
    _emit_added(FolderAdd(ids, labels, [], []), total, as_json)


class ThresholdType(click.ParamType):
    """A score, or ``auto`` for the index's calibrated threshold."""

    name = "threshold"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


@cli.command("classify")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--threshold", type=ThresholdType(), default=None, metavar="SCORE|auto",
              help="Below this score the label is null (unknown); auto: the one `fewshot calibrate` fitted.")
@text_option
@from_file_option(QUERY_FILE_HELP)
@json_option
def classify_cmd(index_dir, files, top_k, threshold, texts, from_file, as_json) -> None:
    """Classify FILE... (or --text / --from-file queries) by the nearest class prototype."""
    with _open(index_dir, readonly=True) as idx:
        inputs = _query_inputs(idx, index_dir, files, texts, from_file)
        preds = idx.classify(inputs, top_k=top_k, threshold=threshold, progress=_progress())
    text = "\n".join(f"{_shown(p.input)}\t{_shown(p.label) if p.label is not None else '<unknown>'}\t"
                     f"score={p.score:.4f}\tp={p.probability:.4f}" for p in preds)
    _emit([p.to_dict() for p in preds], as_json, text)


@cli.command("search")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("files", nargs=-1, type=click.Path())
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--label", "labels", multiple=True, help="Only look among these labels (repeatable).")
@ef_search_option
@nprobe_option
@text_option
@from_file_option(QUERY_FILE_HELP)
@json_option
def search_cmd(index_dir, files, k, labels, ef_search, nprobe, texts, from_file, as_json) -> None:
    """The k nearest stored examples of each FILE (or --text / --from-file query)."""
    with _open(index_dir, readonly=True) as idx:
        inputs = _query_inputs(idx, index_dir, files, texts, from_file)
        results = idx.search(inputs, k=k, labels=list(labels) or None, progress=_progress(),
                             **_index_params(ef_search, nprobe))
    lines = []
    for r in results:
        lines.append(_shown(r.input))
        lines += [f"  {n.score:.4f}  {_shown(n.label)}  #{n.id}  {_shown(n.source)}" for n in r.neighbors]
    _emit([r.to_dict() for r in results], as_json, "\n".join(lines))


@cli.command("embed")
@click.argument("files", nargs=-1, type=click.Path())
@encoder_option
@weights_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write embeddings to OUT.npy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@text_option
@from_file_option(QUERY_FILE_HELP)
@json_option
def embed_cmd(files, encoder, weights, output, batch_size, texts, from_file, as_json) -> None:
    """Embeddings of FILE... or of --text / --from-file texts (float32 [n, dim])."""
    import numpy as np

    from fewshot import encoders
    from fewshot.inputs import SEQUENCE_SUFFIXES, IMAGE_SUFFIXES, expand_inputs

    if not files and not wants_text(texts, from_file):
        raise click.UsageError("give FILE..., --text TEXT or --from-file FILE")
    # stroke / series files get the sequence encoder; --text / --from-file the text encoder
    kind = "text" if wants_text(texts, from_file) else \
        "sequence" if all(Path(f).suffix.lower() in SEQUENCE_SUFFIXES for f in files) else "image"
    enc = encoders.resolve(encoder, weights=weights, kind=kind)
    if enc.input_kind == "text":
        items = enc._items(query_inputs(files, texts, from_file, "text"))
    elif kind == "text":
        raise click.ClickException(f"--text / --from-file give text, but encoder {enc.name} takes {enc.input_kind}s")
    else:
        items = expand_inputs(list(files), SEQUENCE_SUFFIXES if enc.input_kind == "sequence" else IMAGE_SUFFIXES)
    vecs = enc.embed(items, batch_size=batch_size, progress=_progress())
    if output:
        tmp = Path(output).with_name(Path(output).name + ".tmp.npy")
        np.save(tmp, vecs, allow_pickle=False)
        os.replace(tmp, output)
    if as_json:
        _emit({"encoder": enc.name, "fingerprint": enc.fingerprint, "dim": int(enc.dim), "output": output,
               "embeddings": [{"input": it.name, "embedding": [round(float(v), 7) for v in row]}
                              for it, row in zip(items, vecs)]}, True)
    elif output:
        click.echo(f"wrote {len(items)} x {enc.dim} embeddings to {output}")
    else:
        for it, row in zip(items, vecs):
            click.echo(_shown(it.name) + "\t" + " ".join(f"{v:.6g}" for v in row))


@cli.command("remove")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--label", required=True, help="The class to remove with all its examples.")
@lock_timeout_option
@json_option
def remove_cmd(index_dir, label, lock_timeout, as_json) -> None:
    """Remove a class and its examples."""
    with _open(index_dir, lock_timeout=lock_timeout) as idx:
        n = idx.remove(label)
        total = idx.store.count()
    _emit({"removed": n, "label": label, "count": total}, as_json, f"removed {n} example(s) of '{_shown(label)}'")


@cli.command("info")
@click.argument("index_dir", type=click.Path(file_okay=False))
@json_option
def info_cmd(index_dir, as_json) -> None:
    """Describe an index: encoder, metric, classes and counts.

    Reads the index only: it works when the encoder cannot be loaded (and says which it is).
    """
    with _open_info(index_dir) as idx:
        info = idx.info()
    text = "\n".join([f"index      {_shown(info['path'])}", f"encoder    {info['encoder']} ({info['fingerprint']})"]
                     + _version_lines(info)
                     + [f"input      {info['input_kind']}, dim {info['dim']}, metric {info['metric']}",
                        f"examples   {info['count']} in {info['n_labels']} classes", _calibration_line(info)]
                     + [f"  {_shown(lab)}: {n}" for lab, n in list(info["labels"].items())[:50]]
                     + ([f"  ... {info['n_labels'] - 50} more"] if info["n_labels"] > 50 else []))
    _emit(info, as_json, text)


@cli.command("calibrate")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--target-accept", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Share of queries of taught classes the threshold should accept.")
@click.option("--unknown-data", "unknown_data", type=click.Path(exists=True), default=None, metavar="PATH",
              help="Examples of classes the index should reject (files or a folder; a text file for text).")
@lock_timeout_option
@json_option
def calibrate_cmd(index_dir, target_accept, unknown_data, lock_timeout, as_json) -> None:
    """Fit the open-set threshold (`classify --threshold auto`) and the probability temperature.

    Uses the index's own examples (leave-one-example-out for taught classes,
    leave-one-class-out for untaught ones, plus --unknown-data) and, where
    they cannot tell (one example per class), the encoder's shipped calibration.
    Recomputed only when you run it; `fewshot info` says when it is stale.
    """
    with _open(index_dir, lock_timeout=lock_timeout) as idx:
        inputs = None
        if unknown_data is not None:
            inputs = query_inputs((), (), unknown_data, "text") if idx.encoder.input_kind == "text" \
                else [unknown_data]
        cal = idx.calibrate(target_accept=target_accept, unknown_data=inputs, progress=_progress())
    for note in cal["notes"]:
        click.echo(f"note: {note}", err=True)
    far = cal["false_accept_rate"]
    text = "\n".join([f"calibrated {_shown(index_dir)}: threshold {cal['threshold']:.4f} accepts "
                      f"{100 * cal['target_accept']:.0f}% of queries of taught classes; estimated false accepts "
                      + ("n/a" if far is None else f"{100 * far:.1f}%") + f"; temperature {cal['temperature']:.4f} "
                      f"(was {cal['temperature_before']:.4f})"]
                     + [f"  {k}: {_shown(v)}" for k, v in cal["sources"].items()])
    _emit(cal, as_json, text)


def _calibration_line(info: dict) -> str:
    cal = info.get("calibration")
    if not cal:
        return "calibrated no (run `fewshot calibrate`)"
    state = f"STALE: {info['calibration_stale_reason']}" if info.get("calibration_stale") else "current"
    return (f"calibrated {cal['date']}: threshold {cal['threshold']:.4f} (accepts {100 * cal['target_accept']:.0f}% "
            f"of known queries), temperature {cal['temperature']:.4f}; {state}")


def _version_lines(info: dict) -> list[str]:
    """``info``'s line on the encoder's release: none when it is no registered release."""
    successor = [f"successor  {info['encoder_successor']} (its successor, the default for new indexes): "
                 f"move with `{_shown(info['successor_upgrade'])}`"] if info.get("successor_upgrade") else []
    if info.get("encoder_version") is None:
        return successor
    if info.get("encoder_is_newest"):
        return [f"version    {info['encoder_version']} (the newest)"] + successor
    return [f"version    {info['encoder_version']}; version {info['encoder_newest_version']} is newer: "
            f"upgrade with `{_shown(info['upgrade'])}`"] + successor


@cli.command("reindex")
@click.argument("index_dir", type=click.Path(file_okay=False))
@encoder_option
@weights_option
@click.option("--index-type", type=click.Choice(INDEX_TYPES), default=None,
              help="Switch the vector index type (no re-embedding unless --encoder is given).")
@ef_search_option
@nprobe_option
@lock_timeout_option
@json_option
def reindex_cmd(index_dir, encoder, weights, index_type, ef_search, nprobe, lock_timeout, as_json) -> None:
    """Re-embed every stored example (optionally with another encoder), atomically.

    With --index-type / --ef-search / --nprobe only, the stored vectors are kept
    and just the index is rebuilt (queries keep using the old one meanwhile).
    --weights alone keeps the index's encoder and re-embeds with those weights.
    """
    from fewshot.fewshot_index import FewShotIndex
    from index import open_store

    params = _index_params(ef_search, nprobe)
    if encoder is None and weights is None and (index_type is not None or params):
        with open_store(index_dir, lock_timeout=lock_timeout) as store:
            store.set_index_type(index_type, **params)
            info = store.index_info()
        _emit({"index": info}, as_json, f"index of {index_dir} is now {info['index_type']} ({info['kind']})")
        return
    if encoder is None and weights is None:
        with _open(index_dir, lock_timeout=lock_timeout) as idx:
            out = idx.reindex(progress=_progress())
    else:  # the old encoder need not load: only the stored examples matter
        from fewshot import encoders

        if encoder is None:  # --weights alone: the index's own encoder, with other weights
            with open_store(index_dir, readonly=True) as store:
                encoder = store.extra.get("encoder")
        enc = encoders.resolve(encoder, weights=weights)  # a bad encoder file fails before the index is opened
        with FewShotIndex(open_store(index_dir, lock_timeout=lock_timeout), enc) as idx:
            out = idx.reindex(idx.encoder, progress=_progress())
            if index_type is not None or params:
                idx.store.set_index_type(index_type, **params)
    _emit(out, as_json, f"re-embedded {out['reembedded']} example(s) with {out['encoder']} ({out['fingerprint']})")


EXAMPLES = {  # two per command, shown at the end of its --help
    "encoders": ["fewshot encoders", "fewshot encoders --json"],
    "init": ["fewshot init my_index", "fewshot init strokes_index --kind sequence --index-type hnsw",
             "fewshot init intents --kind text"],
    "add": ["fewshot add my_index --label alpha alpha1.png alpha2.png",
            "fewshot add my_index --from-folder photos/ --skip-duplicates --json",
            "fewshot add intents --label balance --text 'how much money do I have'",
            "fewshot add intents --from-file examples.csv --text-column utterance --label-column intent"],
    "classify": ["fewshot classify my_index query.png",
                 "fewshot classify my_index queries/ --top-k 3 --threshold auto --json",
                 "fewshot classify intents --text 'what is my balance' --json",
                 "cat queries.txt | fewshot classify intents --from-file -"],
    "search": ["fewshot search my_index query.png -k 10",
               "fewshot search my_index query.png --label alpha --label beta --json"],
    "embed": ["fewshot embed a.png b.png -o vectors.npy",
              "fewshot embed strokes/ --encoder omniglot-strokes-gru --json"],
    "remove": ["fewshot remove my_index --label alpha", "fewshot remove my_index --label alpha --json"],
    "info": ["fewshot info my_index", "fewshot info my_index --json"],
    "calibrate": ["fewshot calibrate my_index", "fewshot calibrate intents --target-accept 0.9 --unknown-data other.txt --json"],
    "reindex": ["fewshot reindex my_index --encoder my_encoder.pt",
                "fewshot reindex my_index --index-type hnsw --ef-search 128"],
    "train": ["fewshot train --data images_background.zip --out runs/conv --steps 2000",
              "fewshot train --data strokes_background_small1.zip --arch rnn-gru --out runs/gru"],
    "evaluate": ["fewshot evaluate --data images_evaluation.zip --ways 20 --shots 1",
                 "fewshot evaluate --data my_classes/ --encoder mine.pt --ways 5 --episodes 200 --json"],
    "check": ["fewshot check my_index", "fewshot check my_index --repair --sample all"],
    "serve": ["fewshot serve my_index                        # http://127.0.0.1:8000, the page at /",
              "fewshot serve idx_a idx_b --host 0.0.0.0 --port 9000 --token-file token.txt"],
}


def _add_examples() -> None:
    """Every command's --help ends with two examples (unless its docstring already shows some)."""
    for name, cmd in cli.commands.items():
        if name in EXAMPLES and "Examples:" not in (cmd.help or "") + (cmd.epilog or ""):
            cmd.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])


def _register_commands() -> None:
    """Commands that live in their own modules (each imports torch only when it runs)."""
    from fewshot.commands import check, evaluate, finetune, serve, train

    for module in (train, finetune, evaluate, check, serve):
        cli.add_command(module.command)
    serve.add_server_option(cli)  # classify/search/add/info --server URL


_register_commands()
_add_examples()


def main() -> None:
    cli(prog_name="fewshot")


if __name__ == "__main__":
    main()
