"""What happens to patient identifiers on their way into answers: dropped (the default), replaced by a keyed
pseudonym, or kept.

A researcher shares result files; a DICOM's PatientID in them identifies a child. ``hash`` replaces it by an
HMAC-SHA256 pseudonym under a site secret (``PNEUMO_PHI_KEY``), so that the same patient gets the same pseudonym in
every run and file of that site, and nobody without the secret can recompute or reverse it (a plain hash of a
short ID could be found by trying every ID).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

__all__ = ["IDENTIFYING", "KEY_VARIABLE", "PHI_MODES", "Identifiers"]

PHI_MODES = ("drop", "hash", "keep")
#: DICOM attributes that identify a patient (of those pneumo reads), treated as --phi says.
IDENTIFYING = ("PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber")
KEY_VARIABLE = "PNEUMO_PHI_KEY"
MIN_KEY_CHARACTERS = 16


@dataclass(frozen=True)
class Identifiers:
    """How identifying attributes are written: ``drop`` (left out), ``hash`` (a keyed pseudonym) or ``keep``."""

    mode: str = "drop"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in PHI_MODES:
            raise ValueError(f"The 'phi' option must be one of {PHI_MODES}. Got {self.mode!r} instead.")
        if self.mode == "hash" and (self.key is None or len(self.key) < MIN_KEY_CHARACTERS):
            raise ValueError(f"--phi hash needs a site secret of at least {MIN_KEY_CHARACTERS} characters in "
                             f"${KEY_VARIABLE} (e.g. python -c 'import secrets; print(secrets.token_urlsafe())'); "
                             "keep it: the same secret gives the same pseudonyms in later runs")

    @classmethod
    def from_environment(cls, mode: str = "drop") -> "Identifiers":
        """``mode``, with the site secret from $PNEUMO_PHI_KEY when it is ``hash``."""
        secret = os.environ.get(KEY_VARIABLE)
        return cls(mode, secret.encode() if mode == "hash" and secret else None)

    def pseudonym(self, value: str) -> str:
        """The keyed pseudonym of one identifier: the same for the same value and secret, and only then."""
        return "h:" + hmac.new(self.key or b"", value.encode(), hashlib.sha256).hexdigest()[:20]

    def apply(self, fields: dict[str, str]) -> dict[str, str]:
        """``fields`` (DICOM attributes by keyword) with the identifying ones dropped, pseudonymised or kept."""
        if self.mode == "keep":
            return dict(fields)
        if self.mode == "drop":
            return {key: value for key, value in fields.items() if key not in IDENTIFYING}
        return {key: self.pseudonym(value) if key in IDENTIFYING else value for key, value in fields.items()}
