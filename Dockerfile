# The Airflow image for docker-compose.yaml: the official image plus this project's dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt
# The project itself (editable over the mounted plugins/): registers its connection types.
COPY --chown=airflow:0 pyproject.toml /opt/airflow/pyproject.toml
COPY --chown=airflow:0 plugins /opt/airflow/plugins
RUN pip install --no-cache-dir --no-deps -e /opt/airflow
