"""The generated report and its figures."""
