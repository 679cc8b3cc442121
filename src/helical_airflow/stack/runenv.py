"""`python -m helical_airflow.stack.runenv ENV.json -- PROGRAM ARGS...`: exec PROGRAM with ENV.json's variables added.

How supervisord starts a service whose environment holds secrets (stack/supervisor.py): the config file then
names a 0600 file instead of carrying the values.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> None:
    env_path, separator, *command = argv
    if separator != "--" or not command:
        sys.exit("usage: python -m helical_airflow.stack.runenv ENV.json -- PROGRAM [ARGS...]")
    with open(env_path) as fh:
        env = {**os.environ, **json.load(fh)}
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
