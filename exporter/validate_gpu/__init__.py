"""The real-GPU validation kit: loads a GPU through the CUDA driver API and measures what NVML reports."""
