"""The learned world model: a frame autoencoder and a causal latent dynamics
model conditioned on the explicit world state, trained on sessions the engine
plays and renders itself, and the ``neural`` backend that streams from it."""
