"""KNBC: fetch, safe extraction, parsing (corpus1 KNP, corpus2 評判), splits."""
