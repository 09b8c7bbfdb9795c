"""How a table of the lake is declared: its columns (name, SQL type, comment) and the table around them.

:mod:`xray_spark.lake.catalog` declares every table with these; nothing else builds a table's schema.
"""

from __future__ import annotations

import dataclasses
import re

from pyspark.sql import types as T

_ATOMS: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "float": T.FloatType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "binary": T.BinaryType(),
    "timestamp": T.TimestampType(),
    "date": T.DateType(),
}


def spark_type(text: str) -> T.DataType:
    """A Spark type from its SQL name (``string``, ``array<string>`` ...), without a JVM."""
    array = re.fullmatch(r"array<(.+)>", text)
    if array:
        return T.ArrayType(spark_type(array[1]))
    if text not in _ATOMS:
        raise ValueError(f"unknown column type {text!r}: one of {', '.join(_ATOMS)} or array<...>")
    return _ATOMS[text]


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str = ""
    nullable: bool = True
    #: The column's name in files written before it was renamed (:mod:`xray_spark.lake.migrate` renames them).
    formerly: str = ""

    def field(self) -> T.StructField:
        return T.StructField(self.name, spark_type(self.type), self.nullable, {"comment": self.comment})


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of the lake: ``lake/tables/<name>``, registered as ``xray.<name>``."""

    name: str
    row: str  # what one row is
    written_by: str  # the job that writes it
    columns: tuple[Column, ...]
    partitioned_by: tuple[str, ...] = ()
    #: Columns not listed because they depend on the data (a model's labels), in words.
    more_columns: str = ""
    #: What the docs add after the columns (where to read more).
    note: str = ""

    def schema(self, *, partitions: bool = True, columns: tuple[str, ...] | None = None) -> T.StructType:
        """The Spark schema of the listed columns, or of ``columns`` only, in the table's order (without the
        partition columns when ``partitions`` is False)."""
        keep = [c for c in self.columns if (partitions or c.name not in self.partitioned_by)]
        keep = [c for c in keep if columns is None or c.name in columns]
        return T.StructType([c.field() for c in keep])

    def arrow_partitioning(self):  # -> pyarrow.dataset.Partitioning | None
        """How a reader without Spark (pyarrow, the web app) reads the partition folders: the partition columns with
        their declared types (a run id of digits stays a string), or None when unpartitioned."""
        import pyarrow as pa
        import pyarrow.dataset as pads

        if not self.partitioned_by:
            return None
        arrow = {"string": pa.string(), "date": pa.date32(), "int": pa.int32(), "long": pa.int64()}
        types = {c.name: arrow[c.type] for c in self.columns if c.name in self.partitioned_by}
        return pads.partitioning(pa.schema([(c, types[c]) for c in self.partitioned_by]), flavor="hive")

    def markdown_row(self) -> str:
        """The table's line in the docs' table of tables: every column named with its comment."""
        cols = ", ".join(f"`{c.name}`" + (f" ({c.comment})" if c.comment else "") for c in self.columns)
        extra = [f"and {self.more_columns}"] if self.more_columns else []
        extra += [f"partitioned by {', '.join(f'`{p}`' for p in self.partitioned_by)}"] if self.partitioned_by else []
        extra += [self.note] if self.note else []
        text = "; ".join([cols, *extra]).replace("|", "\\|")
        return f"| `xray.{self.name}` | {self.row} | {self.written_by} | {text} |"

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def renamed(self) -> dict[str, str]:
        """{former name: name} of the columns renamed since an earlier release."""
        return {c.formerly: c.name for c in self.columns if c.formerly}

    def ddl(self, location: str, qualified: str, found: T.StructType | None = None) -> str | None:
        """``CREATE TABLE`` with every column's comment, over the Parquet at ``location``. A table whose columns
        depend on the data needs ``found``, the schema of its files (None without it): its declared columns, then
        the others found there, each with its comment in words (:func:`data_column_comment`)."""
        if self.more_columns and found is None:
            return None
        declared = [(c.name, c.type, c.comment) for c in self.columns]
        known = {c.name for c in self.columns}
        more = [
            (f.name, f.dataType.simpleString(), data_column_comment(f.name)) for f in found or () if f.name not in known
        ]
        data = [c for c in declared if c[0] not in self.partitioned_by] + more
        last = [c for c in declared if c[0] in self.partitioned_by]  # Spark keeps partition columns last
        columns = ", ".join(f"`{n}` {t.upper()} COMMENT {_quoted(text)}" for n, t, text in data + last)
        parts = f" PARTITIONED BY ({', '.join(self.partitioned_by)})" if self.partitioned_by else ""
        return (
            f"CREATE TABLE {qualified} ({columns}) USING parquet{parts} "
            f"COMMENT {_quoted('one row per ' + self.row)} LOCATION {_quoted(location)}"
        )


def data_column_comment(name: str) -> str:
    """The comment of a column named by the data: a model's calibrated probability or raw output of a finding."""
    words_of = {"p_": "the calibrated probability of {}", "raw_": "the model's output for {}, before calibration"}
    for prefix, words in words_of.items():
        if name.startswith(prefix):
            return words.format(name[len(prefix) :].replace("_", " ").capitalize())
    return "a column of the data (not in the catalog)"


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def col(name: str, type_: str, comment: str = "", nullable: bool = True, *, formerly: str = "") -> Column:
    return Column(name, type_, comment, nullable, formerly)


def required(name: str, type_: str, comment: str = "", *, formerly: str = "") -> Column:
    return Column(name, type_, comment, False, formerly)
