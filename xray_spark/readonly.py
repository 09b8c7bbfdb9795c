"""Read-only SQL: whoever can query the lake cannot change it.

A statement is allowed only when Spark's own parser turns it into a plan made entirely of
read-only nodes: a query (SELECT, WITH, VALUES, TABLE, set operations, joins, windows,
sampling ...) or a metadata statement (SHOW, DESCRIBE, EXPLAIN of a query). The decision
is taken on the parsed plan, never on the text, so comments, casing, a ``WITH`` in front
of an ``INSERT`` or a ``FROM t INSERT ...`` change nothing. It is an allow-list: a node
this module does not know (a new Spark statement) is refused, not guessed at.

Also refused inside an otherwise read-only query: ``TRANSFORM ... USING 'cmd'`` (runs a
program) and the functions that call arbitrary Java methods (``reflect``,
``java_method``, ``try_reflect``).

Session statements that change nothing outside the session are allowed too: ``USE``,
``SET`` without a value (it shows settings), ``RESET``, and ``SET key=value`` for the
session settings in :data:`SESSION_SETTINGS` (time zone, ANSI mode, shuffle and join
tuning); any other ``SET`` (a catalog plugin, a Hive or Hadoop setting, a static setting)
is refused. The same check guards ``jobs/sql.py`` and every session of the SQL server
(:mod:`xray_spark.server`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from xray_spark.errors import UsageError

#: Logical plan nodes of a query, by their class's simple name.
QUERY_NODES = frozenset(
    {
        "Aggregate",
        "CTERelationDef",
        "CTERelationRef",
        "Deduplicate",
        "Distinct",
        "Except",
        "Expand",
        "Filter",
        "Generate",
        "GlobalLimit",
        "Intersect",
        "Join",
        "LateralJoin",
        "LocalLimit",
        "LocalRelation",
        "Offset",
        "OneRowRelation",
        "Pivot",
        "Project",
        "Range",
        "Repartition",
        "RepartitionByExpression",
        "Sample",
        "Sort",
        "SubqueryAlias",
        "Tail",
        "Union",
        "Unpivot",
        "UnresolvedHaving",
        "UnresolvedHint",
        "UnresolvedInlineTable",
        "UnresolvedRelation",
        "UnresolvedSubqueryColumnAliases",
        "UnresolvedTableValuedFunction",
        "UnresolvedWith",
        "Window",
        "WithCTE",
        "WithWindowDefinition",
    }
)
#: Statements that only read the catalog, and the name nodes they hold.
METADATA_NODES = frozenset(
    {
        "DescribeColumn",
        "DescribeFunction",
        "DescribeNamespace",
        "DescribeRelation",
        "ShowColumns",
        "ShowCreateTable",
        "ShowFunctions",
        "ShowNamespaces",
        "ShowPartitions",
        "ShowTableExtended",
        "ShowTableProperties",
        "ShowTables",
        "ShowViews",
        "UnresolvedFunctionName",
        "UnresolvedNamespace",
        "UnresolvedPartitionSpec",
        "UnresolvedTable",
        "UnresolvedTableOrView",
        # session statements
        "ResetCommand",
        "SetCatalogAndNamespace",
        "SetNamespaceCommand",
        "ShowCurrentNamespaceCommand",
    }
)
#: ``SET key=value`` is allowed for these keys (and keys under a prefix ending in ``.``) only.
SESSION_SETTINGS = (
    "spark.sql.session.timeZone",
    "spark.sql.ansi.enabled",
    "spark.sql.shuffle.partitions",
    "spark.sql.autoBroadcastJoinThreshold",
    "spark.sql.adaptive.",
    "spark.sql.caseSensitive",
    "spark.sql.files.maxPartitionBytes",
    "spark.sql.thriftServer.incrementalCollect",
)
#: Settings of every session that runs a client's SQL (jobs/sql.py, the server's sessions):
#: no relation named by a file path, no ``${...}`` substitution. Neither is a session setting.
SQL_SESSION_CONF = {"spark.sql.runSQLOnFiles": "false", "spark.sql.variable.substitute": "false"}
#: Namespaces a relation name may be qualified with (the catalog's ``spark_catalog.`` in front is allowed).
READABLE_NAMESPACES = frozenset({"xray", "default", "global_temp"})
#: Plan nodes that name a relation by its parts (``multipartIdentifier``).
RELATION_NODES = frozenset({"UnresolvedRelation", "UnresolvedTable", "UnresolvedTableOrView", "UnresolvedView"})
#: Statements that wrap a query plan without running it: the wrapped plan is checked as a query.
WRAPPERS = {"ExplainCommand": "logicalPlan", "DescribeQueryCommand": "plan"}
#: Functions that call any static Java method, by lower-case name.
DENIED_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect"})


def _simple_name(node: Any) -> str:
    return str(node.getClass().getSimpleName()).rstrip("$")


def _seq(scala_seq: Any) -> list[Any]:
    out = []
    iterator = scala_seq.iterator()
    while iterator.hasNext():
        out.append(iterator.next())
    return out


def _refuse(query: str, what: str) -> UsageError:
    shown = " ".join(query.split())
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return UsageError(
        f"refused: {what}; the lake is read-only here (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, USE, SET of a "
        f"session setting): {shown}"
    )


def session_setting(key: str) -> bool:
    """Whether ``SET key=value`` may run: a key of :data:`SESSION_SETTINGS`."""
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SESSION_SETTINGS)


def _check_set(plan: Any, query: str) -> None:
    kv = plan.kv()
    if kv.isEmpty():  # SET, SET -v: show
        return
    pair = kv.get()
    key, value = str(pair._1()), pair._2()
    if value.isDefined() and not session_setting(key):
        raise _refuse(query, f"SET {key} changes more than this session's query settings")


def check_relation_name(parts: list[str], query: str) -> None:
    """Refuse a relation that is not a table or view of the catalog: a file read by path, another catalog."""
    namespace = [p.lower() for p in parts[:-1]]
    if namespace[:1] == ["spark_catalog"]:
        namespace = namespace[1:]
    shown = ".".join(f"`{p}`" if not p.isidentifier() else p for p in parts)
    if (
        any("/" in p or ":" in p or "\\" in p for p in parts)
        or len(namespace) > 1
        or (namespace and namespace[0] not in READABLE_NAMESPACES)
    ):
        raise _refuse(query, f"{shown} is not a table or view of the lake (xray.*)")


def _check_expressions(node: Any, query: str) -> None:
    stack = _seq(node.expressions())
    while stack:
        expression = stack.pop()
        if _simple_name(expression) == "UnresolvedFunction":
            name = str(_seq(expression.nameParts())[-1]).lower()
            if name in DENIED_FUNCTIONS:
                raise _refuse(query, f"the function {name}() calls Java methods")
        stack.extend(_seq(expression.children()))


def _check_plan(plan: Any, query: str, allowed: frozenset[str]) -> None:
    stack = [plan]
    while stack:
        node = stack.pop()
        name = _simple_name(node)
        if name in WRAPPERS:
            _check_plan(getattr(node, WRAPPERS[name])(), query, QUERY_NODES)
            continue
        if name not in allowed:
            raise _refuse(query, f"{name} is not a read-only statement")
        if name in RELATION_NODES:
            check_relation_name([str(p) for p in _seq(node.multipartIdentifier())], query)
        _check_expressions(node, query)
        stack.extend(_seq(node.children()))
        stack.extend(_seq(node.innerChildren()))  # CTE definitions
        stack.extend(_seq(node.subqueries()))  # IN (SELECT ...), EXISTS, scalar subqueries


def check_plan(plan: Any, query: str) -> None:
    """Raise a one-line :class:`UsageError` unless the parsed ``plan`` of ``query`` is read-only."""
    top = _simple_name(plan)
    if top == "SetCommand":
        _check_set(plan, query)
        return
    allowed = METADATA_NODES if top in METADATA_NODES else QUERY_NODES
    _check_plan(plan, query, allowed)


@contextlib.contextmanager
def client_session(spark: Any) -> Iterator[None]:
    """Run a client's SQL on ``spark`` with :data:`SQL_SESSION_CONF` for the block (restored after it)."""
    from xray_spark.session import temporary_conf

    with contextlib.ExitStack() as stack:
        for key, value in SQL_SESSION_CONF.items():
            stack.enter_context(temporary_conf(spark, key, value))
        yield


def check_read_only(spark: Any, query: str) -> None:
    """Raise a one-line :class:`UsageError` unless ``query`` parses into a read-only plan."""
    parser = spark._jsparkSession.sessionState().sqlParser()
    try:
        plan = parser.parsePlan(query)
    except Exception as exc:  # ParseException, through py4j
        java = getattr(exc, "java_exception", None)
        text = str(java.getMessage()) if java is not None else str(exc)
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise UsageError(f"query failed: {first}") from None
    check_plan(plan, query)


def query_text(spark: Any, query: str, *, fmt: str = "table", limit: int = 1000) -> str:
    """A read-only query's result as a table, CSV or JSON lines (at most ``limit`` rows).

    Anything but a query or a SHOW/DESCRIBE/EXPLAIN is refused before Spark runs it
    (:func:`xray_spark.readonly.check_read_only`).
    """
    from xray_spark.errors import UsageError, first_line

    with client_session(spark):
        check_read_only(spark, query)
        try:
            df = spark.sql(query)
            rows = df.limit(limit).collect()
        except Exception as exc:  # AnalysisException / ParseException: the query is wrong
            raise UsageError(f"query failed: {first_line(exc)}") from None
    return rows_text(df.columns, [r.asDict(recursive=True) for r in rows], fmt)


def rows_text(names: list[str], rows: list[dict], fmt: str) -> str:
    """Rows (dicts by column name) as ``sql`` prints them: a table, CSV or JSON lines."""
    import csv
    import io
    import json

    from xray_spark.report import format_table

    if fmt == "json":
        return "\n".join(json.dumps(r, default=str) for r in rows)
    cells = [[_cell(r[n]) for n in names] for r in rows]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(cells)
        return buffer.getvalue().rstrip("\n")
    return format_table(names, cells)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if value is None:
        return ""
    return value
