"""Evaluation harness: dataset manifests, concurrent resumable runs stored in
SQLite, correlation metrics and reports (Table-1 style, scatter plots, tool
usage, efficiency)."""
