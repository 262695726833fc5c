"""The Authenticode digest of a PE image, exactly as UEFI firmware measures it into PCR 4.

Follows edk2's MeasurePeImageAndExtend (SecurityPkg/Tcg/Tcg2Dxe/MeasureBootPeCoff.c),
which OVMF runs for every image started from a boot option or through LoadImage:

1. the headers from the start of the file up to the CheckSum field;
2. from after CheckSum up to the certificate-table directory entry, then from after that
   entry up to SizeOfHeaders (without such an entry: from after CheckSum to SizeOfHeaders);
3. every section with SizeOfRawData != 0, ordered by PointerToRawData (a stable sort,
   like edk2's insertion sort), SizeOfRawData bytes each;
4. with SUM = SizeOfHeaders + the sum of those SizeOfRawData: if the file is longer than
   SUM, the bytes from offset SUM up to (file size - certificate table size).

Step 4 counts bytes rather than following offsets: on files with gaps between headers
and sections, or between sections, edk2 hashes different bytes than tools that hash
"everything after the last section" (pefile, sbsign, lief can differ). We match the
firmware, since the firmware writes the PCR.
"""

from __future__ import annotations

import hashlib

from ..errors import FormatError
from ..tpm.pcr import SHA256, HashAlgorithm
from .pe import PeFile, parse_pe


def authenticode_digest(data: bytes, alg: HashAlgorithm = SHA256) -> bytes:
    """The ``alg`` Authenticode digest of the PE image ``data`` (see module docstring)."""
    return authenticode_digest_of(parse_pe(data), data, alg)


def authenticode_digest_of(pe: PeFile, data: bytes, alg: HashAlgorithm = SHA256) -> bytes:
    """As :func:`authenticode_digest`, for an image already parsed into ``pe``."""
    view = memoryview(data)
    h = hashlib.new(alg.name)
    h.update(view[: pe.checksum_offset])
    after_checksum = pe.checksum_offset + 4
    if pe.cert_dir_entry_offset is None:
        h.update(view[after_checksum : pe.size_of_headers])
    else:
        after_cert_entry = pe.cert_dir_entry_offset + 8
        if after_cert_entry > pe.size_of_headers:
            raise FormatError("PE image: SizeOfHeaders ends inside the data directories")
        h.update(view[after_checksum : pe.cert_dir_entry_offset])
        h.update(view[after_cert_entry : pe.size_of_headers])

    hashed = pe.size_of_headers
    for section in sorted(pe.sections, key=lambda s: s.raw_offset):
        if section.raw_size == 0:
            continue
        h.update(view[section.raw_offset : section.raw_offset + section.raw_size])
        hashed += section.raw_size

    if len(data) > hashed:
        cert = pe.cert_table
        cert_size = cert.size if cert is not None else 0
        if len(data) < hashed + cert_size:
            # edk2 refuses to measure such an image (EFI_UNSUPPORTED).
            raise FormatError(
                "PE image: sections and certificate table add up to more than the file"
            )
        h.update(view[hashed : len(data) - cert_size])
    return h.digest()
