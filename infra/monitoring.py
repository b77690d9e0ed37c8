"""What the workbook and the alerts query, against what the app emits: part of the deployment's guard.

A dashboard that names a metric, a dimension, a log event or a JSON field the app does not emit shows an empty
chart and an alert on it never fires, silently. So the emitted names are read from the code itself, never from a
list kept by hand: the instruments and their attributes in shared/azure/telemetry.py, the span and its
attributes, the function names in function_app.py (the host's request telemetry is named after them), and every
structured log line (`json.dumps({"event": ...})` in shared/, with the fields added to it later in the same
function). The queries are read from infra/monitor/ (the workbook's items and the alert rules' .kql files).

The same module derives which paths App Service Authentication must leave to function keys: the machine API
(routes with a literal `AuthLevel.FUNCTION`) and Event Grid's webhook, read from function_app.py and host.json.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

TELEMETRY = "shared/azure/telemetry.py"
OUTCOMES = "shared/core/outcome.py"
LOG_GLOBS = ("shared/**/*.py",)
WORKBOOK = "monitor/workbook.json"
ALERTS = "monitor/alerts"
INSTRUMENT_FACTORIES = {"create_counter", "create_histogram", "create_up_down_counter", "create_observable_gauge",
                        "create_observable_counter", "create_observable_up_down_counter", "create_gauge"}
EVENTGRID_WEBHOOK = "/runtime/webhooks/eventgrid"


@dataclass(frozen=True)
class Emitted:
    """Every name the app's telemetry can carry, read from the code."""

    metrics: dict[str, frozenset[str]]  # metric name -> its dimension keys
    span_names: frozenset[str]
    span_attributes: frozenset[str]
    functions: frozenset[str]  # function_app.py's functions: the host's request telemetry names
    events: dict[str, frozenset[str]]  # log event ("event" field) -> every JSON field of its lines
    states: frozenset[str]  # the values of `outcome` / `state`


@dataclass(frozen=True)
class Problem:
    rule: str
    subject: str
    message: str


# --- what the code emits --------------------------------------------------------------------------------

def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _functions(tree: ast.AST) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _keys_built(function: ast.AST) -> set[str]:
    """Keys a function writes into dicts: literal keys, and `d["key"] = ...`."""
    keys: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Dict):
            keys.update(k for k in map(_const, node.keys) if k)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and (key := _const(target.slice)):
                    keys.add(key)
    return keys


def _dimensions(argument: ast.AST, functions: dict[str, ast.FunctionDef]) -> set[str]:
    """The attribute keys of a measurement: a dict literal, or what the helper that builds it writes."""
    if isinstance(argument, ast.Dict):
        return {k for k in map(_const, argument.keys) if k}
    if isinstance(argument, ast.Call) and isinstance(argument.func, ast.Name) and argument.func.id in functions:
        return _keys_built(functions[argument.func.id])
    return set()


def _module_constants(tree: ast.Module) -> dict[str, str]:
    return {t.id: v for node in tree.body if isinstance(node, ast.Assign) and (v := _const(node.value))
            for t in node.targets if isinstance(t, ast.Name)}


def _loop_values(function: ast.AST, variable: str) -> set[str]:
    """The strings `variable` takes in `for a, b in NAMES.items()` over a dict literal bound in `function`."""
    dicts = _literal_dicts(function)
    values: set[str] = set()
    for node in ast.walk(function):
        if not (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
                and isinstance(node.iter.func, ast.Attribute) and node.iter.func.attr == "items"
                and isinstance(node.iter.func.value, ast.Name) and node.iter.func.value.id in dicts):
            continue
        source = dicts[node.iter.func.value.id]
        names = [e.id if isinstance(e, ast.Name) else None for e in getattr(node.target, "elts", [])]
        if variable in names:
            column = source.keys if names.index(variable) == 0 else source.values
            values.update(v for v in map(_const, column) if v)
    return values


def telemetry_names(path: Path) -> tuple[dict[str, frozenset[str]], frozenset[str], frozenset[str]]:
    """Metrics with their dimensions, span names and span attributes, from the telemetry module's code."""
    tree = _parse(path)
    functions = _functions(tree)
    constants = _module_constants(tree)
    by_field: dict[str, str] = {}  # _Instruments field -> metric name
    metrics: dict[str, set[str]] = {}
    span_names: set[str] = set()
    attributes: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in INSTRUMENT_FACTORIES and node.args:
            name = _const(node.args[0])
            if name:
                metrics.setdefault(name, set())
                for keyword in node.keywords:  # an observable's callbacks build its dimensions
                    if keyword.arg == "callbacks" and isinstance(keyword.value, ast.List):
                        for callback in keyword.value.elts:
                            if isinstance(callback, ast.Name) and callback.id in functions:
                                metrics[name] |= {k for call in ast.walk(functions[callback.id])
                                                  if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                                                  and call.func.id == "Observation" and len(call.args) > 1
                                                  for k in _dimensions(call.args[1], functions)}
        for keyword in node.keywords:  # _Instruments(imports=meter.create_counter("acr_importer.imports"), ...)
            value = keyword.value
            if (keyword.arg and isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                    and value.func.attr in INSTRUMENT_FACTORIES and value.args and (name := _const(value.args[0]))):
                by_field[keyword.arg] = name
        if isinstance(func, ast.Attribute) and func.attr == "start_as_current_span" and node.args:
            span_names.update(n for n in [_const(node.args[0])] if n)
    for node in ast.walk(tree):  # instruments.<field>.add(value, {dims}) / .record(...)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("add", "record")
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr in by_field):
            dims = _dimensions(node.args[1], functions) if len(node.args) > 1 else set()
            metrics[by_field[node.func.value.attr]] |= dims
    # span.set_attribute(PREFIX + attribute, ...): the app's own attributes, which the Azure Monitor exporter puts
    # in customDimensions as they are. A literal semantic-convention name (messaging.message.id) is not counted:
    # the exporter leaves standard OpenTelemetry attributes out of customDimensions.
    for function in functions.values():
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "set_attribute" and node.args):
                continue
            key = node.args[0]
            if (isinstance(key, ast.BinOp) and isinstance(key.op, ast.Add) and isinstance(key.left, ast.Name)
                  and key.left.id in constants and isinstance(key.right, ast.Name)):
                attributes.update(constants[key.left.id] + v for v in _loop_values(function, key.right.id))
    return ({k: frozenset(v) for k, v in metrics.items()}, frozenset(span_names), frozenset(attributes))


def _camel(name: str) -> str:
    """The refresh summary's field names (shared/refresh/run.py `_camel`): snake_case to camelCase."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _dataclass_fields(cls: ast.ClassDef) -> list[str]:
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def _event_dict_fields(node: ast.Dict, cls: ast.ClassDef | None) -> set[str]:
    """A log line's literal keys, and `**{_camel(k): v for k, v in asdict(self).items()}` as the class's fields."""
    fields = {k for k in map(_const, node.keys) if k}
    for key, value in zip(node.keys, node.values, strict=True):
        if key is None and isinstance(value, ast.DictComp) and cls is not None:
            source = ast.unparse(value.generators[0].iter)
            if source == "asdict(self).items()":
                camel = isinstance(value.key, ast.Call) and ast.unparse(value.key.func) == "_camel"
                fields.update(_camel(f) if camel else f for f in _dataclass_fields(cls))
    return fields


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef, ast.ClassDef | None]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node, None
        elif isinstance(node, ast.ClassDef):
            yield from ((n, node) for n in node.body if isinstance(n, ast.FunctionDef))


def log_events(paths: Iterable[Path]) -> dict[str, frozenset[str]]:
    """Every structured log line's event and fields: a dict literal with an "event" key, plus, when it is bound
    to a name, what the same function adds to it (`fields.update({...})`, `fields["k"] = ...`, and keys
    renamed through a `names` dict literal in `fields.update({names[k]: ...})`)."""
    events: dict[str, set[str]] = {}
    for path in paths:
        for function, cls in _scopes(_parse(path)):
            literal_dicts = _literal_dicts(function)
            for node in ast.walk(function):
                if not isinstance(node, ast.Dict):
                    continue
                pairs = dict(zip(map(_const, node.keys), node.values, strict=True))
                event = _const(pairs.get("event"))
                if not event:
                    continue
                fields = _event_dict_fields(node, cls)
                bound = [name for name, value in literal_dicts.items() if value is node]
                for name in bound:
                    fields |= _additions(function, name, literal_dicts)
                events.setdefault(event, set()).update(fields)
    return {k: frozenset(v) for k, v in events.items()}


def _literal_dicts(function: ast.AST) -> dict[str, ast.Dict]:
    """Names bound to a dict literal in a function (`x = {...}` or `x: dict[...] = {...}`)."""
    bound: dict[str, ast.Dict] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            bound.update((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict) and isinstance(node.target, ast.Name):
            bound[node.target.id] = node.value
    return bound


def _additions(function: ast.FunctionDef, name: str, literal_dicts: dict[str, ast.Dict]) -> set[str]:
    fields: set[str] = set()
    for node in ast.walk(function):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == name and node.args):
            added = node.args[0]
            if isinstance(added, ast.Dict):
                fields.update(k for k in map(_const, added.keys) if k)
            elif isinstance(added, ast.DictComp) and isinstance(added.key, ast.Subscript) \
                    and isinstance(added.key.value, ast.Name) and added.key.value.id in literal_dicts:
                fields.update(v for v in map(_const, literal_dicts[added.key.value.id].values) if v)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                        and target.value.id == name and (key := _const(target.slice))):
                    fields.add(key)
    return fields


def _states(path: Path) -> frozenset[str]:
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.ClassDef) and node.name == "State":
            return frozenset(v for n in node.body if isinstance(n, ast.Assign) and (v := _const(n.value)))
    return frozenset()


@dataclass(frozen=True)
class Route:
    function: str
    route: str
    machine: bool  # a literal AuthLevel.FUNCTION/ADMIN: keys, whatever the sign-in mode


def _app_decorators(tree: ast.Module) -> Iterator[tuple[str, ast.Call]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                        and isinstance(decorator.func.value, ast.Name) and decorator.func.value.id == "app"):
                    yield node.name, decorator


def functions_of(function_app: Path) -> frozenset[str]:
    return frozenset(name for name, _ in _app_decorators(_parse(function_app)))


def routes_of(function_app: Path) -> list[Route]:
    routes = []
    for name, decorator in _app_decorators(_parse(function_app)):
        if decorator.func.attr != "route":  # type: ignore[attr-defined]
            continue
        keywords = {k.arg: k.value for k in decorator.keywords}
        route = _const(keywords.get("route")) or name
        level = keywords.get("auth_level")
        machine = isinstance(level, ast.Attribute) and level.attr in ("FUNCTION", "ADMIN") and \
            isinstance(level.value, ast.Attribute) and level.value.attr == "AuthLevel"
        routes.append(Route(name, route, machine))
    return routes


def route_prefix(host_json: Path) -> str:
    """host.json's extensions.http.routePrefix; the Functions default is "api"."""
    document = json.loads(host_json.read_text(encoding="utf-8")) if host_json.exists() else {}
    return str(document.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")


def _path(prefix: str, route: str) -> str:
    return "/" + "/".join(p for p in (prefix, re.sub(r"\{[^}]*\}", "*", route).strip("/")) if p)


def machine_paths(repo: Path) -> tuple[list[str], list[str]]:
    """Paths App Service Authentication must leave alone (the key-protected machine API and Event Grid's
    webhook) and the operator paths it must guard, from function_app.py and host.json."""
    prefix = route_prefix(repo / "host.json")
    routes = routes_of(repo / "function_app.py")
    machine = sorted({_path(prefix, r.route) for r in routes if r.machine})
    operator = sorted({_path(prefix, r.route) for r in routes if not r.machine})
    tree = _parse(repo / "function_app.py")
    if any(d.func.attr == "event_grid_trigger" for _, d in _app_decorators(tree)):  # type: ignore[attr-defined]
        machine.append(EVENTGRID_WEBHOOK)
    return machine, operator


def emitted(repo: Path) -> Emitted:
    metrics, span_names, attributes = telemetry_names(repo / TELEMETRY)
    paths = sorted({p for pattern in LOG_GLOBS for p in repo.glob(pattern)})
    return Emitted(metrics=metrics, span_names=span_names, span_attributes=attributes,
                   functions=functions_of(repo / "function_app.py"), events=log_events(paths),
                   states=_states(repo / OUTCOMES))


# --- what the queries use -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    where: str  # "workbook: <title>" or "alert <file>"
    text: str


def queries(infra: Path) -> list[Query]:
    """The workbook's KQL items and the alert rules' .kql files."""
    found = []
    workbook = infra / WORKBOOK
    if workbook.exists():
        def walk(node: object) -> Iterator[dict[str, object]]:
            if isinstance(node, dict):
                if node.get("version") == "KqlItem/1.0" and isinstance(node.get("query"), str):
                    yield node
                for value in node.values():
                    yield from walk(value)
            elif isinstance(node, list):
                for value in node:
                    yield from walk(value)
        for item in walk(json.loads(workbook.read_text(encoding="utf-8"))):
            found.append(Query(f"workbook: {item.get('title', '?')}", str(item["query"])))
    for path in sorted((infra / ALERTS).glob("*.kql")):
        found.append(Query(f"alert {path.name}", path.read_text(encoding="utf-8")))
    return found


def _strings(text: str) -> list[str]:
    return [a or b for a, b in re.findall(r'"([^"]*)"|\'([^\']*)\'', text)]


@dataclass
class _Uses:
    table: str
    names: set[str] = field(default_factory=set)
    dimensions: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    prefixed: set[str] = field(default_factory=set)


def uses(text: str) -> _Uses:
    """The names a query relies on, by the conventions the workbook and alerts follow."""
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    table = re.match(r"\s*(\w+)", code)
    found = _Uses(table.group(1) if table else "")
    found.names.update(re.findall(r'\bname\s*==\s*"([^"]+)"', code))
    for listed in re.findall(r'\bname\s+in\s*\(([^)]*)\)', code):
        found.names.update(_strings(listed))
    found.dimensions.update(re.findall(r'customDimensions\[\s*"([^"]+)"\s*\]', code))
    found.dimensions.update(re.findall(r"customDimensions\.(\w+)", code))
    found.events.update(re.findall(r"'\"event\": \"([^\"]+)\"'", code))
    for variable in re.findall(r"\b(\w+)\s*=\s*parse_json\(message\)", code):
        found.fields.update(re.findall(rf"\b{variable}\.(\w+)", code))
        found.fields.update(re.findall(rf'\b{variable}\["([^"]+)"\]', code))
        found.events.update(re.findall(rf'tostring\({variable}\.event\)\s*==\s*"([^"]+)"', code))
        for compared in re.findall(rf'tostring\({variable}\.state\)\s*(==\s*"[^"]*"|in\s*\([^)]*\))', code):
            found.values.update(_strings(compared))
    for compared in re.findall(r'\boutcome\s*(==\s*"[^"]*"|in\s*\([^)]*\))', code):
        found.values.update(_strings(compared))
    found.prefixed.update(s for s in _strings(code) if s.startswith("acr_importer."))
    return found


def check_queries(app: Emitted, found: list[Query]) -> list[Problem]:
    problems = []
    attributes_and_metrics = set(app.metrics) | app.span_attributes
    for query in found:
        used = uses(query.text)

        def problem(rule: str, name: str, known: Iterable[str], what: str, where: str = query.where) -> None:
            problems.append(Problem(rule, name, f"{where} uses {what} {name!r}, which the app does not emit "
                                                f"(it emits: {', '.join(sorted(known)) or 'none'})"))

        if used.table == "customMetrics":
            unknown = used.names - set(app.metrics)
            for name in sorted(unknown):
                problem("monitor-unknown-metric", name, app.metrics, "the metric")
            dims = set().union(*(app.metrics[n] for n in used.names - unknown)) if used.names else set()
            for name in sorted(used.dimensions - dims if not unknown else set()):  # an unknown metric says it all
                problem("monitor-unknown-dimension", name, dims, "the dimension")
        elif used.table == "requests":
            operations = app.span_names | app.functions
            for name in sorted(used.names - operations):
                problem("monitor-unknown-operation", name, operations, "the request name")
            for name in sorted(used.dimensions - app.span_attributes):
                problem("monitor-unknown-dimension", name, app.span_attributes, "the span attribute")
        elif used.table == "traces":
            if not used.events:
                problems.append(Problem("monitor-unknown-event", query.where,
                                        f"{query.where} reads log lines without naming their event"))
            for name in sorted(used.events - set(app.events)):
                problem("monitor-unknown-event", name, app.events, "the log event")
            fields = set().union(*(app.events.get(e, frozenset()) for e in used.events)) if used.events else set()
            for name in sorted(used.fields - fields):
                problem("monitor-unknown-field", name, fields, "the JSON field")
        else:
            problems.append(Problem("monitor-unknown-table", used.table or "?",
                                    f"{query.where} queries {used.table!r}; the checker knows customMetrics, "
                                    "requests and traces"))
        for name in sorted(used.prefixed - used.names - used.dimensions - attributes_and_metrics):  # elsewhere
            problem("monitor-unknown-metric", name, attributes_and_metrics, "the name")
        for value in sorted(used.values - app.states):
            problem("monitor-unknown-value", value, app.states, "the state")
    return problems


# --- the template's wiring ------------------------------------------------------------------------------

def block(text: str, start: int) -> str:
    """The `{ ... }` block opening at or after `start`."""
    opening = text.index("{", start)
    depth = 0
    for i in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[opening:i + 1]
    return text[opening:]


def _resource_blocks(bicep: str, kind: str) -> list[tuple[str, str]]:
    return [(m.group(1), block(bicep, m.end()))
            for m in re.finditer(rf"resource\s+(\w+)\s+'{re.escape(kind)}@[^']+'\s*=", bicep)]


def check_wiring(bicep: str, infra: Path, action_group_parameter: str) -> list[Problem]:
    """The workbook and every alert query are deployed, linked to Application Insights, and every alert rule
    notifies the action group parameter."""
    problems = []
    workbooks = _resource_blocks(bicep, "Microsoft.Insights/workbooks")
    if not any(f"loadTextContent('{WORKBOOK}')" in body and "sourceId: insights.id" in body for _, body in workbooks):
        problems.append(Problem("monitor-not-deployed", WORKBOOK, "no Microsoft.Insights/workbooks resource loads "
                                "it with sourceId: insights.id"))
    rules = _resource_blocks(bicep, "Microsoft.Insights/scheduledQueryRules")
    for path in sorted((infra / ALERTS).glob("*.kql")):
        if not any(f"loadTextContent('{ALERTS}/{path.name}')" in body for _, body in rules):
            problems.append(Problem("monitor-not-deployed", path.name, "no scheduledQueryRules resource loads it"))
    for symbol, body in rules:
        if not re.search(rf"actionGroups:\s*empty\({action_group_parameter}\)\s*\?\s*\[\]\s*:\s*"
                         rf"\[\s*{action_group_parameter}\s*\]", body):
            problems.append(Problem("alert-without-action-group", symbol,
                                    f"its actions must be `actionGroups: empty({action_group_parameter}) ? [] : "
                                    f"[{action_group_parameter}]`"))
        if "insights.id" not in body:
            problems.append(Problem("alert-without-action-group", symbol, "its scope must be Application Insights"))
    if not re.search(rf"\nparam {action_group_parameter} string", bicep):
        problems.append(Problem("alert-without-action-group", action_group_parameter, "the parameter is missing"))
    return problems


def check_sign_in(bicep: str, repo: Path) -> list[Problem]:
    """App Service Authentication: required, redirecting people to sign in, without a client secret, and leaving
    exactly the key-protected machine paths (and no operator path) to function keys."""
    blocks = [body for _, body in _resource_blocks(bicep, "Microsoft.Web/sites/config") if "'authsettingsV2'" in body]
    if not blocks:
        return [Problem("sign-in-missing", "authsettingsV2", "the template does not configure App Service "
                                                               "Authentication")]
    body = blocks[0]
    problems = []
    for required, what in ((r"requireAuthentication:\s*true", "requireAuthentication: true"),
                           (r"unauthenticatedClientAction:\s*'RedirectToLoginPage'", "RedirectToLoginPage"),
                           (r"clientSecretSettingName:\s*'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'",
                            "the managed identity as the client credential (no secret)")):
        if not re.search(required, body):
            problems.append(Problem("sign-in-incomplete", what, f"authsettingsV2 must set {what}"))
    excluded_text = re.search(r"excludedPaths:\s*\[(.*?)\]", body, re.S)
    excluded = re.findall(r"'([^']*)'", excluded_text.group(1)) if excluded_text else []
    machine, operator = machine_paths(repo)
    for path in machine:
        if not any(fnmatchcase(path.lower(), e.lower()) for e in excluded):
            problems.append(Problem("sign-in-blocks-machine-path", path,
                                    f"a key-protected path is not in excludedPaths ({', '.join(excluded) or 'none'}): "
                                    "Easy Auth would turn its callers away before their function key is read"))
    for path in operator:
        for concrete in {path, path.replace("*", "x")}:
            hit = [e for e in excluded if fnmatchcase(concrete.lower(), e.lower())]
            if hit:
                problems.append(Problem("sign-in-exposes-operator-path", path,
                                        f"excludedPaths {hit} leaves an operator route without sign-in"))
                break
    return problems
