"""Raw data: generation, ingest, row and table checks, Dask preprocessing, atomic publishing."""
