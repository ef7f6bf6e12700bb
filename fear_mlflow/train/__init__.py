"""One training loop for every method, plus FEAR's freezing."""
