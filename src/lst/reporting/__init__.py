"""Reporting: tables across methods and phases, and plots. Torch-free. May import every package below it."""
