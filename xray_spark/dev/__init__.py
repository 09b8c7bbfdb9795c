"""Tools for demos and tests, not the product path: a synthetic NIH archive and a local standalone cluster."""
