"""The local Airflow stack without Docker: Postgres, Redis, Airflow (CeleryExecutor) as local processes.

`helical-airflow stack up|down|status|logs` (stack/cli.py); the services are defined in services.py
(plus monitoring.py), run by process.py, and orchestrated by manager.py.
"""
