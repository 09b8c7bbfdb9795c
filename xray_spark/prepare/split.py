"""Patient-level splits: every image of a patient lands in the same split.

Splitting by image lets the same patient's follow-up films sit in both train and test,
and test AUROC is then inflated. Here a patient's split is a pure function of a hash of
(``split.salt``, patient id): deterministic, stable as the archive grows, computed by Spark.
With the official NIH lists (``train_val_list.txt``, ``test_list.txt``) the test split is
the list's, and train/val is cut by the same patient hash inside ``train_val``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark.config import SplitSettings
from xray_spark.errors import UsageError, first_line
from xray_spark.splits import TEST, TRAIN, VAL, hash_split, patient_bucket

#: Images in neither official list (reported, kept out of train/val/test).
UNLISTED = "unlisted"


def assign_splits(df: DataFrame, settings: SplitSettings, patient_col: str = "patient_id") -> DataFrame:
    """Add a ``split`` column by patient hash."""
    return df.withColumn("split", hash_split(F.col(patient_col), settings))


def read_split_lists(spark: SparkSession, train_val_path: str, test_path: str) -> DataFrame:
    """The official lists as (image_id, listed) with ``listed`` in {train_val, test}."""
    frames = []
    for path, tag in ((train_val_path, "train_val"), (test_path, "test")):
        try:
            lines = spark.read.text(path)
        except Exception as exc:  # AnalysisException for a missing path
            raise UsageError(f"split list {path} cannot be read: {first_line(exc)}") from None
        frames.append(
            lines.select(F.trim(F.col("value")).alias("image_id"))
            .where(F.col("image_id") != "")
            .withColumn("listed", F.lit(tag))
        )
    both = frames[0].unionByName(frames[1])
    # An image in both lists counts as test: the test set must stay unseen.
    return both.groupBy("image_id").agg(F.max("listed").alias("listed"))


def assign_splits_from_lists(
    df: DataFrame, lists: DataFrame, settings: SplitSettings, patient_col: str = "patient_id"
) -> DataFrame:
    """Add ``split`` from the official lists; train/val inside ``train_val`` by patient hash."""
    inner_train = settings.train / max(settings.train + settings.val, 1e-12)
    u = patient_bucket(F.col(patient_col), settings.salt)
    joined = df.join(F.broadcast(lists), on="image_id", how="left")
    split = (
        F.when(F.col("listed") == "test", F.lit(TEST))
        .when((F.col("listed") == "train_val") & (u < F.lit(inner_train)), F.lit(TRAIN))
        .when(F.col("listed") == "train_val", F.lit(VAL))
        .otherwise(F.lit(UNLISTED))
    )
    return joined.withColumn("split", split).drop("listed")
