"""Number formats applied to arrays: quantization, exact integer GEMMs, saturation."""
