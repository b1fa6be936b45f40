"""Helpers the tests share, as plain modules (never a test module or a conftest imported by path):

- ``api``: keys, uploads, recipes and jobs through the app (the API tests' factories);
- ``postgres``: a throwaway PostgreSQL cluster on loopback and its migrated databases;
- ``processes``: real ``sparseqd`` processes, Redis servers and the HTTP client the system tests drive them with;
- ``browser``: Debian's chromium under selenium for the dashboard;
- ``hostile``: files built to hurt (a zip bomb, a checkpoint whose header lies).
"""
