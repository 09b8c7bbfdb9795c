"""A patient's split as a pure function of a hash of (``split.salt``, patient id): the same in every job.

Prepare splits the labelled films with it, and training splits the films readers' verdicts
label the same way, so a patient never sits in two splits whatever labelled their films.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from xray_spark.config import SplitSettings

TRAIN, VAL, TEST = "train", "val", "test"
#: Films without labels (a hospital's DICOM archive): never trained or evaluated on, always scored.
UNLABELED = "unlabeled"
_BUCKETS = 1_000_000


def patient_bucket(patient_id: Column, salt: str) -> Column:
    """A uniform number in [0, 1) from the patient id alone."""
    digest = F.xxhash64(F.lit(salt), patient_id.cast("long"))
    return F.pmod(digest, F.lit(_BUCKETS)) / F.lit(float(_BUCKETS))


def hash_split(patient_id: Column, settings: SplitSettings) -> Column:
    """``train`` / ``val`` / ``test`` by patient hash and the configured fractions."""
    u = patient_bucket(patient_id, settings.salt)
    return (
        F.when(u < F.lit(settings.train), F.lit(TRAIN))
        .when(u < F.lit(settings.train + settings.val), F.lit(VAL))
        .otherwise(F.lit(TEST))
    )
