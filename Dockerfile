# A slim image of the proxy. Build: docker build -t cwnd-proxy .
# Run:   docker run -p 8080:8080 -v $PWD/proxy.toml:/etc/cwnd-proxy/proxy.toml cwnd-proxy
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --no-create-home cwnd
USER cwnd
EXPOSE 8080 9464
# Exec form: the proxy itself is PID 1 and gets docker stop's SIGTERM, which drains
# in-flight requests (server.shutdown_grace_ms) before it exits 0. No shell in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cwnd-proxy"]
CMD ["run", "--no-tui", "--listen", "0.0.0.0:8080", "--config", "/etc/cwnd-proxy/proxy.toml"]
