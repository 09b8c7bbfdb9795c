"""The deliver stage: the champion's results for a DICOM dataset's films, back into each film's study in the PACS."""
