# Upstream dstack's request bodies, read from its own source: every route of its server's
# routers (dstack/_internal/server/routers/*.py, read as syntax: FastAPI is not installed) with
# the pydantic model of its `body`, and every model reachable from those with each field's
# type and default. Writes the TypeScript module core/src/server/UpstreamRequestFields.ts on
# stdout; test/upstream/request-fields.test.ts checks that the committed file still matches.
import ast
import importlib
import json
import pathlib
import sys
import types
import typing
from enum import Enum

import dstack
from pydantic import BaseModel, RootModel
from pydantic_core import PydanticUndefined, to_jsonable_python

ROUTERS = pathlib.Path(dstack.__file__).parent / "_internal" / "server" / "routers"
models: dict = {}


def route_bodies():
    """(method, path, module, class name) for every route whose handler takes a `body`."""
    out = []
    for file in sorted(ROUTERS.glob("*.py")):
        tree = ast.parse(file.read_text())
        imported = {}  # local name -> module ("X" or "schemas" for `schemas.X`)
        prefixes = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dstack."):
                for alias in node.names:
                    imported[alias.asname or alias.name] = (node.module, alias.name)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        imported[alias.asname] = (alias.name, None)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                for kw in node.value.keywords:
                    if kw.arg == "prefix" and isinstance(kw.value, ast.Constant):
                        prefixes[node.targets[0].id] = kw.value.value
        for node in tree.body:
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)):
                    continue
                router, method = dec.func.value, dec.func.attr
                if not isinstance(router, ast.Name) or router.id not in prefixes or method not in ("get", "post"):
                    continue
                path = prefixes[router.id] + dec.args[0].value
                body = next((a for a in node.args.args + node.args.kwonlyargs if a.arg == "body"), None)
                if body is None or body.annotation is None:
                    continue
                ann = body.annotation
                if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) and ann.value.id == "Optional":
                    ann = ann.slice
                if isinstance(ann, ast.Attribute) and isinstance(ann.value, ast.Name):
                    module, name = imported[ann.value.id]  # `import a.b.c as schemas` or `from a.b import c`
                    cls = getattr(importlib.import_module(module if name is None else f"{module}.{name}"), ann.attr)
                elif isinstance(ann, ast.Name):
                    module, name = imported[ann.id]
                    cls = getattr(importlib.import_module(module), name)
                else:
                    raise SystemExit(f"{file.name}:{node.lineno}: body annotation not understood")
                out.append({"method": method.upper(), "path": path, "cls": cls})
    return out


def default_of(field):
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return None
    else:
        value = field.default
    return to_jsonable_python(value.value if isinstance(value, Enum) else value)


def shape(tp):
    """A type as the checker walks it: a model's name, list, dict, union, or a scalar."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return shape(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [shape(a) for a in args if a is not type(None)]
        literals = [m for m in members if isinstance(m, dict) and "literal" in m]
        structural = [m for m in members if m != "scalar" and m not in literals]
        if structural:
            return structural[0] if len(structural) == 1 else {"union": structural}
        # Only a union of literals tells union members apart (`type: Literal["task"]`).
        return {"literal": [v for m in literals for v in m["literal"]]} if len(literals) == len(members) else "scalar"
    if origin in (list, set, tuple, typing.List, typing.Set, typing.Tuple):
        inner = [shape(a) for a in args if a is not Ellipsis]
        inner = [m for m in inner if m != "scalar"]
        return {"list": inner[0] if len(inner) == 1 else ({"union": inner} if inner else "scalar")}
    if origin in (dict, typing.Dict):
        return {"dict": shape(args[1]) if len(args) == 2 else "scalar"}
    if origin is typing.Literal:
        return {"literal": [to_jsonable_python(a.value if isinstance(a, Enum) else a) for a in args]}
    if isinstance(tp, type) and issubclass(tp, RootModel):
        return shape(tp.model_fields["root"].annotation)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        add(tp)
        return {"model": tp.__name__}
    return "scalar"


def add(cls):
    name = cls.__name__
    if name in models:
        if models[name]["module"] != cls.__module__:
            raise SystemExit(f"two models named {name}: {models[name]['module']} and {cls.__module__}")
        return
    models[name] = {"module": cls.__module__}
    fields = {}
    for fname, field in cls.model_fields.items():
        key = field.alias or fname
        fields[key] = {"default": default_of(field), "required": field.is_required(), "type": shape(field.annotation)}
    models[name] = {"module": cls.__module__, "fields": dict(sorted(fields.items()))}


HEADER = """// Upstream dstack 0.21.2's request bodies: for each route of its server, the pydantic model of
// the body, and for every model reachable from those each field's type and default. Generated
// from upstream's own source by test/upstream/request_fields.py (`$DSTACK_PY
// test/upstream/request_fields.py > core/src/server/UpstreamRequestFields.ts`); do not edit.
// test/upstream/request-fields.test.ts fails when this file and the generator disagree.
import type { UpstreamModel, UpstreamShape } from "./RequestDecoding.ts"
"""


def js(value):
    return json.dumps(value, separators=(", ", ": "), sort_keys=True)


bodies = sorted((f"{r['method']} {r['path']}", shape(r["cls"])) for r in route_bodies())
out = [HEADER, "/** Each route's body (`POST /api/project/{project_name}/runs/get_plan`). */"]
out.append("export const UPSTREAM_BODIES: Readonly<Record<string, UpstreamShape>> = {")
out += [f"  {js(k)}: {js(v)}," for k, v in bodies]
out.append("}\n\n/** Each model's fields, by the model's name. */")
out.append("export const UPSTREAM_MODELS: Readonly<Record<string, UpstreamModel>> = {")
for name in sorted(models):
    out.append(f"  {name if name.isidentifier() else js(name)}: {{")
    out += [f"    {js(k)}: {js(v)}," for k, v in models[name]["fields"].items()]
    out.append("  },")
out.append("}")
sys.stdout.write("\n".join(out) + "\n")
