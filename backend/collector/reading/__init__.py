"""Reading the bucket for the research tools: listings, concurrent reads, and what documents mean."""
