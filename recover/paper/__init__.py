"""The paper's experiments, as an application of mapflow.

* ``methods``: the compared methods, their grids and the starts they can
  take, as data; grid growth; the fairness check.
* ``protocol``: the validation/test split, and each experiment's protocol.
* ``cells``: one experiment cell (tune on validation, run on test) and the
  tasks (denoising, digit noise, sub-pixel, 1-bit CS).
* ``tables``: results.csv and selection.csv, summaries.
* ``figures``: the per-cell figures.
"""
