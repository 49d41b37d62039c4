"""What a build reports: metrics, figures, the paper's (leaky) protocol beside the honest one,
and the bundle's report.md (its model card)."""
