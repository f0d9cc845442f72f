"""The detseg command line (typer). Installed as ``detseg.cli``; the library never imports it."""
