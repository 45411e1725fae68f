"""Models shipped inside the package, one folder each, loadable by coulisse and by transformers.

`mini-allocine/`: coulisse/mini-allocine, the offline fallback for sentiment analysis (see
`coulisse.defaults`), written by `training/train_mini_allocine.py`; its README.md is the model card.
"""
