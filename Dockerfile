# One Tether node: daphne via realtime.serve, as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BIND=0.0.0.0 \
    PORT=8000 \
    DB_CONN_MAX_AGE=60 \
    TETHER_PRODUCTION=1

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# collectstatic needs a SECRET_KEY to import settings; this build-time value is never used at run time.
RUN SECRET_KEY=build-only TETHER_PRODUCTION=0 python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 10001 --home-dir /app tether \
    && chown -R tether /app/staticfiles

USER tether
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/healthz', timeout=2)"
# Migrations run once per release (a job), not in every node: `python manage.py migrate`.
CMD ["python", "-m", "realtime.serve"]
