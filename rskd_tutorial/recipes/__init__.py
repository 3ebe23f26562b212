"""rskd_tutorial.recipes."""
