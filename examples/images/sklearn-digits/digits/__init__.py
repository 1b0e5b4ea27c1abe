"""Example step images for mltask: scikit-learn's handwritten digits, preprocessed, trained and
compressed for real. Run as `python3 -m digits.preprocess`, `digits.train`, `digits.optimize`."""
