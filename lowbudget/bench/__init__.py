"""The proving ground: lowbudget measured on the phantom world, through the product's own code.

  fidelity.py       a token's recipe, its training (cached per spec), detector rates of its images
  benchmark.py      the paper in miniature: detectors, base, fidelity, sweep, downstream, diversity, methods
  compose_check.py  interpolation, combination and inpainting measured with the detectors
  downstream.py     the classifier AUC synthetic images add to scarce real ones: paired replicates, an interval
  convergence.py    the step at which a token reaches its finding, against where early stopping stops
  federated.py      four sites each alone, pooled, and as a federation
  demo.py           the demo report on one trained token (`lowbudget phantom report`)
  pretrain.py       pretraining the embedded phantom base from scratch
  tables.py         markdown tables and image strips for the reports
"""
