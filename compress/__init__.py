"""sparseq's science: a plain PyTorch library for compressing recurrent sequence models.

It never imports the service's frameworks (FastAPI, Celery, SQLAlchemy) and is useful on its own.
"""

__version__ = "0.1.0"
