"""Everything learned in Δ-IRIS Playground: configs, networks, losses, imagination, envs, data,
training and checkpoints. Imports no UI library."""
