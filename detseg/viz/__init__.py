"""Drawing predictions on images (``draw``); model explanations live in ``detseg.explain``."""
