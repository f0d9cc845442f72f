"""COCO detection metrics (``bbox``, ``segm``) with pycocotools' exact numbers, in phases.

- ``params``: ``Params``, what is measured (IoU and recall thresholds, max detections, area
  ranges, category-agnostic matching, image and category subsets);
- ``json_input``: reading the JSON files and describing bad entries in messages;
- ``rle``: segmentations to compressed RLE, and checks that RLE counts describe the image;
- ``ground_truth`` / ``results``: the two inputs parsed into arrays, bad entries skipped with
  a warning that names them;
- ``match``: the greedy matching of every (image, category) group at once;
- ``accumulate``: precision/recall arrays and the 12 summary numbers;
- ``metrics`` / ``evaluator`` / ``reference``: ``COCOMetrics``, ``COCOEvaluator`` and the same
  evaluation by pycocotools itself.

``detseg.eval.coco_map`` re-exports the public names; import them from there.
"""
