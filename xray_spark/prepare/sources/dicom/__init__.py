"""The DICOM source: a hospital's export read by its headers (:mod:`.headers`), films decoded as a viewer shows
them (:mod:`.pixels`, with the JPEG codecs of :mod:`.codecs`), labels from a CSV (:mod:`.labels`), the steps in
:mod:`.source`."""
