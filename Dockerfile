# The Airflow image for docker-compose.yaml: the official image plus this project's dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt
