"""An example of your own training code for `modelloop train` (estimator.objective): see train.py."""
