"""Models from other toolkits as ONNX files: their cards, checks and runtime (:mod:`.runtime`), and their int8 copies
(:mod:`.quantize`)."""
