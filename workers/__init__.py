"""workers: see ../shared/docs/ARCHITECTURE.md (not built yet)."""
