# Placeholder: the Docker deployment issue makes this real.
FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 && pip install --no-cache-dir .
ENV SCRIPTSERVE_HOST=0.0.0.0
EXPOSE 8000
CMD ["scriptserve", "serve"]
