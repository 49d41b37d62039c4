"""MkDocs hooks: the pages' parts that the code and the bundle already say, rendered at build
time so that they cannot drift from it.

A page asks for one with a marker line:

- `<!-- generated: openapi -->`: every route and schema of the service's OpenAPI document
  (`service.http.app.create_app(load=False).openapi()`, the document `/openapi.json` serves),
  with each status's error codes and the schemas' examples; the document itself is published
  beside the site as `openapi.json`.
- `<!-- generated: cli-help -->`: `emotion-av predict --help` as the CLI prints it.
- `<!-- generated: bundle-report -->`: the shipped bundle's `models/default/report.md`, written
  by `trainer build`, with its figures (the PNGs beside it are published under `bundle/`); a
  rebuilt bundle changes the model card with no edit.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "default"
IMAGES = {".png", ".svg", ".jpg", ".jpeg"}  # the report's figures, published under bundle/
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)

if str(ROOT) not in sys.path:  # the service's modules, whether or not the package is installed
    sys.path.insert(0, str(ROOT))


def openapi_document() -> dict:
    from service.http.app import create_app

    return create_app(load=False).openapi()


# --- OpenAPI -> Markdown ----------------------------------------------------------------------

def _type(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if "const" in schema:
        return f"`{schema['const']}`"
    return kind + (f" ({schema['format']})" if "format" in schema else "")


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _limits(schema: dict) -> str:
    words = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    found = [f"{sign} {part[key]}" for part in [schema, *schema.get("anyOf", [])]
             for key, sign in words.items() if key in part]
    return f" ({', '.join(found)})" if found else ""


def _operation(method: str, path: str, op: dict) -> list[str]:
    lines = [f"### {method.upper()} `{path}`", "", _cell(op.get("summary")), ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | description |", "|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            lines.append(f"| `{p['name']}`{'' if not p.get('required') else ' (required)'} | {p['in']} | "
                         f"{_type(schema)}{_limits(schema)} | {_cell(p.get('description') or schema.get('description'))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        for content_type, media in body.get("content", {}).items():
            schema = media.get("schema", {})
            fields = ", ".join(f"`{name}` ({_type(sub)})" for name, sub in schema.get("properties", {}).items())
            lines += [f"Request body: `{content_type}`" + (f", fields {fields}." if fields else f", {_type(schema)}."), ""]
            if content_type == "multipart/form-data" and "file" in schema.get("properties", {}):
                lines += ["```bash", f"curl -s -F file=@clip.mp4 http://127.0.0.1:8000{path}", "```", ""]
    lines += ["| status | answer | content |", "|---|---|---|"]
    for status, resp in op["responses"].items():
        content = ", ".join(f"`{ct}` {_type(m.get('schema', {}))}" for ct, m in resp.get("content", {}).items())
        lines.append(f"| {status} | {_cell(resp.get('description'))} | {content} |")
    return [*lines, ""]


def _schema(name: str, schema: dict) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    if props:
        lines += ["| field | type | description |", "|---|---|---|"]
        for field, sub in props.items():
            mark = " (required)" if field in required else ""
            lines.append(f"| `{field}`{mark} | {_type(sub)} | {_cell(sub.get('description'))} |")
        lines.append("")
    elif "enum" in schema:
        lines += [f"One of {_type(schema)}.", ""]
    example = schema.get("example") or (schema.get("examples") or [None])[0]
    if example is not None:
        lines += ["Example:", "", "```json", json.dumps(example, indent=2), "```", ""]
    return lines


def render_openapi(doc: dict) -> str:
    lines = [f"Generated from the service's OpenAPI document ({doc['info']['title']} "
             f"{doc['info']['version']}, OpenAPI {doc['openapi']}; the same file is "
             "[openapi.json](openapi.json) here and `/openapi.json` on a running server).", "",
             "## Routes", ""]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        lines += _schema(name, schema)
    return "\n".join(lines)


# --- the CLI and the bundle's report ----------------------------------------------------------

def render_cli_help() -> str:
    from service.run.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = sub.choices["predict"].format_help()
    return f"```text\n{text.rstrip()}\n```"


def render_bundle_report(bundle: Path = BUNDLE) -> str:
    """The report with its headings two levels down (it becomes a section of the page) and
    its figures pointing at their published copies."""
    text = (bundle / "report.md").read_text()
    text = re.sub(r"^(#{1,4}) ", r"##\1 ", text, flags=re.M)
    return re.sub(r"!\[([^\]]*)\]\((?![a-z]+:|/)([^)]+)\)", r"![\1](bundle/\2)", text)


RENDERERS = {
    "openapi": lambda: render_openapi(openapi_document()),
    "cli-help": render_cli_help,
    "bundle-report": render_bundle_report,
}


# --- MkDocs events ----------------------------------------------------------------------------

def on_files(files: Files, config) -> Files:
    for image in sorted(p for p in BUNDLE.rglob("*") if p.suffix.lower() in IMAGES):
        files.append(File.generated(config, f"bundle/{image.relative_to(BUNDLE).as_posix()}", abs_src_path=str(image)))
    files.append(File.generated(config, "openapi.json", content=json.dumps(openapi_document(), indent=2)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def render(match: re.Match) -> str:
        name = match.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_uri}: unknown generated part '{name}'")
        return RENDERERS[name]()

    return MARKER.sub(render, markdown)
