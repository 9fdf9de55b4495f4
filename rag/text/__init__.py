"""The text layer: sentences and markers (sentences.py), content features (features.py)."""
