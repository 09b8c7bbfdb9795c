"""The result objects for one film: a Comprehensive SR (TID 1500) and, optionally, a Secondary Capture.

Both are built with highdicom from the film's *source file* (read at delivery, outside the
lake): the patient and study modules are copied from it, the results from the lake. The SR
holds, per finding of the model, a measurement group (TID 1501) with the calibrated
probability (unit 1) and whether it is called at the model's operating point (Present or
Absent), coded as :mod:`.codes` says, with the algorithm identified (TID 4019: name,
version = model version and package version, the threshold rule and the finding's
threshold as its parameters) and, for a finding with a heatmap, the heatmap's hot box as an outline (a polyline
SCOORD) on the source image. The SC is
the film as prepare displays it, the heatmap and box of its riskiest *called* finding blended
in with the colour scale's meaning beside them, and a banner that says it is an AI result,
burnt into the pixels. A finding that is not called is never drawn: a film with no call gets
an SC that says "no finding called" with no heatmap (or none, ``deliver.sc_without_call``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from xray_spark.deliver.codes import (
    ABSENT,
    LOCAL_SCHEME,
    NO_UNITS,
    OUTLINE,
    PRESENT,
    PROBABILITY,
    PROCEDURE,
    finding_code,
)
from xray_spark.uids import result_uid

SR, SC = "sr", "sc"
#: Series numbers of the result series (a viewer lists them after the film's own).
SERIES_NUMBERS = {SR: 9901, SC: 9902}
MANUFACTURER = "xray-spark"
BANNER = "AI RESULT - xray-spark - not a diagnosis"
#: A smaller film is enlarged for its Secondary Capture, so that the banner stays legible beside it.
MIN_SIDE = 512


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the results say about the model that made them."""

    version: str
    kind: str
    labels: tuple[str, ...]
    thresholds: dict[str, float | None]
    threshold_rule: str
    package_version: str


@dataclasses.dataclass(frozen=True)
class Region:
    """A finding's heatmap: its hot box in source pixels, and the map (PNG over the film's padded square)."""

    finding: str
    probability: float
    box: tuple[float, float, float, float]  # x, y, w, h
    heatmap_png: bytes


@dataclasses.dataclass(frozen=True)
class FilmResult:
    """A film's results as ``xray.predictions`` and ``xray.heatmaps`` hold them."""

    image_id: str
    probabilities: dict[str, float]
    called: frozenset[str]
    regions: tuple[Region, ...]
    risk_finding: str | None


def object_uids(root: str, sop_uid: str, study_uid: str, version: str, kind: str) -> tuple[str, str]:
    """(series UID, instance UID) of a film's result object of ``kind``: the same on every resend."""
    return result_uid(root, study_uid, version, kind, "series"), result_uid(root, sop_uid, version, kind)


def _algorithm(model: ModelFacts, finding: str | None = None):
    """TID 4019: the model's name and version, the threshold rule and, for one finding, its threshold."""
    import highdicom as hd

    parameters = [f"threshold rule: {model.threshold_rule}"]
    if finding is not None:
        threshold = model.thresholds.get(finding)
        parameters.append(f"threshold {threshold:.6g}" if threshold is not None else "not calibrated: never called")
    version = f"{model.version} (xray-spark {model.package_version})"
    name = f"xray-spark {model.kind}"[:64]
    return hd.sr.AlgorithmIdentification(name=name, version=version[:64], parameters=parameters)


def _device_context(model: ModelFacts, root: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=result_uid(root, "device", model.version),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=model.kind[:64],
    )
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    return hd.sr.ObservationContext(observer_device_context=observer)


def _finding_groups(source, film: FilmResult, model: ModelFacts, root: str) -> list:
    """One TID 1501 group per finding: its probability, whether it is called and, where it has a heatmap, the hot
    region's outline on the film (row 10c: a SCOORD the region's source image is selected from).

    The region sits in its finding's group rather than in a TID 1410 group of its own: a report that mixes 1501 and
    1410 groups is read by pixelmed's validator as all-1410 when it holds exactly one region, and fails there."""
    import highdicom as hd

    image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
    regions = {region.finding: region for region in film.regions}
    groups = []
    for finding in model.labels:
        code = finding_code(finding)
        probability = hd.sr.Measurement(name=PROBABILITY, value=float(film.probabilities[finding]), unit=NO_UNITS)
        called = hd.sr.QualitativeEvaluation(name=code, value=PRESENT if finding in film.called else ABSENT)
        tracking = hd.sr.TrackingIdentifier(
            uid=result_uid(root, film.image_id, model.version, "finding", finding), identifier=finding
        )
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_type=code,
            algorithm_id=_algorithm(model, finding),
            measurements=[probability],
            qualitative_evaluations=[called],
            source_images=[image],
        )
        if finding in regions:
            group[0].ContentSequence.append(_outline(source, regions[finding]))
        groups.append(group)
    return groups


def _outline(source, region: Region):
    """The region's hot box as a closed polyline on the source film, named :data:`OUTLINE`."""
    import highdicom as hd

    x, y, w, h = region.box
    corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]], dtype=float)
    outline = hd.sr.ScoordContentItem(
        name=OUTLINE,
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=corners,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    outline.ContentSequence = [hd.sr.SourceImageForRegion.from_source_image(source)]
    return outline


#: The patient and study attributes a result object copies, which DICOM requires present (Type 2) even when empty.
COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def with_empty_type2(source):
    """The source dataset with every :data:`COPIED_TYPE2` attribute it lacks present and empty (in place)."""
    for keyword in COPIED_TYPE2:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def build_sr(source, film: FilmResult, model: ModelFacts, root: str):
    """The film's Comprehensive SR (TID 1500 Measurement Report), in the film's study, in a series of its own."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    with_empty_type2(source)
    report = hd.sr.MeasurementReport(
        observation_context=_device_context(model, root),
        procedure_reported=PROCEDURE,
        imaging_measurements=_finding_groups(source, film, model, root),
        title=codes.DCM.ImagingMeasurementReport,
    )
    series_uid, uid = object_uids(root, film.image_id, str(source.StudyInstanceUID), model.version, SR)
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS[SR],
        sop_instance_uid=uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"AI results: xray-spark {model.version}"[:64],
    )
    if any(finding_code(f).scheme_designator == LOCAL_SCHEME for f in model.labels):
        sr.CodingSchemeIdentificationSequence = [local_scheme()]
    return sr


def local_scheme():
    """The Coding Scheme Identification item that tells a receiver what :data:`LOCAL_SCHEME` is."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "xray-spark local codes for findings without a standard code"
    item.CodingSchemeResponsibleOrganization = "xray-spark"
    return item


def build_sc(source, display: np.ndarray, film: FilmResult, model: ModelFacts, root: str, max_side: int):
    """The film with its riskiest called finding's heatmap (if any) and the AI-result banner burnt in, as an SC."""
    import highdicom as hd

    with_empty_type2(source)
    picture = burn_in(display, film, model, max_side)
    series_uid, uid = object_uids(root, film.image_id, str(source.StudyInstanceUID), model.version, SC)
    shown = shown_region(film)
    orientation = tuple(source.get("PatientOrientation") or ()) or ("L", "F")
    sc = hd.sc.SCImage.from_ref_dataset(
        source,
        picture,
        "RGB",
        8,
        "PATIENT",
        series_uid,
        SERIES_NUMBERS[SC],
        uid,
        1,
        MANUFACTURER,
        patient_orientation=orientation[:2],
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=f"AI heatmap: xray-spark {model.version}"[:64],
    )
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = DicomSequence([reference])  # the film it was made from
    sc.DerivationDescription = (
        f"film with the heatmap of the called finding {shown.finding} blended in"
        if shown
        else "film without heatmap: " + caption(film)
    )[:1024]
    sc.BurnedInAnnotation = "YES"
    # the film's body part, so a reader (and dciodvfy) knows the SC shows an unpaired part and needs no Laterality
    sc.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")[:16]
    sc.ImageComments = f"{BANNER}: {caption(film)}"[:10240]
    return sc


def shown_region(film: FilmResult) -> Region | None:
    """The heatmap the SC shows (:func:`xray_spark.pictures.heatmap_to_show`): None when nothing called has one."""
    from xray_spark.pictures import heatmap_to_show

    called = {f: film.probabilities.get(f, 0.0) for f in film.called}
    regions = {r.finding: r for r in film.regions}
    shown = heatmap_to_show(called, film.risk_finding, regions)
    return regions[shown] if shown else None


def caption(film: FilmResult) -> str:
    """The banner's second line: the finding whose heatmap is shown (or why none is), and what else is called."""
    if not film.probabilities:
        return "no finding scored"
    if not film.called:
        return "no finding called"
    shown = shown_region(film)
    first = shown.finding if shown else max(film.called, key=lambda f: film.probabilities.get(f, 0.0))
    others = sorted(film.called - {first}, key=lambda f: -film.probabilities.get(f, 0.0))
    text = f"{first} p={film.probabilities.get(first, 0.0):.2f} called" + ("" if shown else " (no heatmap)")
    return text + (f"; also called: {', '.join(others)}" if others else "")


def _heat_over_film(region: Region, height: int, width: int) -> np.ndarray:
    """The region's heatmap (0..1) at ``height`` x ``width``: the map covers the film padded to a square."""
    import cv2

    heat = cv2.imdecode(np.frombuffer(region.heatmap_png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    side = max(height, width)
    square = cv2.resize(heat, (side, side), interpolation=cv2.INTER_LINEAR)
    top, left = (side - height) // 2, (side - width) // 2
    return square[top : top + height, left : left + width]


def burn_in(display: np.ndarray, film: FilmResult, model: ModelFacts, max_side: int) -> np.ndarray:
    """RGB uint8: the film (``MIN_SIDE`` to ``max_side`` px), the heatmap blended where hot, its box, the banner."""
    import cv2

    height, width = display.shape[:2]
    scale = min(max_side, max(MIN_SIDE, height, width)) / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    gray = cv2.resize(display, size, interpolation=shrink) if scale != 1 else display
    rgb = np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32)
    region = shown_region(film)
    if region is not None:
        heat = _heat_over_film(region, gray.shape[0], gray.shape[1])
        colour = cv2.applyColorMap(np.uint8(np.clip(heat * 255, 0, 255)), cv2.COLORMAP_JET)[:, :, ::-1]
        alpha = (0.5 * (heat >= SHOWN_FROM))[:, :, None]
        rgb = rgb * (1 - alpha) + colour.astype(np.float32) * alpha
        x, y, w, h = (v * scale for v in region.box)
        cv2.rectangle(rgb, (int(x), int(y)), (int(x + w), int(y + h)), (255, 255, 0), max(1, gray.shape[1] // 256))
    picture = np.clip(rgb, 0, 255).astype(np.uint8)
    lines = [BANNER, caption(film) + f", model {model.version}"]
    if region is not None:
        lines.append(f"colour: where the model looked for {region.finding}")
    _banner(picture, lines)
    if region is not None:
        _colour_scale(picture, lines[-1], len(lines))
    return np.ascontiguousarray(picture)


#: The heatmap's colour scale as the SC's banner explains it: blended only where the map is at least this hot.
SHOWN_FROM = 0.2


def _colour_scale(picture: np.ndarray, line: str, n_lines: int) -> None:
    """The colour bar after the banner's last line (``line``), from the least to the most attention shown."""
    import cv2

    font, white = cv2.FONT_HERSHEY_SIMPLEX, (255, 255, 255)
    width = picture.shape[1]
    font_scale, line_height = _banner_metrics(width)
    baseline = line_height * n_lines
    low, high = (cv2.getTextSize(w, font, font_scale, 1)[0][0] for w in ("low", "high"))
    start = 6 + cv2.getTextSize(line, font, font_scale, 1)[0][0] + 8
    bar_w = min(max(24, width // 5), width - start - low - high - 24)
    if bar_w < 16:
        return  # too narrow a picture for a legible scale: the line's words stand alone
    cv2.putText(picture, "low", (start, baseline), font, font_scale, white, 1, cv2.LINE_AA)
    bx = start + low + 6
    ramp = np.uint8(np.linspace(SHOWN_FROM, 1.0, bar_w) * 255)[None, :]
    colours = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[0, :, ::-1]
    picture[baseline - line_height + 8 : baseline, bx : bx + bar_w] = colours[None, :, :]
    cv2.putText(picture, "high", (bx + bar_w + 6, baseline), font, font_scale, white, 1, cv2.LINE_AA)


def _banner(picture: np.ndarray, lines: Sequence[str]) -> None:
    """White text on a black band across the top of ``picture`` (in place)."""
    import cv2

    font_scale, line_height = _banner_metrics(picture.shape[1])
    picture[: banner_height(picture.shape[1], len(lines))] = 0
    for i, text in enumerate(lines):
        origin = (6, line_height * (i + 1))
        cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)


def _banner_metrics(width: int) -> tuple[float, int]:
    """The banner's font scale and line height for a picture ``width`` px wide."""
    font_scale = max(0.3, width / 1400)
    return font_scale, int(30 * font_scale) + 6


def banner_height(width: int, n_lines: int) -> int:
    """The rows the banner covers on a picture ``width`` px wide with ``n_lines`` lines (3 with a heatmap, else 2)."""
    return _banner_metrics(width)[1] * n_lines + 6
