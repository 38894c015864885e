"""Model: from decoded frames to features and classes.  Preprocessing recipes in numpy (:mod:`.recipes`) and
torch (:mod:`.torch_recipes`), backbones (:mod:`.backbones`), running them (:mod:`.features`) in torch or an
exported runtime (:mod:`.runtimes`), int8 quantisation (:mod:`.quantize`) and linear heads (:mod:`.heads`).

May import: core, formats, datasets, instruments.
"""
