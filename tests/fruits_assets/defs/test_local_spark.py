import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# In a process of its own: the test session's Spark session would otherwise be the one found.
STARTED_AHEAD = """
import json, os, subprocess
from fruits_assets.defs.local_spark import start_in_background
from fruits_assets.defs.resources import local_spark

thread = start_in_background()
session = local_spark().spark_session  # asked while the background start is under way: waits for it
thread.join(timeout=60)
java = subprocess.run(["pgrep", "-P", str(os.getpid()), "java"], capture_output=True, text=True).stdout.split()
conf = session.sparkContext.getConf()
print(json.dumps({
    "thread_done": not thread.is_alive(),
    "jvms": len(java),
    "app": conf.get("spark.app.name"),
    "blas": conf.get("spark.executorEnv.OPENBLAS_NUM_THREADS"),
    "extra": conf.get("spark.fruits.test", "unset"),
    "rows": session.range(5).count(),
}))
"""


@pytest.mark.slow
def test_the_session_started_ahead_is_the_one_the_steps_get():
    env = {**os.environ, "FRUITS_SPARK_CONF": '{"spark.fruits.test": "yes"}'}
    completed = subprocess.run(
        [sys.executable, "-c", STARTED_AHEAD], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen == {"thread_done": True, "jvms": 1, "app": "fruits", "blas": "1", "extra": "yes", "rows": 5}


def test_a_process_that_needs_no_spark_exits_while_it_starts():
    code = "from fruits_assets.defs.local_spark import start_in_background; start_in_background(); print('bye')"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.strip() == "bye", completed.stderr[-2000:]
