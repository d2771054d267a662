#!/usr/bin/env python3
"""Parses a hub's /metrics (OpenMetrics text on stdin) with prometheus_client's
own parser, which refuses anything malformed, and prints every sample as JSON:
[{"name": ..., "labels": {...}, "value": ...}, ...]."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append({"name": sample.name, "labels": dict(sample.labels), "value": sample.value})
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main()
