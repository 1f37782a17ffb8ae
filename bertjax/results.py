"""`python -m bertjax.results`: RESULTS.md from the study records (bertjax/studies/results.py)."""

from bertjax.studies.results import command

if __name__ == "__main__":
    command()
