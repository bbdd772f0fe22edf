"""The AirflowPlugin: registers the project's UI/API pieces (filled by later issues)."""

from airflow.plugins_manager import AirflowPlugin


class MusicrecPlugin(AirflowPlugin):
    name = "musicrec"
