"""Many runs at once: sweeps, seed reports, and the RESULTS.md study page."""
