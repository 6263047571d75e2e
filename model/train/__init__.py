"""Training: :func:`model.train.loop.train` runs the epochs; each other module holds one part of it.

config_check (is the config trainable, which models), schedule (how much per epoch), run_dir (the run
folder), dist (several processes), phases (the three learning phases), experience (real-env collection
and test episodes), media (pictures per epoch), console (log, progress bar, TensorBoard), stop (signals).
"""
