"""Data of cNVAE-ECG: the Challenge 2021 reader, ``prepare``, the prepared datasets, their bounds and demo data."""

#: The three Challenge 2021 sources, in the order prepare writes them; every entry point's --dataset choices.
DATASETS = ("ptb-xl", "georgia", "ningbo")
