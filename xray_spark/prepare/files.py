"""The image files: found under the images folder, matched to metadata rows, read safely.

A local folder is walked on the driver (fast, safe against symlink loops); a URL is
listed through Hadoop's file system. A file is read only when it is a regular file no
larger than ``image.max_file_bytes``: a FIFO or a device is refused before a byte is read.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xray_spark.errors import ImageError, UsageError, first_line
from xray_spark.imaging.reasons import FILE_TOO_LARGE, NOT_A_FILE
from xray_spark.lake import local_path

#: The file names taken as images (case-insensitive); anything else is not listed.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm")
#: The same suffixes as a regular expression, for listings done by Spark.
IMAGE_NAME_PATTERN = r"(" + "|".join(re.escape(s) for s in IMAGE_SUFFIXES) + r")$"


#: A path whose bytes are not UTF-8 (Spark's strings are) travels as this prefix and its bytes in hex.
HEX_PATH = "hex:"


def path_text(path: str) -> str:
    """``path`` as a string Spark can carry: itself, or :data:`HEX_PATH` and its bytes when they are not UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # os.walk gave undecodable bytes as surrogates
        return HEX_PATH + os.fsencode(path).hex()
    return path


def real_path(text: str) -> str:
    """The file system path of a :func:`path_text` string (its exact bytes)."""
    return os.fsdecode(bytes.fromhex(text[len(HEX_PATH) :])) if text.startswith(HEX_PATH) else text


def printable(name: str) -> str:
    """A file name for people: undecodable bytes as ``\\xNN``, never replaced by U+FFFD."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def walk_local(root: str, suffixes: tuple[str, ...] | None = IMAGE_SUFFIXES) -> Iterator[tuple[str, str]]:
    """(file name, absolute path) of each file under ``root`` whose name ends in one of ``suffixes``
    (every file when None); follows links, never loops. The name is :func:`printable`, the path
    :func:`path_text` (a name whose bytes are not UTF-8 is read by its bytes, not lost)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if suffixes is None or name.lower().endswith(suffixes):
                yield printable(name), path_text(os.path.join(os.path.abspath(dirpath), name))


def list_image_files(spark: SparkSession, images_dir: str) -> DataFrame:
    """Every image file under ``images_dir`` (recursively) as (file_name, source_path).

    A local folder is walked on the driver (fast, and safe against symlink loops); a URL
    is listed through Hadoop's file system, as Spark would.
    """
    local = local_path(images_dir)
    schema = T.StructType([T.StructField("file_name", T.StringType()), T.StructField("source_path", T.StringType())])
    if local is not None:
        if not os.path.isdir(local):
            raise UsageError(f"images folder {local} does not exist or is not a folder: pass --images DIR")
        if not os.access(local, os.R_OK | os.X_OK):
            raise UsageError(f"images folder {local} cannot be read: check its permissions")
        rows = list(walk_local(local))
        return spark.createDataFrame(pd.DataFrame(rows, columns=["file_name", "source_path"]), schema)
    try:
        listing = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .load(images_dir)
            .select(F.col("path").alias("source_path"))
        )
    except Exception as exc:
        raise UsageError(f"images folder {images_dir} cannot be listed: {first_line(exc)}") from None
    name = F.element_at(F.split(F.col("source_path"), "/"), -1)
    suffix_ok = F.lower(name).rlike(IMAGE_NAME_PATTERN)
    return listing.where(suffix_ok).select(name.alias("file_name"), "source_path")


def attach_files(valid: DataFrame, files: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """Join metadata to files by name.

    Returns (rows with a file, rows without a file, files without a row, duplicate files):
    an image name found in several folders is taken from the first path in sorted order.
    """
    ranked = files.withColumn("copy", F.row_number().over(Window.partitionBy("file_name").orderBy("source_path")))
    unique_files = ranked.where(F.col("copy") == 1).drop("copy")
    duplicate_files = ranked.where(F.col("copy") > 1).drop("copy")
    with_file = valid.join(unique_files, valid["image_id"] == unique_files["file_name"], "inner").drop("file_name")
    without_file = valid.join(unique_files, valid["image_id"] == unique_files["file_name"], "left_anti")
    return with_file, without_file, unique_files, duplicate_files


def read_bytes(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, at most ``max_bytes``; anything else is an :class:`ImageError`.

    A FIFO, a device (a ``.png`` linked to ``/dev/zero``) or a socket is refused before a
    byte is read: opening is non-blocking, so a FIFO with no writer cannot hang the task.
    """
    local = local_path(path)
    if local is not None:
        fd = os.open(real_path(local), os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(NOT_A_FILE, "the path is not a regular file (a FIFO, device or socket)")
            _check_file_size(info.st_size, max_bytes)
            data = fh.read(max_bytes + 1)
    else:
        import pyarrow.fs as pafs

        fs, inner = pafs.FileSystem.from_uri(path)
        info = fs.get_file_info(inner)
        if info.type != pafs.FileType.File:
            raise ImageError(NOT_A_FILE, f"the path is not a regular file ({info.type.name})")
        _check_file_size(info.size or 0, max_bytes)
        with fs.open_input_stream(inner) as stream:
            data = stream.read(max_bytes + 1)
    _check_file_size(len(data), max_bytes)  # it grew while being read
    return data


def _check_file_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageError(FILE_TOO_LARGE, f"the file has {size:,} bytes, over image.max_file_bytes={max_bytes:,}")
