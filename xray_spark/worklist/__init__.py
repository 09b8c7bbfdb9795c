"""The worklist job: the riskiest films of a scoring date as static pages, with heatmaps."""
