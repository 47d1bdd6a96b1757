"""Grid carbon intensity (providers, fallback chain, embedded table) and emissions accounting."""
