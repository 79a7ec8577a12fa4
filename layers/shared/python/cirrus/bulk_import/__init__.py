"""Bulk import: ``cirrus import`` from a folder, a ZIP, a DICOMweb server or a DICOM peer.

Every instance goes through the write path of C-STORE and STOW-RS (``cirrus.archive``), so it is
stored and indexed as a received one, or rejected with the reason.
"""
