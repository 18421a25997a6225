"""Amazon Rekognition moderation labels: the client, the paid-response cache, the taxonomy mapping.

Each module has one reason to change:

- :mod:`~eyecatcher.rekognition.client`: how we talk to the API (credentials, retries, errors).
- :mod:`~eyecatcher.rekognition.payload`: what we send for an image (bytes or ``S3Object``, and
  the format/size conversions the API demands).
- :mod:`~eyecatcher.rekognition.cache`: how paid answers are kept (append-only JSONL, fsync).
- :mod:`~eyecatcher.rekognition.batch`: how many images are sent at once (threads, progress, cost).
- :mod:`~eyecatcher.rekognition.taxonomy`: how labels become training classes (YAML schemes).
- :mod:`~eyecatcher.rekognition.local_endpoint`: a stand-in server on 127.0.0.1 for tests and
  benchmarks.

How the cache and the endpoint enter the Kedro catalog lives with the other datasets:
:mod:`eyecatcher.datasets.response_cache_dataset` and
:mod:`eyecatcher.datasets.rekognition_endpoint_dataset`.
"""
