"""Results back into the hospital's systems: a DICOM Structured Report per classified DICOM image, its Grad-CAM as a
Secondary Capture in the same study (both built with highdicom), and C-STORE to a PACS (pynetdicom).

The objects go back to the PACS the image came from, so they carry the source's patient and study, as DICOM
requires of objects in a study; ``--phi`` governs the files a researcher shares, not these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo import DISCLAIMER, __version__
from pneumo.errors import PneumoError
from pneumo.labels import CLASSES, SHORT_NAMES
from pneumo.predict import Prediction

__all__ = ["SentFile", "send", "write_dicom_results"]

MANUFACTURER = "pneumo (research software)"
# SNOMED CT concepts of the three classes.
_FINDINGS = {"normal": ("17621005", "Normal"), "bacterial": ("53084003", "Bacterial pneumonia"),
             "viral": ("75570004", "Viral pneumonia")}
_PRIVATE = "99PNEUMO"
# Patient and study attributes an object of the study must have (type 2: present, possibly empty).
_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                      "ReferringPhysicianName", "StudyID", "AccessionNumber")  # a private coding scheme (the "99" prefix is reserved for them) for what no standard codes


def _require(module: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise PneumoError(f"{what} need {module}: pip install 'pneumo[archive]'") from None


def write_dicom_results(prediction: Prediction, source: Path, out: Path, *, model_id: str, model_sha256: str,
                        rule: str, gradcam: np.ndarray | None = None) -> list[Path]:
    """Write the Structured Report of one classified DICOM image (and, given its Grad-CAM overlay, a Secondary
    Capture of it) into ``out``, in a new series of the source's study; returns the files written."""
    _require("highdicom", "DICOM results")
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if not prediction.classified:
        raise PneumoError(f"{prediction.source}: not classified, so there is no finding to report")
    image = pydicom.dcmread(source, stop_before_pixels=True)
    missing = [uid for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not image.get(uid)]
    if missing:
        raise PneumoError(f"{source}: no {', '.join(missing)}, so a report cannot reference it in its study")
    for keyword in _PATIENT_AND_STUDY:  # type 2 in every object of a study: present, if empty
        if keyword not in image:
            setattr(image, keyword, "")
    short = dict(zip(CLASSES, SHORT_NAMES))[prediction.label]
    code, meaning = _FINDINGS[short]
    finding = hd.sr.CodeContentItem(name=codes.DCM.Finding, value=hd.sr.CodedConcept(code, "SCT", meaning),
                                    relationship_type="CONTAINS")
    probabilities = [
        hd.sr.NumContentItem(name=hd.sr.CodedConcept(f"P-{name.upper()}", _PRIVATE, f"Probability of {name}"),
                             value=round(float(value), 6), unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                             relationship_type="CONTAINS")
        for name, value in prediction.probabilities.items()]
    texts = [
        (codes.DCM.AlgorithmName, model_id), (codes.DCM.AlgorithmVersion, f"pneumo {__version__}, model sha256 {model_sha256}"),
        (hd.sr.CodedConcept("RULE", _PRIVATE, "Decision rule"), rule),
        (hd.sr.CodedConcept("REASON", _PRIVATE, "Reason"), prediction.reason),
        (hd.sr.CodedConcept("121106", "DCM", "Comment"), DISCLAIMER),
        *[(hd.sr.CodedConcept("WARNING", _PRIVATE, "Input warning"), warning) for warning in prediction.warnings],
    ]
    source_image = hd.sr.ImageContentItem(
        name=hd.sr.CodedConcept("121112", "DCM", "Source of Measurement"),
        referenced_sop_class_uid=image.SOPClassUID, referenced_sop_instance_uid=image.SOPInstanceUID,
        relationship_type="CONTAINS")
    report = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    report.ContentSequence = [finding, *probabilities, source_image,
                              *[hd.sr.TextContentItem(name=name, value=value[:1024], relationship_type="CONTAINS")
                                for name, value in texts if value]]
    series = generate_uid()
    structured = hd.sr.ComprehensiveSR(
        evidence=[image], content=report, series_instance_uid=series, series_number=9901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER)
    structured.SeriesDescription = "pneumo classification (research use only)"
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{image.SOPInstanceUID}-sr.dcm"]
    structured.save_as(written[0])
    if gradcam is not None:
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=image, pixel_array=np.ascontiguousarray(gradcam, np.uint8), photometric_interpretation="RGB",
            bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=generate_uid(), series_number=9902,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
            patient_orientation=("L", "F"))
        capture.SeriesDescription = "pneumo Grad-CAM (research use only)"
        written.append(out / f"{image.SOPInstanceUID}-gradcam.dcm")
        capture.save_as(written[1])
    return written


@dataclass(frozen=True)
class SentFile:
    path: str
    status: int  # the C-STORE status (0 = success, 0xBxxx = stored with a warning); -1: not sent or no answer
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0 or self.status & 0xF000 == 0xB000


def send(files: list[Path], host: str, port: int, *, called_aet: str, calling_aet: str = "PNEUMO",
         timeout: float = 30) -> list[SentFile]:
    """C-STORE ``files`` (DICOM objects) to the PACS at ``host:port`` over one association; one result per file.

    Each object is offered in its own transfer syntax. A warning status (0xB000, 0xB006, 0xB007: stored, with
    coercion or elements discarded) counts as stored.
    """
    _require("pynetdicom", "Sending to a PACS")
    import pydicom
    from pynetdicom import AE

    datasets = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path)
            datasets.append((path, dataset, str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID)))
        except Exception as error:  # pydicom raises many types for non-DICOM bytes; no SOP class, no object
            datasets.append((path, f"not a DICOM object ({type(error).__name__}: {error})", "", ""))
    refused = {str(path): SentFile(str(path), -1, dataset) for path, dataset, _, _ in datasets if isinstance(dataset, str)}
    objects = [(path, dataset) for path, dataset, sop_class, _ in datasets if sop_class]
    if not objects:
        return list(refused.values())
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntax in sorted({(sop_class, syntax) for _, _, sop_class, syntax in datasets if sop_class}):
        ae.add_requested_context(sop_class, syntax)
    association = ae.associate(host, port, ae_title=called_aet)
    if not association.is_established:
        why = (f"no association with {called_aet} at {host}:{port}: nothing answers there, or it refused the calling "
               f"AE title {calling_aet} or these object types")
        return [refused.get(str(path)) or SentFile(str(path), -1, why) for path in files]
    results = []
    try:
        for path, dataset, _, _ in datasets:
            if isinstance(dataset, str):
                results.append(refused[str(path)])
                continue
            answer = association.send_c_store(dataset)
            code = int(answer.Status) if answer else -1
            if code == 0 or code & 0xF000 == 0xB000:
                results.append(SentFile(str(path), code))
            elif code < 0:
                results.append(SentFile(str(path), code, "no answer from the PACS"))
            else:
                results.append(SentFile(str(path), code, f"C-STORE status 0x{code:04X}"))
    finally:
        association.release()
    return results
