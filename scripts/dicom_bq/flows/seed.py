"""A synthetic DICOM instance for verification: obviously fake, fresh UIDs, no patient data."""

from __future__ import annotations

import datetime
import io
import secrets
from dataclasses import dataclass

SYNTHETIC_PATIENT_NAME = "SYNTHETIC^DICOMBQ^VERIFICATION"


@dataclass(frozen=True)
class SyntheticInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    data: bytes

    @property
    def filter_line(self) -> str:
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


def synthetic_instance() -> SyntheticInstance:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now(datetime.UTC)
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = SYNTHETIC_PATIENT_NAME
    dataset.PatientID = f"DICOMBQ-VERIFY-{secrets.token_hex(4).upper()}"
    dataset.PatientIdentityRemoved = "YES"
    dataset.StudyDate = now.strftime("%Y%m%d")
    dataset.StudyTime = now.strftime("%H%M%S")
    dataset.StudyDescription = "dicom-bq verification (synthetic, no patient data)"
    dataset.Modality = "OT"
    dataset.ConversionType = "WSD"
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = 8
    dataset.Columns = 8
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = bytes(range(64))
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return SyntheticInstance(
        study_uid=str(dataset.StudyInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID),
        sop_uid=str(sop_uid),
        patient_id=str(dataset.PatientID),
        data=buffer.getvalue(),
    )
