#!/usr/bin/env python3
"""Sends N identical POST requests over C keep-alive connections and reads
every answer to its end: the load of benches/load/instructions.sh, with
nothing to install.

    drive.py URL BODY_FILE N [C]
"""
import http.client
import sys
import threading
import urllib.parse


def main() -> int:
    url, body_file, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connections = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    body = open(body_file, "rb").read()
    target = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    left = [total]
    failed = []

    def take() -> bool:
        with lock:
            if left[0] == 0:
                return False
            left[0] -= 1
            return True

    def worker() -> None:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {"content-type": "application/json"}
        while take():
            conn.request("POST", target.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failed.append(response.status)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        print(f"{len(failed)} of {total} requests failed: {sorted(set(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
