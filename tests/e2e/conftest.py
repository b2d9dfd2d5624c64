from __future__ import annotations

import sys
from pathlib import Path

# Make ``airflow_cluster`` importable from the e2e tests (and from a later reliability suite).
sys.path.insert(0, str(Path(__file__).resolve().parent))
