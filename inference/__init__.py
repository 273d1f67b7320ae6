"""TerraLens inference: TerraMind models, generation, tiling, TiM and geolocation.

Plain Python + torch, no Streamlit, no STAC, no file writing. Importing this package is cheap:
``torch`` and ``terratorch`` are imported lazily by the functions that need them, so import the
submodules you use (``inference.models``, ``inference.generate``, ``inference.tiling``...).
"""
