"""Where results live and how they are written: DVC out paths, atomic staged writes, safetensors/parquet/JSON."""
