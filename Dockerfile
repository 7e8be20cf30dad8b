FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY producers ./producers
COPY workers ./workers
RUN pip install --no-cache-dir .
# secrets come from the environment or mounted files, never from the image
ENV BULKMAIL_PROVIDERS=/app/config/providers.toml
CMD ["bulkmail", "--help"]
