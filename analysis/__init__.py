"""Analysis of sweep results: collect records, fit (α, β, γ), plot and report. Never imports torch."""
