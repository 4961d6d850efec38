"""Helpers of bench/quantize_vs_ort.py: calibration data, subprocess measurement, ORT and Kiln
quantization runs, SQNR, and the report."""
