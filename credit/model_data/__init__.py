"""The trained default credit model (``model.json``, ``meta.json``); a package so it ships."""
