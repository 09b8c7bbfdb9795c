"""Films as pixels, for every stage that needs them: a file's bytes checked and decoded to 8-bit gray
(:mod:`.decode`), a DICOM film as its viewer shows it (:mod:`.dicom_pixels`, :mod:`.codecs`), the transfer
syntaxes decoded (:mod:`.transfer_syntaxes`), and why an input is refused (:mod:`.reasons`)."""
