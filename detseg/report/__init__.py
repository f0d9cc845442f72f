"""``detseg eval --report``: one self-contained HTML page of an evaluation.

- ``build``: ``detection_report`` / ``semantic_report`` / ``model_report`` write
  ``report.html`` (and ``errors.json``) into a run folder;
- ``detection`` / ``galleries`` / ``semantic``: the sections; ``semantic_images``: per-image
  pixel metrics recorded during a model run;
- ``page``, ``html``, ``style``, ``script``: page assembly, HTML helpers, inline CSS and JS;
- ``pictures``: images read by id, drawing, crops and JPEG ``data:`` URIs of bounded size.
"""
