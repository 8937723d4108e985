"""``.. benchtable:: FILE``: the figures of one ``python -m bench`` run, readable.

``FILE`` is the Markdown that ``python -m bench`` prints, saved as it is, so
the page is redone by running the bench again, never by editing a table.
Each scenario (B1, B2, ...) becomes a table of its own with the transports
side by side; the header line above the Markdown table becomes a paragraph.
"""
from __future__ import annotations

from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

COLUMNS = ("metric", "unit", "tcp median", "tcp p99", "styx median", "styx p99",
           "goal", "samples (runs)", "notes")


def parse(text: str) -> tuple[str, list[dict[str, str]]]:
    """The header line and the rows of a ``python -m bench`` table."""
    lines = text.splitlines()
    header = next((line for line in lines if line.strip() and not line.startswith("|")), "")
    table = [line for line in lines if line.startswith("|")]
    if len(table) < 2:
        raise ValueError("no Markdown table in it")
    names = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = []
    for line in table[2:]:
        cells = [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]
        rows.append(dict(zip(names, cells)))
    return header, rows


def pivot(rows: list[dict[str, str]]) -> dict[str, list[list[str]]]:
    """Per scenario, one line per metric with every transport's figures in it."""
    scenarios: dict[str, dict[str, dict[str, str]]] = {}
    for row in rows:
        merged = scenarios.setdefault(row["id"], {}).setdefault(
            row["metric"], {key: row[key] for key in ("metric", "unit", "goal")})
        for key in ("median", "p99"):
            merged[f"{row['transport']} {key}"] = row[key]
        if row["met"]:
            merged["goal"] += f"; {row['transport']} {'met' if row['met'] == 'yes' else 'MISSED'}"
        merged["samples (runs)"] = row["samples (runs)"]
        if row["notes"]:
            merged["notes"] = "; ".join(filter(None, (merged.get("notes"),
                                                      f"{row['transport']}: {row['notes']}")))
    return {scenario: [[metric.get(column, "") for column in COLUMNS]
                       for metric in metrics.values()]
            for scenario, metrics in scenarios.items()}


def _table(lines: list[list[str]]) -> nodes.table:
    table = nodes.table(classes=["benchtable"])
    group = nodes.tgroup(cols=len(COLUMNS))
    table += group
    for _ in COLUMNS:
        group += nodes.colspec(colwidth=1)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    for target, cells in ((head, [list(COLUMNS)]), (body, lines)):
        for cells_of_row in cells:
            row = nodes.row()
            for cell in cells_of_row:
                entry = nodes.entry()
                entry += nodes.paragraph(text=cell)
                row += entry
            target += row
    return table


class BenchTable(Directive):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        relative, path = env.relfn2path(self.arguments[0])
        env.note_dependency(relative)
        try:
            header, rows = parse(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise self.error(f"benchtable {self.arguments[0]}: {err}") from None
        result: list[nodes.Node] = [nodes.paragraph(text=header.replace("`", ""))]
        for scenario, lines in pivot(rows).items():
            section = nodes.rubric(text=scenario)
            result += [section, _table(lines)]
        return result


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("benchtable", BenchTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
