"""lstmbench: do positional and channel embeddings make an LSTM a competitive image classifier?

The library: ``config`` (frozen configs), ``data`` (datasets, splits, batched augmentation),
``embeddings`` (layouts and embeddings), ``models`` (the variant registry), ``train`` (training and
metrics). The command line lives in ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lstmbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
