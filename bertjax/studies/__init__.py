"""Many runs at once: method presets, the study catalog and its runner, sweeps, seed reports
and the RESULTS.md study page."""
