"""sparseq's science: a plain PyTorch library for compressing recurrent sequence models.

It never imports the service's frameworks (FastAPI, Celery, SQLAlchemy) and is useful on its own:

    from compress import run, load_checkpoint
    from compress.spec import Recipe
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import compress.spec` (the API process validating recipes) does not import torch.
    if name in ("run", "load_checkpoint", "export_dense", "Result"):
        from compress import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
