"""The learned world model: a frame autoencoder and a causal latent dynamics
model for the backdrop, a figure network that draws the characters from their
tokens, both conditioned on the explicit world state and trained on sessions
the engine plays and renders itself, and the ``neural`` backend that streams
from it."""
