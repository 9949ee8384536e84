"""``fluido bench``: a load tester for OpenAI-compatible chat endpoints (open and closed loop, sweeps,
side-by-side comparison), with a terminal table, results.json, report.md and PNG plots."""
