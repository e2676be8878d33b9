"""Supplier quality credit: anchored evidence -> features -> monotone score -> exact explanation.

See docs/credit.md for the pipeline and docs/model-card.md for the model.
"""
