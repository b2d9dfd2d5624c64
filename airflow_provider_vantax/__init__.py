"""
The distribution's name as a module, for Airflow's example-DAG discovery; the provider is ``vantax_provider``.

Airflow 3.3 looks for each installed provider's ``example_dags`` folder by importing the module
named after the distribution (``airflow-provider-vantax`` gives ``airflow_provider_vantax``) and
logs a ``ModuleNotFoundError`` with its traceback, on every command, where there is none.  This
package has no ``example_dags`` folder: the examples live in the repository (``example_dags/``).
"""
