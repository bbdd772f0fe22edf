"""Change events (issue 18): the ``listen_events`` contract (:mod:`.listens`) and the MongoDB
change-stream reader the Airflow triggers wrap (:mod:`.stream`). No Airflow imports."""
