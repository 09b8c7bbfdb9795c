"""Every client session of the SQL server parses SQL through the read-only check.

Spark builds each new session's parser from the ``SparkSessionExtensions`` object that all
sessions of a ``SparkSession`` share (``newSession()`` passes it on). The server injects a
parser builder there before it starts the Thrift server, so each JDBC/ODBC session's
parser is a proxy (a Python object behind py4j) that asks Spark's own parser for the plan
and lets it through only if :func:`xray_spark.readonly.check_plan` accepts it. A refused
statement is replaced by a query that fails with the refusal as its message, so the
client sees one line that starts with ``refused:`` and nothing runs. The session the
server itself uses to register tables was built before the injection and keeps Spark's
plain parser. If the check itself fails (a py4j error), the statement fails: it is
never let through unchecked.

Settings a client sends in its connection handshake (``jdbc:hive2://...;?key=value``,
``set:hiveconf:``, ``set:hivevar:``) reach the session's conf without any statement: the
Thrift server sets them directly. So before each statement the parser compares the
session's settings with those of a fresh session and refuses every statement of a session
that holds anything but a session setting of :data:`xray_spark.readonly.SESSION_SETTINGS`
(``use:database`` in the handshake runs a ``USE`` through this parser too).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pyspark.sql import SparkSession

from xray_spark.errors import UsageError
from xray_spark.readonly import SQL_SESSION_CONF, check_plan, session_setting

#: What Spark's Thrift server sets itself in every session it opens, and what JDBC clients send
#: (Hive's JDBC driver, beeline with it, sends its fetch size in every handshake).
THRIFT_SESSION_SETTINGS = frozenset(
    {"spark.sql.datetime.java8API.enabled", "hive.server2.thrift.resultset.default.fetch.size"}
)


def _settings(jsession: Any) -> dict[str, str]:
    confs = jsession.sessionState().conf().getAllConfs()
    out: dict[str, str] = {}
    iterator = confs.iterator()
    while iterator.hasNext():
        pair = iterator.next()
        out[str(pair._1())] = str(pair._2())
    return out


def foreign_settings(current: dict[str, str], baseline: dict[str, str]) -> list[str]:
    """Keys of ``current`` that differ from ``baseline`` and are not settings a client may choose
    (a key of :data:`SQL_SESSION_CONF` counts unless it holds its locked value)."""
    changed = {
        key
        for key, value in current.items()
        if value != baseline.get(key) and key not in THRIFT_SESSION_SETTINGS and not session_setting(key)
    }
    changed |= {key for key, value in SQL_SESSION_CONF.items() if current.get(key, value) != value}
    return sorted(changed)


def refusal_sql(message: str) -> str:
    """A statement whose only effect is to fail with ``message``, folded on the driver before any task runs."""
    text = message.replace("\\", "/").replace("'", "")
    return f"SELECT raise_error('{text}') AS refused FROM VALUES (1)"


class CheckingParser:
    """A py4j proxy of Spark's ``ParserInterface`` that refuses anything but read-only statements."""

    def __init__(self, delegate: Any, session: Any, baseline: dict[str, str]) -> None:
        self._delegate = delegate
        self._session = session
        self._baseline = baseline

    def parsePlan(self, sql: str) -> Any:
        foreign = foreign_settings(_settings(self._session), self._baseline)
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            message = (
                f"refused: this session was opened with settings a client may not set ({shown}); the lake is "
                "read-only here: connect without them"
            )
            return self._delegate.parsePlan(refusal_sql(message))
        plan = self._delegate.parsePlan(sql)
        try:
            check_plan(plan, sql)
        except UsageError as exc:
            return self._delegate.parsePlan(refusal_sql(str(exc)))
        return plan

    def parseQuery(self, sql: str) -> Any:  # the text of a view the server created
        return self._delegate.parseQuery(sql)

    def parseExpression(self, sql: str) -> Any:
        return self._delegate.parseExpression(sql)

    def parseTableIdentifier(self, sql: str) -> Any:
        return self._delegate.parseTableIdentifier(sql)

    def parseFunctionIdentifier(self, sql: str) -> Any:
        return self._delegate.parseFunctionIdentifier(sql)

    def parseMultipartIdentifier(self, sql: str) -> Any:
        return self._delegate.parseMultipartIdentifier(sql)

    def parseTableSchema(self, sql: str) -> Any:
        return self._delegate.parseTableSchema(sql)

    def parseDataType(self, sql: str) -> Any:
        return self._delegate.parseDataType(sql)

    class Java:
        implements: ClassVar[list[str]] = ["org.apache.spark.sql.catalyst.parser.ParserInterface"]


class ParserBuilder:
    """``(SparkSession, ParserInterface) => ParserInterface``, as ``injectParser`` takes it."""

    def __init__(self, baseline: dict[str, str]) -> None:
        self._baseline = baseline

    def apply(self, session: Any, delegate: Any) -> CheckingParser:
        return CheckingParser(delegate, session, self._baseline)

    class Java:
        implements: ClassVar[list[str]] = ["scala.Function2"]


def guard_new_sessions(spark: SparkSession, server_properties: dict[str, str]) -> None:
    """Make every session created from now on by ``spark.newSession()`` read-only.

    ``server_properties`` are the server's own Hive settings, which the Thrift server copies
    into each session it opens.
    """
    from pyspark.java_gateway import ensure_callback_server_started

    ensure_callback_server_started(spark.sparkContext._gateway)
    # A fresh session, built before the injection (Spark's parser), and what the Thrift server adds.
    baseline = {**_settings(spark._jsparkSession.newSession()), **server_properties}
    spark._jsparkSession.extensions().injectParser(ParserBuilder(baseline))
