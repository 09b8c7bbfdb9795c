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
"""

from __future__ import annotations

from typing import Any, ClassVar

from pyspark.sql import SparkSession

from xray_spark.errors import UsageError
from xray_spark.readonly import check_plan


def refusal_sql(message: str) -> str:
    """A statement whose only effect is to fail with ``message``, folded on the driver before any task runs."""
    text = message.replace("\\", "/").replace("'", "")
    return f"SELECT raise_error('{text}') AS refused FROM VALUES (1)"


class CheckingParser:
    """A py4j proxy of Spark's ``ParserInterface`` that refuses anything but read-only statements."""

    def __init__(self, delegate: Any) -> None:
        self._delegate = delegate

    def parsePlan(self, sql: str) -> Any:
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

    def apply(self, _session: Any, delegate: Any) -> CheckingParser:
        return CheckingParser(delegate)

    class Java:
        implements: ClassVar[list[str]] = ["scala.Function2"]


def guard_new_sessions(spark: SparkSession) -> None:
    """Make every session created from now on by ``spark.newSession()`` read-only."""
    from pyspark.java_gateway import ensure_callback_server_started

    ensure_callback_server_started(spark.sparkContext._gateway)
    spark._jsparkSession.extensions().injectParser(ParserBuilder())
