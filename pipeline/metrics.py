"""Classification and language-model metrics, each defined once (numpy only): used by training (early stopping) and evaluation."""
