"""Drawing (``draw``) and model explanation (``explain``) images."""
