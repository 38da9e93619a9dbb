"""``fewshot check INDEX_DIR [--repair]``: verify everything an index holds; rebuild what is derived.

    fewshot check my_index               # exit 0 when healthy, else 1 and one `error:` line
    fewshot check my_index --repair      # rebuild FAISS files, prototypes, damaged vectors
    fewshot check my_index --sample all --json

Torch is imported inside the command (through :mod:`fewshot.check`), so
``fewshot --help`` stays instant.
"""
from __future__ import annotations

import json

import click



class SampleType(click.ParamType):
    """A count of examples to re-embed: an integer >= 0, or ``all``."""

    name = "N|all"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "all":
            return None
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'all'", param, ctx)
        if n < 0:
            self.fail(f"{n} is negative; use 0 to skip re-embedding or 'all'", param, ctx)
        return n


def _text(report: dict) -> str:
    s = report["stats"]
    err = s["max_vector_error"]
    lines = [f"index      {report['path']}",
             f"records    {s['records']} in {s['labels']} classes; {s['blobs_checked']} stored example file(s) intact",
             f"re-embed   {s['reembedded']} sampled example(s)"
             + (f", max vector error {err:.2g}" if err is not None else "")]
    lines += [f"problem    {p}" for p in report["problems"]]
    lines += [f"repaired   {r}" for r in report["repaired"]]
    lines += [f"note       {n}" for n in report["notes"]]
    lines.append("healthy" if report["healthy"] else f"{len(report['remaining'])} problem(s) remain")
    return "\n".join(lines)


@click.command("check")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--repair", is_flag=True,
              help="Rebuild derived parts (FAISS files, prototypes, damaged vectors from the stored examples) "
                   "and delete leftovers of interrupted writes.")
@click.option("--sample", type=SampleType(), default="32", show_default=True,
              help="How many stored examples to re-embed and compare with their vectors (0: none, 'all').")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(index_dir: str, repair: bool, sample: int | None, as_json: bool) -> None:
    """Verify an index: records, vectors, prototypes, FAISS files and stored examples."""
    from fewshot.check import check

    report = check(index_dir, sample=sample, repair=repair)
    from fewshot.metrics import json_safe  # here: numpy's import is a third of a `--server` call

    click.echo(json.dumps(json_safe(report), ensure_ascii=False, allow_nan=False) if as_json else _text(report))
    if not report["healthy"]:
        first = report["remaining"][0]
        more = f" (and {len(report['remaining']) - 1} more)" if len(report["remaining"]) > 1 else ""
        hint = "" if repair or "--repair" in first or "repair" not in first else " (`fewshot check --repair`)"
        raise click.ClickException(f"{index_dir}: {first}{more}{hint}")
