# The Airflow image for docker-compose.yaml: the official image plus this project's dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt
# The project itself (editable over the mounted plugins/): registers its connection types and plugin
# (the build's egg-info is removed so the plugins folder does not hold a second copy of the distribution).
COPY --chown=airflow:0 pyproject.toml /opt/airflow/pyproject.toml
COPY --chown=airflow:0 plugins /opt/airflow/plugins
RUN pip install --no-cache-dir --no-deps -e /opt/airflow && rm -rf /opt/airflow/plugins/chat_ingest.egg-info
# The DAGs and their SQL and configuration inside the image too, so it runs as it is (the official
# Helm chart, a Kubernetes pod); compose mounts the working tree over them for development.
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include /opt/airflow/include
