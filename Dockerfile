# One image for the worker, the CLI and Flower.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY bpt ./bpt
COPY broker ./broker
COPY workers ./workers
COPY cli ./cli
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["bpt"]
