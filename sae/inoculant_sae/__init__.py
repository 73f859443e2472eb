"""inoculant's GPU sidecar: residual stream to an SAE's layer, SAE encode, pooling, diff and harvest jobs.

The TypeScript pipeline starts `python -m inoculant_sae` and talks to it with the protocol in PROTOCOL.md.
"""

__version__ = "0.1.0"
