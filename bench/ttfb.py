#!/usr/bin/env python3
"""bench/ttfb.py: median time to the first byte of the answer's body, in µs, over sequential requests on
one keep-alive connection (the first 10 are warm-up). For large request bodies, where curl's
time_starttransfer reports the start of the upload rather than of the answer.

    python3 bench/ttfb.py <url> <body file> [samples] [header ...]   # "__N__" in the body becomes "ttfb"
"""
import http.client
import statistics
import sys
import time
import urllib.parse


def main():
    url = urllib.parse.urlsplit(sys.argv[1])
    body = open(sys.argv[2], "rb").read().replace(b"__N__", b"ttfb")
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    headers = {"Content-Type": "application/json"}
    for line in sys.argv[4:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    times = []
    for _ in range(samples + 10):
        start = time.perf_counter()
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(1)
        times.append(time.perf_counter() - start)
        response.read()
        if response.status != 200:
            sys.exit(f"ttfb: status {response.status}")
    print(f"{statistics.median(times[10:]) * 1e6:.0f}")


main()
